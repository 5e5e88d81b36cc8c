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
    fg_voxels: int
    preserved_percent: float
    crop_voxel_fraction: float      # crop voxels / image voxels
    fg_share_before: float          # foreground share of the image (%)
    fg_share_after: float           # foreground share of the crop(s) (%)
    n_boxes_used: int


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
    n_img = int(np.prod(image.GetSize()))
    for region in regions:
        structures = region.provenance.get("roi_structures_totalsegmentator_v2")
        if not structures:
            continue
        roi = roi_mask(labels, scheme, structures)
        n_fg = int(roi.sum())
        if n_fg == 0:
            continue
        plan = plan_region(image, loc, region, extra_margin_mm, warnings=WarningLog())
        keep = plan.union_mask_zyx()
        kept = int((roi & keep).sum())
        n_keep = int(keep.sum())
        out.regions.append(RegionScore(region.name, n_fg, 100.0 * kept / n_fg, n_keep / n_img,
                                       100.0 * n_fg / n_img, 100.0 * kept / max(n_keep, 1), len(plan.usable)))
    out.warnings = list(warnings)
    return out
