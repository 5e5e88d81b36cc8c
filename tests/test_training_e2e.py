"""Training side end to end on CPU, through the real command-line tools and plain nnU-Net.

TotalSegmentator-layout root fabricated from the two real subjects (+ perturbed copies) ->
nnUNetv2_ctarr_convert_totalsegmentator -> nnUNetv2_ctarr_plan_and_preprocess -> plain
``nnUNetv2_train ... -tr nnUNetTrainerCTARRAnatomy_CPUSmoke -p nnUNetPlans_CTARR3mm -device cpu``
after the documented environment line -> that model as ``-anatomy_model`` (an almost untrained
model: the predictor must warn and fall back). And: labelled dataset -> learn_region ->
crop_dataset -> stock nnU-Net planning + tiny training -> nnUNetv2_predict_ctarr takes the
region from the model folder. learn_region runs in this process (its registrations are then
shared with the coverage check; the installed command answers ``--help`` in a subprocess);
nnU-Net trains without augmentation worker processes (``nnUNet_n_proc_DA=0 nnUNetv2_train``:
the smoke trainers run one iteration; nnU-Net's planner needs at least 1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, SMALL, run_in_process, write_totalseg_subject

from nnunet_ctarr.core.anatomy.groups import totalsegmentator_scheme
from nnunet_ctarr.evaluation.perturbations import standard_perturbations

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SUBJECTS = ((ABDOMEN, ("original", "rot90_xy", "fov_upper_60pct")), (CHEST, ("original", "flip_z", "zoom_0.85")))


def _run(cmd: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """A plain bash command line with the venv's scripts on PATH (as a user's shell)."""
    env = dict(env, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, cwd=cwd)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Workspace: a TotalSegmentator-layout root (6 subjects), nnU-Net folders, a clean environment."""
    root = tmp_path_factory.mktemp("e2e")
    ts = root / "ts"
    k = 1
    for (ct, lab), picks in SUBJECTS:
        versions = {p.name: p for p in standard_perturbations(sitk.ReadImage(str(ct)), sitk.ReadImage(str(lab)))}
        for name in picks:
            write_totalseg_subject(ts, f"s{k:04d}", versions[name].labels, ct=versions[name].image)
            k += 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "pre"),
        nnUNet_results=str(root / "res"),
        nnUNet_n_proc_DA="1",
        nnUNet_def_n_proc="1",
    )
    return root, env


@pytest.fixture(scope="module")
def anatomy_model(ws):
    root, env = ws
    _run(
        "nnUNetv2_ctarr_convert_totalsegmentator -i ts -d 601 -np 2 && nnUNetv2_ctarr_plan_and_preprocess -d 601 -np 2",
        env,
        root,
    )
    # a plain shell: the documented line, then nnU-Net's own command
    r = _run(
        'eval "$(nnUNetv2_ctarr_env)" && '
        "nnUNet_n_proc_DA=0 nnUNetv2_train 601 3d_fullres 0 -tr nnUNetTrainerCTARRAnatomy_CPUSmoke "
        "-p nnUNetPlans_CTARR3mm -device cpu",
        env,
        root,
    )
    assert "Using trainer 'nnUNetTrainerCTARRAnatomy_CPUSmoke' from" in r.stdout
    model = (
        root
        / "res"
        / "Dataset601_CTARRAnatomy"
        / "nnUNetTrainerCTARRAnatomy_CPUSmoke__nnUNetPlans_CTARR3mm__3d_fullres"
    )
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    return model


@pytest.fixture(scope="module")
def liver_dataset(ws):
    """A labelled nnU-Net dataset (liver) with precomputed 19-group anatomy maps beside it."""
    root, env = ws
    ds = root / "raw" / "Dataset610_Liver"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    (root / "anat").mkdir()
    liver = [v for v, n in totalsegmentator_scheme(2).items() if n == "liver"][0]
    from nnunet_ctarr.core.anatomy.masks import load_anatomy
    from nnunet_ctarr.core.base.errors import WarningLog

    for sub in sorted((root / "ts").iterdir()):
        shutil.copy(sub / "ct.nii.gz", ds / "imagesTr" / f"{sub.name}_0000.nii.gz")
        shutil.copy(sub / "segmentations" / "liver.nii.gz", ds / "labelsTr" / f"{sub.name}.nii.gz")
        sitk.WriteImage(
            load_anatomy(sub / "segmentations", warnings=WarningLog()).labels, str(root / "anat" / f"{sub.name}.nii.gz")
        )
    (ds / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "liver": 1},
                "numTraining": 6,
                "file_ending": ".nii.gz",
                "name": "Liver",
            }
        )
    )
    assert liver
    return ds


