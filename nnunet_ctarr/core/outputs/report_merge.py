"""One batch report from the part reports of a sharded crop run (``-num_parts N -part_id k``).

Every part writes ``ctarr_report.part<k>of<N>.json`` (and ``.csv``, ``.html``) into the shared
output folder. :func:`merge_parts` reads them into one :class:`.batch_report.BatchReport`, in the
order of a single run (part ``k`` holds every N-th case from the k-th, so the parts' cases
interleave; with the case list, its order), and names what is not right:

* a **part without its report** (killed, not run): the rows of its cases are rebuilt from their
  sidecars ``<case>.ctarr.json``, which the crop command writes last and atomically per case, so
  a part killed before its report keeps every case it finished. Only with the case list
  (``cases``: the crop's ``-i``) can the merge tell that every case of that part is there; then the
  part counts as complete, else as missing. A sidecar written with other settings (margin, atlas,
  fallback, ... or package version) than the reported cases' is not taken.
* a **case** of the case list in no report and without a sidecar;
* a case in the reports of **two parts** (the input folder changed between parts): the first
  part's rows are kept;
* an **interrupted** part (``"interrupted": true``: Ctrl-C or a dead worker): its cases not done are named.

Part reports of different N in one folder are refused in one line unless ``num_parts`` picks one.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import CTARRError
from .batch_report import BatchReport
from .records import CaseRecord, ReportRow
from .sidecar import read_sidecar

PART_REPORT = re.compile(r"^ctarr_report\.part(\d+)of(\d+)\.json$")
SIDECAR_SUFFIX = ".ctarr.json"
#: case ids named in one line at most
NAMES_SHOWN = 10


@dataclass
class Merge:
    """The merged report (its ``problems``: what is missing, duplicated or interrupted, one line
    each), the split it came from, and notes (parts rebuilt completely from their sidecars)."""
    report: BatchReport
    num_parts: int
    parts_read: int
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.report.problems


def names(cases: list[str]) -> str:
    """``a, b, c`` (the first :data:`NAMES_SHOWN`, then how many more)."""
    more = len(cases) - NAMES_SHOWN
    return ", ".join(cases[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def part_name(k: int, n: int) -> str:
    return f"ctarr_report.part{k}of{n}.json"


def find_part_reports(folder: Path) -> dict[int, dict[int, Path]]:
    """``{N: {k: path}}`` of the part reports in ``folder``."""
    if not folder.is_dir():
        raise CTARRError(f"not a folder: {folder}")
    found: dict[int, dict[int, Path]] = {}
    for p in folder.iterdir():
        m = PART_REPORT.match(p.name)
        if m and int(m.group(1)) < int(m.group(2)):
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    return found


def choose_split(found: dict[int, dict[int, Path]], num_parts: int | None, folder: Path) -> int:
    """The N to merge: ``num_parts`` when given, else the one N of the part reports found."""
    if num_parts is not None:
        if num_parts < 1:
            raise CTARRError(f"-num_parts must be >= 1 (got {num_parts})")
        return num_parts
    if not found:
        raise CTARRError(f"no part reports (ctarr_report.part<k>of<N>.json) in {folder}; give -num_parts N to "
                         "rebuild the report from the sidecars")
    if len(found) > 1:
        splits = "; ".join(f"N = {n}: {', '.join(part_name(k, n) for k in sorted(ks))}"
                           for n, ks in sorted(found.items()))
        raise CTARRError(f"part reports of different splits in {folder} ({splits}); give -num_parts N to merge one "
                         "split, or remove the stale reports")
    return next(iter(found))


def read_part(path: Path) -> tuple[list[ReportRow], bool]:
    """(rows, interrupted) of a part report; :class:`CTARRError` when it is not one."""
    try:
        d = json.loads(path.read_text())
        return [ReportRow.from_json(r) for r in d["rows"]], bool(d.get("interrupted", False))
    except OSError as e:
        raise CTARRError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CTARRError(f"{path.name} is not a crop report ({type(e).__name__}: {e})") from None


def _sidecars(folder: Path) -> dict[str, CaseRecord]:
    """The crop command's sidecar records in ``folder`` by case id."""
    out = {}
    for p in sorted(folder.glob(f"*{SIDECAR_SUFFIX}")):
        rec = read_sidecar(p)
        if rec is not None and rec.command == "crop" and p.name == rec.case + SIDECAR_SUFFIX:
            out[rec.case] = rec
    return out


def _run_settings(rec: CaseRecord) -> tuple:
    """What every case of one run shares: the settings but the case's anatomy, and the version."""
    return (json.dumps({k: v for k, v in rec.settings.items() if k != "anatomy"}, sort_keys=True),
            rec.versions.get("nnunet_ctarr"))


