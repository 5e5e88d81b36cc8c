"""One case of ``nnUNetv2_ctarr_crop``: image + anatomy (+ labels) -> region crops, QC, sidecar.

Crops are cut from the image as stored (no interpolation) and overlay it exactly; the sidecar
``<case>.ctarr.json`` holds what is needed to reproduce them. On any error everything the case
wrote is removed before the error is raised again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from .atlas import Atlas
from .cropping import CropPlan, crop_image, crop_scores
from .errors import CTARRError, WarningLog
from .geometry import Geometry
from .integrity import check_finite
from .io import case_id, check_ct_intensities, match_label_to_image, read_image, write_image, write_json
from .pipeline import Localisation, groups_present, locate, plan_region
from .regions import Region
from .registration import RegistrationSettings


@dataclass(frozen=True)
class CropOptions:
    """How to crop (the crop command's options)."""
    margin_mm: float = 0.0
    z_only: bool = False
    pad: bool = False
    fill_value: float | None = None        # for pad; None = the image minimum
    qc: bool = False
    hu_check: bool = True
    allow_nonfinite: bool = False          # replace NaN/Inf voxels by the image minimum instead of refusing


def versions(atlas_id: str, region_source: str = "") -> dict:
    import torch
    return {"nnunet_ctarr": __version__, "atlas_id": atlas_id, "region_source": region_source,
            "torch": torch.__version__, "SimpleITK": sitk.Version_VersionString()}


def crop_case(src: Path, anatomy_source, label_path: Path | None, out: Path, region: Region, atlas: Atlas,
              opts: CropOptions, settings: RegistrationSettings) -> dict:
    """Crop one case; returns its sidecar. On error, removes whatever it wrote and re-raises."""
    case = case_id(src)
    warnings = WarningLog()
    written: list[Path] = []
    t = time.perf_counter()
    try:
        image, n_bad = check_finite(read_image(src), f"image {src.name}", opts.allow_nonfinite, src)
        if n_bad:
            warnings.warn(f"image {src.name}: {n_bad} NaN/infinite voxel(s) replaced by the image minimum")
        if opts.hu_check:
            check_ct_intensities(image, f"image {src.name}")
        seconds = {"read_image": time.perf_counter() - t}
        t = time.perf_counter()
        anatomy = anatomy_source.load(case, warnings)
        labels = None
        if label_path is not None:
            labels = match_label_to_image(read_image(label_path), image, f"label map {label_path.name}")
        seconds["read_anatomy_labels"] = time.perf_counter() - t
        t = time.perf_counter()
        loc = locate(image, anatomy, atlas, settings, warnings)
        seconds["registration"] = time.perf_counter() - t
        t = time.perf_counter()
        plan = plan_region(image, loc, region, opts.margin_mm, opts.z_only, warnings)
        if not plan.usable:
            raise CTARRError(f"region '{region.name}' lies entirely outside the field of view of {src.name}; "
                             "nothing written")
        outputs = _write_crops(image, labels, plan, f"{case}_{region.name}", out, opts, written)
        preserved = _label_loss(labels, plan, warnings)
        seconds["crop_write"] = time.perf_counter() - t
        if opts.qc:
            t = time.perf_counter()
            written.append(_qc(out / f"{case}_{region.name}_qc.png", case, image, loc, plan, region))
            seconds["qc"] = time.perf_counter() - t
        sidecar = _sidecar(case, src, anatomy.source, image, loc, plan, region, opts, atlas, outputs, warnings,
                           seconds)
        if labels is not None:
            sidecar["label_voxels_preserved_percent"] = None if preserved is None else round(preserved, 4)
        write_json(out / f"{case}.ctarr.json", sidecar)
        return sidecar
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def _write_crops(image: sitk.Image, labels: sitk.Image | None, plan: CropPlan, stem: str, out: Path,
                 opts: CropOptions, written: list[Path]) -> list[dict]:
    """One crop (and label crop) per usable box; ``written`` collects the paths."""
    fill = 0.0                         # only used by pad: default is the image minimum
    if opts.pad:
        fill = float(opts.fill_value) if opts.fill_value is not None else float(sitk.GetArrayViewFromImage(image).min())
    outputs = []
    for b in plan.usable:
        name = f"{stem}_box{b.index}" if len(plan.boxes) > 1 else stem
        img_path = out / f"{name}.nii.gz"
        write_image(crop_image(image, b, opts.pad, fill), img_path)
        written.append(img_path)
        entry = {"box": b.index, "image": img_path.name}
        if labels is not None:
            lab_path = out / f"{name}_labels.nii.gz"
            write_image(crop_image(labels, b, opts.pad, 0), lab_path)
            written.append(lab_path)
            entry["labels"] = lab_path.name
        outputs.append(entry)
    return outputs


def _label_loss(labels: sitk.Image | None, plan: CropPlan, warnings: WarningLog) -> float | None:
    """Share (%) of the label foreground inside the crops; warns when some lies outside."""
    if labels is None:
        return None
    sc = crop_scores(sitk.GetArrayViewFromImage(labels) > 0, plan.union_mask_zyx())
    preserved, n_all = sc["preserved_percent"], sc["fg_voxels"]
    if sc["fg_kept"] < n_all:
        warnings.warn(f"{n_all - sc['fg_kept']} of {n_all} label voxels ({100 - preserved:.2f}%) lie outside "
                      "the crop(s)")
    return preserved


def _qc(path: Path, case: str, image: sitk.Image, loc: Localisation, plan: CropPlan, region: Region) -> Path:
    from .qc import render_qc
    title = (f"{case} | region {region.name} | orientation: {loc.transform.orientation_text} | "
             f"scale {np.round(loc.transform.scale, 2).tolist()} | Dice {loc.registration.dice:.2f}")
    render_qc(path, image, loc.anatomy_volume, plan, title)
    return path


def _sidecar(case: str, src: Path, anatomy: str, image: sitk.Image, loc: Localisation, plan: CropPlan,
             region: Region, opts: CropOptions, atlas: Atlas, outputs: list[dict], warnings: WarningLog,
             seconds: dict[str, float]) -> dict:
    seconds = {**seconds, **{f"registration_{k}": v for k, v in loc.seconds.items()}}
    return {
        "case": case,
        "input": str(src),
        "anatomy": anatomy,
        "anatomy_groups_present": groups_present(loc.anatomy_volume),
        "image": Geometry.of(image).to_dict(),
        "region": {"name": region.name, "margin_mm": region.margin_mm, "extra_margin_mm": opts.margin_mm,
                   "z_only": opts.z_only, "atlas_id": region.atlas_id},
        "registration": loc.registration.to_dict(),
        "boxes": [b.to_dict() for b in plan.boxes],
        "voxel_fraction_kept": round(float(plan.union_mask_zyx().mean()), 5),
        "outputs": outputs,
        "warnings": list(warnings),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "versions": versions(atlas.atlas_id, region.provenance.get("source", "")),
    }
