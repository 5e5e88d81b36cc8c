"""The coarse pose of HU masks on the atlas (``-anatomy_model hu``, step 2).

The masks are compared with the unions of the atlas' channels (all lungs, all bones): per z
direction the slice profiles give scale and slab (1-D Dice slid along the atlas), per quarter
turn the axial projections give the xy scale and centre; the eight orientation candidates are
ranked by their 3-D Dice with the atlas.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..base.transform import AtlasTransform, orientation_matrix
from .atlas import Atlas
from .groups import GROUPS
from .hu_masks import HUMasks

#: the orientation search needs this much lung or bone (ml) in view; below, the header's is kept
MIN_SEARCH_LUNG_ML, MIN_SEARCH_BONE_ML = 50.0, 250.0
#: a turn or flip of the header orientation is taken only when its 3-D Dice is at least MIN_TURN_DICE
#: and beats the header's by TURN_MARGIN and by the factor TURN_RATIO (docs/out_of_sample.md)
MIN_TURN_DICE, TURN_MARGIN, TURN_RATIO = 0.35, 0.10, 1.25
#: sweeps of the coordinate search per step size (refine_pose), and the scales it may reach
REFINE_SWEEPS, REFINE_SCALES = 6, (0.8, 1.25)
#: a channel (lungs, bone) with this much volume (ml) weighs fully in the pose's Dice
FULL_WEIGHT_ML = 100.0
#: Gaussian sigma (atlas voxels) of the unions the refinement compares with
SMOOTH_VOXELS = 1.5
#: a bone voxel takes a bone group only where the atlas gives it at least this probability
MIN_BONE_PROB = 0.05
#: scales tried by the coarse pose along z (slice profiles) and in xy (axial projections)
Z_SCALES = tuple(np.round(np.arange(0.8, 1.26, 0.05), 2))
XY_SCALES = (0.85, 0.92, 1.0, 1.08, 1.17)
LUNGS = ("lung_left", "lung_right")
BONES = ("skull", "vertebrae_C", "ribs_left", "ribs_right", "sternum", "vertebrae_T", "vertebrae_L", "sacrum",
         "hip_left", "hip_right")


def atlas_views(atlas: Atlas) -> dict:
    """The atlas as the HU masks see it, cached per atlas: the unions of its lung and bone channels
    (2, Z, Y, X), smoothed for the refinement, their slice profiles (2, Z) and summed-volume table,
    and the lung and bone group maps (:func:`_lung_sides`, :func:`_bone_groups`)."""
    if "hu_views" not in atlas._cache:
        idx = {g: GROUPS.index(g) for g in LUNGS + BONES if atlas.observed[GROUPS.index(g)]}
        union = np.stack([np.clip(atlas.prob_sum([idx[g] for g in names if g in idx]), 0, 1)
                          for names in (LUNGS, BONES)])
        cumsum = np.pad(union, ((0, 0), (1, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2).cumsum(3)
        smooth = np.stack([ndi.gaussian_filter(u, SMOOTH_VOXELS, truncate=2.0) for u in union])
        atlas._cache["hu_views"] = {"union_prob": union, "union_smooth": smooth, "profiles": union.sum((2, 3)),
                                    "cumsum": cumsum, "lung_label": _lung_sides(atlas, idx),
                                    "bone_label": _bone_groups(atlas, idx)}
    return atlas._cache["hu_views"]


def _lung_sides(atlas: Atlas, idx: dict) -> np.ndarray:
    """Left or right lung for every atlas voxel in the slices the lungs span (+- 5): the side of the
    slice's midline between the two lungs' centres, so that every lung voxel of a scan finds its
    side, however far it lies from the atlas' lungs."""
    out = np.zeros(atlas.shape_zyx, np.uint8)
    if not {"lung_left", "lung_right"} <= idx.keys():
        return out
    x = atlas.origin[0] + atlas.spacing[0] * np.arange(atlas.shape_zyx[2])
    mass = [atlas.prob_values((idx[g],)).sum(1) for g in ("lung_left", "lung_right")]          # (Z, X)
    com = [(mm @ x) / np.maximum(mm.sum(1), 1e-9) for mm in mass]
    both = (mass[0].sum(1) > 0) & (mass[1].sum(1) > 0)
    mid = np.full(len(both), 0.5 * (com[0][both].mean() + com[1][both].mean()) if both.any() else float(x.mean()))
    mid[both] = 0.5 * (com[0][both] + com[1][both])
    span = ndi.binary_dilation((mass[0] + mass[1]).sum(1) > 0, iterations=5)
    left, right = GROUPS.index("lung_left") + 1, GROUPS.index("lung_right") + 1
    out[:] = np.where(x[None, :] >= mid[:, None], left, right)[:, None, :]          # +x = patient left
    out[~span] = 0
    return out


