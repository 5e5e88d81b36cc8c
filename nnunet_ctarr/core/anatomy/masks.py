"""Anatomy as a group label map: from a label map (any known scheme) or a folder of per-structure masks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..base.cases import is_image_file, strip_extension
from ..base.errors import CTARRError, WarningLog
from ..base.geometry import Geometry
from ..base.images import canonical, match_label_to_image, read_image
from ..base.integrity import check_finite
from .groups import GROUPS, N_GROUPS, LabelScheme, group_of
from .label_maps import detect_scheme


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
        lut = scheme.lut                           # ids beyond the scheme (ignored above) map to 0
        groups = lut[arr] if int(ids.max()) < lut.size else \
            np.where(arr < lut.size, lut[np.minimum(arr, lut.size - 1)], 0).astype(lut.dtype)
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
    ref = read_image(next(iter(known.values())), label=True, warnings=warnings)
    groups = np.zeros(sitk.GetArrayViewFromImage(ref).shape, np.uint8)
    observed = np.zeros(N_GROUPS, bool)
    # write larger group ids first so that organs win over bones where masks overlap
    for n, p in sorted(known.items(), key=lambda kv: GROUPS.index(group_of(kv[0]))):
        m = _mask_on_grid(read_image(p, label=True, warnings=warnings), ref, p.name, warnings)
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
    img, _ = check_finite(read_image(path, label=True, warnings=warnings), f"anatomy map {path.name}", path=path)
    scheme = detect_scheme(img, path, warnings) if fmt == "auto" else LabelScheme.named(fmt)
    return AnatomyMasks.from_label_image(img, scheme, warnings, source=path.name)
