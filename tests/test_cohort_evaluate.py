"""Cohort runs of nnUNetv2_ctarr_evaluate: several regions per registration, workers, parts,
--continue, a corrupt case as a failed row, exit codes."""

from __future__ import annotations

import csv
import os
import shutil

import pytest
from conftest import ABDOMEN, CHEST, run_in_process, write_liver_kidney_targets

from nnunet_ctarr.cli.evaluate import main
from nnunet_ctarr.core.regions.region import load_regions
from nnunet_ctarr.evaluation.resume import case_stamp, finished_rows, run_settings, write_results

ANATOMY = {"seg": None, "format": "auto", "model": None}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """imagesTr/labelsTr (liver = 1, kidneys = 2) of the two subjects and a corrupt scan 'bad',
    anatomy maps matched by case id."""
    root = tmp_path_factory.mktemp("labelled")
    imgs, labs, anat = root / "imagesTr", root / "labelsTr", root / "anat"
    for d in (imgs, labs, anat):
        d.mkdir()
    write_liver_kidney_targets(labs)  # abd.nii.gz, chest.nii.gz
    for name, (img_f, lab_f) in (("abd", ABDOMEN), ("chest", CHEST)):
        shutil.copy(img_f, imgs / f"{name}_0000.nii.gz")
        shutil.copy(lab_f, anat / f"{name}.nii.gz")
    (imgs / "bad_0000.nii.gz").write_bytes(b"\x1f\x8b not a NIfTI" * 50)
    shutil.copy(labs / "abd.nii.gz", labs / "bad.nii.gz")
    shutil.copy(anat / "abd.nii.gz", anat / "bad.nii.gz")
    return root


def _run(root, out, *extra):
    return run_in_process(main, ["-i", str(root), "-anatomy_seg", str(root / "anat"), "-o", str(out), *extra])


def _rows(path):
    return list(csv.DictReader(path.open()))


def _numbers(rows):
    """The rows without the seconds (the only column that depends on the machine)."""
    return [{k: v for k, v in r.items() if k != "ctarr_seconds"} for r in rows]


