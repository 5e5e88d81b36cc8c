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

from ..core.anatomy.atlas import Atlas
from ..core.base.errors import CTARRError, LocalisationUntrusted, WarningLog
from ..core.base.geometry import Geometry
from ..core.base.images import read_image, write_image
from ..core.base.nnunet_format import RawCase
from ..core.localise.localisation import locate, plan_region
from ..core.localise.trust import Trust, assess
from ..core.regions.cropping import crop_image, crop_scores
from ..core.regions.region import Region


@dataclass
class CropJob:
    case: RawCase
    split: str                      # "Tr" or "Ts"
    out_folder: Path
    file_ending: str
    region: Region
    margin_mm: float
    on_fail: str                    # "full": copy the uncropped case; "skip": leave it out


def _write_case(job: CropJob, row: dict, name: str, images: list[sitk.Image], label: sitk.Image | None) -> None:
    """One output case; ``row["files"]`` collects the paths written (relative to the dataset)."""
    files = [f"images{job.split}/{name}_{c:04d}{job.file_ending}" for c in range(len(images))]
    if label is not None:
        files.append(f"labels{job.split}/{name}{job.file_ending}")
    for f, img in zip(files, images + ([label] if label is not None else [])):
        write_image(img, job.out_folder / f)
        row["files"].append(f)


def crop_case(job: CropJob, anatomy_source, atlas: Atlas) -> dict:
    """Crop one case; returns its report row (never raises for a case-level problem: an error is
    ``status: error`` and whatever the case wrote is removed)."""
    t0 = time.perf_counter()
    warnings = WarningLog(case=job.case.case)
    row: dict = {"case": job.case.case, "split": job.split, "outputs": [], "files": [], "warnings": warnings}
    try:
        images, label = _read(job.case)
        anatomy = anatomy_source.load(job.case.case, warnings)  # a user error for this case, never a fallback
        _crop_or_fallback(job, row, images, label, anatomy, atlas, warnings)
    except CTARRError as e:
        for f in row["files"]:
            (job.out_folder / f).unlink(missing_ok=True)
        row.update(status="error", error=str(e), outputs=[], files=[])
    return _finish(row, warnings, t0)


def _read(case: RawCase) -> tuple[list[sitk.Image], sitk.Image | None]:
    """The channels and the label map of a case, checked to share one grid."""
    images = [read_image(f) for f in case.images]
    label = read_image(case.label) if case.label is not None else None
    for other in images[1:] + ([label] if label is not None else []):
        if not Geometry.of(images[0]).same_grid(Geometry.of(other)):
            raise CTARRError("channels/label map are not on the same grid (nnU-Net requires it)")
    return images, label


def _crop_or_fallback(job: CropJob, row: dict, images: list[sitk.Image], label: sitk.Image | None, anatomy,
                      atlas: Atlas, warnings: WarningLog) -> None:
    """Localise, judge and write the crops (or the fallback of an untrusted case) into ``row``."""
    fg = sitk.GetArrayViewFromImage(label) > 0 if label is not None else None
    row["foreground_voxels"] = int(fg.sum()) if fg is not None else None
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
        return _fallback(job, row, warnings, f"localisation not trusted ({trust.text()})", images, label, fg)
    multi, kept = len(job.region.boxes_mm) > 1, 0
    for box in plan.usable:
        name = f"{job.case.case}_box{box.index}" if multi else job.case.case
        _write_case(job, row, name, [crop_image(img, box) for img in images],
                    crop_image(label, box) if label is not None else None)
        row["outputs"].append({"case": name, **box.to_dict()})
        kept += int(np.prod(box.size_xyz))
    row["status"] = "cropped"
    row["voxel_reduction"] = round(int(np.prod(images[0].GetSize())) / max(kept, 1), 3)
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


def _fallback(job: CropJob, row: dict, warnings: WarningLog, why: str, images, label, fg) -> None:
    """An untrusted case: left out (``skip``) or copied uncropped (``full``, no foreground lost)."""
    name = job.case.case
    if job.on_fail == "skip":
        warnings.warn(f"{name}: {why}; case left out")
        row.update(status="skipped", error=why, lost_foreground_pct=100.0 if fg is not None and fg.any() else 0.0)
        return
    warnings.warn(f"{name}: {why}; copied uncropped")
    _write_case(job, row, name, images, label)
    row.update(status="full", outputs=[name], voxel_reduction=1.0, lost_foreground_pct=0.0)


def _finish(row: dict, warnings: WarningLog, t0: float) -> dict:
    row["warnings"] = list(warnings)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row
