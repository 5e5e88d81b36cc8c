"""Region-crop datasets: every case of an nnU-Net raw dataset cropped to a CTARR region.

One output case per box (``<case>`` for one-box regions, ``<case>_box<k>`` otherwise); all
channels and the label map are cut with the same index box of the stored image (no
interpolation), so each crop overlays its source exactly. The one decision
(``core.localise.decision``) says what each case gives: its crops, the whole case
(``untrusted: whole image``), or nothing (``untrusted: skipped``, ``outside the field of view``:
the region is not in the case). Per case the report says how many voxels were dropped and how
much label foreground fell outside the crops.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.anatomy.atlas import Atlas
from ..core.anatomy.sources import AnatomySource
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.images import read_image
from ..core.base.nifti import write_images
from ..core.base.nnunet_format import RawCase
from ..core.localise.decision import Policy, Status
from ..core.outputs.case_writer import region_record
from ..core.outputs.records import OutputFile, RegionRecord
from ..core.pipeline import CaseCrops, CutOptions, crop_case
from ..core.regions.region import Region


@dataclass(frozen=True)
class CropJob:
    case: RawCase
    split: str                      # "Tr" or "Ts"
    out_folder: Path
    file_ending: str
    region: Region
    policy: Policy                  # extra margin (stored in ctarr.json) and the fallback


def crop_dataset_case(job: CropJob, anatomy_source: AnatomySource, atlas: Atlas) -> RegionRecord:
    """Crop one case into the dataset; returns its region record (never raises for a case-level
    problem: an error is a ``failed`` record and whatever the case wrote is removed)."""
    t0 = time.perf_counter()
    warnings = WarningLog(case=job.case.case)
    written: list[str] = []
    try:
        images, label = _read(job.case)
        anatomy = anatomy_source.load(job.case.case, warnings)  # a user error for this case, never a fallback
        crops = crop_case(job.case.case, images, anatomy, [job.region], atlas, job.policy, CutOptions(lazy=True),
                          labels=label, warnings=warnings)
        outputs = _write(job, crops, written)
        record = region_record(crops, crops.regions[0], job.policy.margin_mm, False, outputs)
        fg = int((sitk.GetArrayViewFromImage(label) > 0).sum()) if label is not None else None
        measures = {**record.measures, "foreground_voxels": fg,
                    "voxel_reduction": _reduction(crops, outputs)}
        record = replace(record, measures=measures)
    except Exception as e:                     # noqa: BLE001 (a user error, or a bug: this case fails, not the run)
        for f in written:
            (job.out_folder / f).unlink(missing_ok=True)
        why = str(e) if isinstance(e, CTARRError) else f"internal error {type(e).__name__}: {e} (a bug: please report)"
        record = RegionRecord(job.region.name, Status.FAILED, warnings=tuple(warnings), error=why)
    return replace(record, seconds=round(time.perf_counter() - t0, 3))


def _read(case: RawCase) -> tuple[list[sitk.Image], sitk.Image | None]:
    """The channels and the label map of a case (the pipeline checks they share one grid)."""
    return [read_image(f) for f in case.images], read_image(case.label) if case.label is not None else None


def _write(job: CropJob, crops: CaseCrops, written: list[str]) -> tuple[OutputFile, ...]:
    """One output case per piece (``<case>_box<k>`` for regions of several boxes), every file of the
    case written at once in threads (crops streamed from the images); paths relative to the dataset."""
    rc, name, out, pairs = crops.regions[0], job.case.case, [], []
    for piece in rc.pieces:
        case = f"{name}_box{piece.box.index}" if piece.box is not None and len(job.region.boxes_mm) > 1 else name
        files = [f"images{job.split}/{case}_{c:04d}{job.file_ending}" for c in range(len(piece.channels))]
        pairs += list(zip(piece.channels, files))
        lab = f"labels{job.split}/{case}{job.file_ending}" if piece.labels is not None else None
        if lab:
            pairs.append((piece.labels, lab))
        out.append(OutputFile(tuple(files), piece.box.index if piece.box else None, lab))
    written += [f for _, f in pairs]               # listed first: a failure removes every file of the case
    write_images([(img, job.out_folder / f) for img, f in pairs], threads=2)
    return tuple(out)


def _reduction(crops: CaseCrops, outputs: tuple[OutputFile, ...]) -> float | None:
    """Image voxels per voxel written (None: nothing written)."""
    rc = crops.regions[0]
    kept = sum(int(np.prod(p.box.size_xyz)) if p.box is not None else int(np.prod(crops.geometry.size_xyz))
               for p in rc.pieces)
    return round(int(np.prod(crops.geometry.size_xyz)) / kept, 3) if outputs and kept else None


def output_case(f: OutputFile) -> str:
    """The nnU-Net case name of an output (``imagesTr/<case>_0000.nii.gz`` -> ``<case>``)."""
    return Path(f.images[0]).name.rsplit("_", 1)[0]


def dataset_row(case: str, split: str, r: RegionRecord) -> dict:
    """The report row of a case (``ctarr_crop_report.json``)."""
    fg = r.measures.get("foreground_voxels")
    pres = r.label_voxels_preserved_percent
    lost = None if fg is None or pres is None else int(round(fg * (100.0 - pres) / 100.0))
    t, boxes = r.transform or {}, {b["box"]: b for b in r.boxes}
    outputs = [{"case": output_case(o), **(boxes[o.box] if o.box is not None else {"whole_image": True})}
               for o in r.outputs]
    return {"case": case, "split": split, "status": r.status.value, "outputs": outputs,
            "files": [n for o in r.outputs for n in o.names], "trusted": r.trusted, "reasons": "; ".join(r.reasons),
            "why": r.why, "voxel_reduction": r.measures.get("voxel_reduction"), "foreground_voxels": fg,
            "lost_foreground_voxels": lost, "lost_foreground_pct": None if pres is None else round(100.0 - pres, 4),
            "registration_dice": r.measures.get("registration_dice"), "orientation": t.get("orientation"),
            "warnings": list(r.warnings), "error": r.error, "seconds": r.seconds}
