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

#: voxels per bincount call in :func:`label_counts` (its int64 copy stays in the cache)
_SLAB = 1 << 18


def label_counts(arr: np.ndarray) -> np.ndarray:
    """Voxels per value of a non-negative integer array (bincount in slabs: no full int64 copy)."""
    flat = arr.reshape(-1)
    counts = np.zeros(int(flat.max()) + 1 if flat.size else 1, np.int64)
    for start in range(0, flat.size, _SLAB):
        counts += np.bincount(flat[start:start + _SLAB], minlength=counts.size)
    return counts


def present_labels(arr: np.ndarray) -> np.ndarray:
    """The sorted values of a label array (``np.unique``; for non-negative integers up to 2^16 a
    bincount in slabs, ~3x faster on a 512x512x133 map)."""
    if arr.size and np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() < 1 << 16:
        return np.nonzero(label_counts(arr))[0]
    return np.unique(arr)


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


def _vertebra_order_score(z_mean: dict[int, float], names: dict[int, str]) -> float:
    """Rank correlation of vertebra level vs. superior position; ~1 if the scheme fits.
    ``z_mean``: label id -> mean z index of its voxels in the canonical (LPS) frame."""
    order = {f"vertebrae_{p}{i}": rank for rank, (p, i) in enumerate(
        [("S", 1)] + [("L", i) for i in range(6, 0, -1)] + [("T", i) for i in range(12, 0, -1)]
        + [("C", i) for i in range(7, 0, -1)])}
    levels, zs = [], []
    for lab, z in z_mean.items():
        n = names.get(lab)
        if n in order:
            levels.append(order[n])
            zs.append(z)
    if len(levels) < 3:
        return 0.0
    rl = np.argsort(np.argsort(levels))
    rz = np.argsort(np.argsort(zs))
    return float(np.corrcoef(rl, rz)[0, 1])


def _z_means(img: sitk.Image, labels: np.ndarray) -> dict[int, float]:
    """Mean canonical z index of each of ``labels`` (one pass: a bincount per slice)."""
    arr = sitk.GetArrayViewFromImage(canonical(img))
    top = int(labels.max()) + 1
    per_slice = np.stack([np.bincount(np.clip(sl.ravel(), 0, top).astype(np.intp), minlength=top + 1)[:top]
                          for sl in arr])                            # (Z, top)
    n = per_slice.sum(0)
    zsum = np.arange(len(arr)) @ per_slice
    return {int(lab): float(zsum[int(lab)] / n[int(lab)]) for lab in labels if n[int(lab)]}


def detect_scheme(img: sitk.Image, path: Path | None, warnings: WarningLog,
                  present: np.ndarray | None = None) -> LabelScheme:
    """Guess the label scheme of a multi-label map (``present``: its label values, when known).

    Order: label names embedded by TotalSegmentator in the NIfTI header; label values
    (> 104 only exist in v2, <= 19 means a CTARR 19-class map); otherwise the scheme in which
    the vertebra labels are ordered from caudal to cranial (v1 and v2 number them differently).
    """
    if path is not None:
        table = read_nifti_label_table(path)
        if table:
            return LabelScheme(f"names embedded in {path.name}", table)
    present = present_labels(sitk.GetArrayViewFromImage(img)) if present is None else present
    present = present[present > 0]
    if present.size == 0:
        return LabelScheme.named("ctarr19")
    top = int(present.max())
    if top > 104:
        return LabelScheme.named("ts_v2")
    if top <= 19:
        return LabelScheme.named("ctarr19")
    v2, v1 = LabelScheme.named("ts_v2"), LabelScheme.named("ts_v1")
    z_mean = _z_means(img, present)
    s2 = _vertebra_order_score(z_mean, v2.names)
    s1 = _vertebra_order_score(z_mean, v1.names)
    if s1 > s2 + 0.2:
        return v1
    if not s2 > s1 + 0.2:
        warnings.warn("could not tell TotalSegmentator v1 from v2 by the label values; assuming v2 "
                      "(pass the format explicitly to override)")
    return v2
