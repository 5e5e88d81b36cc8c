"""The crop command's writer: a case cropped in memory (:class:`..pipeline.CaseCrops`) -> crop files,
QC pictures and the sidecar ``<case>.ctarr.json`` (:class:`.records.CaseRecord`).

Names: ``<case>_<region>.nii.gz``, ``<case>_<region>_box<k>.nii.gz`` for regions of several boxes,
``..._labels.nii.gz`` for label crops, ``..._<channel:04d>`` before the extension for cases of
several channels (nnU-Net's naming). The whole image stands under the crop's name when an untrusted
region falls back to it. The sidecar is written also when nothing else is (skipped, outside the
field of view, boxes only): it says why, and ``--continue`` does not redo the case. On any error
everything the case wrote is removed before the error is raised again.
"""
from __future__ import annotations

import importlib.metadata
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ... import __version__
from ..anatomy.atlas import Atlas
from ..base.errors import CTARRError
from ..base.files import input_stamp
from ..base.nifti import DEFAULT_LEVEL, write_images
from ..localise.decision import Policy, Status
from ..localise.localisation import groups_present
from ..pipeline import CaseCrops, CutOptions, RegionCrops
from ..regions.region import Region
from .qc import picture_name
from .records import CaseRecord, OutputFile, RegionRecord
from .sidecar import write_sidecar

#: the crops of one case are written in this many threads (the deflate releases the GIL)
WRITE_THREADS = 2


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
    on_untrusted: str = "whole"            # core.localise.decision.ON_UNTRUSTED
    boxes_only: bool = False               # sidecar and report only: no image written
    compression: str = str(DEFAULT_LEVEL)  # ISA-L level "0".."3" (.nii.gz) or "none" (.nii)

    def policy(self) -> Policy:
        return Policy(self.on_untrusted, self.margin_mm, self.z_only)

    def cut(self) -> CutOptions:
        return CutOptions(self.boxes_only, self.pad, self.fill_value, lazy=True)

    @property
    def suffix(self) -> str:
        return ".nii" if self.compression == "none" else ".nii.gz"

    @property
    def level(self) -> int:
        return DEFAULT_LEVEL if self.compression == "none" else int(self.compression)


def torch_version() -> str:
    """torch's version without importing torch (``--continue`` over a finished batch then never
    imports it: seconds of start-up); the imported module's own where it is loaded already."""
    torch = sys.modules.get("torch")
    return torch.__version__ if torch is not None else importlib.metadata.version("torch")


def versions(atlas_id: str, region_source: str = "") -> dict:
    out = {"nnunet_ctarr": __version__, "atlas_id": atlas_id, "region_source": region_source,
           "torch": torch_version(), "SimpleITK": sitk.Version_VersionString()}
    return out if region_source else {k: v for k, v in out.items() if k != "region_source"}


def case_stamp(case: str, inputs: list[Path], atlas: Atlas, opts: CropOptions, with_labels: bool,
               anatomy: dict | None) -> CaseRecord:
    """A record with what ``--continue`` compares and no regions yet: the input files, their size
    and time, the settings (the anatomy's stamp among them), the versions."""
    files = inputs[0] if len(inputs) == 1 else inputs
    stamp = input_stamp(inputs[0]) if len(inputs) == 1 else [input_stamp(p) for p in inputs]
    settings = {**asdict(opts), "labels": with_labels, "atlas_id": atlas.atlas_id, "anatomy": anatomy}
    return CaseRecord(case, "crop", str(files) if len(inputs) == 1 else [str(p) for p in files], stamp, settings,
                      versions(atlas.atlas_id))


