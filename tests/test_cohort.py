"""Cohort runs of nnUNetv2_ctarr_crop: sharding, --continue, the batch report and summary."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, SMALL, run_in_process

from nnunet_ctarr.cli.crop import main


@pytest.fixture
def cohort(tmp_path):
    """Three scans and their anatomy maps (matched by case id)."""
    imgs, anat = tmp_path / "imgs", tmp_path / "anat"
    imgs.mkdir(), anat.mkdir()
    for case, (img, lab) in (("abd", ABDOMEN), ("chest", CHEST), ("sm", SMALL)):
        shutil.copy(img, imgs / f"{case}.nii.gz")
        shutil.copy(lab, anat / f"{case}.nii.gz")
    return imgs, anat


def _run(cohort, out, *extra):
    imgs, anat = cohort
    return run_in_process(main, ["-i", str(imgs), "--anatomy_seg", str(anat), "-o", str(out), *extra])


def test_parts_split_the_cohort_exactly_once(cohort, tmp_path):
    out = tmp_path / "o"
    done = []
    for k in range(2):
        r = _run(cohort, out, "-r", "liver", "-num_parts", "2", "-part_id", str(k))
        assert r.returncode == 0, r.stderr
        rows = json.loads((out / f"ctarr_report.part{k}of2.json").read_text())["rows"]
        assert (out / f"ctarr_report.part{k}of2.html").read_text().count('class="card') == len(rows)
        done += [row["case"] for row in rows]
    assert sorted(done) == ["abd", "chest", "sm"]
    r = _run(cohort, out, "-r", "liver", "-num_parts", "2", "-part_id", "2")
    assert r.returncode == 1 and "-part_id must be in 0 .. 1" in r.stderr


def test_continue_skips_done_cases_and_redoes_changed_or_interrupted_ones(cohort, tmp_path):
    out = tmp_path / "o"
    assert _run(cohort, out, "-r", "liver").returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_liver.nii.gz")}
    (out / "sm.ctarr.json").unlink()  # as if interrupted before its sidecar was written
    r = _run(cohort, out, "-r", "liver", "--continue")
    assert r.returncode == 0, r.stderr
    assert "3 of 3 case(s) cropped (2 done before)" in r.stdout
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*_liver.nii.gz")}
    assert after["abd_liver.nii.gz"] == before["abd_liver.nii.gz"]
    assert after["sm_liver.nii.gz"] != before["sm_liver.nii.gz"]
    anat = cohort[1] / "chest.nii.gz"  # a new anatomy map for one case (same content, new time): redone
    os.utime(anat, ns=(anat.stat().st_atime_ns, anat.stat().st_mtime_ns + 10**9))
    r = _run(cohort, out, "-r", "liver", "--continue")
    assert "3 of 3 case(s) cropped (2 done before)" in r.stdout
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("*_liver.nii.gz")}
    assert again["chest_liver.nii.gz"] != after["chest_liver.nii.gz"]
    assert again["abd_liver.nii.gz"] == after["abd_liver.nii.gz"]
    r = _run(cohort, out, "-r", "liver", "--continue", "--margin", "5")  # other settings: all redone
    assert "3 of 3 case(s) cropped -> " in r.stdout


def test_report_and_summary_name_every_unclean_case(cohort, tmp_path):
    out = tmp_path / "o"
    r = _run(cohort, out, "-r", "liver", "urinary_bladder")
    assert r.returncode == 0, r.stderr  # outside the field of view is a trusted answer
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("4 of 6 case-region pair(s) cropped; outside the field of view: 2")
    assert "  outside the field of view:" in lines
    assert any(ln.strip().startswith("chest/urinary_bladder:") for ln in lines)
    assert not any("lies inside the image" in ln for ln in r.stderr.splitlines())  # detail stays in the report
    rep = json.loads((out / "ctarr_report.json").read_text())
    assert rep["counts"]["cropped"] == 4 and len(rep["rows"]) == 6
    rows = list(csv.DictReader((out / "ctarr_report.csv").open()))
    liver = {r["case"]: r for r in rows if r["region"] == "liver"}
    assert liver["abd"]["status"] == "cropped" and liver["abd"]["trusted"] == "True"
    assert float(liver["abd"]["registration_dice"]) > 0.25 and liver["abd"]["orientation"] == "as in header"
    assert "box 0: only" in liver["abd"]["warnings"]
    page = (out / "ctarr_report.html").read_text()  # without --qc: every row, none with a picture
    assert page.count('class="card') == 6 and page.count("no picture (run without --qc)") == 6
    assert "<img" not in page


def test_workers_give_the_same_results(cohort, tmp_path):
    one, two = tmp_path / "np1", tmp_path / "np2"
    assert _run(cohort, one, "-r", "kidneys").returncode == 0
    r = _run(cohort, two, "-r", "kidneys", "-np", "2")
    assert r.returncode == 0, r.stderr
    for name in sorted(p.name for p in one.glob("*.nii.gz")):
        a, b = (sitk.ReadImage(str(d / name)) for d in (one, two))
        assert a.GetOrigin() == b.GetOrigin() and a.GetSize() == b.GetSize(), name
    rows = [json.loads((d / "ctarr_report.json").read_text())["rows"] for d in (one, two)]
    assert [(r["case"], r["status"], r["registration_dice"]) for r in rows[0]] == [
        (r["case"], r["status"], r["registration_dice"]) for r in rows[1]
    ]
