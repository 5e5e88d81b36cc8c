"""Crop quality on labelled scans: preserved foreground, voxel reduction, orientation.

The numbers of the CTARR paper's Table 2, per case and region.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .anatomy import AnatomyMasks, LabelScheme
from .atlas import Atlas
from .errors import WarningLog
from .io import match_label_to_image
from .pipeline import locate, plan_region
from .registration import RegistrationSettings
from .regions import Region


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


def crop_scores(fg: np.ndarray, keep: np.ndarray) -> dict:
    """Table 2 numbers for a foreground mask and the union of the crops (both [z, y, x]):
    preserved foreground (%), crop share of the scan, foreground share before/after (%)."""
    n_fg, n_keep = int(fg.sum()), int(keep.sum())
    kept = int((fg & keep).sum())
    return {"fg_voxels": n_fg, "fg_kept": kept, "preserved_percent": 100.0 * kept / n_fg if n_fg else None,
            "crop_voxel_fraction": n_keep / fg.size, "fg_share_before": 100.0 * n_fg / fg.size,
            "fg_share_after": 100.0 * kept / max(n_keep, 1)}


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
        plan = plan_region(image, loc, region, extra_margin_mm, warnings=WarningLog())
        out.regions.append(RegionScore(region.name, n_boxes_used=len(plan.usable),
                                       **crop_scores(roi, plan.union_mask_zyx())))
    out.warnings = list(warnings)
    return out