@pytest.fixture(scope="module")
def two_regions(labelled, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "o"
    r = _run(labelled, out, "-r", "liver", "kidneys")
    return r, _rows(out / "evaluation.csv"), out


def test_several_regions_give_the_numbers_of_single_region_runs(labelled, two_regions, tmp_path):
    r, rows, out = two_regions
    assert r.returncode == 1  # the corrupt case failed; the others were evaluated
    assert [(x["case"], x["region"]) for x in rows] == [
        ("abd", "liver"),
        ("chest", "liver"),
        ("bad", "liver"),
        ("chest", "kidneys"),
        ("abd", "kidneys"),
        ("bad", "kidneys"),
    ]  # by region in -r order, worst first (kidneys: chest keeps less foreground), failed last
    bad = [x for x in rows if x["case"] == "bad"]
    assert all(x["status"] == "failed" and "cannot read" in x["error"] for x in bad)
    assert all(x["status"] == "cropped" and float(x["preserved_fg_percent"]) > 30 for x in rows if x["case"] != "bad")
    assert "error: bad: cannot read" in r.stderr
    assert "4 of 6 case-region pair(s) cropped; failed: 2" in r.stdout
    md = (out / "summary.md").read_text()
    assert "region `liver`" in md and "region `kidneys`" in md and "failed: bad" in md
    for region in ("liver", "kidneys"):
        single = _run(labelled, tmp_path / region, "-r", region)
        assert single.returncode == 1, single.stderr
        assert _numbers(_rows(tmp_path / region / "evaluation.csv")) == _numbers(
            [x for x in rows if x["region"] == region]
        )
    liver = {x["case"]: x for x in rows if x["region"] == "liver"}
    kidneys = {x["case"]: x for x in rows if x["region"] == "kidneys"}
    assert liver["abd"]["preserved_fg_percent"] != kidneys["abd"]["preserved_fg_percent"]  # each its own crop
    assert liver["abd"]["registration_dice"] == kidneys["abd"]["registration_dice"]  # one registration


def test_workers_give_the_same_rows_in_the_same_order(labelled, two_regions, tmp_path):
    r = _run(labelled, tmp_path / "np2", "-r", "liver", "kidneys", "-np", "2")
    assert r.returncode == 1, r.stderr
    assert _numbers(_rows(tmp_path / "np2" / "evaluation.csv")) == _numbers(two_regions[1])


def test_parts_cover_every_case_once_and_continue_merges_them(labelled, two_regions, tmp_path):
    out = tmp_path / "parts"
    codes, cases = [], []
    for k in range(2):
        r = _run(labelled, out, "-r", "liver", "kidneys", "-num_parts", "2", "-part_id", str(k))
        codes.append(r.returncode)
        part = _rows(out / f"evaluation.part{k}of2.csv")
        assert (out / f"summary.part{k}of2.md").is_file() and (out / f"evaluation.part{k}of2.json").is_file()
        cases += sorted({x["case"] for x in part})
    assert sorted(cases) == ["abd", "bad", "chest"]  # every case in exactly one part
    assert codes == [0, 1]  # part 0 (abd, chest) clean, part 1 (bad) failed
    assert not (out / "evaluation.csv").exists()  # parts never write the same file
    seconds = {(x["case"], x["region"]): x["ctarr_seconds"] for x in _rows(out / "evaluation.part0of2.csv")}
    r = _run(labelled, out, "-r", "liver", "kidneys", "--continue")  # merges the parts
    assert r.returncode == 1
    assert "(2 case(s) done before)" in r.stdout
    merged = _rows(out / "evaluation.csv")
    assert _numbers(merged) == _numbers(two_regions[1])
    # the rows of the parts were taken as they were, not computed again
    assert {(x["case"], x["region"]): x["ctarr_seconds"] for x in merged if x["case"] != "bad"} == seconds


def test_continue_takes_rows_only_for_the_same_inputs_and_settings(labelled, tmp_path):
    regions = load_regions(["liver", "kidneys"])
    img, lab = tmp_path / "abd_0000.nii.gz", tmp_path / "abd.nii.gz"
    shutil.copy(labelled / "imagesTr" / img.name, img)
    shutil.copy(labelled / "labelsTr" / lab.name, lab)
    settings = run_settings(0.0, None, "atlas-1", ANATOMY)
    stamps = {"abd": case_stamp(img, lab, None)}
    rows = [{"case": "abd", "region": r.name, "status": "cropped", "preserved_fg_percent": 99.0} for r in regions]
    write_results(tmp_path / "evaluation.json", settings, regions, stamps, rows)
    assert finished_rows(tmp_path, settings, regions, stamps) == {"abd": rows}
    assert finished_rows(tmp_path, settings, regions[:1], stamps) == {"abd": rows[:1]}
    assert finished_rows(tmp_path, run_settings(5.0, None, "atlas-1", ANATOMY), regions, stamps) == {}
    assert finished_rows(tmp_path, run_settings(0.0, [1], "atlas-1", ANATOMY), regions, stamps) == {}
    moved = regions[0].__class__(regions[0].name, regions[0].boxes_mm + 1.0, regions[0].margin_mm)
    assert finished_rows(tmp_path, settings, [moved, regions[1]], stamps) == {}  # region redefined
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the image was rewritten
    assert finished_rows(tmp_path, settings, regions, {"abd": case_stamp(img, lab, None)}) == {}
    rows[1] = {"case": "abd", "region": "kidneys", "status": "failed", "error": "x"}
    write_results(tmp_path / "evaluation.json", settings, regions, stamps, rows)
    assert finished_rows(tmp_path, settings, regions, stamps) == {}  # a failed row is done again