def _bone_groups(atlas: Atlas, idx: dict) -> np.ndarray:
    """Each voxel: the most probable bone group after spreading each group's probability by one voxel
    (voxels just off an atlas bone still find it), where that is at least :data:`MIN_BONE_PROB`."""
    best = np.zeros(atlas.shape_zyx, np.float32)
    out = np.zeros(atlas.shape_zyx, np.uint8)
    for g in (g for g in BONES if g in idx):
        sl = atlas.support([idx[g]])                 # the box of its nonzero probabilities
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        spread = ndi.maximum_filter(atlas.prob_values((idx[g],) + sl), size=3)
        take = (spread > best[sl]) & (spread >= MIN_BONE_PROB)
        best[sl][take], out[sl][take] = spread[take], GROUPS.index(g) + 1
    return out


def channel_weights(ml: np.ndarray) -> np.ndarray:
    """Weights of the lung and bone channels in the pose's Dice: equal once a channel holds
    :data:`FULL_WEIGHT_ML`, less below (the lungs, rarer and more telling, are not outvoted by bone
    the atlas may not have: a skull, arms)."""
    w = np.minimum(np.asarray(ml, float) / FULL_WEIGHT_ML, 1.0)
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))


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


def _z_pose(scan_prof: np.ndarray, z0: float, sp: float, atlas_prof: np.ndarray, a0: float, a_sp: float,
            flip: bool, scales: tuple[float, ...] = Z_SCALES) -> tuple[float, float, float, int, int]:
    """Best (score, scale, z translation, first and last atlas slice) of the scan's slice profiles
    (C, Z at ``sp`` mm; areas, scaled by ``scale`` squared as an isotropic zoom would) resampled onto
    the atlas slices and slid along the atlas' profiles (C, N), for one z direction."""
    sign = -1.0 if flip else 1.0
    prof = scan_prof[:, ::-1] if flip else scan_prof
    n = prof.shape[1]
    z_first = z0 + sp * (n - 1) if flip else z0        # world z of profile entry 0
    w = channel_weights(prof.sum(1) * sp ** 3 / 1000.0)
    best = (-1.0, 1.0, 0.0, 0, 0)
    for s in scales:
        pos = np.arange(int(np.ceil(s * n * sp / a_sp))) * a_sp / (s * sp)
        q = np.stack([np.interp(pos, np.arange(n), c, right=0.0) for c in prof]) * s ** 2
        dice, start = _profile_dice(q, atlas_prof)
        score = (w[:, None] * dice).sum(0)
        i = int(np.argmax(score))
        if score[i] > best[0]:
            best = (float(score[i]), float(s), a0 + a_sp * start[i] - s * sign * z_first,
                    int(max(start[i], 0)), int(min(start[i] + q.shape[1], atlas_prof.shape[1])))
    return best


