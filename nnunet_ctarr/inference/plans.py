"""Per-case CTARR plans for nnU-Net inference, as plain frozen data.

:func:`plan_case` turns one case (its geometry and a way to locate it) into a :class:`CasePlan`
through the one decision (``core.localise.decision``): predict these crops (``cropped``, and
``untrusted: cropped anyway``), the whole image (``untrusted: whole image``), background only
(``outside the field of view``: the region is not in this image), nothing (``untrusted:
skipped``), or nothing because of a user error (``failed``: reported, exit code non-zero).
:func:`split_jobs` is the one place that turns plans into nnU-Net cases, shared by the file and
the npy entry points.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.anatomy.atlas import Atlas
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.geometry import Geometry
from ..core.localise.decision import Located, Policy, RegionDecision, Status, decide_region
from ..core.localise.settings import RegistrationSettings
from ..core.outputs.case_writer import region_definition
from ..core.outputs.records import RegionRecord
from ..core.regions.cropping import CropPlan, union_voxels
from ..core.regions.region import Region
from .tiling import TileGeometry, fit_boxes


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
    """What to predict for one case; ``record`` is its region's part of the sidecar, ``registration``
    the localisation's (None: refused before registration, or failed)."""
    case: str
    status: Status
    geometry: Geometry | None                 # None only for a failed plan whose image was unreadable
    crops: tuple[Crop, ...] = ()
    record: RegionRecord | None = None
    registration: dict | None = field(default=None, compare=False)

    @property
    def error(self) -> str | None:
        return self.record.error if self.record is not None else None

    @property
    def predicts(self) -> str:
        """What nnU-Net runs on: ``crops``, ``whole`` (the image), ``empty`` (background written,
        no network) or ``nothing`` (no output)."""
        if self.status in (Status.CROPPED, Status.ANYWAY):
            return "crops"
        return {Status.WHOLE: "whole", Status.OUTSIDE: "empty"}.get(self.status, "nothing")


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
    policy: Policy = field(default_factory=Policy)
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    fit_tiles: bool = True
    sidecar_folder: str | None = None
    qc_folder: str | None = None


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
              locate_case: Callable[[WarningLog], Located], image: sitk.Image | None = None) -> CasePlan:
    """Locate one case (``locate_case``) and decide what to predict; a user error (missing anatomy,
    ...) propagates as :class:`CTARRError`."""
    t0 = time.perf_counter()
    warnings = WarningLog(case=case)
    located = locate_case(warnings)
    d = decide_region(located, settings.region, settings.atlas, geometry, settings.policy, case)
    crops = fitted_crops(d.plan, geometry, tiles, settings.fit_tiles) if d.boxes else ()
    if d.boxes and not crops:
        raise CTARRError(f"{case}: no crop of region '{settings.region.name}' fits the image")
    if settings.qc_folder and image is not None and located.localisation is not None:
        _qc(Path(settings.qc_folder), case, image, located, d)
    loc = located.localisation
    fraction = union_voxels([(c.start_xyz, c.stop_xyz) for c in crops]) / float(np.prod(geometry.size_xyz))
    record = RegionRecord(
        name=settings.region.name, status=d.status, trusted=d.trust.trusted, reasons=d.trust.reasons, why=d.why,
        measures=d.trust.rounded_measures() | {"tiles_full_image": tiles.tiles(geometry.size_xyz),
                                               "region_voxel_fraction": round(d.plan.voxel_fraction(), 5)
                                               if d.plan is not None else None},
        definition=region_definition(settings.region, settings.policy.margin_mm, False),
        transform=loc.transform.to_dict() if loc is not None else None,
        boxes=tuple(b.to_dict() for b in d.plan.boxes) if d.plan is not None else (),
        crops=tuple(c.to_dict() for c in crops), voxel_fraction_kept=_kept(d, fraction),
        warnings=(*warnings, *d.warnings), seconds=round(time.perf_counter() - t0, 4))
    return CasePlan(case, d.status, geometry, crops, record, loc.registration.to_dict() if loc is not None else None)


def _kept(d: RegionDecision, fraction: float) -> float:
    return {Status.WHOLE: 1.0, Status.OUTSIDE: 0.0, Status.SKIPPED: 0.0}.get(d.status, round(fraction, 5))


def _qc(folder: Path, case: str, image: sitk.Image, located: Located, d: RegionDecision) -> None:
    from ..core.outputs.qc import render_qc
    folder.mkdir(parents=True, exist_ok=True)
    loc = located.localisation
    render_qc(folder / f"{case}_ctarr_qc.png", image, loc.anatomy_volume, d.plan,
              f"{case} | {d.region.name} | {loc.transform.orientation_text} | {d.status.value}")


def failed_plan(case: str, geometry: Geometry | None, error: CTARRError, region: str = "") -> CasePlan:
    """The plan of a case that cannot be predicted (missing or unreadable anatomy, ...)."""
    return CasePlan(case, Status.FAILED, geometry, (), RegionRecord(region, Status.FAILED, error=str(error)))


def split_jobs(plans: list[CasePlan]) -> tuple[list[Job], list[Job]]:
    """(jobs whose nnU-Net output is the case's output, jobs of cases with several crops whose
    outputs are merged). Cases predicted ``empty`` or ``nothing`` need no nnU-Net run."""
    single, boxes = [], []
    for i, p in enumerate(plans):
        if p.predicts == "whole":
            single.append(Job(i))
        elif p.predicts == "crops" and len(p.crops) == 1:
            c = p.crops[0]
            single.append(Job(i, CropTask(c.start_xyz, c.stop_xyz, p.geometry, "full")))
        elif p.predicts == "crops":
            boxes += [Job(i, CropTask(c.start_xyz, c.stop_xyz, p.geometry, "crop"), k) for k, c in enumerate(p.crops)]
    return single, boxes


def with_seconds(plan: CasePlan, seconds: float) -> CasePlan:
    """The plan with its record's seconds set (planning + prediction)."""
    return replace(plan, record=replace(plan.record, seconds=round(seconds, 4))) if plan.record else plan
