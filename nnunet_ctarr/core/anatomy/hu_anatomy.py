"""Anatomy from the CT's own intensities, with no network (``-anatomy_model hu``).

On a fixed working grid (:mod:`.hu_masks`: 3 mm, the CT block-averaged and resampled once, so the
cost does not grow with the input's resolution): the body, the lungs and the skeleton by HU
thresholds, robust to cropped fields of view and to contrast-filled blood. These masks are
registered to the matching unions of the atlas' channels (all lungs, all bones; :mod:`.hu_pose`):
the orientation over the eight candidates of the search (the header's kept unless another is
clearly better), then scale and translation refined on the same unions. In that pose each lung and
bone voxel takes the atlas group most probable there (left / right lung, ribs, vertebrae by level,
sacrum, hips; bone above the atlas = skull), so the result is an ordinary group map: the usual
registration, trust rule and QC apply unchanged. Organs are *unobserved* (weight 0), as for a map
that cannot express them.
"""
import numpy as np
import SimpleITK as sitk

from ..base.errors import CTARRError, WarningLog
from ..base.geometry import Geometry
from ..base.images import read_image
from ..base.transform import AtlasTransform
from .atlas import Atlas
from .groups import GROUPS, N_GROUPS
from .hu_masks import HU_BONE, HUMasks, hu_masks
from .hu_pose import BONES, LUNGS, MIN_SEARCH_BONE_ML, MIN_SEARCH_LUNG_ML, atlas_views, coarse_pose, refine_pose
from .masks import AnatomyMasks
from .sources import AnatomySource

#: a group the HU anatomy labels with less than this (ml) is left out
MIN_GROUP_ML = 2.0

__all__ = ["HUAnatomy", "HUMasks", "coarse_pose", "hu_anatomy", "hu_masks", "label_groups"]


def _atlas_on_scan(atlas_map: np.ndarray, tf: AtlasTransform, g: Geometry, atlas: Atlas) -> tuple[np.ndarray, ...]:
    """An atlas map (Z, Y, X) at the scan's voxels (nearest; 0 outside the atlas in x and y, the top
    or bottom slice's value above or below it) and whether each voxel lies above the atlas. ``tf``
    is axis-aligned, so each atlas axis reads one scan axis: index arithmetic and one gather, no
    per-voxel coordinates."""
    M, size = tf.M, np.array(atlas.shape_zyx[::-1])
    perm = [int(np.nonzero(M[i])[0][0]) for i in range(3)]          # atlas axis i <- scan axis perm[i]
    index, ok = [None] * 3, [None] * 3
    for i, j in enumerate(perm):
        w = g.origin[j] + g.spacing[j] * np.arange(g.size_xyz[j])
        k = np.rint((tf.scale[i] * M[i, j] * w + tf.translation[i] - atlas.origin[i]) / atlas.spacing[i]).astype(int)
        ok[i], index[i] = (k >= 0) & (k < size[i]), np.clip(k, 0, size[i] - 1)
        if i == 2:
            above = k >= size[2]
    inside = ok[1][None, :, None] & ok[0][None, None, :]
    vals = atlas_map[np.ix_(index[2], index[1], index[0])] * inside    # dims: scan axes perm[2], perm[1], perm[0]
    dims = [perm[2], perm[1], perm[0]]
    vals = np.transpose(vals, [dims.index(2 - e) for e in range(3)])  # dims: scan z, y, x
    above_zyx = np.zeros(g.shape_zyx, bool)
    np.moveaxis(above_zyx, 2 - perm[2], 0)[above] = True
    return vals, above_zyx


def label_groups(m: HUMasks, tf: AtlasTransform, atlas: Atlas) -> np.ndarray:
    """Group label map (Z, Y, X) of the HU masks: each lung and bone voxel, mapped by ``tf``, takes
    the atlas' lung side or most probable bone group there (:func:`.hu_pose.atlas_views`); above or
    below the atlas that of its top or bottom slice, so anatomy outside the atlas stays visible to
    the trust rule (a scan reaching below the atlas' pelvis is "outside the atlas", not a smaller
    scan); bone above an atlas without a skull is skull, bone where the atlas has no bone stays
    unlabelled, and so does a group with less than :data:`MIN_GROUP_ML` (a sliver at the edge of
    the field of view carries no position and would count fully in the registration's mean Dice)."""
    v = atlas_views(atlas)
    lung, above = _atlas_on_scan(v["lung_label"], tf, m.geometry, atlas)
    bone, _ = _atlas_on_scan(v["bone_label"], tf, m.geometry, atlas)
    if not atlas.observed[GROUPS.index("skull")]:
        bone = np.where(above, GROUPS.index("skull") + 1, bone)
    labels = np.where(m.lungs, lung, np.where(m.bone, bone, 0)).astype(np.uint8)
    small = np.bincount(labels.ravel(), minlength=N_GROUPS + 1) * m.voxel_ml < MIN_GROUP_ML
    small[0] = False
    return np.where(small[labels], 0, labels).astype(np.uint8)


