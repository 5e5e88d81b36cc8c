"""The crop command's sidecar ``<case>.ctarr.json``: one per case and output folder.

The case's fields (input, image geometry, anatomy, registration, versions, seconds) sit at the
top; ``regions`` maps every region cropped into the folder to its entry (mode, ``trusted`` with
the reasons, transform, boxes, outputs, warnings). Cropping another region into the same folder
adds its entry; re-cropping a region replaces it; a sidecar written for another input file of
the same case id is replaced as a whole.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..base.files import write_json


def read_sidecar(path: Path) -> dict | None:
    """The sidecar at ``path``, or None when there is none or it is not a CTARR sidecar."""
    try:
        side = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return side if isinstance(side, dict) and isinstance(side.get("regions"), dict) else None


def write_sidecar(path: Path, case_fields: dict, entries: dict[str, dict]) -> dict:
    """Write (atomically) the case's sidecar with ``entries`` (region name -> entry), keeping the
    entries of other regions cropped from the same input; returns what was written."""
    old = read_sidecar(path)
    regions = dict(old["regions"]) if old is not None and old.get("input") == case_fields.get("input") else {}
    regions.update(entries)
    side = {**case_fields, "regions": regions}
    write_json(path, side)
    return side


def matching_sidecar(path: Path, case_fields: dict) -> dict | None:
    """The sidecar at ``path`` when it records the same input (path, size, mtime), settings and
    package version as ``case_fields``; else None."""
    side = read_sidecar(path)
    keys = ("input", "input_stamp", "settings")
    if side is None or any(side.get(k) != case_fields[k] for k in keys) \
            or side.get("versions", {}).get("nnunet_ctarr") != case_fields["versions"]["nnunet_ctarr"]:
        return None
    return side


def finished_entries(path: Path, case_fields: dict, regions: list[str]) -> dict[str, dict] | None:
    """The entries of ``regions`` when the sidecar at ``path`` records them for the same input
    (path, size, mtime), settings and package version, and every output it names exists; else None.
    A case interrupted mid-write has no sidecar (it is written last, atomically): never done."""
    side = matching_sidecar(path, case_fields)
    if side is None:
        return None
    entries = {r: side["regions"].get(r) for r in regions}
    if any(e is None for e in entries.values()):
        return None
    names = [o[k] for e in entries.values() for o in e.get("outputs", []) for k in ("image", "labels") if k in o]
    return entries if all((path.parent / n).is_file() for n in names) else None
