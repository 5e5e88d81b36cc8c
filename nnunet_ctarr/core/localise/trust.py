"""The one trust rule: may this localisation place this region's crop?

Every writer (crop, crop_dataset, evaluate, learn_region, prealign, the predictors) asks
:func:`assess`; an untrusted answer is what they fall back on (full volume, skip, or a marked
crop), never a user error. A localisation is untrusted when

* the anatomy was refused before registration (:class:`LocalisationUntrusted` from ``locate``:
  too few usable groups, anatomy and image not overlapping, anatomy outside the atlas);
* the registration Dice is below :data:`MIN_PLAUSIBLE_DICE` or the orientation is ambiguous;
* more than :data:`MAX_OUTSIDE_ATLAS` of the scan's anatomy lies outside the atlas (groups the
  atlas lacks, e.g. skull and brain, or voxels mapped where no atlas scan reached);
* for the region: the anatomy inside its boxes does not look like the atlas there (Dice below
  :data:`MIN_REGION_DICE`); or, for a region learned for organs the anatomy can express, the
  anatomy shows none of them in the image (:data:`MIN_ORGAN_ML`) or less than
  :data:`MIN_ORGAN_SHARE` of them inside the crops.

The thresholds were calibrated by ``benchmarks/trust_calibration.py`` (docs/trust.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..anatomy.atlas import Atlas
from ..anatomy.groups import GROUPS, group_of
from ..base.errors import LocalisationUntrusted
from ..base.geometry import Geometry, as_geometry
from ..regions.cropping import CropPlan
from ..regions.region import Region

#: below this mean soft Dice (6 mm level) the registration is implausible
MIN_PLAUSIBLE_DICE = 0.25
#: above this share of the scan's anatomy volume outside the atlas the scan is not one the atlas knows
MAX_OUTSIDE_ATLAS = 0.20
#: below this Dice between scan anatomy and atlas inside the region's boxes the crop is misplaced
MIN_REGION_DICE = 0.30
#: the region Dice needs at least this much (ml) atlas anatomy the scan can express inside the boxes
MIN_REGION_ATLAS_ML = 20.0
#: less than this (ml) of the region's own organ in the image: the organ is not in view
MIN_ORGAN_ML = 0.5
#: less than this share of the anatomy's organ (in the image) inside the crops: the crop is misplaced
MIN_ORGAN_SHARE = 0.90


@dataclass(frozen=True)
class Trust:
    """The verdict: ``trusted`` plus the reasons against and the measures it was based on."""
    trusted: bool
    reasons: tuple[str, ...] = ()
    measures: dict = field(default_factory=dict)

    @classmethod
    def refused(cls, error: LocalisationUntrusted) -> Trust:
        return cls(False, (str(error),))

    def to_dict(self) -> dict:
        return {"reasons": list(self.reasons),
                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.measures.items()}}

    def record(self, report: dict) -> dict:
        """Sidecar fields: ``trusted`` and ``trust`` (reasons and measures)."""
        report["trusted"] = self.trusted
        report["trust"] = self.to_dict()
        return report

    def text(self) -> str:
        return "; ".join(self.reasons)


def outside_atlas(loc, atlas: Atlas) -> tuple[float, list[str], str]:
    """(share of the scan's anatomy volume outside the atlas, the groups concerned, above/below)."""
    vol = loc.anatomy_volume
    zyx = np.argwhere(vol.labels > 0)
    if not len(zyx):
        return 0.0, [], ""
    groups = vol.labels[tuple(zyx.T)].astype(int) - 1
    pts = loc.transform.to_atlas(vol.origin + zyx[:, ::-1] * vol.spacing)
    idx = np.rint((pts - atlas.origin) / atlas.spacing).astype(int)
    size = np.array(atlas.shape_zyx[::-1])
    on_grid = np.all((idx >= 0) & (idx < size), 1)
    cov = np.zeros(len(idx))
    cov[on_grid] = atlas.coverage[idx[on_grid, 2], idx[on_grid, 1], idx[on_grid, 0]]
    out = (cov <= 0) | ~atlas.observed[groups]
    names = [GROUPS[g] for g in np.unique(groups[out])]
    top = atlas.origin[2] + 0.5 * (size[2] - 1) * atlas.spacing[2]
    where = ("above" if np.median(pts[out, 2]) > top else "below") if out.any() else ""
    return float(out.mean()), names, where


def scan_reasons(loc, atlas: Atlas) -> tuple[list[str], dict]:
    """Reasons against the scan's localisation as a whole, and its measures; computed once per
    localisation and atlas (every region of a scan, every model of a multi-model run asks)."""
    key = ("scan_reasons", atlas.atlas_id)
    if key not in loc.cache:
        loc.cache[key] = _scan_reasons(loc, atlas)
    reasons, measures = loc.cache[key]
    return list(reasons), dict(measures)


def _scan_reasons(loc, atlas: Atlas) -> tuple[list[str], dict]:
    reg = loc.registration
    reasons = []
    if reg.dice < MIN_PLAUSIBLE_DICE:
        reasons.append(f"registration Dice {reg.dice:.2f} < {MIN_PLAUSIBLE_DICE}: the anatomy looks implausible "
                       "or does not match the atlas")
    if reg.orientation_ambiguous:
        reasons.append("orientation ambiguous")
    share, names, where = outside_atlas(loc, atlas)
    if share > MAX_OUTSIDE_ATLAS:
        reasons.append(f"the atlas covers {atlas.group_span()}; {100 * share:.0f}% of this scan's anatomy "
                       f"({', '.join(names)}) lies {where} it")
    return reasons, {"registration_dice": float(reg.dice), "share_outside_atlas": share}


def target_groups(region: Region) -> list[int]:
    """Group indices of the structures the region was learned for (empty when none maps to a group)."""
    names = region.provenance.get("roi_structures_totalsegmentator_v2") or region.provenance.get("labels") or []
    groups = {group_of(str(n)) for n in names} - {None}
    return sorted(GROUPS.index(g) for g in groups)


def labels_on_atlas_box(vol, tf, origin: np.ndarray, spacing: np.ndarray, n_xyz: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The scan's group labels (nearest voxel) at the centres of an atlas-frame box grid, and
    whether each centre lies in the scan's field of view; (Z, Y, X) arrays. The transform is
    axis-aligned, so every atlas axis reads one scan axis: index arithmetic, no interpolation."""
    M, shape_xyz = tf.M, np.array(vol.shape_zyx[::-1])
    perm = [int(np.nonzero(M[i])[0][0]) for i in range(3)]          # atlas axis i <- scan axis perm[i]
    index, ok = [None] * 3, [None] * 3
    for i, j in enumerate(perm):
        a = origin[i] + spacing[i] * np.arange(n_xyz[i])
        k = np.rint(((a - tf.translation[i]) / tf.scale[i] * M[i, j] - vol.origin[j]) / vol.spacing[j]).astype(int)
        ok[i] = (k >= 0) & (k < shape_xyz[j])
        index[j] = np.clip(k, 0, shape_xyz[j] - 1)
    lab = vol.labels[np.ix_(index[2], index[1], index[0])]           # dims: scan z, y, x
    lab = lab.transpose([2 - perm[2 - e] for e in range(3)])         # dims: atlas z, y, x
    inside = ok[2][:, None, None] & ok[1][None, :, None] & ok[0][None, None, :]
    return lab, inside


def region_dice(loc, atlas: Atlas, plan: CropPlan) -> float:
    """Soft Dice of scan anatomy vs atlas inside the region's boxes and the field of view (atlas
    frame, groups both the scan and the atlas can express); NaN when there is nothing to compare: the
    atlas holds less than :data:`MIN_REGION_ATLAS_ML` of those groups there (e.g. an HU anatomy, which
    sees lungs and bones, in the gallbladder's box)."""
    vol, g = loc.anatomy_volume, atlas.grid
    use = vol.observed & atlas.observed
    ids = (np.arange(len(GROUPS)) + 1)[use][:, None, None, None]
    inter = den = atlas_mass = 0.0
    for box in plan.usable:
        lo = np.clip(np.floor((box.atlas_mm[0] - g.origin) / g.spacing).astype(int), 0, g.size_xyz)
        hi = np.clip(np.ceil((box.atlas_mm[1] - g.origin) / g.spacing).astype(int) + 1, 0, g.size_xyz)
        if np.any(hi <= lo):
            continue
        lab, inside = labels_on_atlas_box(vol, loc.transform, g.origin + lo * g.spacing, g.spacing, hi - lo)
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        w = inside & (atlas.coverage[sl] > 0)
        a, s = atlas.prob[(slice(None),) + sl][use] * w, (lab == ids) & w
        inter += float((a * s).sum())
        den += float(a.sum() + s.sum())
        atlas_mass += float(a.sum())
    if atlas_mass * np.prod(g.spacing) / 1000.0 < MIN_REGION_ATLAS_ML:
        return float("nan")
    return 2 * inter / den


def organ_in_crop(loc, plan: CropPlan, image: Geometry, groups: list[int]) -> tuple[float, float]:
    """(ml of the region's own organ in the image per the anatomy, share of it inside the crops)."""
    vol = loc.anatomy_volume
    zyx = np.argwhere(np.isin(vol.labels, np.asarray(groups) + 1))
    idx = image.world_to_index(vol.origin + zyx[:, ::-1] * vol.spacing)
    size = np.array(image.size_xyz)
    in_image = np.all((idx > -0.5) & (idx < size - 0.5), 1)
    in_crop = np.zeros(len(idx), bool)
    for b in plan.usable:
        in_crop |= np.all((idx > b.start_xyz - 0.5) & (idx < b.stop_xyz - 0.5), 1)
    n = int(in_image.sum())
    return n * vol.voxel_volume / 1000.0, (float((in_crop & in_image).sum()) / n if n else float("nan"))


def region_reasons(loc, atlas: Atlas, plan: CropPlan, region: Region, image: Geometry) -> tuple[list[str], dict]:
    """Reasons against placing this region's crop, and the measures."""
    dice = region_dice(loc, atlas, plan)
    reasons = []
    if np.isfinite(dice) and dice < MIN_REGION_DICE:
        reasons.append(f"inside region '{region.name}' the anatomy does not match the atlas (Dice {dice:.2f} < "
                       f"{MIN_REGION_DICE})")
    measures = {"region_dice": dice if np.isfinite(dice) else None}
    lacking = [GROUPS[t] for t in target_groups(region) if not atlas.observed[t]]
    if lacking:
        reasons.append(f"region '{region.name}' is about {', '.join(lacking)}, which the atlas does not contain "
                       f"(it covers {atlas.group_span()})")
    groups = [t for t in target_groups(region) if loc.anatomy_volume.observed[t] and atlas.observed[t]]
    if groups:
        organs = ", ".join(GROUPS[t] for t in groups)
        ml, share = organ_in_crop(loc, plan, image, groups)
        measures.update(organ_ml=ml, organ_share_in_crop=share if np.isfinite(share) else None)
        if ml < MIN_ORGAN_ML:
            reasons.append(f"the anatomy shows no {organs} in the image ({ml:.1f} ml): outside the field of view, "
                           "or missed by the anatomy")
        elif share < MIN_ORGAN_SHARE:
            reasons.append(f"only {100 * share:.0f}% of the anatomy's {organs} lies inside region '{region.name}'")
    return reasons, measures


def assess(loc, atlas: Atlas, region: Region | None = None, plan: CropPlan | None = None,
           image: Geometry | sitk.Image | None = None) -> Trust:
    """The trust rule for a localisation, and for a region's crop plan in ``image`` when given."""
    reasons, measures = scan_reasons(loc, atlas)
    if region is not None and plan is not None and image is not None and plan.usable:
        more, m = region_reasons(loc, atlas, plan, region, as_geometry(image))
        reasons += more
        measures.update(m)
    return Trust(not reasons, tuple(reasons), measures)