def _check_image(image: sitk.Image, name: str) -> None:
    """What the HU anatomy needs of an image: 3-D, one value per voxel, a positive finite spacing."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CTARRError(f"{name}: the HU anatomy needs a 3-D scalar image (got {image.GetDimension()}-D with "
                         f"{image.GetNumberOfComponentsPerPixel()} value(s) per voxel)")
    sp = np.array(image.GetSpacing())
    if not (np.all(np.isfinite(sp)) and np.all(sp > 0)):
        raise CTARRError(f"{name}: voxel spacing {tuple(sp)} is not positive; cannot compute the HU anatomy")


def hu_anatomy(image: sitk.Image, atlas: Atlas, warnings: WarningLog | None = None, source: str = "",
               refine: bool = True) -> AnatomyMasks:
    """The HU anatomy of a CT as an ordinary group map (lungs and bones observed, organs not).
    ``refine=False`` labels the groups in the coarse pose (the measured alternative,
    docs/out_of_sample.md). Any failure is a :class:`CTARRError` (one line)."""
    warnings = warnings if warnings is not None else WarningLog()
    name = source or "image"
    _check_image(image, name)
    try:
        m = hu_masks(image)
    except (RuntimeError, MemoryError) as e:            # SimpleITK's errors are RuntimeErrors
        raise CTARRError(f"{name}: the HU anatomy could not resample the image ({str(e).splitlines()[-1][:200]})") \
            from None
    if not m.lungs.any() and not m.bone.any():
        raise CTARRError(f"{name}: no lungs and no bone above {HU_BONE:.0f} HU found; is it a CT in Hounsfield units?")
    tf, info = coarse_pose(m, atlas)
    if refine:
        tf, info["score"] = refine_pose(m, atlas, tf)
    if not info["orientation_searched"]:
        warnings.note(f"HU anatomy: less than {MIN_SEARCH_LUNG_ML:.0f} ml of lung and {MIN_SEARCH_BONE_ML:.0f} ml of "
                      "bone in view; the header orientation was kept for labelling")
    else:
        warnings.note(f"HU anatomy: orientation {tf.orientation_text} (3-D Dice {info['score']:.2f}, header "
                      f"orientation {info['header_score']:.2f}); the registration keeps it")
    observed = np.zeros(N_GROUPS, bool)
    for g in LUNGS + BONES:
        observed[GROUPS.index(g)] = atlas.observed[GROUPS.index(g)] or g == "skull"
    labels = m.geometry.image(label_groups(m, tf, atlas))
    return AnatomyMasks(labels, observed, f"{source} (HU anatomy: lungs, bones)".strip(), (tf.k_rot, tf.flip),
                        kind="hu")


class HUAnatomy(AnatomySource):
    """``-anatomy_model hu``: anatomy from the CT's intensities (no network, no files)."""

    reads_voxels = True

    def __init__(self, atlas: Atlas | str | None = None, default: bool = False):
        self.atlas = atlas if isinstance(atlas, Atlas) else None
        self.atlas_path = None if isinstance(atlas, Atlas) else atlas
        self.default = default           # used because the command was given no anatomy option

    def prepare(self, cases: dict[str, list[str]]) -> None:
        self.cases = dict(cases)

    def stamp(self, case: str) -> dict:
        return {"model": "hu", **({"because": "no -anatomy_seg or -anatomy_model was given"} if self.default else {})}

    def load(self, case: str, warnings: WarningLog) -> AnatomyMasks:
        files = getattr(self, "cases", {}).get(case)
        if not files:
            raise CTARRError(f"{case}: no image to compute the HU anatomy from")
        return self.from_image(read_image(files[0]), warnings, case)

    def from_image(self, image: sitk.Image, warnings: WarningLog, case: str = "") -> AnatomyMasks:
        """The HU anatomy of an image already read."""
        if self.atlas is None:
            self.atlas = Atlas.load(self.atlas_path)
        return hu_anatomy(image, self.atlas, warnings, case)
