"""Crop quality on labelled scans: preserved foreground, voxel reduction, orientation.

The numbers of the CTARR paper's Table 2, per case and region.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.anatomy.atlas import Atlas
from ..core.anatomy.groups import LabelScheme
from ..core.anatomy.masks import AnatomyMasks
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.geometry import Geometry
from ..core.base.images import match_label_to_image
from ..core.base.transform import describe_orientation, orientation_from_matrix
from ..core.localise.decision import Located, Policy, Status, decide_region
from ..core.localise.localisation import locate
from ..core.localise.settings import RegistrationSettings
from ..core.regions.cropping import crop_scores
from ..core.regions.region import Region


@dataclass
class RegionScore:
    region: str
    n_boxes_used: int
    fg_voxels: int
    fg_kept: int
    preserved_percent: float
    crop_voxel_fraction: float      # crop voxels / image voxels
    fg_share_before: float          # foreground share of the image (%)
    fg_share_after: float           # foreground share of the crop(s) (%)
    fg_ml: float = 0.0              # foreground volume (ml)
    trusted: bool = True            # the decision writes this crop as trusted (status cropped)
    trust_reasons: tuple[str, ...] = ()
    status: str = "cropped"         # the one decision's status (core.localise.decision.Status)


@dataclass
class CaseScore:
    case: str
    orientation: list              # detected M (3x3)
    orientation_text: str
    scale: list
    dice: float
    seconds: float
    regions: list[RegionScore] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def roi_mask(labels: sitk.Image, scheme: LabelScheme, structures: list[str]) -> np.ndarray:
    ids = [i for i, n in scheme.names.items() if n in structures]
    return np.isin(sitk.GetArrayViewFromImage(labels), ids)


def score_case(case: str, image: sitk.Image, anatomy: AnatomyMasks, labels: sitk.Image, scheme: LabelScheme,
               atlas: Atlas, regions: list[Region], settings: RegistrationSettings | None = None,
               extra_margin_mm: float = 0.0) -> CaseScore:
    """Localise one scan and score every region whose ROI (from the region's provenance
    ``roi_structures_totalsegmentator_v2``) is present in ``labels``."""
    warnings = WarningLog()
    labels = match_label_to_image(labels, image, "labels")
    t0 = time.perf_counter()
    loc = locate(image, anatomy, atlas, settings, warnings)
    secs = time.perf_counter() - t0
    tf = loc.transform
    out = CaseScore(case, tf.M.tolist(), tf.orientation_text, tf.scale.round(4).tolist(), loc.registration.dice, secs)
    for region in regions:
        structures = region.provenance.get("roi_structures_totalsegmentator_v2")
        if not structures:
            continue
        roi = roi_mask(labels, scheme, structures)
        if not roi.any():
            continue
        d = decide_region(Located(loc), region, atlas, Geometry.of(image), Policy(margin_mm=extra_margin_mm))
        out.regions.append(RegionScore(region.name, n_boxes_used=len(d.plan.usable),
                                       **crop_scores(roi, d.plan.union_mask_zyx()),
                                       trusted=d.status is Status.CROPPED,
                                       fg_ml=float(roi.sum()) * float(np.prod(image.GetSpacing())) / 1000.0,
                                       trust_reasons=d.trust.reasons or ((d.why,) if d.why else ()),
                                       status=d.status.value))
    out.warnings = list(warnings)
    return out


def load_perturbations(path: str | None) -> dict[str, dict]:
    """``{case: {"perturbation": name, "expected_M": 3x3 signed permutation}}``: the orientation
    matrix the registration must find (``world_true = expected_M @ world_stored`` up to scale)."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        for case, d in data.items():
            if orientation_from_matrix(d["expected_M"]) is None:
                raise ValueError(f"{case}: expected_M is not a quarter-turn/flip matrix")
        return data
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CTARRError(f"cannot read perturbations file {path}: {e}") from None


def orientation_check(found_M, known: dict | None) -> dict:
    if not known:
        return {"known_perturbation": "", "expected_orientation": "", "orientation_correct": ""}
    expected = np.rint(np.asarray(known["expected_M"])).astype(int)
    return {"known_perturbation": known.get("perturbation", ""),
            "expected_orientation": describe_orientation(*orientation_from_matrix(expected)),
            "orientation_correct": bool(np.array_equal(np.rint(np.asarray(found_M)).astype(int), expected))}
