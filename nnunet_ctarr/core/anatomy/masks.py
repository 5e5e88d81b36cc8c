"""Anatomy as a group label map: from a label map (any known scheme) or a folder of per-structure masks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..base.cases import is_image_file, strip_extension
from ..base.errors import CTARRError, WarningLog
from ..base.geometry import Geometry
from ..base.images import canonical, match_label_to_image, read_image
from ..base.integrity import check_finite
from .grid import GridSampler
from .groups import GROUPS, N_GROUPS, LabelScheme, group_of
from .label_maps import detect_scheme, label_counts, present_labels


@dataclass
class AnatomyMasks:
    """Anatomy as a label map on its own grid, plus which groups the source can express at all.

    ``label_map`` holds group ids (0..19) when ``lut`` is None, else the source's own label ids,
    which ``lut`` maps to groups: the mapping is applied where it is needed (on the registration's
    working grid, :func:`.volume.anatomy_to_volume`), not to every voxel of a full-resolution map.
    ``orientation`` (k_rot, flip): the source already fixed the orientation its groups were labelled
    in (the HU anatomy); the registration then keeps it."""
    label_map: sitk.Image
    observed: np.ndarray
    source: str
    orientation: tuple[int, tuple[bool, bool, bool]] | None = None
    lut: np.ndarray | None = None
    #: what made it: "map" (a label map, mask folder or model) or "hu" (the CT's HU values); the trust
    #: rule's region Dice threshold is calibrated per kind (core.localise.trust.MIN_REGION_DICE)
    kind: str = "map"
    _groups: sitk.Image | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def labels(self) -> sitk.Image:
        """The group label map (0..19) on the map's grid (for a source's ids: mapped on first use)."""
        if self.lut is None:
            return self.label_map
        if self._groups is None:
            self._groups = sitk.GetImageFromArray(self.groups_of(sitk.GetArrayViewFromImage(self.label_map)))
            self._groups.CopyInformation(self.label_map)
        return self._groups

    def groups_of(self, ids: np.ndarray) -> np.ndarray:
        """Group ids (uint8) of label values of ``label_map``; ids beyond the scheme map to 0."""
        if self.lut is None:
            return ids.astype(np.uint8, copy=False)
        if ids.size == 0 or int(ids.max()) < self.lut.size:
            return self.lut[ids]
        return np.where(ids < self.lut.size, self.lut[np.minimum(ids, self.lut.size - 1)], 0).astype(np.uint8)

    @property
    def geometry(self) -> Geometry:
        return Geometry.of(self.label_map)

    @classmethod
    def from_label_image(cls, img: sitk.Image, scheme: LabelScheme, warnings: WarningLog,
                         source: str = "", present: np.ndarray | None = None) -> AnatomyMasks:
        """A label map in ``scheme``; ``present``: its label ids when already known (:func:`present_labels`)."""
        arr = sitk.GetArrayViewFromImage(img)
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.mod(arr[:: max(1, arr.shape[0] // 8)], 1) == 0):
                raise CTARRError(f"anatomy map {source} holds non-integer values; expected a label map")
            img = sitk.Cast(img, sitk.sitkInt64)
            arr = sitk.GetArrayViewFromImage(img)
        if arr.min() < 0:
            raise CTARRError(f"anatomy map {source} holds negative values; expected a label map")
        ids = present_labels(arr) if present is None else present
        unknown = [int(i) for i in ids if i > 0 and int(i) not in scheme.names]
        if unknown:
            warnings.warn(f"anatomy map {source}: label id(s) {unknown[:10]} are not in the "
                          f"{scheme.name} scheme and were ignored")
        return cls(img, scheme.observed.copy(), f"{source} ({scheme.name})", lut=scheme.lut)

    def group_voxel_counts(self) -> np.ndarray:
        arr = sitk.GetArrayViewFromImage(self.label_map)
        if arr.size and arr.max() < 1 << 16:
            counts = label_counts(arr)
            ids = np.arange(counts.size)
        else:
            ids, counts = np.unique(arr, return_counts=True)
        groups = self.groups_of(ids)
        return np.bincount(groups, weights=counts, minlength=N_GROUPS + 1).astype(np.int64)[1:N_GROUPS + 1]


def load_mask_folder(folder: Path, warnings: WarningLog, spacing: float | None = None) -> AnatomyMasks:
    """TotalSegmentator ``segmentations/`` layout: one binary mask per structure name. ``spacing``:
    each mask is picked onto that working grid (:mod:`.grid`) as it is read, and the group map is
    built there (the same map as building it at full resolution and picking it afterwards)."""
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
    sampler = GridSampler.for_image(ref, spacing) if spacing else None
    pick = sampler.sample if sampler is not None else (lambda a: a)
    groups = np.zeros(sampler.grid.shape_zyx if sampler is not None else sitk.GetArrayViewFromImage(ref).shape,
                      np.uint8)
    observed = np.zeros(N_GROUPS, bool)
    # smaller group ids first, larger later: an organ (id > bones') wins where masks overlap
    for n, p in sorted(known.items(), key=lambda kv: GROUPS.index(group_of(kv[0]))):
        m = _mask_on_grid(read_image(p, label=True, warnings=warnings), ref, p.name, warnings)
        gi = GROUPS.index(group_of(n))
        observed[gi] = True
        groups[pick(sitk.GetArrayViewFromImage(m)) > 0] = gi + 1
    out = sampler.grid.image(groups) if sampler is not None else _on_grid_of(groups, ref)
    return AnatomyMasks(out, observed, f"{folder} (per-structure masks, {len(known)} mapped)")


def _on_grid_of(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(ref)
    return out


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


def load_anatomy(path: str | Path, fmt: str = "auto", warnings: WarningLog | None = None,
                 spacing: float | None = None) -> AnatomyMasks:
    """Load anatomy from a label file or a folder of per-structure masks.

    ``fmt``: ``auto`` | ``ts_v2`` | ``ts_v1`` | ``ctarr19`` | ``mask_folder``. ``spacing``: a mask
    folder is built on that working grid (see :func:`load_mask_folder`); a label map stays as read.
    """
    warnings = warnings if warnings is not None else WarningLog()
    path = Path(path)
    if not path.exists():
        raise CTARRError(f"anatomy segmentation not found: {path}")
    if path.is_dir() and fmt in ("auto", "mask_folder"):
        return load_mask_folder(path, warnings, spacing)
    if fmt == "mask_folder":
        raise CTARRError(f"--anatomy_format mask_folder needs a folder, got file {path}")
    img, _ = check_finite(read_image(path, label=True, warnings=warnings), f"anatomy map {path.name}", path=path)
    arr = sitk.GetArrayViewFromImage(img)
    present = present_labels(arr) if np.issubdtype(arr.dtype, np.integer) else None
    scheme = detect_scheme(img, path, warnings, present) if fmt == "auto" else LabelScheme.named(fmt)
    return AnatomyMasks.from_label_image(img, scheme, warnings, source=path.name, present=present)
