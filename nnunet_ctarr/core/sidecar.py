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

from .io import write_json


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
