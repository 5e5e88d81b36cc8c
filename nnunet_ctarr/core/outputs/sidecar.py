"""The sidecar ``<case>.ctarr.json``: one per case and output folder (:class:`.records.CaseRecord`).

The case's fields (input, image geometry, anatomy, registration, versions, seconds) sit at the
top; ``regions`` maps every region cropped (or predicted) into the folder to its record. Cropping
another region into the same folder with the same input and settings adds its record; re-cropping
a region replaces it (the files it named and the new record does not are removed); a sidecar written
for another input, other settings or another version is replaced as a whole (for another input,
every file it named is removed). A sidecar of another
schema version, or not a sidecar at all, reads as None: ``--continue`` redoes the case.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..base.files import write_json
from .records import CaseRecord, RegionRecord


def read_sidecar(path: Path) -> CaseRecord | None:
    """The record at ``path``, or None when there is none or it is not a sidecar of this schema."""
    try:
        return CaseRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def write_sidecar(path: Path, record: CaseRecord) -> CaseRecord:
    """Write (atomically) the case's sidecar, keeping the records of other regions written from the
    same input into this folder; returns what was written."""
    old = read_sidecar(path)
    same = old is not None and old.stamp() == record.stamp()     # same input file, settings and version
    regions = dict(old.regions) if same else {}
    regions.update(record.regions)
    side = record.with_regions(regions)
    write_json(path, side.to_json())
    if old is not None:
        _remove_stale_outputs(path.parent, old, side)
    return side


def _remove_stale_outputs(folder: Path, old: CaseRecord, new: CaseRecord) -> None:
    """Files an earlier sidecar of this case named that the new one does not: of the regions written
    now (a region now skipped or outside the field of view, another ``--compression``), and of every
    region when the input itself changed (crops of a file that is gone). Crops of other regions
    made with other settings from the same input stay (the sidecar no longer lists them)."""
    keep = {n for r in new.regions.values() for o in r.outputs for n in o.names}
    input_changed = (old.input, old.input_stamp) != (new.input, new.input_stamp)
    for name, rec in old.regions.items():
        if input_changed or name in new.regions:
            for n in {n for o in rec.outputs for n in o.names} - keep:
                if "/" not in n and "\\" not in n:
                    (folder / n).unlink(missing_ok=True)


def matching_sidecar(path: Path, stamp: CaseRecord) -> CaseRecord | None:
    """The sidecar at ``path`` when it records the same input (path, size, mtime), settings and
    package version as ``stamp``; else None."""
    side = read_sidecar(path)
    return side if side is not None and side.stamp() == stamp.stamp() else None


def finished_regions(path: Path, stamp: CaseRecord, regions: list[str]) -> dict[str, RegionRecord] | None:
    """The records of ``regions`` when the sidecar at ``path`` holds them for the same input,
    settings and version, and every file they name exists; else None. A case interrupted mid-write
    has no sidecar (it is written last, atomically): never done."""
    side = matching_sidecar(path, stamp)
    if side is None or any(r not in side.regions for r in regions):
        return None
    found = {r: side.regions[r] for r in regions}
    names = [n for rec in found.values() for o in rec.outputs for n in o.names]
    return found if all((path.parent / n).is_file() for n in names) else None