class _Merger:
    """The state of one merge (see :func:`merge_parts`)."""

    def __init__(self, folder: Path, n: int, cases: list[str] | None):
        self.folder, self.n, self.cases = folder, n, cases
        self.rows: dict[str, list[ReportRow]] = {}      # case -> rows, first part wins
        self.where: dict[str, int] = {}                 # case -> its part (-1: rebuilt from a sidecar)
        self.order: dict[str, tuple] = {}               # case -> sort key
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.interrupted = False

    def add_part(self, k: int, rows: list[ReportRow], interrupted: bool) -> None:
        by_case: dict[str, list[ReportRow]] = {}
        for r in rows:
            by_case.setdefault(r.case, []).append(r)
        twice = []
        for j, (case, rs) in enumerate(by_case.items()):
            if case in self.rows:
                twice.append(f"{case} (also in part {self.where[case]})")
                continue
            self.rows[case], self.where[case], self.order[case] = rs, k, (0, j * self.n + k)
        if twice:
            self.problems.append(f"part {k} of {self.n} reports {len(twice)} case(s) of an earlier part (those rows "
                                 f"kept; did the input folder change between parts?): {names(twice)}")
        if interrupted:
            self.interrupted = True
            left = [c for c, rs in by_case.items() if all((r.error or "").startswith("not done") for r in rs)]
            self.problems.append(f"part {k} of {self.n} was interrupted: {len(left)} case(s) not done"
                                 + (f" ({names(left)})" if left else "") + "; run it again with --continue")

    def rebuild(self, missing: dict[int, str]) -> None:
        """The rows of the cases in no report from their sidecars (with the case list: every such
        case; without: when a part is missing, every sidecar's case); names what is still missing."""
        if not missing and self.cases is None:
            return
        side = _sidecars(self.folder)
        ref = next((_run_settings(side[c]) for c in self.rows if c in side), None)
        regions = list(dict.fromkeys(r.region for rs in self.rows.values() for r in rs))
        pool = self.cases if self.cases is not None else sorted(side)
        rebuilt, stale, short = [], [], []
        for case in (c for c in pool if c in side and c not in self.rows):
            rec = side[case]
            if ref is not None and _run_settings(rec) != ref:
                stale.append(case)
                continue
            keep = {r: rec.regions[r] for r in (regions or rec.regions) if r in rec.regions}
            if regions and len(keep) < len(regions):
                short.append(f"{case} ({', '.join(r for r in regions if r not in keep)})")
            part = BatchReport()
            part.add(rec.with_regions(keep))
            self.rows[case], self.where[case], self.order[case] = part.rows, -1, (1, case)
            rebuilt.append(case)
        if stale:
            self.problems.append(f"{len(stale)} sidecar(s) written with other settings or version than the "
                                 f"reported cases, not taken: {names(stale)}")
        if short:
            self.problems.append(f"{len(short)} sidecar(s) lack regions of the reported cases: {names(short)}")
        for k, why in missing.items():
            wanted = self.cases[k::self.n] if self.cases is not None else None
            lacking = [c for c in wanted if c not in self.rows] if wanted is not None else None
            if lacking == []:
                self.notes.append(f"part {k} of {self.n}: {why}; its {len(wanted)} case(s) rebuilt from their sidecars")
            else:
                self.problems.append(f"part {k} of {self.n} missing: {why}"
                                     + (f"; {len(lacking)} of its {len(wanted)} case(s) have no sidecar"
                                        if lacking else ""))
        if self.cases is None:
            if rebuilt:
                self.notes.append(f"{len(rebuilt)} case(s) in no report rebuilt from their sidecars: {names(rebuilt)} "
                                  "(give the crop's input folder to check that every case is there)")
            return
        of_missing = {c for k in missing for c in self.cases[k::self.n]}
        odd = [c for c in rebuilt if c not in of_missing]
        if odd:
            self.problems.append(f"{len(odd)} case(s) in no report although their part's report is there (did the "
                                 f"input folder change between parts?), rebuilt from their sidecars: {names(odd)}")

    def check_cases(self) -> None:
        """Against the case list: the cases in no report and without a sidecar; the list's order."""
        if self.cases is None:
            return
        lacking = [c for c in self.cases if c not in self.rows]
        if lacking:
            self.problems.append(f"{len(lacking)} case(s) missing (in no report, no sidecar): {names(lacking)}")
        extra = [c for c in self.rows if c not in set(self.cases)]
        if extra:
            self.notes.append(f"{len(extra)} case(s) reported but not in the input folder: {names(extra)}")
        index = {c: i for i, c in enumerate(self.cases)}
        self.order = {c: (0, index[c]) if c in index else (1, c) for c in self.rows}

    def report(self) -> BatchReport:
        regions = list(dict.fromkeys(r.region for rs in self.rows.values() for r in rs))
        rows = [r for c in sorted(self.rows, key=self.order.__getitem__)
                for r in sorted(self.rows[c], key=lambda r: regions.index(r.region))]
        return BatchReport(rows, self.interrupted, self.problems)


def merge_parts(folder: Path, num_parts: int | None = None, cases: list[str] | None = None) -> Merge:
    """The part reports of ``folder`` merged (see the module docstring); ``cases``: every case id
    of the run in input order (the crop's ``-i``), to name the cases in no report."""
    folder = Path(folder)
    found = find_part_reports(folder)
    n = choose_split(found, num_parts, folder)
    m = _Merger(folder, n, cases)
    missing: dict[int, str] = {}          # part -> why it has no rows
    for k in range(n):
        path = found.get(n, {}).get(k)
        if path is None:
            missing[k] = f"no {part_name(k, n)}"
            continue
        try:
            rows, interrupted = read_part(path)
        except CTARRError as e:
            missing[k] = str(e)
            continue
        m.add_part(k, rows, interrupted)
    m.rebuild(missing)
    m.check_cases()
    return Merge(m.report(), n, n - len(missing), m.notes)
