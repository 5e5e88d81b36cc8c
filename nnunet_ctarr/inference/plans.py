"""Per-case CTARR plans for nnU-Net inference, as plain frozen data.

:func:`plan_case` turns one case (its geometry and a way to localise it) into a
:class:`CasePlan`: predict these crops (``crop``), the full image (``full``: untrusted
localisation, or the region outside the field of view with ``on_miss="full"``), nothing but
background (``empty``), or nothing at all because of a user error (``error``: the case is
reported and the run's exit code is non-zero). :func:`split_jobs` is the one place that turns
plans into nnU-Net cases, shared by the file and the npy entry points.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.anatomy.atlas import Atlas
from ..core.base.errors import CTARRError, LocalisationUntrusted, WarningLog
from ..core.base.geometry import Geometry
from ..core.localise.localisation import Localisation, plan_region
from ..core.localise.settings import RegistrationSettings
from ..core.localise.trust import Trust, assess
from ..core.regions.cropping import CropPlan, index_union_mask
from ..core.regions.region import Region
from .tiling import TileGeometry, fit_boxes

MODES = ("crop", "full", "empty", "error")


@dataclass(frozen=True)
class Crop:
    """One half-open index box (x, y, z of the stored image) that nnU-Net predicts."""
    start_xyz: tuple[int, int, int]
    stop_xyz: tuple[int, int, int]
    region_boxes: tuple[int, ...]
    tiles: int

    def to_dict(self) -> dict:
        return {"index_start_xyz": list(self.start_xyz), "index_stop_xyz": list(self.stop_xyz),
                "size_xyz": (np.array(self.stop_xyz) - self.start_xyz).tolist(),
                "region_boxes": list(self.region_boxes), "tiles": self.tiles}


@dataclass(frozen=True)
class CasePlan:
    """What to predict for one case; ``report`` is its sidecar (``<case>.ctarr.json``)."""
    case: str
    mode: str
    geometry: Geometry | None                 # None only for an ``error`` plan whose image was unreadable
    crops: tuple[Crop, ...] = ()
    report: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def error(self) -> str | None:
        return self.report.get("error")


@dataclass(frozen=True)
class CropTask:
    """What the preprocessing hook needs for one nnU-Net case cut from a full image."""
    start_xyz: tuple[int, int, int]
    stop_xyz: tuple[int, int, int]
    image: Geometry                  # the full image the crop is cut from
    paste: str                       # "full": nnU-Net pastes back into the full image; "crop": output stays the crop


@dataclass(frozen=True)
class Job:
    """One nnU-Net case: ``task`` None = the full image as nnU-Net would run it."""
    case_index: int
    task: CropTask | None = None
    crop_index: int | None = None


@dataclass(frozen=True, eq=False)
class CTARRSettings:
    """The CTARR side of a predictor (see ``nnUNetPredictorCTARR.ctarr_setup``)."""
    region: Region
    atlas: Atlas
    margin_mm: float = 0.0
    on_miss: str = "full"
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    fit_tiles: bool = True
    sidecar_folder: str | None = None
    qc_folder: str | None = None

    def __post_init__(self) -> None:
        if self.on_miss not in ("full", "empty"):
            raise CTARRError("on_miss must be 'full' or 'empty'")


def fitted_crops(plan: CropPlan, geometry: Geometry, tiles: TileGeometry, fit: bool) -> tuple[Crop, ...]:
    """Index boxes to predict: the region's boxes inside the image, fitted to the tiles (``fit``)."""
    usable = plan.usable
    if not fit:
        return tuple(Crop(tuple(b.start_xyz.tolist()), tuple(b.stop_xyz.tolist()), (b.index,), tiles.tiles(b.size_xyz))
                     for b in usable)
    fitted = fit_boxes([(b.start_xyz, b.stop_xyz) for b in usable], geometry.size_xyz, tiles)
    return tuple(Crop(tuple(c["start_xyz"]), tuple(c["stop_xyz"]), tuple(usable[k].index for k in c["region_boxes"]),
                      c["tiles"]) for c in fitted)


