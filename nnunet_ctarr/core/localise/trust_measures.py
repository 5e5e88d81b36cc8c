"""What the trust rule measures (:mod:`.trust`): anatomy outside the atlas, scan anatomy vs atlas
inside a region's boxes, the region's organ in the image and in the crops, and how much of the
atlas's organ (or of the region's boxes) the registration places in the field of view."""
from __future__ import annotations

import numpy as np

from ..anatomy.atlas import Atlas
from ..anatomy.groups import GROUPS, group_of
from ..base.geometry import Geometry
from ..regions.cropping import CropPlan, plan_crops
from ..regions.region import Region

#: the region Dice needs at least this much (ml) atlas anatomy the scan can express inside the boxes
MIN_REGION_ATLAS_ML = 20.0


def labelled_voxels(loc) -> tuple[np.ndarray, np.ndarray]:
    """(world position of every labelled voxel of the scan's anatomy volume, its group index),
    computed once per localisation."""
    if "labelled_voxels" not in loc.cache:
        vol = loc.anatomy_volume
        zyx = np.argwhere(vol.labels > 0)
        loc.cache["labelled_voxels"] = (vol.origin + zyx[:, ::-1] * vol.spacing,
                                        vol.labels[tuple(zyx.T)].astype(np.intp) - 1)
    return loc.cache["labelled_voxels"]


def outside_atlas(loc, atlas: Atlas) -> tuple[float, list[str], str]:
    """(share of the scan's anatomy volume outside the atlas, the groups concerned, above/below)."""
    world, groups = labelled_voxels(loc)
    if not len(groups):
        return 0.0, [], ""
    pts = loc.transform.to_atlas(world)
    idx = np.rint((pts - atlas.origin) / atlas.spacing).astype(int)
    size = np.array(atlas.shape_zyx[::-1])
    on_grid = np.all((idx >= 0) & (idx < size), 1)
    cov = np.zeros(len(idx))
    cov[on_grid] = atlas.coverage[idx[on_grid, 2], idx[on_grid, 1], idx[on_grid, 0]]
    out = (cov <= 0) | ~atlas.observed[groups]
    names = [GROUPS[g] for g in np.unique(groups[out])]
    mid_z = atlas.origin[2] + 0.5 * (size[2] - 1) * atlas.spacing[2]       # the atlas's middle in z
    where = ("above" if np.median(pts[out, 2]) > mid_z else "below") if out.any() else ""
    return float(out.mean()), names, where


def target_groups(region: Region) -> list[int]:
    """Group indices of the structures the region was learned for (empty when none maps to a group)."""
    names = region.provenance.get("roi_structures_totalsegmentator_v2") or region.provenance.get("labels") or []
    groups = {group_of(str(n)) for n in names} - {None}
    return sorted(GROUPS.index(g) for g in groups)


