"""Region-crop datasets: every case of an nnU-Net raw dataset cropped to a CTARR region.

One output case per box (``<case>`` for one-box regions, ``<case>_box<k>`` otherwise); all
channels and the label map are cut with the same index box of the stored image (no
interpolation), so each crop overlays its source exactly. Per case the report says how many
voxels were dropped and how much label foreground fell outside the crops.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.atlas import Atlas
from ..core.cropping import crop_image, crop_scores
from ..core.errors import CTARRError, LocalisationUntrusted, WarningLog
from ..core.geometry import Geometry
from ..core.io import read_image, write_image
from ..core.nnunet_format import RawCase
from ..core.pipeline import locate, plan_region
from ..core.regions import Region
from ..core.trust import Trust, assess


@dataclass
class CropJob:
    case: RawCase
    split: str                      # "Tr" or "Ts"
    out_folder: Path
    file_ending: str
    region: Region
    margin_mm: float
    on_fail: str                    # "full": copy the uncropped case; "skip": leave it out


def _write_case(job: CropJob, name: str, images: list[sitk.Image], label: sitk.Image | None) -> None:
    for c, img in enumerate(images):
        write_image(img, job.out_folder / f"images{job.split}" / f"{name}_{c:04d}{job.file_ending}")
    if label is not None:
        write_image(label, job.out_folder / f"labels{job.split}" / f"{name}{job.file_ending}")


def crop_case(job: CropJob, anatomy_source, atlas: Atlas) -> dict:
    """Crop one case; returns its report row (never raises for a case-level problem)."""
    t0 = time.perf_counter()
    case = job.case
    warnings = WarningLog(case=case.case)
    row: dict = {"case": case.case, "split": job.split, "outputs": [], "warnings": warnings}
    try:
        images = [read_image(f) for f in case.images]
        label = read_image(case.label) if case.label is not None else None
        for other in images[1:] + ([label] if label is not None else []):
            if not Geometry.of(images[0]).same_grid(Geometry.of(other)):
                raise CTARRError("channels/label map are not on the same grid (nnU-Net requires it)")
    except CTARRError as e:
        row.update(status="error", error=str(e))
        return _finish(row, warnings, t0)
    fg = sitk.GetArrayViewFromImage(label) > 0 if label is not None else None
    row["foreground_voxels"] = int(fg.sum()) if fg is not None else None
    n_full = int(np.prod(images[0].GetSize()))
    try:
        anatomy = anatomy_source.load(case.case, warnings)
    except CTARRError as e:                 # a user error for this case, never a silent fallback
        row.update(status="error", error=str(e))
        return _finish(row, warnings, t0)
    try:
        loc = locate(images[0], anatomy, atlas, warnings=warnings)
        plan = plan_region(images[0], loc, job.region, job.margin_mm, warnings=warnings)
        if not plan.usable:
            raise LocalisationUntrusted(f"region '{job.region.name}' lies outside the field of view")
        trust = assess(loc, atlas, job.region, plan, images[0])
    except LocalisationUntrusted as e:
        trust = Trust.refused(e)
    trust.record(row)
    if not trust.trusted:
        return _fallback(job, row, warnings, t0, f"localisation not trusted ({trust.text()})", images, label, fg)
    multi = len(job.region.boxes_mm) > 1
    kept = 0
    for box in plan.usable:
        name = f"{case.case}_box{box.index}" if multi else case.case
        _write_case(job, name, [crop_image(img, box) for img in images],
                    crop_image(label, box) if label is not None else None)
        row["outputs"].append({"case": name, **box.to_dict()})
        kept += int(np.prod(box.size_xyz))
    row["status"] = "cropped"
    row["voxel_reduction"] = round(n_full / max(kept, 1), 3)
    if fg is not None:
        sc = crop_scores(fg, plan.union_mask_zyx())
        lost = sc["fg_voxels"] - sc["fg_kept"]
        row["lost_foreground_voxels"] = lost
        row["lost_foreground_pct"] = round(100.0 * lost / max(sc["fg_voxels"], 1), 4)
        if lost:
            warnings.warn(f"{lost} label voxels ({row['lost_foreground_pct']:.2f}%) lie outside the "
                          f"crop(s); raise --train_margin or check the QC of this case")
    row["registration_dice"] = round(loc.registration.dice, 4)
    row["orientation"] = loc.transform.orientation_text
    return _finish(row, warnings, t0)


def _fallback(job: CropJob, row: dict, warnings: WarningLog, t0: float, why: str, images, label, fg) -> dict:
    """An untrusted case: left out (``skip``) or copied uncropped (``full``, no foreground lost)."""
    name = job.case.case
    if job.on_fail == "skip":
        warnings.warn(f"{name}: {why}; case left out")
        row.update(status="skipped", error=why, lost_foreground_pct=100.0 if fg is not None and fg.any() else 0.0)
        return _finish(row, warnings, t0)
    warnings.warn(f"{name}: {why}; copied uncropped")
    _write_case(job, name, images, label)
    row.update(status="full", outputs=[name], voxel_reduction=1.0, lost_foreground_pct=0.0)
    return _finish(row, warnings, t0)


def _finish(row: dict, warnings: WarningLog, t0: float) -> dict:
    row["warnings"] = list(warnings)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row
