"""Anatomy from the CT's own intensities, with no network (``-anatomy_model hu``).

At 3 mm: the body (largest component above -300 HU, holes filled slice by slice, the table cut
off by an opening), the lungs (air below -400 HU inside the body in components that hold lung
tissue: fewer than 40 % of their voxels below -900 HU, which tells them from bowel gas and
outside air) and the skeleton (above 150 HU inside the body). These masks are registered to the
matching unions of the atlas' channels (all lungs, all bones) over the eight orientations of the
search; in the pose found, each lung and bone voxel takes the atlas group most probable there
(left / right lung, ribs, vertebrae by level, sacrum, hips; bone above the atlas = skull), so the
result is an ordinary group map: the usual registration, trust rule and QC apply unchanged.
Organs are *unobserved* (weight 0), as for a map that cannot express them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .anatomy import GROUPS, N_GROUPS, AnatomyMasks
from .atlas import Atlas
from .errors import CTARRError, WarningLog
from .geometry import Geometry
from .io import canonical, read_image
from .transform import AtlasTransform, orientation_matrix

HU_BODY, HU_AIR, HU_BONE, HU_GAS = -300.0, -400.0, 150.0, -900.0
#: an air component with more than this share of voxels below HU_GAS is gas, not lung
MAX_GAS_SHARE = 0.4
#: smallest lung component kept (ml)
MIN_LUNG_ML = 8.0
#: below this lung volume (ml) the bone alone cannot tell the orientation: the header's is kept
MIN_SEARCH_LUNG_ML = 50.0
#: a bone voxel takes a bone group only where the atlas gives it at least this probability
MIN_BONE_PROB = 0.05
#: scales tried by the coarse pose along z (slice profiles) and in xy (axial projections)
Z_SCALES = tuple(np.round(np.arange(0.8, 1.26, 0.05), 2))
XY_SCALES = (0.85, 0.92, 1.0, 1.08, 1.17)
SPACING = 3.0
LUNGS = ("lung_left", "lung_right")
BONES = ("skull", "vertebrae_C", "ribs_left", "ribs_right", "sternum", "vertebrae_T", "vertebrae_L", "sacrum",
         "hip_left", "hip_right")
_CACHE: dict = {}


@dataclass(frozen=True)
class HUMasks:
    """Body, lungs and bone on an aligned 3 mm grid (``[z, y, x]`` bool arrays)."""
    geometry: Geometry
    body: np.ndarray
    lungs: np.ndarray
    bone: np.ndarray


def hu_on_grid(image: sitk.Image) -> tuple[np.ndarray, Geometry]:
    """The CT in HU on an aligned (LPS) 3 mm grid; finer scans are smoothed before resampling."""
    img = sitk.Cast(canonical(image), sitk.sitkFloat32)
    geo = Geometry.of(img)
    if np.allclose(geo.matrix, np.eye(3), atol=1e-6) and np.allclose(geo.spacing, SPACING, atol=1e-3):
        return sitk.GetArrayFromImage(img), geo
    sigma = [max(0.0, 0.5 * (SPACING - s)) for s in geo.spacing_xyz]
    if max(sigma) > 0:
        img = sitk.SmoothingRecursiveGaussian(img, sigma)
    grid = geo.resampling_grid(SPACING)
    out = sitk.Resample(img, grid.to_reference(sitk.sitkFloat32), sitk.Transform(), sitk.sitkLinear, -1024.0)
    return sitk.GetArrayFromImage(out), grid


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    size = np.bincount(lab.ravel())
    size[0] = 0
    return lab == size.argmax()


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Holes filled in every axial slice (the z faces padded so they seed nothing)."""
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndi.generate_binary_structure(2, 1)
    return ndi.binary_fill_holes(np.pad(mask, ((1, 1), (0, 0), (0, 0)), constant_values=True), plane)[1:-1]