def write_case(crops: CaseCrops, stamp: CaseRecord, out: Path, opts: CropOptions) -> CaseRecord:
    """Write every region's pieces (and QC pictures) and the sidecar; returns the sidecar record.
    On error, removes whatever it wrote and re-raises."""
    if opts.qc and not isinstance(crops.image, sitk.Image):
        raise CTARRError(f"{crops.case}: QC pictures need the image's voxels; crop it with read_voxels=True")
    written: list[Path] = []
    try:
        t = time.perf_counter()
        pairs, outputs = [], {}
        for rc in crops.regions:
            outputs[rc.decision.region.name] = _name_pieces(crops, rc, out, opts.suffix, pairs)
        written += [p for _, p in pairs]              # listed first: a failure removes every file of the case
        write_images(pairs, opts.level, threads=WRITE_THREADS)
        for rc in crops.regions:
            if opts.qc and crops.located.localisation is not None:
                written.append(_qc(out, crops, rc))
        seconds = {"write": time.perf_counter() - t}
        share = sum(crops.seconds.values(), seconds["write"]) / max(len(crops.regions), 1)
        regions = {rc.decision.region.name: region_record(crops, rc, opts.margin_mm, opts.z_only,
                                                          outputs[rc.decision.region.name], share)
                   for rc in crops.regions}
        record = _case_record(crops, stamp, regions, seconds)
        write_sidecar(out / f"{crops.case}.ctarr.json", record)
        return record
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def _name_pieces(crops: CaseCrops, rc: RegionCrops, out: Path, suffix: str, pairs: list) -> tuple[OutputFile, ...]:
    """The file names of one region's pieces (none for boxes only, skipped, outside); the
    (image or crop, path) pairs to write are added to ``pairs``."""
    region = rc.decision.region
    multi_box, multi_channel = len(region.boxes_mm) > 1, len(crops.channels) > 1
    files = []
    for piece in rc.pieces:
        if not piece.channels:
            continue
        stem = f"{crops.case}_{region.name}" + (f"_box{piece.box.index}" if multi_box and piece.box else "")
        names = [f"{stem}_{c:04d}{suffix}" if multi_channel else f"{stem}{suffix}" for c in range(len(piece.channels))]
        pairs += [(img, out / name) for img, name in zip(piece.channels, names)]
        lab = f"{stem}_labels{suffix}" if piece.labels is not None else None
        if lab:
            pairs.append((piece.labels, out / lab))
        files.append(OutputFile(tuple(names), piece.box.index if piece.box else None, lab))
    return tuple(files)


def region_record(crops: CaseCrops, rc: RegionCrops, margin_mm: float, z_only: bool,
                  outputs: tuple[OutputFile, ...] = (), seconds: float | None = None) -> RegionRecord:
    """The sidecar record of one region of a case cropped in memory."""
    d, loc = rc.decision, crops.located.localisation
    return RegionRecord(
        name=d.region.name, status=d.status, trusted=d.trust.trusted, reasons=d.trust.reasons, why=d.why,
        measures=d.trust.rounded_measures(), definition=region_definition(d.region, margin_mm, z_only),
        transform=loc.transform.to_dict() if loc is not None else None,
        boxes=tuple(b.to_dict() for b in d.plan.boxes) if d.plan is not None else (),
        voxel_fraction_kept=rc.voxel_fraction_kept, outputs=outputs,
        label_voxels_preserved_percent=None if rc.label_voxels_preserved_percent is None
        else round(rc.label_voxels_preserved_percent, 4),
        warnings=(*crops.warnings, *d.warnings, *_label_note(rc)),
        seconds=None if seconds is None else round(seconds, 4))


def _label_note(rc: RegionCrops) -> tuple[str, ...]:
    p = rc.label_voxels_preserved_percent
    if p is None or p >= 100.0 or rc.status not in (Status.CROPPED, Status.ANYWAY):
        return ()
    return (f"{100 - p:.2f}% of the label voxels lie outside the crop(s)",)


def region_definition(region: Region, margin_mm: float, z_only: bool) -> dict:
    """The region as it was applied: its margins, boxes and where it comes from."""
    return {"name": region.name, "margin_mm": region.margin_mm, "extra_margin_mm": margin_mm, "z_only": z_only,
            "atlas_id": region.atlas_id, "source": region.provenance.get("source", ""),
            "boxes_mm": np.round(region.boxes_mm, 3).tolist()}


def _case_record(crops: CaseCrops, stamp: CaseRecord, regions: dict[str, RegionRecord],
                 more_seconds: dict[str, float]) -> CaseRecord:
    loc = crops.located.localisation
    seconds = {**crops.seconds, **({f"registration_{k}": v for k, v in loc.seconds.items()} if loc else {}),
               **more_seconds}
    return replace(stamp, anatomy=crops.anatomy.source,
                   anatomy_groups_present=groups_present(loc.anatomy_volume) if loc else None,
                   image=crops.geometry.to_dict(),
                   registration=loc.registration.to_dict() if loc else None,
                   seconds={k: round(v, 4) for k, v in seconds.items()}, regions=regions)


def _qc(out: Path, crops: CaseCrops, rc: RegionCrops) -> Path:
    from .qc import render_qc
    loc, d = crops.located.localisation, rc.decision
    path = out / picture_name(crops.case, d.region.name)
    title = (f"{crops.case} | region {d.region.name} | orientation: {loc.transform.orientation_text} | "
             f"scale {np.round(loc.transform.scale, 2).tolist()} | Dice {loc.registration.dice:.2f}"
             + ("" if d.trusted else " | NOT TRUSTED") + (" | OUTSIDE" if d.status is Status.OUTSIDE else ""))
    render_qc(path, crops.image, loc.anatomy_volume, d.plan, title)
    return path

