"""nnUNetv2_ctarr_report: the part reports of a real sharded crop run merged into one report."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from conftest import SMALL, run_in_process

from nnunet_ctarr.cli import crop, report

CASES = ("a", "b", "c")  # part 0 of 2: a, c; part 1: b


def _rows(folder, name="ctarr_report.json"):
    """The report's rows without their timing."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((folder / name).read_text())["rows"]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three small cases cropped (liver) in one process into ``single`` and as two parts into ``parts``."""
    tmp = tmp_path_factory.mktemp("merge")
    imgs, anat = tmp / "imgs", tmp / "anat"
    imgs.mkdir(), anat.mkdir()
    for case in CASES:
        shutil.copy(SMALL[0], imgs / f"{case}.nii.gz")
        shutil.copy(SMALL[1], anat / f"{case}.nii.gz")
    common = ["-i", str(imgs), "-anatomy_seg", str(anat), "-r", "liver"]
    assert run_in_process(crop.main, [*common, "-o", str(tmp / "single")]).returncode == 0
    for k in ("0", "1"):
        r = run_in_process(crop.main, [*common, "-o", str(tmp / "parts"), "-num_parts", "2", "-part_id", k])
        assert r.returncode == 0, r.stderr
    return tmp


@pytest.fixture
def parts(runs, tmp_path):
    """A copy of the parts' output folder (tests change it)."""
    return shutil.copytree(runs / "parts", tmp_path / "parts")


def _merge(folder, *extra):
    return run_in_process(report.main, ["-i", str(folder), *extra])


def test_two_parts_merge_into_the_single_run_report(runs, parts):
    assert not (parts / "ctarr_report.json").exists()
    r = _merge(parts)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 of 3 case(s) cropped" in r.stdout and "merged 2 of 2 part report(s)" in r.stdout
    single = _rows(runs / "single")
    assert [row["case"] for row in single] == list(CASES)
    assert _rows(parts) == single  # every row, in the single run's order, equal but for the seconds
    merged = json.loads((parts / "ctarr_report.json").read_text())
    assert merged["counts"] == json.loads((runs / "single" / "ctarr_report.json").read_text())["counts"]
    assert "problems" not in merged
    assert [row["case"] for row in csv.DictReader((parts / "ctarr_report.csv").open())] == list(CASES)
    assert (parts / "ctarr_report.html").read_text().count('class="card') == 3


def test_a_missing_part_is_named_and_exits_1(runs, parts):
    (parts / "ctarr_report.part1of2.json").unlink()
    (parts / "b.ctarr.json").unlink()  # part 1 never ran
    r = _merge(parts)
    assert r.returncode == 1
    assert "part 1 of 2 missing: no ctarr_report.part1of2.json" in r.stdout.splitlines()
    assert [row["case"] for row in _rows(parts)] == ["a", "c"]
    assert json.loads((parts / "ctarr_report.json").read_text())["problems"][0].startswith("part 1 of 2 missing")
    r = _merge(parts, "-inputs", str(runs / "imgs"))
    assert r.returncode == 1
    assert "1 case(s) missing (in no report, no sidecar): b" in r.stdout


def test_a_part_killed_before_its_report_is_rebuilt_from_the_sidecars(runs, parts):
    (parts / "ctarr_report.part1of2.json").unlink()  # b was cropped, its sidecar written, then the part died
    r = _merge(parts)  # without the case list the merge cannot know that part 1 finished
    assert r.returncode == 1 and "part 1 of 2 missing" in r.stdout
    assert "1 case(s) in no report rebuilt from their sidecars: b" in r.stdout
    by_case = lambda rows: sorted(rows, key=lambda row: row["case"])
    assert by_case(_rows(parts)) == _rows(runs / "single")  # rebuilt cases come last without the case list
    r = _merge(parts, "-inputs", str(runs / "imgs"))
    assert r.returncode == 0, r.stdout
    assert "part 1 of 2: no ctarr_report.part1of2.json; its 1 case(s) rebuilt from their sidecars" in r.stdout
    assert _rows(parts) == _rows(runs / "single")


def test_interrupted_duplicated_and_mixed_splits_are_named(parts, runs):
    p1 = parts / "ctarr_report.part1of2.json"
    d = json.loads(p1.read_text())
    d["interrupted"] = True
    d["rows"][0].update(status="failed", error="not done: interrupted")
    p1.write_text(json.dumps(d))
    r = _merge(parts)
    assert r.returncode == 1
    assert "part 1 of 2 was interrupted: 1 case(s) not done (b); run it again with --continue" in r.stdout
    assert json.loads((parts / "ctarr_report.json").read_text())["interrupted"] is True

    shutil.copy(parts / "ctarr_report.part0of2.json", p1)  # both parts report a and c
    r = _merge(parts, "-inputs", str(runs / "imgs"))
    assert r.returncode == 1
    assert "part 1 of 2 reports 2 case(s) of an earlier part (those rows kept; " in r.stdout
    assert ": a (also in part 0), c (also in part 0)" in r.stdout
    assert [row["case"] for row in _rows(parts)].count("a") == 1

    shutil.copy(parts / "ctarr_report.part0of2.json", parts / "ctarr_report.part0of3.json")
    r = _merge(parts)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("error: part reports of different splits") and len(r.stderr.splitlines()) == 1
    assert _merge(parts, "-num_parts", "3").returncode == 1  # one split picked: parts 1, 2 of 3 missing
    assert _merge(runs / "nowhere").stderr.startswith("error: not a folder")
