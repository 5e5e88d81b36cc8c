"""One record per case of ``nnUNetv2_ctarr_crop_dataset``, for ``--continue`` and ``-num_parts``.

``DST/ctarr_cases/<case>.<Tr|Ts>.ctarr.json`` is a sidecar (:class:`core.outputs.records.CaseRecord`,
the schema of the crop command): the case's input files with their size and modification time,
the settings (region, margin, ``--on_untrusted``, atlas, source dataset), the package version and
the region's record with the files written. It is written after the case's files, atomically, also
for a case that failed or was left out. A case whose record matches is not cropped again by
``--continue`` (failed cases are); a case cropped again first removes what its record lists (file
names relative to the dataset folder). The
dataset-level files are written once every case of the source has a record of these settings: by a
single run, or by the part that finishes last.
"""
from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..core.anatomy.atlas import Atlas
from ..core.anatomy.sources import AnatomySource
from ..core.base.errors import CTARRError, quiet_warnings
from ..core.base.files import as_json, input_stamp
from ..core.localise.decision import Policy, Status
from ..core.outputs.records import CaseRecord
from ..core.outputs.sidecar import matching_sidecar, read_sidecar, write_sidecar
from ..core.regions.region import Region
from .dataset_crops import CropJob, crop_dataset_case, dataset_row

RECORDS = "ctarr_cases"


def crop_settings(region: Region, policy: Policy, atlas_id: str, source: Path) -> dict:
    """What every crop of a dataset depends on besides its input files."""
    return as_json({"region": region.to_dict(), "margin_mm": policy.margin_mm, "on_untrusted": policy.on_untrusted,
                    "atlas_id": atlas_id, "source": str(source)})


def record_path(job: CropJob) -> Path:
    return job.out_folder / RECORDS / f"{job.case.case}.{job.split}.ctarr.json"


def case_stamp(job: CropJob, settings: dict) -> CaseRecord:
    """The case's record without its region: the input files, their stamps, the settings, the version."""
    files = [*job.case.images, *([job.case.label] if job.case.label is not None else [])]
    return CaseRecord(job.case.case, "crop_dataset", [str(f) for f in files], [input_stamp(f) for f in files],
                      {**settings, "split": job.split}, {"nnunet_ctarr": __version__})


def finished_row(job: CropJob, settings: dict) -> dict | None:
    """The report row of a case cropped before with the same inputs, settings and version whose
    files all exist (a failed case is done again); None when it has to be (re)done."""
    try:
        side = matching_sidecar(record_path(job), case_stamp(job, settings))
    except OSError:                       # an input file is gone: the case fails when cropped
        return None
    rec = side.regions.get(job.region.name) if side is not None else None
    if rec is None or rec.status is Status.FAILED \
            or not all((job.out_folder / n).is_file() for o in rec.outputs for n in o.names):
        return None
    return dataset_row(job.case.case, job.split, rec)


def recorded_rows(jobs: list[CropJob], settings: dict) -> list[dict] | None:
    """The rows of every job (any status) when each case has a record of these settings and inputs,
    in the order of ``jobs``; None while some case has none (another part still runs)."""
    rows = []
    for job in jobs:
        try:
            side = matching_sidecar(record_path(job), case_stamp(job, settings))
        except OSError:
            side = None
        if side is None or job.region.name not in side.regions:
            return None
        rows.append(dataset_row(job.case.case, job.split, side.regions[job.region.name]))
    return rows


def crop_and_record(job: CropJob, settings: dict, anatomy_source: AnatomySource, atlas: Atlas) -> dict:
    """Crop one case (its warnings kept in the record, not logged meanwhile) and write its record;
    what an earlier run wrote for the case is removed first. Returns the report row."""
    path = record_path(job)
    try:
        stamp = case_stamp(job, settings)
    except OSError as e:                  # an input file vanished since the dataset was listed
        return failed_row(job, f"cannot read {e.filename}: {e.strerror}")
    _remove_previous(path, job.out_folder)
    with quiet_warnings():
        rec = crop_dataset_case(job, anatomy_source, atlas)
    row = dataset_row(job.case.case, job.split, rec)
    try:                                  # the record names the files relative to the dataset folder
        write_sidecar(path, stamp.with_regions({job.region.name: rec}))
    except CTARRError as e:               # the crops stand; without a record the case is done again
        row["warnings"].append(str(e))
    return row


def failed_row(job: CropJob, error: str) -> dict:
    """The report row of a case that failed (or was not done: ``error`` says why)."""
    return {"case": job.case.case, "split": job.split, "status": Status.FAILED.value, "outputs": [], "files": [],
            "warnings": [], "error": error}


def _remove_previous(path: Path, dataset: Path) -> None:
    """The files a case's earlier record lists (inside the dataset folder), and the record."""
    side = read_sidecar(path)
    if side is not None:
        root = dataset.resolve()
        for rec in side.regions.values():
            for name in (n for o in rec.outputs for n in o.names):
                f = (dataset / name).resolve()
                if f.is_file() and root in f.parents:
                    f.unlink()
    path.unlink(missing_ok=True)