def plan_case(case: str, geometry: Geometry, settings: CTARRSettings, tiles: TileGeometry,
              locate_case: Callable[[WarningLog], Localisation], image: sitk.Image | None = None) -> CasePlan:
    """Localise one case (``locate_case``) and decide what to predict. An untrusted localisation
    gives the full volume with a warning; any other :class:`CTARRError` propagates (user error)."""
    t0 = time.perf_counter()
    warnings = WarningLog(case=case)
    report: dict = {"case": case, "region": settings.region.name}
    try:
        loc = locate_case(warnings)
        report["registration"] = loc.registration.to_dict()
    except LocalisationUntrusted as e:
        return _untrusted(CasePlan(case, "full", geometry, (), report), Trust.refused(e), warnings, t0)
    region_plan = plan_region(geometry, loc, settings.region, settings.margin_mm, warnings=warnings)
    trust = assess(loc, settings.atlas, settings.region, region_plan, geometry)
    if not trust.trusted:
        return _untrusted(CasePlan(case, "full", geometry, (), report), trust, warnings, t0)
    trust.record(report)
    report["boxes"] = [b.to_dict() for b in region_plan.boxes]
    crops = fitted_crops(region_plan, geometry, tiles, settings.fit_tiles)
    report["crops"] = [c.to_dict() for c in crops]
    if not crops:
        mode = settings.on_miss
        warnings.warn(f"region '{settings.region.name}' lies outside the field of view: "
                      + ("predicting the full volume" if mode == "full" else "writing an empty segmentation"))
    else:
        mode = "crop"
        mask = index_union_mask(geometry.size_xyz, [(c.start_xyz, c.stop_xyz) for c in crops])
        report["voxel_fraction"] = round(float(mask.mean()), 5)
        report["region_voxel_fraction"] = round(region_plan.voxel_fraction(), 5)
        report["tiles_full_image"] = tiles.tiles(geometry.size_xyz)
    if settings.qc_folder and image is not None:
        from ..core.outputs.qc import render_qc
        Path(settings.qc_folder).mkdir(parents=True, exist_ok=True)
        render_qc(Path(settings.qc_folder) / f"{case}_ctarr_qc.png", image, loc.anatomy_volume, region_plan,
                  f"{case} | {settings.region.name} | {loc.transform.orientation_text}")
    return _finish(CasePlan(case, mode, geometry, crops, report), warnings, t0)


def error_plan(case: str, geometry: Geometry | None, error: CTARRError) -> CasePlan:
    """The plan of a case that cannot be predicted (missing or unreadable anatomy, ...)."""
    return CasePlan(case, "error", geometry, (), {"case": case, "mode": "error", "error": str(error), "warnings": []})


def _untrusted(plan: CasePlan, trust: Trust, warnings: WarningLog, t0: float) -> CasePlan:
    """The full volume for an untrusted localisation; the sidecar and the log say why."""
    trust.record(plan.report)
    warnings.warn(f"CTARR localisation not trusted ({trust.text()}); predicting the full volume")
    return _finish(plan, warnings, t0)


def _finish(plan: CasePlan, warnings: WarningLog, t0: float) -> CasePlan:
    plan.report.update(mode=plan.mode, seconds_ctarr=round(time.perf_counter() - t0, 4), warnings=list(warnings))
    return plan


def split_jobs(plans: list[CasePlan]) -> tuple[list[Job], list[Job]]:
    """(jobs whose nnU-Net output is the case's output, jobs of cases with several crops whose
    outputs are merged). ``empty`` and ``error`` cases need no nnU-Net run."""
    single, boxes = [], []
    for i, p in enumerate(plans):
        if p.mode == "full":
            single.append(Job(i))
        elif p.mode == "crop" and len(p.crops) == 1:
            c = p.crops[0]
            single.append(Job(i, CropTask(c.start_xyz, c.stop_xyz, p.geometry, "full")))
        elif p.mode == "crop":
            boxes += [Job(i, CropTask(c.start_xyz, c.stop_xyz, p.geometry, "crop"), k) for k, c in enumerate(p.crops)]
    return single, boxes
