"""The one trust rule: may this localisation place this region's crop, or is the region not in view?

Every writer (crop, crop_dataset, evaluate, the predictors) asks :func:`assess` through
:mod:`.decision`, and prealign / body_height through ``Located.scan_trust``; an untrusted answer is
what they fall back on (the whole image, nothing, or the crop anyway: ``--on_untrusted``), never a
user error. The region learner asks it directly: an untrusted scan does not vote. A localisation
is untrusted when

* the anatomy was refused before registration (:class:`LocalisationUntrusted` from ``locate``:
  too few usable groups, anatomy and image not overlapping, anatomy outside the atlas);
* the registration Dice is below :data:`MIN_PLAUSIBLE_DICE` or the orientation is ambiguous;
* more than :data:`MAX_OUTSIDE_ATLAS` of the scan's anatomy lies outside the atlas (groups the
  atlas lacks, e.g. skull and brain, or voxels mapped where no atlas scan reached).

For a region of a trusted localisation, the region is **outside the field of view** (not a
reason against trust: a verdict of its own) when none of its boxes reaches into the image, or
when less than :data:`MIN_IN_VIEW` of the atlas's organ (or of the region's tight boxes, for
organs the atlas lacks) maps into the image and the anatomy has no channel for the organ; or
when an anatomy with that channel shows none of it and the atlas places less than
:data:`MAX_MISSED_ML` of it in the image (more: the anatomy missed it, untrusted). Else
the region is untrusted when the anatomy inside its boxes does not look like the atlas there
(Dice below :data:`MIN_REGION_DICE`); when less than :data:`MIN_ORGAN_SHARE` of the organ the
anatomy shows lies inside the crops; and when nothing in the anatomy can check the
region at all (no channel for its organ and too little comparable anatomy in its boxes): an
absent channel never passes a check.

The thresholds were calibrated by ``benchmarks/trust_calibration.py`` (docs/trust.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..anatomy.atlas import Atlas
from ..anatomy.groups import GROUPS
from ..base.errors import LocalisationUntrusted
from ..base.geometry import Geometry, as_geometry
from ..regions.cropping import CropPlan
from ..regions.region import Region
from .trust_measures import atlas_in_view, organ_in_crop, outside_atlas, region_dice, target_groups

#: below this mean soft Dice (6 mm level) the registration is implausible
MIN_PLAUSIBLE_DICE = 0.25
#: above this share of the scan's anatomy volume outside the atlas the scan is not one the atlas knows
MAX_OUTSIDE_ATLAS = 0.20
#: below this Dice between scan anatomy and atlas inside the region's boxes the crop is misplaced, per
#: kind of anatomy: maps (TotalSegmentator maps, mask folders, models) and the HU anatomy (lungs and bones
#: only, whose Dice inside organ boxes is lower and less telling: docs/out_of_sample.md calibrates 0.55)
MIN_REGION_DICE = {"map": 0.30, "hu": 0.55}
#: less than this (ml) of the region's own organ in the image: the organ is not in view
MIN_ORGAN_ML = 0.5
#: less than this share of the anatomy's organ (in the image) inside the crops: the crop is misplaced
MIN_ORGAN_SHARE = 0.90
#: less than this share of the atlas's organ (or of the region's tight boxes) in the image: not in view
#: (organs not in view score 0.000 in docs/out_of_sample.md; 0.05 dropped 34 ml of spleen in view)
MIN_IN_VIEW = 0.01
#: an anatomy showing none of an organ whose atlas places less than this (ml) in the image: not in view
MAX_MISSED_ML = 10.0


@dataclass(frozen=True)
class Trust:
    """The verdict: ``trusted`` plus the reasons against and the measures it was based on;
    ``outside`` (with ``trusted``): the region is not in this image's field of view, and why."""
    trusted: bool
    reasons: tuple[str, ...] = ()
    measures: dict = field(default_factory=dict)
    outside: str = ""

    @classmethod
    def refused(cls, error: LocalisationUntrusted) -> Trust:
        return cls(False, (str(error),))

    def rounded_measures(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.measures.items()}

    def to_dict(self) -> dict:
        """``reasons`` and the measures (rounded), as the sidecar stores them."""
        return {"reasons": list(self.reasons), **self.rounded_measures()}

    def text(self) -> str:
        return "; ".join(self.reasons)


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


