"""TotalSegmentator layout -> 19-group nnU-Net dataset."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, run_in_process, write_totalseg_subject

from nnunet_ctarr.cli.convert_totalsegmentator import main
from nnunet_ctarr.core.anatomy.groups import GROUPS
from nnunet_ctarr.core.anatomy.masks import load_anatomy
from nnunet_ctarr.core.base.errors import WarningLog


def test_convert_with_split_v1_names_resume_and_errors(tmp_path):
    root = tmp_path / "ts"
    write_totalseg_subject(root, "s0001", ABDOMEN[1], ct=ABDOMEN[0])
    write_totalseg_subject(root, "s0002", CHEST[1], ct=CHEST[0], version=1)
    (root / "s0003" / "segmentations").mkdir(parents=True)  # malformed: no ct, no masks
    (root / "meta.csv").write_text("image_id;age;split\ns0001;60;train\ns0002;55;test\ns0003;40;train\n")
    raw = tmp_path / "raw"
    code = main(["-i", str(root), "-d", "500", "-o", str(raw), "-np", "1"])
    assert code == 1  # s0003 failed, reported
    ds = raw / "Dataset500_CTARRAnatomy"
    dj = json.loads((ds / "dataset.json").read_text())
    assert list(dj["labels"])[1:] == list(GROUPS)
    assert dj["numTraining"] == 1
    assert (ds / "imagesTr" / "s0001_0000.nii.gz").exists()
    assert (ds / "labelsTs" / "s0002.nii.gz").exists()
    lab = sitk.ReadImage(str(ds / "labelsTr" / "s0001.nii.gz"))
    ref = load_anatomy(ABDOMEN[1], warnings=WarningLog()).labels
    assert np.array_equal(sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(ref))
    img = sitk.ReadImage(str(ds / "imagesTr" / "s0001_0000.nii.gz"))
    assert img.GetOrigin() == lab.GetOrigin()
    assert img.GetDirection() == lab.GetDirection()
    heart = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTs" / "s0002.nii.gz"))) == GROUPS.index("heart") + 1
    assert heart.sum() > 1000  # v1 chamber names -> heart
    # resumable: a second run converts nothing again
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnunet_ctarr.cli.convert_totalsegmentator",
            "-i",
            str(root),
            "-d",
            "500",
            "-o",
            str(raw),
            "-np",
            "1",
            "--subset",
            "s0001",
            "s0002",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    assert "0 converted, 2 already there" in r.stdout


def test_malformed_root_is_one_line_error(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnunet_ctarr.cli.convert_totalsegmentator",
            "-i",
            str(tmp_path),
            "-d",
            "501",
            "-o",
            str(tmp_path / "raw"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "no subject folders" in r.stderr
    assert "Traceback" not in r.stderr


def test_plan_and_preprocess_needs_nnunet_folders(monkeypatch):
    """(The 3 mm plans themselves are checked on the end-to-end dataset: test_training_e2e.py.)"""
    from nnunet_ctarr.cli.plan_and_preprocess import main as plan_main

    monkeypatch.delenv("nnUNet_raw", raising=False)
    r = run_in_process(plan_main, ["-d", "502"])
    assert r.returncode == 1
    assert "nnUNet_raw" in r.stderr
