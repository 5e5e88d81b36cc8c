"""The 19 CTARR anatomy groups and how label maps of other tools map onto them.

Mappings go *by structure name*, never by label id, so TotalSegmentator v1 and v2 maps,
folders of per-structure masks and nnU-Net models with named labels all work. A group the
source cannot express (TotalSegmentator v1 has no skull and no sternum) is *unobserved*:
registration gives it weight 0 instead of treating it as empty.
"""
from __future__ import annotations

import gzip
import json
import re
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import CTARRError, WarningLog
from .geometry import Geometry
from .integrity import check_finite
from .io import canonical, is_image_file, match_label_to_image, read_image, strip_extension

#: The 19 groups of the CTARR paper (Table 1); label value = index + 1.
GROUPS: tuple[str, ...] = (
    "skull", "vertebrae_C", "ribs_left", "ribs_right", "sternum",
    "vertebrae_T", "vertebrae_L", "sacrum", "hip_left", "hip_right",
    "brain", "lung_left", "lung_right", "heart", "liver",
    "spleen", "kidney_left", "kidney_right", "urinary_bladder",
)
N_GROUPS = len(GROUPS)
#: values of ``-anatomy_format`` (auto = detected from embedded names, label values, vertebra order)
ANATOMY_FORMATS = ("auto", "ts_v2", "ts_v1", "ctarr19", "mask_folder")

_FIXED = {
    "skull": "skull", "sternum": "sternum", "sacrum": "sacrum", "vertebrae_S1": "sacrum",
    "hip_left": "hip_left", "hip_right": "hip_right", "brain": "brain",
    "lung_upper_lobe_left": "lung_left", "lung_lower_lobe_left": "lung_left",
    "lung_upper_lobe_right": "lung_right", "lung_middle_lobe_right": "lung_right",
    "lung_lower_lobe_right": "lung_right",
    "heart": "heart", "heart_myocardium": "heart", "heart_atrium_left": "heart",
    "heart_atrium_right": "heart", "heart_ventricle_left": "heart", "heart_ventricle_right": "heart",
    "liver": "liver", "spleen": "spleen",
    "kidney_left": "kidney_left", "kidney_cyst_left": "kidney_left",
    "kidney_right": "kidney_right", "kidney_cyst_right": "kidney_right",
    "urinary_bladder": "urinary_bladder",
    "scapula_left": "ribs_left", "clavicula_left": "ribs_left",
    "scapula_right": "ribs_right", "clavicula_right": "ribs_right",
}
_PATTERNS = (
    (re.compile(r"^vertebrae_C\d+$"), "vertebrae_C"),
    (re.compile(r"^vertebrae_T\d+$"), "vertebrae_T"),
    (re.compile(r"^vertebrae_L\d+$"), "vertebrae_L"),
    (re.compile(r"^rib_left_\d+$"), "ribs_left"),
    (re.compile(r"^rib_right_\d+$"), "ribs_right"),
)


def group_of(structure: str) -> str | None:
    """CTARR group of a structure name (TotalSegmentator v1/v2 or a group name), or None."""
    s = structure.strip()
    if s in GROUPS:
        return s
    if s in _FIXED:
        return _FIXED[s]
    for pat, grp in _PATTERNS:
        if pat.match(s):
            return grp
    return None


def totalsegmentator_scheme(version: int) -> dict[int, str]:
    """Label id -> structure name of TotalSegmentator's ``total`` task (v1: 104, v2: 117 classes)."""
    text = resources.files("nnunet_ctarr").joinpath("resources/totalsegmentator_class_maps.json").read_text()
    table = json.loads(text)[f"totalsegmentator_v{version}_total"]
    return {int(k): v for k, v in table.items()}


def ctarr19_scheme() -> dict[int, str]:
    return {i + 1: g for i, g in enumerate(GROUPS)}


@dataclass
class LabelScheme:
    """Label id -> group id lookup table built from structure names."""
    name: str
    names: dict[int, str]
    lut: np.ndarray = field(init=False)
    observed: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        top = max(self.names, default=0)
        self.lut = np.zeros(max(top, 255) + 1, dtype=np.uint8)
        self.observed = np.zeros(N_GROUPS, dtype=bool)
        for lab, struct_name in self.names.items():
            g = group_of(struct_name)
            if g is not None and lab > 0:
                gi = GROUPS.index(g)
                self.lut[lab] = gi + 1
                self.observed[gi] = True

    @classmethod
    def named(cls, fmt: str) -> LabelScheme:
        if fmt == "ts_v2":
            return cls("TotalSegmentator v2", totalsegmentator_scheme(2))
        if fmt == "ts_v1":
            return cls("TotalSegmentator v1", totalsegmentator_scheme(1))
        if fmt == "ctarr19":
            return cls("CTARR 19 groups", ctarr19_scheme())
        raise CTARRError(f"unknown anatomy format '{fmt}' (use {', '.join(ANATOMY_FORMATS)})")


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
            ext = f.read(vox_offset - 352).decode("utf-8", "replace")
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