def labels_on_atlas_box(vol, tf, origin: np.ndarray, spacing: np.ndarray, n_xyz: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The scan's group labels (nearest voxel) at the centres of an atlas-frame box grid that lie in
    the scan's field of view: (labels (Z, Y, X), start, stop) with start/stop the xyz box indices of
    that part (a box: each atlas axis reads one scan axis, monotonically); None when no centre is in
    view. The transform is axis-aligned: index arithmetic, no interpolation."""
    M, shape_xyz = tf.M, np.array(vol.shape_zyx[::-1])
    perm = [int(np.nonzero(M[i])[0][0]) for i in range(3)]          # atlas axis i <- scan axis perm[i]
    index, start, stop = [None] * 3, np.zeros(3, int), np.zeros(3, int)
    for i, j in enumerate(perm):
        a = origin[i] + spacing[i] * np.arange(n_xyz[i])
        k = np.rint(((a - tf.translation[i]) / tf.scale[i] * M[i, j] - vol.origin[j]) / vol.spacing[j]).astype(int)
        ok = np.nonzero((k >= 0) & (k < shape_xyz[j]))[0]
        if not len(ok):
            return None
        start[i], stop[i] = ok[0], ok[-1] + 1
        index[j] = k[start[i]:stop[i]]
    lab = vol.labels[np.ix_(index[2], index[1], index[0])]           # dims: scan z, y, x
    return lab.transpose([2 - perm[2 - e] for e in range(3)]), start, stop   # dims: atlas z, y, x


def _used_prob(atlas: Atlas, use: np.ndarray) -> np.ndarray:
    """The atlas's summed probability of the groups ``use`` where the atlas has coverage (0
    elsewhere), (Z, Y, X); cached per atlas and groups."""
    key = ("trust_used_prob", use.tobytes())
    if key not in atlas._cache:
        total = atlas.prob_sum(np.nonzero(use)[0])
        total[~_covered(atlas)] = 0
        atlas._cache[key] = total
    return atlas._cache[key]


def _covered(atlas: Atlas) -> np.ndarray:
    """Where the atlas has coverage (Z, Y, X), cached."""
    if "trust_covered" not in atlas._cache:
        atlas._cache["trust_covered"] = atlas.coverage > 0
    return atlas._cache["trust_covered"]


def region_dice(loc, atlas: Atlas, plan: CropPlan) -> float:
    """Soft Dice of scan anatomy vs atlas inside the region's boxes and the field of view (atlas
    frame, groups both the scan and the atlas can express); NaN when there is nothing to compare: the
    atlas holds less than :data:`MIN_REGION_ATLAS_ML` of those groups there (e.g. an HU anatomy, which
    sees lungs and bones, in the gallbladder's box). Per voxel the scan's group picks its own atlas
    probability (one gather, no per-group arrays)."""
    vol, g = loc.anatomy_volume, atlas.grid
    use = vol.observed & atlas.observed
    used_lut = np.r_[False, use]                                     # label value -> group in use
    total, covered = _used_prob(atlas, use), _covered(atlas)
    inter = den = atlas_mass = 0.0
    for box in plan.usable:
        lo = np.clip(np.floor((box.atlas_mm[0] - g.origin) / g.spacing).astype(int), 0, g.size_xyz)
        hi = np.clip(np.ceil((box.atlas_mm[1] - g.origin) / g.spacing).astype(int) + 1, 0, g.size_xyz)
        seen = labels_on_atlas_box(vol, loc.transform, g.origin + lo * g.spacing, g.spacing, hi - lo) \
            if np.all(hi > lo) else None
        if seen is None:
            continue
        lab, lo, hi = seen[0], lo + seen[1], lo + seen[2]             # the part of the box in view
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        z, y, x = np.nonzero(used_lut[lab] & covered[sl])
        inter += float(atlas.prob_values((lab[z, y, x].astype(np.intp) - 1, z + lo[2], y + lo[1], x + lo[0])).sum())
        a = float(total[sl].sum())
        den += a + float(len(z))
        atlas_mass += a
    if atlas_mass * np.prod(g.spacing) / 1000.0 < MIN_REGION_ATLAS_ML:
        return float("nan")
    return 2 * inter / den


def _organ_index(loc, image: Geometry, groups: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(continuous image index of every anatomy voxel of ``groups``, whether it lies in the image),
    computed once per localisation, image and groups."""
    key = ("organ_index", tuple(groups), image)
    if key not in loc.cache:
        world, group = labelled_voxels(loc)
        idx = image.world_to_index(world[np.isin(group, groups)])
        loc.cache[key] = idx, np.all((idx > -0.5) & (idx < np.array(image.size_xyz) - 0.5), 1)
    return loc.cache[key]


def organ_in_crop(loc, plan: CropPlan, image: Geometry, groups: list[int]) -> tuple[float, float]:
    """(ml of the region's own organ in the image per the anatomy, share of it inside the crops)."""
    idx, in_image = _organ_index(loc, image, groups)
    in_crop = np.zeros(len(idx), bool)
    for b in plan.usable:
        in_crop |= np.all((idx > b.start_xyz - 0.5) & (idx < b.stop_xyz - 0.5), 1)
    n = int(in_image.sum())
    return n * loc.anatomy_volume.voxel_volume / 1000.0, (float((in_crop & in_image).sum()) / n if n else float("nan"))


def _group_prob(atlas: Atlas, groups: list[int]) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """The atlas's summed probability of ``groups``, below 1 % set to 0, over the (z, y, x) box that
    holds all of it (outside it is 0), and that box; cached."""
    key = ("trust_group_prob", tuple(groups))
    if key not in atlas._cache:
        box = atlas.support(groups) or (slice(0, 0),) * 3
        prob = atlas.prob_sum(groups, box)
        prob[prob <= 0.01] = 0
        atlas._cache[key] = prob, box
    return atlas._cache[key]


def _inside_along_axes(tf, atlas: Atlas, image: Geometry) -> list[np.ndarray] | None:
    """Whether each atlas voxel maps into the image, as one mask per atlas axis (x, y, z) — the
    transform is axis-aligned, so for an image stored along the world axes each image axis depends on
    one atlas axis; None for an oblique image."""
    if not np.allclose(np.abs(image.matrix), np.round(np.abs(image.matrix)), atol=1e-6):
        return None
    size = np.array(atlas.shape_zyx[::-1])
    base = image.world_to_index(tf.to_world(atlas.origin))
    ok = [np.ones(n, bool) for n in size]
    for i in range(3):
        pts = atlas.origin + np.outer(np.arange(size[i]), np.eye(3)[i] * atlas.spacing[i])
        idx = image.world_to_index(tf.to_world(pts))                 # (N_i, 3): the image axes atlas axis i moves
        for m in np.nonzero(np.abs(idx[-1] - base) > 1e-9)[0] if size[i] > 1 else []:
            ok[i] &= (idx[:, m] > -0.5) & (idx[:, m] < image.size_xyz[m] - 0.5)
    return ok


def atlas_in_view(loc, atlas: Atlas, region: Region, image: Geometry) -> tuple[float, float, str]:
    """(share in the image's field of view, the ml that share is in this scan, of what): the share of
    the atlas's probability mass of the region's organs that the registration maps into the image;
    for a region of organs the atlas lacks (pancreas, colon, ...), the share of the volume of the
    region's tight boxes (no margin)."""
    groups = [g for g in target_groups(region) if atlas.observed[g]]
    tf = loc.transform
    if groups:
        (prob, box), axes = _group_prob(atlas, groups), _inside_along_axes(tf, atlas, image)
        if axes is not None:
            wx, wy, wz = (a[s].astype(np.float32) for a, s in zip(axes, box[::-1]))   # three matrix-vector
            inside = float(((prob @ wx) @ wy) @ wz)                                   # products
        else:                                                         # an oblique image: voxel by voxel
            zyx = np.argwhere(prob > 0)                                # in the box; atlas index + start
            atlas_xyz = (zyx + [s.start for s in box])[:, ::-1]
            idx = image.world_to_index(tf.to_world(atlas.origin + atlas_xyz * atlas.spacing))
            ok = np.all((idx > -0.5) & (idx < np.array(image.size_xyz) - 0.5), 1)
            inside = float(prob[tuple(zyx[ok].T)].sum())
        total = float(prob.sum())
        ml = inside * float(np.prod(atlas.spacing)) / float(np.prod(tf.scale)) / 1000.0
        return (inside / total if total > 0 else 0.0), ml, ", ".join(GROUPS[g] for g in groups)
    plan = plan_crops(image, tf, region.boxes_mm)
    full = np.array([np.prod((b.full_stop_xyz - b.full_start_xyz).astype(float)) for b in plan.boxes])
    frac = np.array([b.fraction_inside for b in plan.boxes])
    share = float((full * frac).sum() / full.sum()) if full.sum() > 0 else 0.0
    return share, float((full * frac).sum() * np.prod(image.spacing)) / 1000.0, f"region '{region.name}''s boxes"
