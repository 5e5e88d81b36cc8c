"""What ``nnUNetv2_ctarr_evaluate --continue`` compares: ``evaluation[.part<k>of<N>].json`` beside
the CSV holds the run's settings, every region's definition and, per case, the stamps of its
image and label map (path, size, modification time) with its rows.

A case is taken from such a file instead of being evaluated again when the file has the same
settings and package version, the case the same stamps, and every region asked for has a row
there with the same region definition that did not fail. Every ``evaluation*.json`` in the output
folder is read, so the parts of a sharded run are merged by one more run with ``--continue``.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..core.base.files import as_json, input_stamp, write_json
from ..core.regions.region import Region


def run_settings(margin_mm: float, label_ids, atlas_id: str, anatomy: dict, on_untrusted: str = "whole") -> dict:
    """The settings every row depends on (``anatomy``: the anatomy options as given)."""
    return as_json({"margin_mm": margin_mm, "label_ids": label_ids, "atlas_id": atlas_id, "anatomy": anatomy,
                   "on_untrusted": on_untrusted, "nnunet_ctarr": __version__})


def case_stamp(image: Path, labels: Path, known: dict | None) -> dict:
    """The inputs of one case: image and label map (path, size, mtime), its known perturbation."""
    return as_json({"image": str(image), "image_stamp": input_stamp(image), "labels": str(labels),
                   "labels_stamp": input_stamp(labels), "known": known})


def write_results(path: Path, settings: dict, regions: list[Region], stamps: dict[str, dict],
                  rows: list[dict]) -> None:
    """``evaluation*.json``: the settings, the regions and per stamped case its rows by region."""
    cases: dict[str, dict] = {}
    for r in rows:
        if r["case"] in stamps:
            cases.setdefault(r["case"], {"stamp": stamps[r["case"]], "rows": {}})["rows"][r["region"]] = r
    write_json(path, {"settings": settings, "regions": {r.name: r.to_dict() for r in regions}, "cases": cases})


def finished_rows(folder: Path, settings: dict, regions: list[Region],
                  stamps: dict[str, dict]) -> dict[str, list[dict]]:
    """Case -> its rows (in the order of ``regions``) recorded before in ``folder`` with these
    settings, stamps and region definitions, for every case all of whose regions are there and
    none failed."""
    wanted = {r.name: as_json(r.to_dict()) for r in regions}
    found: dict[str, dict[str, dict]] = {}
    for f in sorted(folder.glob("evaluation*.json")):
        try:
            data = json.loads(f.read_text())
            if data.get("settings") != settings:
                continue
            same = [n for n, d in wanted.items() if data["regions"].get(n) == d]
            for case, rec in data["cases"].items():
                if stamps.get(case) != rec["stamp"]:
                    continue
                for name in same:
                    row = rec["rows"].get(name)
                    if row is not None and row.get("status") != "failed":   # Status.FAILED
                        found.setdefault(case, {}).setdefault(name, row)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue                      # not one of ours, or damaged: its cases are evaluated again
    return {c: [rows[n] for n in wanted] for c, rows in found.items() if len(rows) == len(wanted)}
