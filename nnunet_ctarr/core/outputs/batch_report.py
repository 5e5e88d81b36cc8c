"""The batch report of the crop command: one row per case and region, counts per status, and the
console summary that names every case that did not end clean.

Written as ``ctarr_report.json`` (summary + rows), ``ctarr_report.csv`` (rows) and
``ctarr_report.html`` (the QC pictures worst first with the numbers, :mod:`.report_html`) in the
output folder; with ``-num_parts N -part_id k`` as ``ctarr_report.part<k>of<N>.*`` so that parts run in
parallel never write the same file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..base.files import write_csv, write_json
from .report_html import write_report_html

#: every status a case-region pair can end in, clean first
STATUSES = ("cropped", "done before", "untrusted: written whole", "untrusted: skipped",
            "untrusted: cropped anyway", "outside the field of view", "failed")
FIELDS = ("case", "region", "status", "n_outputs", "trusted", "reasons", "orientation", "scale_xyz",
          "registration_dice", "region_dice", "voxel_fraction_kept", "label_voxels_preserved_percent", "seconds",
          "warnings", "error")
_MODE_STATUS = {"full": "untrusted: written whole", "skip": "untrusted: skipped",
                "outside": "outside the field of view"}


def status_of(entry: dict) -> str:
    """The report status of a sidecar entry."""
    if entry["mode"] == "crop":
        return "cropped" if entry["trusted"] else "untrusted: cropped anyway"
    return _MODE_STATUS[entry["mode"]]


def entry_row(case: str, region: str, entry: dict, status: str) -> dict:
    """One report row from a sidecar entry."""
    t, trust = entry.get("transform") or {}, entry.get("trust", {})
    return {"case": case, "region": region, "status": status,
            "n_outputs": len(entry.get("outputs", [])), "trusted": entry.get("trusted"),
            "reasons": "; ".join(trust.get("reasons", [])), "orientation": t.get("orientation"),
            "scale_xyz": t.get("scale_xyz"), "registration_dice": trust.get("registration_dice"),
            "region_dice": trust.get("region_dice"), "voxel_fraction_kept": entry.get("voxel_fraction_kept"),
            "label_voxels_preserved_percent": entry.get("label_voxels_preserved_percent"),
            "seconds": entry.get("seconds"), "warnings": " | ".join(entry.get("warnings", [])),
            "error": entry.get("error")}


@dataclass
class BatchReport:
    rows: list[dict] = field(default_factory=list)

    def add(self, case: str, entries: dict[str, dict], done_before: bool = False) -> None:
        """Rows of a case's entries; ``done_before``: found done by ``--continue`` (a clean entry is
        then counted as ``done before``, any other keeps its status)."""
        for name, e in entries.items():
            status = status_of(e)
            self.rows.append(entry_row(case, name, e, "done before" if done_before and status == "cropped" else status))

    def add_error(self, case: str, regions: list[str], message: str) -> None:
        self.rows += [{"case": case, "region": r, "status": "failed", "error": message} for r in regions]

    def counts(self) -> dict[str, int]:
        return {s: sum(r["status"] == s for r in self.rows) for s in STATUSES}

    @property
    def all_clean(self) -> bool:
        return all(r["status"] in ("cropped", "done before") for r in self.rows)

    def summary_lines(self, out: Path, one_region: bool) -> list[str]:
        """``N of M cropped ...`` and, per non-clean status, the cases with their first reason."""
        n = self.counts()["done before"]
        return outcome_lines(self.rows, STATUSES, ("cropped", "done before"), "cropped", out, one_region,
                             f" ({n} done before)" if n else "")

    def write(self, folder: Path, part: str = "", qc: bool = False) -> None:
        """``ctarr_report[part].json``, ``.csv`` and ``.html`` in ``folder`` (atomic, umask
        permissions); ``qc``: the run drew QC pictures into ``folder`` (the page embeds them)."""
        stem = f"ctarr_report{part}"
        write_json(folder / f"{stem}.json", {"counts": self.counts(), "rows": self.rows})
        write_csv(folder / f"{stem}.csv", self.rows, FIELDS)
        write_report_html(folder / f"{stem}.html", self.rows, folder if qc else None)


def outcome_lines(rows: list[dict], statuses: tuple[str, ...], clean: tuple[str, ...], verb: str, out: Path,
                  one_region: bool, note: str = "") -> list[str]:
    """A batch's console summary: ``N of M case(s) <verb><note>; <status>: n ... -> out``, then per
    status not in ``clean`` (in the order of ``statuses``) its cases with the first reason or error."""
    counts = {s: sum(r["status"] == s for r in rows) for s in statuses}
    what = "case(s)" if one_region else "case-region pair(s)"
    lines = [f"{sum(counts[s] for s in clean)} of {len(rows)} {what} {verb}{note}"
             + "".join(f"; {s}: {n}" for s, n in counts.items() if n and s not in clean) + f" -> {out}"]
    for s in statuses:
        hit = [r for r in rows if r["status"] == s and s not in clean]
        if hit:
            lines.append(f"  {s}:")
            lines += [f"    {r['case'] if one_region else r['case'] + '/' + r['region']}: "
                      f"{(r.get('reasons') or r.get('trust_reasons') or r.get('error') or '')[:160]}" for r in hit]
    return lines