def _xy_pose(pts: np.ndarray, wts: np.ndarray, amaps: np.ndarray, atlas: Atlas, k: int,
             scale: float, ml: float) -> tuple[float, np.ndarray]:
    """(2-D soft Dice, xy translation) of the scan's axial projections (points (P, 2) in world mm,
    weights (C, P)) turned by ``k`` quarter turns, scaled and centred on the atlas' projections
    (C, Y, X) of the matched slab."""
    R = scale * orientation_matrix(k, (False, False, False))[:2, :2].astype(float)
    p = pts @ R.T
    ay, ax = np.nonzero(amaps.sum(0) > 0)
    aw = amaps[:, ay, ax].sum(0)
    a_com = (aw @ np.stack([ax, ay], 1)) / max(aw.sum(), 1e-9) * atlas.spacing[:2] + atlas.origin[:2]
    t = a_com - (wts.sum(0) @ p) / max(wts.sum(), 1e-9)
    idx = np.rint((p + t - atlas.origin[:2]) / atlas.spacing[:2]).astype(int)
    ok = (idx >= 0).all(1) & (idx[:, 0] < amaps.shape[2]) & (idx[:, 1] < amaps.shape[1])
    inter = np.minimum(wts[:, ok], amaps[:, idx[ok, 1], idx[ok, 0]]).sum(1)
    dice = 2 * inter / np.maximum(wts.sum(1) + amaps.sum((1, 2)), 1e-9)
    return float((channel_weights(wts.sum(1) * ml) * dice).sum()), t


