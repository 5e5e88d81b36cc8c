"""Learn a region from labelled scans (paper 3.4).

Every scan is registered to the atlas; its region-of-interest mask is warped into atlas
space; the heatmap is the share of scans with the ROI at each atlas voxel, counted only over
the scans whose field of view covers the voxel (partial scans do not dilute it). Boxes come
from the thresholded heatmap's connected components, merged where they overlap, and the
margin (default 10 mm) is stored with the region.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ..anatomy.atlas import Atlas
from ..anatomy.masks import AnatomyMasks
from ..base.errors import CTARRError, WarningLog
from ..base.geometry import Geometry
from ..localise.localisation import locate
from ..localise.settings import RegistrationSettings
from ..localise.trust import assess
from ..regions.region import Region, boxes_from_heatmap
from .warp import warp_to_atlas


@dataclass
class LearnedRegion:
    region: Region
    heatmap: np.ndarray          # (Z, Y, X) on ``grid``
    grid: Geometry
    n_scans: int                 # scans whose ROI was non-empty and registered
    skipped: list[str]


def roi_to_atlas(roi: sitk.Image, tf, grid: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Warp a binary ROI (any grid) into ``grid``: (fraction (Z,Y,X), inside-FOV (Z,Y,X))."""
    roi_f = sitk.Cast(roi > 0, sitk.sitkFloat32)
    ref = Geometry.of(roi_f).resampling_grid(float(grid.spacing[0])).to_reference()
    res = sitk.Resample(roi_f, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(res)[None]
    warped, inside = warp_to_atlas(arr, np.array(res.GetOrigin()), np.array(res.GetSpacing()), tf, grid)
    return warped[0], inside


def learn_region(cases: Iterable[tuple[str, AnatomyMasks, sitk.Image]], atlas: Atlas, name: str,
                 threshold: float = 0.0, margin_mm: float = 10.0, settings: RegistrationSettings | None = None,
                 pad_mm: float = 60.0, progress: bool = True, provenance: dict | None = None) -> LearnedRegion:
    """``cases``: (case name, anatomy, ROI mask on any grid matching the scan in world space)."""
    lo, hi = atlas.extent()
    grid = Geometry.covering(lo - pad_mm, hi + pad_mm, float(atlas.spacing[0]))
    acc = np.zeros(grid.shape_zyx, np.float32)
    cov = np.zeros(grid.shape_zyx, np.float32)
    used, skipped = [], []
    for case, anatomy, roi in tqdm(list(cases), desc=f"learning region {name}", disable=not progress):
        if not np.any(sitk.GetArrayViewFromImage(roi)):
            skipped.append(f"{case}: ROI empty")
            continue
        try:
            loc = locate(None, anatomy, atlas, settings, WarningLog())
        except CTARRError as e:
            skipped.append(f"{case}: {e}")
            continue
        trust = assess(loc, atlas)
        if not trust.trusted:                 # an untrusted scan does not vote
            skipped.append(f"{case}: localisation not trusted ({trust.text()})")
            continue
        frac, inside = roi_to_atlas(roi, loc.transform, grid)
        acc += frac
        cov += inside
        used.append(case)
    if not used:
        raise CTARRError(f"no scan contributed to region '{name}': " + "; ".join(skipped))
    heat = np.clip(np.where(cov > 0, acc / np.maximum(cov, 1), 0), 0, 1).astype(np.float32)
    boxes = boxes_from_heatmap(heat, grid.origin, grid.spacing, threshold)
    if len(boxes) == 0:
        raise CTARRError(f"region '{name}': no heatmap voxel above threshold {threshold}")
    prov = {"method": "paper 3.4 heatmap of registered labels", "threshold": threshold,
            "n_scans": len(used), "scans": used, **(provenance or {})}
    region = Region(name, boxes, margin_mm, atlas.atlas_id, prov)
    return LearnedRegion(region, heat, grid, len(used), skipped)
