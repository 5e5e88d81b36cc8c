"""Cohort runs of nnUNetv2_ctarr_crop_dataset: parts that together make the dataset of one run,
--continue that rewrites nothing and redoes an interrupted case."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, SMALL, run_in_process

from nnunet_ctarr.cli.crop_dataset import main


@pytest.fixture
def raw(tmp_path, monkeypatch):
    """nnUNet_raw with Dataset700_Liv (three scans, liver labels) and anatomy maps beside it."""
    root, anat = tmp_path / "raw", tmp_path / "anat"
    ds = root / "Dataset700_Liv"
    for d in (ds / "imagesTr", ds / "labelsTr", anat):
        d.mkdir(parents=True)
    for name, (img_f, lab_f) in (("abd", ABDOMEN), ("chest", CHEST), ("sm", SMALL)):
        shutil.copy(img_f, ds / "imagesTr" / f"{name}_0000.nii.gz")
        shutil.copy(lab_f, anat / f"{name}.nii.gz")
        liver = sitk.Cast(sitk.ReadImage(str(lab_f)) == 5, sitk.sitkUInt8)
        sitk.WriteImage(liver, str(ds / "labelsTr" / f"{name}.nii.gz"))
    dj = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": 3}
    (ds / "dataset.json").write_text(json.dumps({**dj, "file_ending": ".nii.gz", "name": "Liv"}))
    monkeypatch.setenv("nnUNet_raw", str(root))
    return root, anat


def _run(raw, dst_id, *extra):
    return run_in_process(
        main, ["-d", "700", "-r", "liver", "-o", str(dst_id), "-anatomy_seg", str(raw[1]), "-np", "1", *extra]
    )


def _files(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _report_rows(folder):
    rows = json.loads((folder / "ctarr_crop_report.json").read_text())["cases"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_parts_together_make_the_dataset_of_one_run(raw):
    one = raw[0] / "Dataset701_LivCTARRLiver"
    parts = raw[0] / "Dataset702_LivCTARRLiver"
    assert _run(raw, 701).returncode == 0
    r = _run(raw, 702, "-num_parts", "2", "-part_id", "0")
    assert r.returncode == 0, r.stderr
    assert "dataset.json is written by the part that finishes last" in r.stdout
    assert not (parts / "dataset.json").exists()  # part 1 has not run yet
    r = _run(raw, 702, "-num_parts", "2", "-part_id", "1")
    assert r.returncode == 0, r.stderr
    in_parts = [
        c["case"]
        for k in range(2)
        for c in json.loads((parts / f"ctarr_crop_report.part{k}of2.json").read_text())["cases"]
    ]
    assert sorted(in_parts) == ["abd", "chest", "sm"]  # every case in exactly one part
    for name in ("dataset.json", "ctarr.json"):
        assert json.loads((parts / name).read_text()) == json.loads((one / name).read_text()), name
    assert json.loads((parts / "dataset.json").read_text())["numTraining"] == 3
    assert _report_rows(parts) == _report_rows(one)
    images = sorted(p.relative_to(one) for p in one.glob("*sTr/*.nii.gz"))
    assert len(images) == 6 and images == sorted(p.relative_to(parts) for p in parts.glob("*sTr/*.nii.gz"))
    for rel in images:
        a, b = (sitk.ReadImage(str(d / rel)) for d in (one, parts))
        assert a.GetOrigin() == b.GetOrigin() and a.GetSize() == b.GetSize(), rel
        assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)), rel


def test_continue_rewrites_nothing_and_redoes_an_interrupted_case(raw):
    dst = raw[0] / "Dataset701_LivCTARRLiver"
    assert _run(raw, 701).returncode == 0
    r = _run(raw, 701)  # a second plain run refuses the finished dataset
    assert r.returncode == 1 and "pass --continue" in r.stderr
    before = _files(dst)
    r = _run(raw, 701, "--continue")
    assert r.returncode == 0, r.stderr
    assert "3/3 cases cropped (3 done before)" in r.stdout
    assert _files(dst) == before  # not one file rewritten, none added
    (dst / "ctarr_cases" / "chest.Tr.ctarr.json").unlink()  # as if interrupted before its record
    r = _run(raw, 701, "--continue")
    assert "3/3 cases cropped (2 done before)" in r.stdout
    after = _files(dst)
    assert after["imagesTr/abd_0000.nii.gz"] == before["imagesTr/abd_0000.nii.gz"]
    assert after["imagesTr/chest_0000.nii.gz"] != before["imagesTr/chest_0000.nii.gz"]
    assert after["dataset.json"] == before["dataset.json"]  # the same dataset: left alone
    r = _run(raw, 701, "--continue", "--train_margin", "5")  # other settings: every case again
    assert "3/3 cases cropped, " in r.stdout
    assert json.loads((dst / "ctarr.json").read_text())["margin_mm"] == 5.0


def test_ctrl_c_keeps_the_report_of_the_cases_done_and_continue_finishes(raw, monkeypatch):
    """Ctrl-C after the first case: exit 130, the report lists it and names the others not done, no
    dataset.json; --continue crops only the rest and writes the dataset."""
    import nnunet_ctarr.cli.crop_dataset as cd

    real, calls = cd._run, []

    def interrupted(job):
        calls.append(job.case.case)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(cd, "_run", interrupted)
    dst = raw[0] / "Dataset701_LivCTARRLiver"
    r = _run(raw, 701)
    assert r.returncode == 130 and "2 case(s) not done" in r.stderr and "--continue" in r.stderr
    report = json.loads((dst / "ctarr_crop_report.json").read_text())
    assert report["interrupted"] == "interrupted" and not (dst / "dataset.json").exists()
    status = {c["case"]: (c["status"], c.get("error")) for c in report["cases"]}
    assert status[calls[0]][0] == "cropped"
    assert [s for s in status.values() if s[0] == "failed"] == [("failed", "not done: interrupted")] * 2
    monkeypatch.setattr(cd, "_run", real)
    r = _run(raw, 701, "--continue")
    assert r.returncode == 0 and "3/3 cases cropped (1 done before)" in r.stdout
    assert json.loads((dst / "dataset.json").read_text())["numTraining"] == 3