def _box_sum(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per-channel sum over the index box [lo, hi) (xyz) from a summed-volume table (C, Z+1, Y+1, X+1)."""
    total = np.zeros(c.shape[0])
    for corner in np.ndindex(2, 2, 2):                       # inclusion-exclusion over the 8 corners
        x, y, z = (hi[a] if corner[a] else lo[a] for a in range(3))
        total += (-1) ** (3 - sum(corner)) * c[:, z, y, x]
    return total


def _dice_3d(pts: list[np.ndarray], n: list[float], tf: AtlasTransform, box_w: tuple, atlas: Atlas,
             sp: float, smooth: bool = False) -> float:
    """Soft Dice of the lung and bone masks (points: world mm of a subsample of their voxels; ``n``:
    their voxel counts) with the atlas' unions under ``tf``, the atlas counted inside the scan's
    field of view ``box_w`` mapped; the channels weighed by :func:`channel_weights`, or by their
    volumes (``by_volume``: the refinement, where the larger channel holds more of the detail)."""
    v, field = atlas_views(atlas), "union_smooth" if smooth else "union_prob"
    size = np.array(atlas.shape_zyx[::-1])
    lo_w, hi_w = tf.box_to_atlas(*box_w)
    lo = np.clip(np.floor((lo_w - atlas.origin) / atlas.spacing).astype(int), 0, size)
    hi = np.clip(np.ceil((hi_w - atlas.origin) / atlas.spacing).astype(int) + 1, 0, size)
    mass = _box_sum(v["cumsum"], lo, hi) * np.prod(atlas.spacing) / sp ** 3
    out = []
    for ch, p in enumerate(pts):
        idx = np.rint((tf.to_atlas(p) - atlas.origin) / atlas.spacing).astype(int) if len(p) else np.zeros((0, 3), int)
        ok = np.all((idx >= 0) & (idx < size), 1)
        inter = float(v[field][ch][idx[ok, 2], idx[ok, 1], idx[ok, 0]].sum()) * n[ch] / max(len(p), 1)
        out.append(2 * inter / max(n[ch] + float(mass[ch]), 1e-9))
    return float(channel_weights(np.array(n) * sp ** 3 / 1000.0) @ np.array(out))


def _points(m: HUMasks, step: int = 2) -> tuple[list[np.ndarray], list[float], tuple]:
    """World mm of every ``step``-th voxel per axis of the lungs and the bone, their voxel counts,
    and the field of view's box (voxel centres)."""
    g = m.geometry
    pts = [g.origin + np.argwhere(x[::step, ::step, ::step])[:, ::-1] * step * g.spacing for x in (m.lungs, m.bone)]
    box = (g.origin, g.origin + (np.array(g.size_xyz) - 1) * g.spacing)
    return pts, [float(m.lungs.sum()), float(m.bone.sum())], box


def refine_pose(m: HUMasks, atlas: Atlas, tf: AtlasTransform) -> tuple[AtlasTransform, float]:
    """The coarse pose refined on the lungs and bone against the atlas' unions: coordinate search
    of the 3-D soft Dice over the translation (steps 8, 4, 2 mm) and the xy and z scales (steps 0.04,
    0.02, 0.01), orientation kept. Returns the transform and its Dice."""
    pts, n, box = _points(m, 3)
    sp = float(m.geometry.spacing[0])
    params = np.r_[tf.translation, tf.scale[0], tf.scale[2]]

    def score(p: np.ndarray) -> float:
        t = AtlasTransform(tf.k_rot, tf.flip, np.array([p[3], p[3], p[4]]), p[:3])
        return _dice_3d(pts, n, t, box, atlas, sp, smooth=True)

    best = score(params)
    for step_t, step_s in ((8.0, 0.04), (4.0, 0.02), (2.0, 0.01)):
        for _ in range(REFINE_SWEEPS):
            improved = False
            for i, step in enumerate((step_t,) * 3 + (step_s,) * 2):
                for sign in (1.0, -1.0):
                    trial = params.copy()
                    trial[i] += sign * step
                    if i >= 3 and not REFINE_SCALES[0] <= trial[i] <= REFINE_SCALES[1]:
                        continue
                    val = score(trial)
                    if val > best + 1e-4:
                        params, best, improved = trial, val, True
                        break
            if not improved:
                break
    return AtlasTransform(tf.k_rot, tf.flip, np.array([params[3], params[3], params[4]]), params[:3]), best


def coarse_pose(m: HUMasks, atlas: Atlas) -> tuple[AtlasTransform, dict]:
    """Orientation, scale and translation of the HU masks on the atlas. Per z direction the slice
    profiles give scale and slab, per quarter turn the axial projections give the xy scale and
    centre; the eight candidates are ranked by their 3-D Dice with the atlas. Headers are right far
    more often than not: a turn or flip is taken only when it is clearly better (:func:`_take_turn`)."""
    v, g = atlas_views(atlas), m.geometry
    sp = float(g.spacing[0])
    masks = (m.lungs, m.bone)
    prof = np.stack([x.sum((1, 2)) for x in masks]).astype(np.float32)
    proj = np.stack([x.sum(0) for x in masks]).astype(np.float32)
    yy, xx = np.nonzero(proj.sum(0) > 0)
    pts2, wts2 = g.origin[:2] + sp * np.stack([xx, yy], 1), proj[:, yy, xx]
    pts3, n3, box_w = _points(m)
    results = []
    for flip in (False, True):
        _, s, tz, lo, hi = _z_pose(prof, g.origin[2], sp, v["profiles"], atlas.origin[2], atlas.spacing[2], flip)
        amaps = v["union_prob"][:, lo:max(hi, lo + 1)].sum(1)
        for k in range(4):
            fits = [(*_xy_pose(pts2, wts2, amaps, atlas, k, f, m.voxel_ml), f) for f in XY_SCALES]
            _, txy, sxy = max(fits, key=lambda c: c[0])
            tf = AtlasTransform(k, (False, False, flip), np.array([sxy, sxy, s]), np.r_[txy, tz])
            results.append((_dice_3d(pts3, n3, tf, box_w, atlas, sp), tf))
    header, best = results[0], max(results, key=lambda r: r[0])
    ml = m.voxel_ml
    searched = n3[0] * ml >= MIN_SEARCH_LUNG_ML or n3[1] * ml >= MIN_SEARCH_BONE_ML
    if not (searched and _take_turn(best[0], header[0])):
        best = header
    return best[1], {"score": round(best[0], 3), "header_score": round(header[0], 3),
                     "orientation_searched": bool(searched),
                     "candidates": {f"{r[1].k_rot * 90} deg{', z flip' if r[1].flip[2] else ''}": round(r[0], 3)
                                    for r in results}}


def _take_turn(best: float, header: float) -> bool:
    """A non-header orientation is taken when its 3-D Dice is at least :data:`MIN_TURN_DICE` (the scan
    looks like the atlas at all) and beats the header orientation's by :data:`TURN_MARGIN` and by
    the factor :data:`TURN_RATIO`."""
    return best >= MIN_TURN_DICE and best >= header + TURN_MARGIN and best >= TURN_RATIO * header