def hu_masks(image: sitk.Image) -> HUMasks:
    """Body, lungs and bone of a CT by HU thresholds at 3 mm."""
    arr, geo = hu_on_grid(image)
    arr = np.maximum(arr, -1024.0)
    body = _largest(ndi.binary_opening(arr > HU_BODY))
    inside = _fill_slices(body)
    lab, n = ndi.label((arr < HU_AIR) & inside & ~body)
    size = np.bincount(lab.ravel(), minlength=n + 1)
    gas = np.bincount(lab.ravel(), weights=(arr < HU_GAS).ravel(), minlength=n + 1)
    keep = (size * SPACING ** 3 / 1000.0 >= MIN_LUNG_ML) & (gas < MAX_GAS_SHARE * np.maximum(size, 1))
    keep[0] = False
    lungs = keep[lab]
    bone = _fill_slices(ndi.binary_closing((arr > HU_BONE) & inside)) & ~lungs
    return HUMasks(geo, body, lungs, bone)


# ------------------------------------------------------------------ the atlas side
def _atlas_views(atlas: Atlas) -> dict:
    """The atlas as the HU masks see it, cached per atlas: the unions of its lung and bone
    channels (2, Z, Y, X), their slice profiles (2, Z), and each group's probability spread by
    one voxel (so that voxels just off an atlas structure still find it)."""
    key = atlas.atlas_id if atlas.atlas_id != "unknown" else id(atlas)
    if key not in _CACHE:
        idx = {g: GROUPS.index(g) for g in LUNGS + BONES if atlas.observed[GROUPS.index(g)]}
        union = np.stack([np.clip(sum(atlas.prob[idx[g]] for g in names if g in idx), 0, 1)
                          for names in (LUNGS, BONES)]).astype(np.float32)
        spread = {g: ndi.maximum_filter(atlas.prob[i], size=3) for g, i in idx.items()}
        _CACHE[key] = {"union_prob": union, "profiles": union.sum((2, 3)), "spread": spread}
    return _CACHE[key]


