"""One case of ``nnUNetv2_ctarr_crop``: image + anatomy (+ labels) -> region crops, QC, sidecar.

Crops are cut from the image as stored (no interpolation) and overlay it exactly; the sidecar
``<case>.ctarr.json`` holds what is needed to reproduce them. On any error everything the case
wrote is removed before the error is raised again.
"""
from __future__ import annotations

import importlib.metadata
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ... import __version__
from ..anatomy.atlas import Atlas
from ..anatomy.sources import anatomy_stamp
from ..base.cases import case_id
from ..base.errors import CTARRError, LocalisationUntrusted, WarningLog
from ..base.files import input_stamp
from ..base.geometry import Geometry
from ..base.images import check_ct_intensities, match_label_to_image, read_image, write_image
from ..base.integrity import check_finite
from ..localise.localisation import Localisation, groups_present, locate, plan_region
from ..localise.settings import RegistrationSettings
from ..localise.trust import Trust, assess
from ..regions.cropping import CropPlan, crop_image, crop_scores
from ..regions.region import Region
from .qc import picture_name
from .sidecar import finished_entries, write_sidecar

#: what ``--on_untrusted`` may say: the whole image under the crop's name, nothing, or the crop anyway
ON_UNTRUSTED = ("full", "skip", "crop")


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
    on_untrusted: str = "full"             # one of ON_UNTRUSTED


def torch_version() -> str:
    """torch's version without importing torch (``--continue`` over a finished batch then never
    imports it: seconds of start-up); the imported module's own where it is loaded already."""
    torch = sys.modules.get("torch")
    return torch.__version__ if torch is not None else importlib.metadata.version("torch")


def versions(atlas_id: str, region_source: str = "") -> dict:
    out = {"nnunet_ctarr": __version__, "atlas_id": atlas_id, "region_source": region_source,
           "torch": torch_version(), "SimpleITK": sitk.Version_VersionString()}
    return out if region_source else {k: v for k, v in out.items() if k != "region_source"}


@dataclass
class _Case:
    """What one case has read and found (``loc`` None: refused before registration, see ``refused``)."""
    image: sitk.Image
    anatomy_name: str
    anatomy_stamp: dict | None
    labels: sitk.Image | None
    loc: Localisation | None
    refused: Trust | None
    seconds: dict


def crop_case(src: Path, anatomy_source, label_path: Path | None, out: Path, regions: list[Region], atlas: Atlas,
              opts: CropOptions, settings: RegistrationSettings) -> dict[str, dict]:
    """Crop one case into every region (one image read, one anatomy load, one registration);
    returns the sidecar entries by region name (``mode`` crop, full, skip or outside). On error,
    removes whatever it wrote and re-raises."""
    case = case_id(src)
    warnings = WarningLog(case=case)
    written: list[Path] = []
    try:
        c = _localise(src, case, anatomy_source, label_path, atlas, opts, settings, warnings)
        if c.loc is None and opts.on_untrusted == "crop":
            raise CTARRError(f"cannot crop {src.name}: {c.refused.text()}")
        entries = {r.name: _crop_region(c, case, r, out, atlas, opts, warnings, written) for r in regions}
        # also when nothing was written (skipped, outside the field of view): it says why, and
        # --continue does not redo the case
        write_sidecar(out / f"{case}.ctarr.json", _case_fields(case, src, c, atlas, opts, warnings), entries)
        return entries
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def _crop_region(c: _Case, case: str, region: Region, out: Path, atlas: Atlas, opts: CropOptions,
                 case_warnings: WarningLog, written: list[Path]) -> dict:
    """Plan, judge and write one region of a localised case; returns its sidecar entry."""
    warnings = WarningLog(case_warnings, case=f"{case}/{region.name}")
    t = time.perf_counter()
    plan = None
    if c.loc is None:
        trust = c.refused
    else:
        plan = plan_region(c.image, c.loc, region, opts.margin_mm, opts.z_only, warnings)
        trust = assess(c.loc, atlas, region, plan, c.image)
        if not plan.usable:
            plan = None
    entry = {"mode": "crop" if trust.trusted else opts.on_untrusted, **trust.record({})}
    if trust.trusted and plan is None:
        entry.update(mode="outside", error=f"region '{region.name}' lies entirely outside the field of view; "
                                          "nothing written")
    elif entry["mode"] == "crop" and plan is None:
        entry.update(mode="outside", error=f"not trusted ({trust.text()}) and no crop to write; nothing written")
    elif not trust.trusted:
        warnings.warn(f"localisation not trusted ({trust.text()}); "
                      + {"full": "wrote the whole image", "skip": "nothing written",
                         "crop": "wrote the crop anyway (--on_untrusted crop)"}[entry["mode"]])
    if entry["mode"] in ("skip", "outside"):
        return _entry(entry, region, opts, c, plan, [], warnings)
    stem = f"{case}_{region.name}"
    outputs = (_write_crops(c.image, c.labels, plan, stem, out, opts, written) if entry["mode"] == "crop"
               else _write_full(c.image, c.labels, stem, out, written))
    if c.labels is not None:
        preserved = _label_loss(c.labels, plan, warnings) if entry["mode"] == "crop" else 100.0
        entry["label_voxels_preserved_percent"] = None if preserved is None else round(preserved, 4)
    if opts.qc and c.loc is not None:
        written.append(_qc(out / picture_name(case, region.name), case, c, plan, trust, region))
    entry["seconds"] = round(time.perf_counter() - t, 4)
    return _entry(entry, region, opts, c, plan, outputs, warnings)