@pytest.fixture(scope="module")
def region_model(ws, liver_dataset):
    from nnunet_ctarr.cli.learn_region import main as learn_region

    root, env = ws
    with pytest.MonkeyPatch.context() as m:
        for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            m.setenv(k, env[k])
        argv = ["-d", "610", "-l", "liver", "-name", "liver610", "-anatomy_seg", str(root / "anat")]
        r = run_in_process(learn_region, argv + ["-o", str(root / "liver610.json")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "from 6 of 6 training scans" in r.stdout
    assert "box 0:" in r.stdout
    r = _run(
        "nnUNetv2_ctarr_crop_dataset -d 610 -r liver610.json -o 611 --train_margin 10 -anatomy_seg anat -np 2",
        env,
        root,
    )
    assert "6/6 cases cropped" in r.stdout
    _run(
        "nnUNetv2_plan_and_preprocess -d 611 -c 3d_fullres -np 2 -npfp 2 && "
        'eval "$(nnUNetv2_ctarr_env)" && '
        "nnUNet_n_proc_DA=0 nnUNetv2_train 611 3d_fullres 0 -tr nnUNetTrainer_CTARRCPUSmoke -device cpu",
        env,
        root,
    )
    return next((root / "res").glob("Dataset611_*/nnUNetTrainer_CTARRCPUSmoke__nnUNetPlans__3d_fullres"))


def test_learn_region_command_is_installed(ws):
    root, env = ws
    r = _run("nnUNetv2_ctarr_learn_region --help", env, root)
    assert "-anatomy_seg" in r.stdout and "-name" in r.stdout


def test_ctarr_3mm_plans_and_preprocessed_data(ws, anatomy_model):
    """nnUNetv2_ctarr_plan_and_preprocess wrote the CTARR plans: 3d_fullres only, 3 mm, 64^3, the
    architecture benchmarks/bench_training.py counts, raw HU, and preprocessed every case."""
    from nnunet_ctarr.training.planners import ctarr_configuration

    root, _ = ws
    pre = root / "pre" / "Dataset601_CTARRAnatomy"
    plans = json.loads((pre / "nnUNetPlans_CTARR3mm.json").read_text())
    assert list(plans["configurations"]) == ["3d_fullres"]
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["spacing"] == [3.0, 3.0, 3.0]
    assert cfg["patch_size"] == [64, 64, 64]
    assert cfg["batch_size"] == 4
    assert cfg["architecture"] == ctarr_configuration()["architecture"]
    assert cfg["architecture"]["arch_kwargs"]["features_per_stage"][0] == 32
    assert cfg["normalization_schemes"] == ["NoNormalization"]  # raw HU; the trainer windows itself
    cases = {p.name.split(".")[0] for p in (pre / cfg["data_identifier"]).glob("s000*")}
    assert {c for c in cases if not c.endswith("_seg")} == {f"s{k:04d}" for k in range(1, 7)}


def test_learned_region_covers_every_training_liver(ws, liver_dataset, region_model, atlas):
    """Mapped back into each training scan (its own registration), the learned box with its stored
    margin holds every liver voxel of that scan."""
    from nnunet_ctarr.core.anatomy.masks import load_anatomy
    from nnunet_ctarr.core.base.errors import WarningLog
    from nnunet_ctarr.core.localise.localisation import locate, plan_region
    from nnunet_ctarr.core.regions.cropping import crop_scores
    from nnunet_ctarr.core.regions.region import load_region

    root, _ = ws
    region = load_region(str(root / "liver610.json"))
    assert region.name == "liver610"
    assert region.provenance["n_scans"] == 6
    assert region.margin_mm == 10.0
    assert len(region.boxes_mm) == 1
    for img_f in sorted((liver_dataset / "imagesTr").iterdir()):
        case = img_f.name[: -len("_0000.nii.gz")]
        image = sitk.ReadImage(str(img_f))
        loc = locate(image, load_anatomy(root / "anat" / f"{case}.nii.gz", warnings=WarningLog()), atlas)
        plan = plan_region(image, loc, region)
        liver = sitk.GetArrayFromImage(sitk.ReadImage(str(liver_dataset / "labelsTr" / f"{case}.nii.gz"))) > 0
        scores = crop_scores(liver, plan.union_mask_zyx())
        assert scores["fg_voxels"] > 1000, case
        assert scores["preserved_percent"] == 100.0, (case, scores)
        assert scores["crop_voxel_fraction"] < 0.8, (case, scores)  # a box, not the whole scan


def test_crop_dataset_overlays_sources_and_reports_loss(ws, liver_dataset, region_model):
    root, _ = ws
    dst = next((root / "raw").glob("Dataset611_*"))
    dj = json.loads((dst / "dataset.json").read_text())
    assert dj["numTraining"] == 6
    assert dj["labels"] == {"background": 0, "liver": 1}
    assert dj["ctarr"]["region"]["name"] == "liver610"
    assert dj["ctarr"]["margin_mm"] == 10.0
    assert dj["ctarr"]["crops"] == "exact"  # models trained on crops are predicted on the same crops
    assert json.loads((dst / "ctarr.json").read_text()) == dj["ctarr"]
    report = {r["case"]: r for r in json.loads((dst / "ctarr_crop_report.json").read_text())["cases"]}
    for case, row in report.items():
        assert row["status"] == "cropped"
        assert row["lost_foreground_pct"] == 0.0
        assert row["voxel_reduction"] > 1.5
        src = sitk.ReadImage(str(liver_dataset / "imagesTr" / f"{case}_0000.nii.gz"))
        crop = sitk.ReadImage(str(dst / "imagesTr" / f"{case}_0000.nii.gz"))
        lab = sitk.ReadImage(str(dst / "labelsTr" / f"{case}.nii.gz"))
        s, e = row["outputs"][0]["index_start_xyz"], row["outputs"][0]["index_stop_xyz"]
        # exact overlay: same spacing/direction, origin = the source's voxel, identical voxels
        assert crop.GetSpacing() == src.GetSpacing()
        assert crop.GetDirection() == src.GetDirection()
        assert np.allclose(crop.GetOrigin(), src.TransformIndexToPhysicalPoint(s), atol=1e-4)
        ref = sitk.GetArrayViewFromImage(src)[s[2] : e[2], s[1] : e[1], s[0] : e[0]]
        assert np.array_equal(sitk.GetArrayViewFromImage(crop), ref)
        full_lab = sitk.GetArrayFromImage(sitk.ReadImage(str(liver_dataset / "labelsTr" / f"{case}.nii.gz")))
        assert sitk.GetArrayViewFromImage(lab).sum() == full_lab.sum()  # no liver voxel lost
        assert lab.GetOrigin() == crop.GetOrigin()


def test_region_model_brings_its_region(ws, region_model, tmp_path):
    """No -region: nnU-Net copied dataset.json (with the CTARR settings) into the model folder."""
    root, env = ws
    (tmp_path / "img").mkdir()
    shutil.copy(ABDOMEN[0], tmp_path / "img" / "s0001_0000.nii.gz")
    _run(
        f"nnUNetv2_predict_ctarr -i {tmp_path / 'img'} -o {tmp_path / 'o'} -m {region_model} -f 0 -device cpu "
        f"-anatomy_seg {root / 'anat'} --disable_tta -step_size 1 -npp 0 -nps 0 --save_ctarr_json",
        env,
        root,
    )
    side = json.loads((tmp_path / "o" / "s0001.ctarr.json").read_text())["regions"]["liver610"]
    assert side["status"] == "cropped"
    box, crop = side["boxes"][0], side["crops"][0]
    assert (crop["index_start_xyz"], crop["index_stop_xyz"]) == (box["index_start_xyz"], box["index_stop_xyz"])
    out, src = sitk.ReadImage(str(tmp_path / "o" / "s0001.nii.gz")), sitk.ReadImage(str(ABDOMEN[0]))
    assert (out.GetSize(), out.GetSpacing(), out.GetOrigin(), out.GetDirection()) == (
        src.GetSize(),
        src.GetSpacing(),
        src.GetOrigin(),
        src.GetDirection(),
    )


def test_barely_trained_anatomy_model_triggers_fallback(ws, anatomy_model, region_model, tmp_path):
    root, env = ws
    (tmp_path / "img").mkdir()
    shutil.copy(SMALL[0], tmp_path / "img" / "abd_0000.nii.gz")  # 30 slices: the fallback predicts all of it
    r = _run(
        f"nnUNetv2_predict_ctarr -i {tmp_path / 'img'} -o {tmp_path / 'o'} -m {region_model} -f 0 "
        f"-device cpu -anatomy_model {anatomy_model} -anatomy_folds 0 --disable_tta -step_size 1 -npp 0 -nps 0 "
        "--save_ctarr_json",
        env,
        root,
    )
    side = json.loads((tmp_path / "o" / "abd.ctarr.json").read_text())
    side = next(iter(side["regions"].values()))
    assert side["status"] == "untrusted: whole image"
    assert any("not trusted" in w for w in side["warnings"])
    assert "not trusted" in r.stderr
    out = sitk.ReadImage(str(tmp_path / "o" / "abd.nii.gz"))
    assert out.GetSize() == sitk.ReadImage(str(SMALL[0])).GetSize()