def region_outside(loc, atlas: Atlas, plan: CropPlan, region: Region, image: Geometry,
                   in_view: tuple[float, float, str]) -> tuple[str, str]:
    """(why the region is not in this image's field of view or "", a reason against trust or ""):
    not in view when no box reaches into the image; when the anatomy has a channel for the region's
    organ, shows less than :data:`MIN_ORGAN_ML` of it, and the atlas's organ in view would be less
    than :data:`MAX_MISSED_ML` (more: the anatomy missed it, a reason against trust); when the
    anatomy has no such channel and less than :data:`MIN_IN_VIEW` of the atlas's organ (or of the
    region's tight boxes) maps into the image."""
    if not plan.usable:
        return f"region '{region.name}' lies entirely outside the field of view", ""
    share, ml, what = in_view
    groups = [t for t in target_groups(region) if loc.anatomy_volume.observed[t] and atlas.observed[t]]
    if not groups:
        if share < MIN_IN_VIEW:
            return (f"only {100 * share:.1f}% of the atlas's {what} lies in the field of view "
                    f"(< {100 * MIN_IN_VIEW:g}%)"), ""
        return "", ""
    shown = organ_in_crop(loc, plan, image, groups)[0]
    if shown >= MIN_ORGAN_ML:
        return "", ""
    if ml < MAX_MISSED_ML:
        return f"the anatomy shows no {what} in the image and the atlas places only {ml:.1f} ml of it there", ""
    return "", (f"the anatomy shows no {what} in the image ({shown:.1f} ml) where the atlas places {ml:.0f} ml of it: "
                "missed by the anatomy, or a misplaced registration")


def region_reasons(loc, atlas: Atlas, plan: CropPlan, region: Region, image: Geometry) -> tuple[list[str], dict]:
    """Reasons against placing this region's crop, and the measures."""
    dice, limit = region_dice(loc, atlas, plan), MIN_REGION_DICE.get(loc.anatomy_kind, MIN_REGION_DICE["map"])
    reasons = []
    if np.isfinite(dice) and dice < limit:
        reasons.append(f"inside region '{region.name}' the anatomy does not match the atlas (Dice {dice:.2f} < "
                       f"{limit} for {loc.anatomy_kind} anatomy)")
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
        if ml >= MIN_ORGAN_ML and share < MIN_ORGAN_SHARE:
            reasons.append(f"only {100 * share:.0f}% of the anatomy's {organs} lies inside region '{region.name}'")
    elif not np.isfinite(dice):
        reasons.append(f"nothing in the anatomy can check region '{region.name}': it has no channel for the "
                       "region's organs and too little comparable anatomy lies in its boxes")
    return reasons, measures


def assess(loc, atlas: Atlas, region: Region | None = None, plan: CropPlan | None = None,
           image: Geometry | sitk.Image | None = None) -> Trust:
    """The trust rule for a localisation, and for a region's crop plan in ``image`` when given
    (module docstring): untrusted (reasons), outside the field of view (``outside``), or trusted."""
    reasons, measures = scan_reasons(loc, atlas)
    if region is None or plan is None or image is None or reasons:
        return Trust(not reasons, tuple(reasons), measures)
    geo = as_geometry(image)
    in_view = atlas_in_view(loc, atlas, region, geo) if plan.usable else (0.0, 0.0, "")
    if plan.usable:
        measures.update(atlas_share_in_view=in_view[0], atlas_ml_in_view=in_view[1])
    outside, against = region_outside(loc, atlas, plan, region, geo, in_view)
    if outside:
        return Trust(True, (), measures, outside)
    more, m = region_reasons(loc, atlas, plan, region, geo)
    measures.update(m)
    reasons += [against] * bool(against) + more
    return Trust(not reasons, tuple(reasons), measures)
