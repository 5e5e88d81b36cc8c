"""The batch report of the crop command: one row per case and region (:class:`.records.ReportRow`),
counts per status, and the console summary that names every case that did not end clean.

Written as ``ctarr_report.json`` (summary + rows), ``ctarr_report.csv`` (rows) and
``ctarr_report.html`` (the QC pictures worst first with the numbers, :mod:`.report_html`) in the
output folder; with ``-num_parts N -part_id k`` as ``ctarr_report.part<k>of<N>.*`` so that parts run in
parallel never write the same file. ``interrupted``: the run was stopped (Ctrl-C) and the rows
are those finished so far.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..base.files import write_csv, write_json
from ..localise.decision import Status
from .records import FIELDS, CaseRecord, ReportRow
from .report_html import write_report_html

#: every status a case-region pair can end in, clean first
STATUSES = ("cropped", "done before", *(s.value for s in Status if s is not Status.CROPPED))
#: the statuses of a trusted answer: the crop, or the region is not in this image (exit code 0)
CLEAN = ("cropped", "done before", Status.OUTSIDE.value)
#: how many characters of a reason the console summary shows
REASON_CHARS = 200


@dataclass
class BatchReport:
    rows: list[ReportRow] = field(default_factory=list)
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)   # a merge of part reports: what is missing (.report_merge)

    def add(self, record: CaseRecord, done_before: bool = False) -> None:
        """The rows of a case's sidecar record (``done_before``: found done by ``--continue``)."""
        self.rows += [ReportRow.of(record.case, r, done_before) for r in record.regions.values()]

    def add_error(self, case: str, regions: list[str], message: str) -> None:
        self.rows += [ReportRow.failed(case, r, message) for r in regions]

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.rows) for s in STATUSES}

    @property
    def all_clean(self) -> bool:
        return not self.interrupted and not self.problems and all(r.status in CLEAN for r in self.rows)

    def summary_lines(self, out: Path, one_region: bool) -> list[str]:
        """``N of M cropped ...`` and, per non-clean status, the cases with their first reason."""
        n = self.counts()["done before"]
        note = (f" ({n} done before)" if n else "") + (" (INTERRUPTED: rows so far)" if self.interrupted else "")
        return outcome_lines([r.to_json() for r in self.rows], STATUSES, ("cropped", "done before"), "cropped", out,
                             one_region, note)

    def write(self, folder: Path, part: str = "", qc: bool = False, pictures: Path | None = None) -> None:
        """``ctarr_report[part].json``, ``.csv`` and ``.html`` in ``folder`` (atomic, umask
        permissions); ``qc``: the run drew QC pictures into ``folder`` (or ``pictures``; the page embeds them)."""
        stem = f"ctarr_report{part}"
        rows = [r.to_json() for r in self.rows]
        extra = {"problems": self.problems} if self.problems else {}
        write_json(folder / f"{stem}.json",
                   {"counts": self.counts(), "interrupted": self.interrupted, **extra, "rows": rows})
        write_csv(folder / f"{stem}.csv", rows, FIELDS)
        write_report_html(folder / f"{stem}.html", rows, (pictures or folder) if qc else None)


def shorten(text: str, n: int = REASON_CHARS) -> str:
    """``text`` cut to ``n`` characters at a word, with an ellipsis when cut."""
    if len(text) <= n:
        return text
    cut = text[: n - 1].rsplit(" ", 1)[0]
    return cut + "…"


def outcome_lines(rows: list[dict], statuses: tuple[str, ...], clean: tuple[str, ...], verb: str, out: Path,
                  one_region: bool, note: str = "") -> list[str]:
    """A batch's console summary: ``N of M case(s) <verb><note>; <status>: n ... -> out``, then per
    status not in ``clean`` (in the order of ``statuses``) its cases with the first reason or error;
    a case that failed as a whole is one line, not one per region."""
    counts = {s: sum(r["status"] == s for r in rows) for s in statuses}
    what = "case(s)" if one_region else "case-region pair(s)"
    lines = [f"{sum(counts[s] for s in clean)} of {len(rows)} {what} {verb}{note}"
             + "".join(f"; {s}: {n}" for s, n in counts.items() if n and s not in clean) + f" -> {out}"]
    for s in statuses:
        hit = [r for r in rows if r["status"] == s and s not in clean]
        if not hit:
            continue
        lines.append(f"  {s}:")
        shown: dict[tuple, list[str]] = {}
        for r in hit:
            why = r.get("reasons") or r.get("trust_reasons") or r.get("error") or ""
            shown.setdefault((r["case"], why), []).append(r["region"])
        for (case, why), regions in shown.items():
            who = case if one_region else (f"{case}/{regions[0]}" if len(regions) == 1
                                           else f"{case} ({len(regions)} regions)")
            lines.append(f"    {who}: {shorten(why)}")
    return lines