# ------------------------------------------------------------------ coarse pose by projections
def _profile_dice(q: np.ndarray, pa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D soft Dice of the binned scan profiles ``q`` (C, L) against every placement of them on
    the atlas profiles ``pa`` (C, N): (dice per placement (C, N + L - 1), atlas index of bin 0)."""
    L = q.shape[1]
    pad = np.pad(pa, ((0, 0), (L - 1, L - 1)))
    win = np.lib.stride_tricks.sliding_window_view(pad, L, axis=1)          # (C, N + L - 1, L)
    inter = np.minimum(win, q[:, None, :]).sum(2)
    den = q.sum(1)[:, None] + (win * (q[:, None, :] > 0).any(0)).sum(2)
    return 2 * inter / np.maximum(den, 1e-9), np.arange(-(L - 1), pa.shape[1])


def _z_pose(scan_prof: np.ndarray, z0: float, atlas_prof: np.ndarray, a0: float, a_sp: float, flip: bool,
            scales: tuple[float, ...] = Z_SCALES) -> tuple[float, float, float, int, int]:
    """Best (score, scale, z translation, first and last atlas slice) of the scan's slice profiles
    (C, Z; areas, scaled by ``scale`` squared as an isotropic zoom would) resampled onto the atlas
    slices and slid along the atlas' profiles (C, N), for one z direction."""
    sign = -1.0 if flip else 1.0
    prof = scan_prof[:, ::-1] if flip else scan_prof
    n = prof.shape[1]
    z_first = z0 + SPACING * (n - 1) if flip else z0        # world z of profile entry 0
    w = prof.sum(1) / max(prof.sum(), 1e-9)
    best = (-1.0, 1.0, 0.0, 0, 0)
    for s in scales:
        pos = np.arange(int(np.ceil(s * n * SPACING / a_sp))) * a_sp / (s * SPACING)
        q = np.stack([np.interp(pos, np.arange(n), c, right=0.0) for c in prof]) * s ** 2
        dice, start = _profile_dice(q, atlas_prof)
        score = (w[:, None] * dice).sum(0)
        i = int(np.argmax(score))
        if score[i] > best[0]:
            best = (float(score[i]), float(s), a0 + a_sp * start[i] - s * sign * z_first,
                    int(max(start[i], 0)), int(min(start[i] + q.shape[1], atlas_prof.shape[1])))
    return best


def _xy_pose(maps: np.ndarray, geo: Geometry, amaps: np.ndarray, atlas: Atlas, k: int,
             scale: float) -> tuple[float, np.ndarray]:
    """(2-D soft Dice, xy translation) of the scan's axial projections (C, Y, X) turned by ``k``
    quarter turns, scaled and centred on the atlas' projections (C, Y, X) of the matched slab."""
    R = scale * orientation_matrix(k, (False, False, False))[:2, :2].astype(float)
    yy, xx = np.nonzero(maps.sum(0) > 0)
    pts = np.stack([geo.origin[0] + SPACING * xx, geo.origin[1] + SPACING * yy], 1) @ R.T
    wts = maps[:, yy, xx]                                                       # (C, P)
    ay, ax = np.nonzero(amaps.sum(0) > 0)
    apts = np.stack([atlas.origin[0] + atlas.spacing[0] * ax, atlas.origin[1] + atlas.spacing[1] * ay], 1)
    aw = amaps[:, ay, ax].sum(0)
    t = (aw @ apts) / max(aw.sum(), 1e-9) - (wts.sum(0) @ pts) / max(wts.sum(), 1e-9)
    idx = np.rint((pts + t - atlas.origin[:2]) / atlas.spacing[:2]).astype(int)
    ok = (idx >= 0).all(1) & (idx[:, 0] < amaps.shape[2]) & (idx[:, 1] < amaps.shape[1])
    inter = np.zeros(len(maps))
    inter_vals = np.minimum(wts[:, ok], amaps[:, idx[ok, 1], idx[ok, 0]])
    inter += inter_vals.sum(1)
    dice = 2 * inter / np.maximum(wts.sum(1) + amaps.sum((1, 2)), 1e-9)
    w = wts.sum(1) / max(wts.sum(), 1e-9)
    return float((w * dice).sum()), t


def coarse_pose(m: HUMasks, atlas: Atlas, header_preference: float = 0.03) -> tuple[AtlasTransform, dict]:
    """Orientation, z scale and translation of the HU masks on the atlas from their slice profiles
    (z direction, scale, slab) and axial projections (xy quarter turn, xy centre). A turn or
    flip is taken only when it beats the header orientation by ``header_preference``."""
    v = _atlas_views(atlas)
    chans = np.stack([m.lungs, m.bone]).astype(np.float32)
    prof, aprof = chans.sum((2, 3)), v["profiles"]
    results = []
    for flip in (False, True):
        zs, s, tz, lo, hi = _z_pose(prof, m.geometry.origin[2], aprof, atlas.origin[2], atlas.spacing[2], flip)
        amaps = v["union_prob"][:, lo:max(hi, lo + 1)].sum(1)
        for k in range(4):
            xs, txy, sxy = max(_xy_pose(chans.sum(1), m.geometry, amaps, atlas, k, f) + (f,) for f in XY_SCALES)
            results.append({"score": zs + xs, "k": k, "flip": flip, "scale": [sxy, sxy, s], "t": np.r_[txy, tz]})
    header = results[0]
    best = max(results, key=lambda r: r["score"])
    searched = m.lungs.sum() * SPACING ** 3 / 1000.0 >= MIN_SEARCH_LUNG_ML
    if not searched or best["score"] < header["score"] + header_preference:
        best = header
    tf = AtlasTransform(best["k"], (False, False, best["flip"]), np.array(best["scale"]), best["t"])
    return tf, {"score": round(best["score"], 3), "header_score": round(header["score"], 3),
                "orientation_searched": bool(searched)}


# ------------------------------------------------------------------ groups from the atlas
def label_groups(m: HUMasks, tf: AtlasTransform, atlas: Atlas) -> np.ndarray:
    """Group label map (Z, Y, X) of the HU masks: each lung and bone voxel, mapped by ``tf``,
    takes the most probable atlas lung / bone group there (probabilities spread by a voxel);
    bone above the atlas is skull, bone where the atlas has no bone stays unlabelled."""
    spread = _atlas_views(atlas)["spread"]
    labels = np.zeros(m.geometry.shape_zyx, np.uint8)
    for names, mask in ((LUNGS, m.lungs), (BONES, m.bone)):
        names = [g for g in names if g in spread]
        zyx = np.argwhere(mask)
        if not len(zyx) or not names:
            continue
        pts = tf.to_atlas(m.geometry.origin + zyx[:, ::-1] * m.geometry.spacing)
        idx = np.rint((pts - atlas.origin) / atlas.spacing).astype(int)
        size = np.array(atlas.shape_zyx[::-1])
        ok = np.all((idx >= 0) & (idx < size), 1)
        p = np.zeros((len(names), len(idx)), np.float32)
        p[:, ok] = np.stack([spread[g][idx[ok, 2], idx[ok, 1], idx[ok, 0]] for g in names])
        best = p.argmax(0)
        gid = np.array([GROUPS.index(g) + 1 for g in names], np.uint8)[best]
        if names[0] == LUNGS[0]:
            gid = np.where(p.max(0) > 0, gid, 0)          # lung outside the atlas' lungs: unlabelled
        else:
            top = atlas.origin[2] + (size[2] - 0.5) * atlas.spacing[2]
            gid = np.where(p.max(0) >= MIN_BONE_PROB, gid, 0)
            if "skull" not in names:
                gid[pts[:, 2] > top] = GROUPS.index("skull") + 1
        labels[tuple(zyx.T)] = gid
    return labels


def hu_anatomy(image: sitk.Image, atlas: Atlas, warnings: WarningLog | None = None,
               source: str = "") -> AnatomyMasks:
    """The HU anatomy of a CT as an ordinary group map (lungs and bones observed, organs not)."""
    warnings = warnings if warnings is not None else WarningLog()
    m = hu_masks(image)
    if not m.lungs.any() and not m.bone.any():
        raise CTARRError(f"{source or 'image'}: no lungs and no bone above {HU_BONE:.0f} HU found; "
                         "is it a CT in Hounsfield units?")
    tf, info = coarse_pose(m, atlas)
    if not info["orientation_searched"]:
        warnings.note(f"HU anatomy: less than {MIN_SEARCH_LUNG_ML:.0f} ml of lung in view; the header orientation "
                      "was kept for labelling the bones")
    observed = np.zeros(N_GROUPS, bool)
    for g in LUNGS + BONES:
        observed[GROUPS.index(g)] = atlas.observed[GROUPS.index(g)] or g == "skull"
    labels = m.geometry.image(label_groups(m, tf, atlas))
    return AnatomyMasks(labels, observed, f"{source} (HU anatomy: lungs, bones)".strip())


class HUAnatomy:
    """``-anatomy_model hu``: anatomy from the CT's intensities (no network, no files)."""

    def __init__(self, atlas: Atlas | str | None = None):
        self.atlas = atlas if isinstance(atlas, Atlas) else None
        self.atlas_path = None if isinstance(atlas, Atlas) else atlas

    def prepare(self, cases: dict[str, list[str]]) -> None:
        self.cases = dict(cases)

    def load(self, case: str, warnings: WarningLog) -> AnatomyMasks:
        if self.atlas is None:
            self.atlas = Atlas.load(self.atlas_path)
        files = self.cases.get(case)
        if not files:
            raise CTARRError(f"{case}: no image to compute the HU anatomy from")
        return hu_anatomy(read_image(files[0]), self.atlas, warnings, case)
