"""One record per case of ``nnUNetv2_ctarr_crop_dataset``, for ``--continue`` and ``-num_parts``.

``DST/ctarr_cases/<case>.<Tr|Ts>.ctarr.json`` is the crop command's sidecar format
(:mod:`..core.sidecar`): the case's input files with their size and modification time, the
settings (region, margin, ``--on_fail``, atlas, source dataset), the package version and one
entry with the report row and the files written. It is written after the case's files,
atomically, also for a case that failed or was left out. A case whose record matches is not
cropped again by ``--continue`` (failed and left-out cases are); a case cropped again first
removes what its record lists. The dataset-level files are written once every case of the source
has a record of these settings: by a single run, or by the part that finishes last.
"""
from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..core.anatomy.atlas import Atlas
from ..core.base.errors import CTARRError, quiet_warnings
from ..core.base.files import as_json, input_stamp
from ..core.outputs.sidecar import finished_entries, matching_sidecar, read_sidecar, write_sidecar
from ..core.regions.region import Region
from .dataset_crops import CropJob, crop_case

RECORDS = "ctarr_cases"
_MODES = {"cropped": "crop", "full": "full"}         # any other status: "skip" (--continue does it again)


def crop_settings(region: Region, margin_mm: float, on_fail: str, atlas_id: str, source: Path) -> dict:
    """What every crop of a dataset depends on besides its input files."""
    return as_json({"region": region.to_dict(), "margin_mm": margin_mm, "on_fail": on_fail, "atlas_id": atlas_id,
                    "source": str(source)})


def record_path(job: CropJob) -> Path:
    return job.out_folder / RECORDS / f"{job.case.case}.{job.split}.ctarr.json"


def case_fields(job: CropJob, settings: dict) -> dict:
    """The case's part of its record: the input files, their stamps, the settings, the version."""
    files = [*job.case.images, *([job.case.label] if job.case.label is not None else [])]
    return {"case": job.case.case, "split": job.split, "input": [str(f) for f in files],
            "input_stamp": [input_stamp(f) for f in files], "settings": settings,
            "versions": {"nnunet_ctarr": __version__}}


def finished_row(job: CropJob, settings: dict) -> dict | None:
    """The report row of a case cropped before with the same inputs, settings and version whose
    files all exist; None when it has to be (re)done."""
    try:
        entries = finished_entries(record_path(job), case_fields(job, settings), [job.region.name])
    except OSError:                       # an input file is gone: the case fails when cropped
        return None
    return None if entries is None else entries[job.region.name]["row"]


def recorded_rows(jobs: list[CropJob], settings: dict) -> list[dict] | None:
    """The rows of every job (any status) when each case has a record of these settings and inputs,
    in the order of ``jobs``; None while some case has none (another part still runs)."""
    rows = []
    for job in jobs:
        try:
            side = matching_sidecar(record_path(job), case_fields(job, settings))
        except OSError:
            side = None
        if side is None or job.region.name not in side["regions"]:
            return None
        rows.append(side["regions"][job.region.name]["row"])
    return rows


def crop_and_record(job: CropJob, settings: dict, anatomy_source, atlas: Atlas) -> dict:
    """Crop one case (its warnings kept in the row, not logged meanwhile) and write its record;
    what an earlier run wrote for the case is removed first. Returns the report row."""
    path = record_path(job)
    try:
        fields = case_fields(job, settings)
    except OSError as e:                  # an input file vanished since the dataset was listed
        return {"case": job.case.case, "split": job.split, "status": "error", "outputs": [], "files": [],
                "warnings": [], "error": f"cannot read {e.filename}: {e.strerror}"}
    _remove_previous(path, job.out_folder)
    with quiet_warnings():
        row = crop_case(job, anatomy_source, atlas)
    entry = {"mode": _MODES.get(row["status"], "skip"), "outputs": [{"image": f"../{f}"} for f in row["files"]],
             "row": row}
    try:
        write_sidecar(path, fields, {job.region.name: entry})
    except CTARRError as e:               # the crops stand; without a record the case is done again
        row["warnings"].append(str(e))
    return row


def _remove_previous(path: Path, dataset: Path) -> None:
    """The files a case's earlier record lists (inside the dataset folder), and the record."""
    side = read_sidecar(path)
    if side is None:
        return
    root = dataset.resolve()
    for entry in side["regions"].values():
        for out in entry.get("outputs", []) if isinstance(entry, dict) else []:
            f = (path.parent / str(out.get("image", ""))).resolve()
            if f.is_file() and root in f.parents:
                f.unlink()
    path.unlink(missing_ok=True)
