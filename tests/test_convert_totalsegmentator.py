"""TotalSegmentator layout -> 19-group nnU-Net dataset."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, write_totalseg_subject

from nnunet_ctarr.cli.convert_totalsegmentator import main
from nnunet_ctarr.core.anatomy import GROUPS, load_anatomy
from nnunet_ctarr.core.errors import WarningLog


def test_convert_with_split_v1_names_resume_and_errors(tmp_path):
    root = tmp_path / "ts"
    write_totalseg_subject(root, "s0001", ABDOMEN[1], ct=ABDOMEN[0])
    write_totalseg_subject(root, "s0002", CHEST[1], ct=CHEST[0], version=1)
    (root / "s0003" / "segmentations").mkdir(parents=True)          # malformed: no ct, no masks
    (root / "meta.csv").write_text("image_id;age;split\ns0001;60;train\ns0002;55;test\ns0003;40;train\n")
    raw = tmp_path / "raw"
    code = main(["-i", str(root), "-d", "500", "-o", str(raw), "-np", "1"])
    assert code == 1                                                  # s0003 failed, reported
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
    assert heart.sum() > 1000                                         # v1 chamber names -> heart
    # resumable: a second run converts nothing again
    r = subprocess.run([sys.executable, "-m", "nnunet_ctarr.cli.convert_totalsegmentator", "-i", str(root), "-d", "500",
                        "-o", str(raw), "-np", "1", "--subset", "s0001", "s0002"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "0 converted, 2 already there" in r.stdout


def test_malformed_root_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nnunet_ctarr.cli.convert_totalsegmentator", "-i", str(tmp_path), "-d", "501",
                        "-o", str(tmp_path / "raw")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "no subject folders" in r.stderr
    assert "Traceback" not in r.stderr


def test_plan_and_preprocess_3mm(tmp_path):
    import os
    root = tmp_path / "ts"
    write_totalseg_subject(root, "s0001", ABDOMEN[1], ct=ABDOMEN[0])
    write_totalseg_subject(root, "s0002", CHEST[1], ct=CHEST[0])
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    assert main(["-i", str(root), "-d", "502", "-o", str(raw), "-np", "1"]) == 0
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(tmp_path / "res"))
    r = subprocess.run([sys.executable, "-m", "nnunet_ctarr.cli.plan_and_preprocess", "-d", "502", "-np", "1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    plans = json.loads((pre / "Dataset502_CTARRAnatomy" / "nnUNetPlans_CTARR3mm.json").read_text())
    assert list(plans["configurations"]) == ["3d_fullres"]
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["spacing"] == [3.0, 3.0, 3.0]
    assert cfg["patch_size"] == [64, 64, 64]
    assert cfg["batch_size"] == 4
    from nnunet_ctarr.training.planners import ctarr_configuration  # what benchmarks/bench_training.py counts
    assert cfg["architecture"] == ctarr_configuration()["architecture"]
    assert cfg["architecture"]["arch_kwargs"]["features_per_stage"][0] == 32
    assert cfg["normalization_schemes"] == ["NoNormalization"]          # raw HU; the trainer windows itself
    data = pre / "Dataset502_CTARRAnatomy" / cfg["data_identifier"]
    assert len(list(data.glob("s000*"))) >= 2
    r = subprocess.run([sys.executable, "-m", "nnunet_ctarr.cli.plan_and_preprocess", "-d", "502"],
                       capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "nnUNet_raw"})
    assert r.returncode == 1
    assert "nnUNet_raw" in r.stderr
    assert "Traceback" not in r.stderr
