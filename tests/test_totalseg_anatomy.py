"""``-anatomy_model totalsegmentator[:3mm|:6mm]``: TotalSegmentator's weights found where and as
TotalSegmentator finds them (TOTALSEG_WEIGHTS_PATH, else TOTALSEG_HOME_DIR/nnunet/results, else
~/.totalsegmentator/nnunet/results), complete model folders only, a one-line error naming the
folder and the download command otherwise; end to end with a random-weight model that has
TotalSegmentator's folder, trainer and 117 label names."""

from __future__ import annotations

import json
import pickle
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DICOM, SMALL, TEST_STEP, run_in_process

from nnunet_ctarr.core.anatomy import totalseg_weights as tsw
from nnunet_ctarr.core.anatomy.groups import totalsegmentator_scheme
from nnunet_ctarr.core.base.errors import CTARRError, WarningLog

TS_VARS = ("TOTALSEG_WEIGHTS_PATH", "TOTALSEG_HOME_DIR")
DS_3MM = "Dataset297_TotalSegmentator_total_3mm_1559subj"
DS_6MM = "Dataset298_TotalSegmentator_total_6mm_1559subj"
TRAINER = "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"


def ts_labels() -> dict[str, int]:
    return {"background": 0, **{name: i for i, name in totalsegmentator_scheme(2).items()}}


