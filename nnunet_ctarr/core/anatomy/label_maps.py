"""Which label scheme a multi-label map uses: names embedded in the NIfTI header, label values, vertebra order."""
from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..base.errors import WarningLog
from ..base.images import canonical
from .groups import LabelScheme


def read_nifti_label_table(path: Path) -> dict[int, str] | None:
    """Label names stored by TotalSegmentator inside a NIfTI header extension (Caret XML)."""
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return None
    try:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(352)
            if len(head) < 352 or struct.unpack("<i", head[:4])[0] != 348:
                return None
            vox_offset = int(struct.unpack("<f", head[108:112])[0])
            if vox_offset <= 352 or head[348] == 0:
                return None
            ext = f.read(min(vox_offset - 352, 1 << 26)).decode("utf-8", "replace")    # a damaged offset: 64 MB at most
    except (OSError, EOFError, struct.error):
        return None
    found = re.findall(r'<Label Key="(\d+)"[^>]*><!\[CDATA\[([^\]]*)\]\]></Label>', ext)
    return {int(k): v for k, v in found} or None


def _vertebra_order_score(arr_zyx: np.ndarray, present: np.ndarray, names: dict[int, str]) -> float:
    """Rank correlation of vertebra level vs. superior position; ~1 if the scheme fits."""
    order = {f"vertebrae_{p}{i}": rank for rank, (p, i) in enumerate(
        [("S", 1)] + [("L", i) for i in range(6, 0, -1)] + [("T", i) for i in range(12, 0, -1)]
        + [("C", i) for i in range(7, 0, -1)])}
    levels, zs = [], []
    for lab in present:
        n = names.get(int(lab))
        if n in order:
            z = np.nonzero(arr_zyx == lab)[0]
            levels.append(order[n])
            zs.append(z.mean())
    if len(levels) < 3:
        return 0.0
    rl = np.argsort(np.argsort(levels))
    rz = np.argsort(np.argsort(zs))
    return float(np.corrcoef(rl, rz)[0, 1])


def detect_scheme(img: sitk.Image, path: Path | None, warnings: WarningLog) -> LabelScheme:
    """Guess the label scheme of a multi-label map.

    Order: label names embedded by TotalSegmentator in the NIfTI header; label values
    (> 104 only exist in v2, <= 19 means a CTARR 19-class map); otherwise the scheme in which
    the vertebra labels are ordered from caudal to cranial (v1 and v2 number them differently).
    """
    if path is not None:
        table = read_nifti_label_table(path)
        if table:
            return LabelScheme(f"names embedded in {path.name}", table)
    canon = canonical(img)
    arr = sitk.GetArrayViewFromImage(canon)
    present = np.unique(arr)
    present = present[present > 0]
    if present.size == 0:
        return LabelScheme.named("ctarr19")
    top = int(present.max())
    if top > 104:
        return LabelScheme.named("ts_v2")
    if top <= 19:
        return LabelScheme.named("ctarr19")
    v2, v1 = LabelScheme.named("ts_v2"), LabelScheme.named("ts_v1")
    s2 = _vertebra_order_score(arr, present, v2.names)
    s1 = _vertebra_order_score(arr, present, v1.names)
    if s1 > s2 + 0.2:
        return v1
    if not s2 > s1 + 0.2:
        warnings.warn("could not tell TotalSegmentator v1 from v2 by the label values; assuming v2 "
                      "(pass the format explicitly to override)")
    return v2