def _localise(src: Path, case: str, anatomy_source, label_path: Path | None, atlas: Atlas,
              opts: CropOptions, settings: RegistrationSettings, warnings: WarningLog) -> _Case:
    """Read the case and register it (user errors raise; an anatomy refused before registration
    gives ``loc`` None with the verdict)."""
    t = time.perf_counter()
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
    loc = refused = None
    try:
        loc = locate(image, anatomy, atlas, settings, warnings)
    except LocalisationUntrusted as e:
        refused = Trust.refused(e)
    seconds["registration"] = time.perf_counter() - t
    return _Case(image, anatomy.source, anatomy_stamp(anatomy_source, case), labels, loc, refused, seconds)


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
        warnings.note(f"{n_all - sc['fg_kept']} of {n_all} label voxels ({100 - preserved:.2f}%) lie outside "
                      "the crop(s)")
    return preserved


def _write_full(image: sitk.Image, labels: sitk.Image | None, stem: str, out: Path, written: list[Path]) -> list[dict]:
    """The whole image (and label map) under the crop's name: an untrusted case loses nothing."""
    img_path = out / f"{stem}.nii.gz"
    write_image(image, img_path)
    written.append(img_path)
    entry = {"box": None, "image": img_path.name, "full_volume": True}
    if labels is not None:
        lab_path = out / f"{stem}_labels.nii.gz"
        write_image(labels, lab_path)
        written.append(lab_path)
        entry["labels"] = lab_path.name
    return [entry]


def _qc(path: Path, case: str, c: _Case, plan: CropPlan | None, trust: Trust, region: Region) -> Path:
    from .qc import render_qc
    loc = c.loc
    title = (f"{case} | region {region.name} | orientation: {loc.transform.orientation_text} | "
             f"scale {np.round(loc.transform.scale, 2).tolist()} | Dice {loc.registration.dice:.2f}"
             + ("" if trust.trusted else " | NOT TRUSTED"))
    render_qc(path, c.image, loc.anatomy_volume, plan if plan is not None else CropPlan(np.array(c.image.GetSize())),
              title)
    return path


def _entry(entry: dict, region: Region, opts: CropOptions, c: _Case, plan: CropPlan | None, outputs: list[dict],
           warnings: WarningLog) -> dict:
    """The region's part of the sidecar."""
    kept = {"full": 1.0, "skip": 0.0, "outside": 0.0}.get(entry["mode"])
    return {
        "region": _region_fields(region, opts),
        **entry,
        "transform": c.loc.transform.to_dict() if c.loc is not None else None,
        "boxes": [b.to_dict() for b in plan.boxes] if plan is not None else [],
        "voxel_fraction_kept": kept if kept is not None else round(float(plan.union_mask_zyx().mean()), 5),
        "outputs": outputs,
        "warnings": list(warnings),
    }


def _stamp(src: Path, atlas: Atlas, opts: CropOptions, with_labels: bool, anatomy: dict | None) -> dict:
    """What ``--continue`` compares: the input, its size and time, the settings (the anatomy's
    stamp among them), the versions."""
    return {"input": str(src), "input_stamp": input_stamp(src),
            "settings": {**asdict(opts), "labels": with_labels, "atlas_id": atlas.atlas_id, "anatomy": anatomy},
            "versions": versions(atlas.atlas_id)}


def already_done(src: Path, out: Path, regions: list[Region], atlas: Atlas, opts: CropOptions,
                 with_labels: bool, anatomy_source=None) -> dict[str, dict] | None:
    """The sidecar entries of a case cropped before into ``out`` with the same input, anatomy,
    settings, regions and version (``--continue``), or None."""
    case = case_id(src)
    stamp = _stamp(src, atlas, opts, with_labels, anatomy_stamp(anatomy_source, case))
    entries = finished_entries(out / f"{case}.ctarr.json", stamp, [r.name for r in regions])
    if entries is None or any(entries[r.name]["region"] != _region_fields(r, opts) for r in regions):
        return None
    return entries


def _region_fields(region: Region, opts: CropOptions) -> dict:
    return {"name": region.name, "margin_mm": region.margin_mm, "extra_margin_mm": opts.margin_mm,
            "z_only": opts.z_only, "atlas_id": region.atlas_id, "source": region.provenance.get("source", ""),
            "boxes_mm": np.round(region.boxes_mm, 3).tolist()}


def _case_fields(case: str, src: Path, c: _Case, atlas: Atlas, opts: CropOptions, warnings: WarningLog) -> dict:
    """The case's part of the sidecar (shared by every region cropped into the folder)."""
    loc = c.loc
    seconds = {**c.seconds, **({f"registration_{k}": v for k, v in loc.seconds.items()} if loc else {})}
    return {
        "case": case,
        **_stamp(src, atlas, opts, c.labels is not None, c.anatomy_stamp),
        "anatomy": c.anatomy_name,
        "anatomy_groups_present": groups_present(loc.anatomy_volume) if loc else None,
        "image": Geometry.of(c.image).to_dict(),
        "registration": loc.registration.to_dict() if loc else None,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
    }