def fake_weights(results: Path, dataset: str = DS_3MM, complete: bool = True) -> Path:
    """A model folder with TotalSegmentator's names (files only; enough for the resolver)."""
    folder = results / dataset / TRAINER
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text(
        json.dumps({"labels": ts_labels(), "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"})
    )
    if complete:
        (folder / "plans.json").write_text("{}")
        (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    return folder


def _totalseg_args() -> Namespace:
    """The anatomy options of ``-anatomy_model totalsegmentator`` as the commands parse them."""
    return Namespace(
        anatomy_seg=None,
        anatomy_format="auto",
        anatomy_model="totalsegmentator",
        anatomy_folds=None,
        anatomy_chk="checkpoint_final.pth",
    )


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No TotalSegmentator variables, HOME an empty folder; returns a setter."""
    for v in TS_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return monkeypatch.setenv


def test_home_folder_when_no_variable_is_set(env, tmp_path):
    folder = fake_weights(tmp_path / "home" / ".totalsegmentator" / "nnunet" / "results")
    found, folds, model = tsw.resolve("totalsegmentator")
    assert found == folder
    assert folds == [0]
    assert model.dataset == DS_3MM


def test_totalseg_home_dir_wins_over_home_and_is_not_left_for_it(env, tmp_path):
    fake_weights(tmp_path / "home" / ".totalsegmentator" / "nnunet" / "results")
    env("TOTALSEG_HOME_DIR", str(tmp_path / "tshome"))
    with pytest.raises(CTARRError, match="tshome"):  # TotalSegmentator looks in ONE folder, as here
        tsw.resolve("totalsegmentator")
    folder = fake_weights(tmp_path / "tshome" / "nnunet" / "results")
    assert tsw.resolve("totalsegmentator")[0] == folder


def test_totalseg_weights_path_wins_over_totalseg_home_dir(env, tmp_path):
    fake_weights(tmp_path / "tshome" / "nnunet" / "results")
    env("TOTALSEG_HOME_DIR", str(tmp_path / "tshome"))
    env("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "weights"))
    with pytest.raises(CTARRError, match="TOTALSEG_WEIGHTS_PATH"):
        tsw.resolve("totalsegmentator:3mm")
    folder = fake_weights(tmp_path / "weights")  # the variable is the results folder itself
    assert tsw.resolve("totalsegmentator:3mm")[0] == folder


def test_6mm_keyword_and_folds(env, tmp_path):
    results = tmp_path / "home" / ".totalsegmentator" / "nnunet" / "results"
    fake_weights(results)
    with pytest.raises(CTARRError, match=DS_6MM):
        tsw.resolve("TotalSegmentator:6mm")  # keywords are case-insensitive
    folder = fake_weights(results, DS_6MM)
    assert tsw.resolve("totalsegmentator:6mm")[0] == folder
    with pytest.raises(CTARRError, match="fold_1/checkpoint_final.pth"):
        tsw.resolve("totalsegmentator:6mm", folds=[1])
    assert tsw.model_for("totalsegmentator_6mm") is None


def test_incomplete_folder_names_what_is_missing(env, tmp_path):
    results = tmp_path / "home" / ".totalsegmentator" / "nnunet" / "results"
    fake_weights(results, complete=False)
    with pytest.raises(CTARRError) as e:
        tsw.resolve("totalsegmentator")
    msg = str(e.value)
    assert "incomplete" in msg and "plans.json" in msg and "fold_0/checkpoint_final.pth" in msg
    assert str(results / DS_3MM) in msg  # to remove: TotalSegmentator skips an existing folder
    assert tsw.DOWNLOAD_COMMAND in msg
    assert "\n" not in msg


def test_anatomy_source_maps_the_117_names_to_every_group(env, tmp_path):
    from nnunet_ctarr.cli.options import anatomy_source
    from nnunet_ctarr.inference.anatomy_model import ModelAnatomy

    folder = fake_weights(tmp_path / "home" / ".totalsegmentator" / "nnunet" / "results")
    args = _totalseg_args()
    src = anatomy_source(args, device="cpu")
    assert isinstance(src, ModelAnatomy)
    assert src.model_folder == folder
    assert src.folds == [0]
    assert src.scheme.observed.all()  # v2 names: all 19 CTARR groups
    assert src.name == "totalsegmentator:3mm"
    assert DS_3MM in src.scheme.name


def test_dicom_and_other_formats_are_converted_for_the_model(env, tmp_path):
    """A crop input the model's reader may not know (DICOM folder, .mha) reaches it as NIfTI with
    the scan's geometry; a NIfTI goes as it is."""
    from nnunet_ctarr.core.base.images import read_image
    from nnunet_ctarr.inference.anatomy_model import ModelAnatomy

    src = ModelAnatomy(fake_weights(tmp_path / "w"), name="totalsegmentator:3mm")
    assert src._model_inputs("sm", [str(SMALL[0])]) == [str(SMALL[0])]
    sitk.WriteImage(sitk.ReadImage(str(SMALL[0])), str(tmp_path / "sm.mha"))
    for case, given in (("dcm", DICOM[0]), ("mha", tmp_path / "sm.mha")):
        (conv,) = src._model_inputs(case, [str(given)])
        assert conv.endswith(f"{case}_0000.nii.gz")
        a, b = read_image(given), sitk.ReadImage(conv)
        assert a.GetSize() == b.GetSize() and np.allclose(a.GetDirection(), b.GetDirection())
        assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


@pytest.mark.parametrize("command", ["crop", "evaluate", "body_height", "prealign"])
def test_missing_weights_is_one_line_with_folder_and_download_command(env, tmp_path, command):
    from nnunet_ctarr.cli import crop, evaluate, prealign

    img, out = str(SMALL[0]), str(tmp_path / "out")
    argv, main = {
        "crop": (["-i", img, "-r", "liver", "-o", out], crop.main),
        "evaluate": (
            ["-i", str(Path(img).parent), "--labels", str(Path(img).parent), "-r", "liver", "-o", out],
            evaluate.main,
        ),
        "body_height": (["-i", img, "-o", out + ".json"], prealign.body_height_main),
        "prealign": (["-fixed", img, "-moving", img, "-o", out], prealign.prealign_main),
    }[command]
    r = run_in_process(main, argv + ["-anatomy_model", "totalsegmentator"])
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(tmp_path / "home" / ".totalsegmentator" / "nnunet" / "results") in lines[0]
    assert f"{DS_3MM}/{TRAINER}" in lines[0]
    assert "totalseg_download_weights -t total_fast" in lines[0]


def test_prealign_anatomy_given_once():
    from nnunet_ctarr.cli.prealign import prealign_main

    img = str(SMALL[0])
    both = run_in_process(
        prealign_main,
        [
            img,
            img,
            "-o",
            "x",
            "--fixed_anatomy",
            str(SMALL[1]),
            "--moving_anatomy",
            str(SMALL[1]),
            "-anatomy_model",
            "totalsegmentator",
        ],
    )
    assert both.returncode == 1 and "give the anatomy once" in both.stderr
    half = run_in_process(prealign_main, [img, img, "-o", "x", "--fixed_anatomy", str(SMALL[1])])
    assert half.returncode == 1 and "go together" in half.stderr
    same = run_in_process(prealign_main, [img, img, "-o", "x", "-anatomy_seg", str(SMALL[1].parent)])
    assert same.returncode == 1 and "the case id example_ct_sm" in same.stderr


# ---------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="session")
def totalseg_home(tmp_path_factory, random_models) -> Path:
    """A TotalSegmentator home with a random-weight 3 mm model under TotalSegmentator's names
    (dataset, trainer, 117 labels; the checkpoint names TotalSegmentator's trainer class)."""
    import shutil

    import torch

    home = tmp_path_factory.mktemp("ts_home")
    folder = home / "nnunet" / "results" / DS_3MM / TRAINER
    shutil.copytree(random_models["totalseg"], folder)
    assert json.loads((folder / "dataset.json").read_text())["labels"] == ts_labels()
    chk = folder / "fold_0" / "checkpoint_final.pth"
    state = torch.load(chk, map_location="cpu", weights_only=False)
    state["trainer_name"] = "nnUNetTrainer_4000epochs_NoMirroring"
    state["inference_allowed_mirroring_axes"] = None  # as TotalSegmentator's NoMirroring trainers
    torch.save(state, chk)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = [32, 128, 128]  # the small CT in one tile
    (folder / "plans.json").write_text(json.dumps(plans))
    return home


def test_crop_with_totalsegmentator_model_runs_to_completion(env, totalseg_home, tmp_path):
    from nnunet_ctarr.cli.crop import main

    env("TOTALSEG_HOME_DIR", str(totalseg_home))
    out = tmp_path / "out"
    r = run_in_process(
        main,
        ["-i", str(SMALL[0]), "-anatomy_model", "totalsegmentator", "-r", "liver", "-o", str(out), "-device", "cpu"],
    )
    assert "Traceback" not in r.stderr
    assert r.returncode in (0, 1), r.stderr  # random weights: the localisation may well be refused
    side = json.loads((out / "example_ct_sm.ctarr.json").read_text())
    assert side["anatomy"] == f"totalsegmentator:3mm:example_ct_sm (nnU-Net model {DS_3MM})"
    entry = side["regions"]["liver"]
    assert entry["status"] in ("untrusted: whole image", "cropped")
    assert entry["trusted"] or entry["status"] == "untrusted: whole image"  # untrusted -> no foreground lost
    assert list(out.glob("example_ct_sm_liver*.nii.gz"))


def test_predicted_maps_survive_pickling_for_crop_workers(env, totalseg_home, tmp_path):
    """``-np N``: the parent predicts once; a worker gets the source pickled (without the
    temporary folder) and reads the same maps."""
    from nnunet_ctarr.cli.options import anatomy_source

    env("TOTALSEG_WEIGHTS_PATH", str(totalseg_home / "nnunet" / "results"))
    args = _totalseg_args()
    src = anatomy_source(args, device="cpu", step_size=TEST_STEP, npp=0, nps=0)
    src.prepare({"sm": [str(SMALL[0])]})
    worker = pickle.loads(pickle.dumps(src))
    assert not hasattr(worker, "_tmp")
    a, b = src.load("sm", WarningLog()), worker.load("sm", WarningLog())
    assert a.source == b.source
    assert np.array_equal(sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(b.labels))
    assert a.labels.GetSize() == sitk.ReadImage(str(SMALL[0])).GetSize()  # predicted on the scan's own grid