@dataclass
class AnatomyMasks:
    """Anatomy as a group label map (values 0..19) on its own grid, plus which groups the
    source can express at all. ``orientation`` (k_rot, flip): the source already fixed the
    orientation its groups were labelled in (the HU anatomy); the registration then keeps it."""
    labels: sitk.Image
    observed: np.ndarray
    source: str
    orientation: tuple[int, tuple[bool, bool, bool]] | None = None

    @classmethod
    def from_label_image(cls, img: sitk.Image, scheme: LabelScheme, warnings: WarningLog,
                         source: str = "") -> AnatomyMasks:
        arr = sitk.GetArrayViewFromImage(img)
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.mod(arr[:: max(1, arr.shape[0] // 8)], 1) == 0):
                raise CTARRError(f"anatomy map {source} holds non-integer values; expected a label map")
            arr = arr.astype(np.int64)
        if arr.min() < 0:
            raise CTARRError(f"anatomy map {source} holds negative values; expected a label map")
        ids, counts = np.unique(arr, return_counts=True)
        unknown = [int(i) for i in ids if i > 0 and int(i) not in scheme.names]
        if unknown:
            warnings.warn(f"anatomy map {source}: label id(s) {unknown[:10]} are not in the "
                          f"{scheme.name} scheme and were ignored")
        lut = scheme.lut
        if int(ids.max()) >= lut.size:
            lut = np.concatenate([lut, np.zeros(int(ids.max()) - lut.size + 1, np.uint8)])
        groups = lut[arr]
        out = sitk.GetImageFromArray(groups)
        out.CopyInformation(img)
        return cls(out, scheme.observed.copy(), f"{source} ({scheme.name})")

    def group_voxel_counts(self) -> np.ndarray:
        arr = sitk.GetArrayViewFromImage(self.labels)
        return np.bincount(arr.ravel(), minlength=N_GROUPS + 1)[1:N_GROUPS + 1]


def load_mask_folder(folder: Path, warnings: WarningLog) -> AnatomyMasks:
    """TotalSegmentator ``segmentations/`` layout: one binary mask per structure name."""
    if (folder / "segmentations").is_dir():
        folder = folder / "segmentations"
    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not files:
        raise CTARRError(f"{folder} holds no mask files (<structure>.nii.gz)")
    names = {strip_extension(p.name): p for p in files}
    known = {n: p for n, p in names.items() if group_of(n) is not None}
    if not known:
        raise CTARRError(f"{folder}: none of the {len(files)} mask names is a structure CTARR knows "
                         "(expected TotalSegmentator names like liver.nii.gz, vertebrae_L1.nii.gz)")
    ref = read_image(next(iter(known.values())))
    groups = np.zeros(sitk.GetArrayViewFromImage(ref).shape, np.uint8)
    observed = np.zeros(N_GROUPS, bool)
    # write larger group ids first so that organs win over bones where masks overlap
    for n, p in sorted(known.items(), key=lambda kv: GROUPS.index(group_of(kv[0]))):
        m = _mask_on_grid(read_image(p), ref, p.name, warnings)
        gi = GROUPS.index(group_of(n))
        observed[gi] = True
        groups[sitk.GetArrayViewFromImage(m) > 0] = gi + 1
    out = sitk.GetImageFromArray(groups)
    out.CopyInformation(ref)
    return AnatomyMasks(out, observed, f"{folder} (per-structure masks, {len(known)} mapped)")


def _mask_on_grid(mask: sitk.Image, ref: sitk.Image, name: str, warnings: WarningLog) -> sitk.Image:
    """One mask of a folder on the first mask's grid, matched in world space like a label map: the
    same voxels stored in another order are reordered exactly, another grid that covers it is
    resampled nearest-neighbour (with a warning), a mask elsewhere is an error naming the file."""
    mg, rg = Geometry.of(mask), Geometry.of(ref)
    if mg.same_grid(rg):
        return mask
    if not Geometry.of(canonical(mask)).same_grid(Geometry.of(canonical(ref))):
        warnings.warn(f"mask {name} is on another grid ({mg.describe()}) than the first mask ({rg.describe()}); "
                      "resampled nearest-neighbour")
    return match_label_to_image(mask, ref, f"mask {name}")


def load_anatomy(path: str | Path, fmt: str = "auto", warnings: WarningLog | None = None) -> AnatomyMasks:
    """Load anatomy from a label file or a folder of per-structure masks.

    ``fmt``: ``auto`` | ``ts_v2`` | ``ts_v1`` | ``ctarr19`` | ``mask_folder``.
    """
    warnings = warnings if warnings is not None else WarningLog()
    path = Path(path)
    if not path.exists():
        raise CTARRError(f"anatomy segmentation not found: {path}")
    if path.is_dir() and fmt in ("auto", "mask_folder"):
        return load_mask_folder(path, warnings)
    if fmt == "mask_folder":
        raise CTARRError(f"--anatomy_format mask_folder needs a folder, got file {path}")
    img, _ = check_finite(read_image(path), f"anatomy map {path.name}", path=path)
    scheme = detect_scheme(img, path, warnings) if fmt == "auto" else LabelScheme.named(fmt)
    return AnatomyMasks.from_label_image(img, scheme, warnings, source=path.name)
