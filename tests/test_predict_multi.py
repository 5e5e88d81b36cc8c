"""nnUNetv2_predict_ctarr_multi: several tiny random-weight nnU-Net models (real planning,
architecture and sliding window), each in its own CTARR region on the real bundled CTs, one
registration per case, merged by the max-probability rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import (
    ABDOMEN,
    DICOM,
    SMALL,
    TEST_STEP,
    assert_same_geometry_as_dicom,
    run_in_process,
)

from nnunet_ctarr.core.anatomy.sources import PrecomputedAnatomy
from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.regions.region import load_region
from nnunet_ctarr.inference.multi_predictor import ModelVotes
from nnunet_ctarr.inference.multi_spec import load_spec
from nnunet_ctarr.inference.predictor import nnUNetPredictorCTARR

OUT_LABELS = {"background": 0, "liver": 1, "kidney_left": 2, "kidney_right": 3, "bladder": 4}


def _derive(base: Path, out: Path, labels: dict[str, int], rows: list[int], seed: int, bias: list[float]) -> Path:
    """A model folder from ``base`` whose output heads are ``rows`` of base's heads, perturbed
    with ``seed`` and shifted by ``bias`` (so the models differ and predict foreground broadly)."""
    shutil.copytree(base, out)
    ck = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=False)
    g = torch.Generator().manual_seed(seed)
    sd = ck["network_weights"]
    for k in [k for k in sd if k.startswith("decoder.seg_layers.")]:
        w = sd[k][rows].clone()
        sd[k] = w + 0.3 * w.abs().mean() * torch.randn(w.shape, generator=g)
        if k.endswith(".bias"):
            sd[k] += torch.tensor(bias, dtype=w.dtype)
    torch.save(ck, out / "fold_0" / "checkpoint_final.pth")
    dj = json.loads((out / "dataset.json").read_text())
    dj["labels"] = labels
    (out / "dataset.json").write_text(json.dumps(dj))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory, random_models):
    """liver model (bg, liver) and kidney model (bg, kidney_left, kidney_right) from one
    randomly initialised tiny nnU-Net (6 mm: few patches, fast; outputs are resampled to the
    input grid)."""
    tmp = tmp_path_factory.mktemp("multi_models")
    base = random_models["multi_base"]
    liver = _derive(base, tmp / "liver_model", {"background": 0, "liver": 1}, [0, 1], 1, [0.0, 0.5])
    kidneys = _derive(
        base,
        tmp / "kidney_model",
        {"background": 0, "kidney_left": 1, "kidney_right": 2},
        [0, 2, 1],
        2,
        [0.0, 0.5, 0.5],
    )
    return {"liver": liver, "kidneys": kidneys}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi_inputs")
    (d / "img").mkdir(), (d / "anat").mkdir()
    for case, (img, lab) in {"abd": ABDOMEN, "sm": SMALL}.items():
        shutil.copy(img, d / "img" / f"{case}_0000.nii.gz")
        shutil.copy(lab, d / "anat" / f"{case}.nii.gz")
    return d


def _spec(path: Path, models: dict, bladder: bool = True) -> Path:
    entries = [
        {"folder": str(models["liver"]), "region": "liver", "folds": [0], "labels": {"liver": "liver"}},
        {
            "name": "kidneys",
            "folder": str(models["kidneys"]),
            "region": "kidneys",
            "labels": {"kidney_left": 2, "2": "kidney_right"},
        },
    ]
    if bladder:  # the liver model again, in the bladder region (outside the small CT)
        entries.append(
            {
                "name": "bladder",
                "folder": str(models["liver"]),
                "region": "urinary_bladder",
                "checkpoint": "checkpoint_final.pth",
                "labels": {"1": "bladder"},
            }
        )
    path.write_text(json.dumps({"labels": OUT_LABELS, "models": entries}))
    return path


SPEC_LUTS = [("liver", "liver", {1: 1}), ("kidneys", "kidneys", {1: 2, 2: 3}), ("liver", "urinary_bladder", {1: 4})]


def _run_main(argv: list[str]) -> int:
    from nnunet_ctarr.cli.predict_multi import main

    return main(argv)


@pytest.fixture(scope="module")
def multi_run(models, cases, tmp_path_factory):
    """One in-process run on both cases, counting registrations."""
    import nnunet_ctarr.inference.multi_predictor as mp
    import nnunet_ctarr.inference.planner as pr

    calls = {"multi": 0, "predictor": 0}

    def counting(key, fn):
        def wrapped(*a, **k):
            calls[key] += 1
            return fn(*a, **k)

        return wrapped

    out = tmp_path_factory.mktemp("multi_out")
    spec = _spec(out.parent / "spec.json", models)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(mp, "locate_case", counting("multi", mp.locate_case))
        m.setattr(pr, "locate_case", counting("predictor", pr.locate_case))
        rc = _run_main(
            [
                "-i",
                str(cases / "img"),
                "-o",
                str(out),
                "-spec",
                str(spec),
                "-anatomy_seg",
                str(cases / "anat"),
                "-device",
                "cpu",
                "--disable_tta",
                "--disable_progress_bar",
            ]
        )
    assert rc == 0
    return out, calls


def _single_model_outputs(model, region, cases, case, tmp):
    """The model alone through the single-model predictor: full-size seg and probabilities."""
    img = tmp / "img"
    img.mkdir(exist_ok=True)
    shutil.copy(cases / "img" / f"{case}_0000.nii.gz", img / f"{case}_0000.nii.gz")
    p = nnUNetPredictorCTARR(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(model), (0,))
    p.ctarr_setup(load_region(region), PrecomputedAnatomy(cases / "anat"))
    out = tmp / f"out_{Path(model).name}_{region}"
    p.predict_from_files_sequential(str(img), str(out), save_probabilities=True)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
    return seg, np.load(out / f"{case}.npz")["probabilities"]


def _reference_merge(preds: list[tuple[np.ndarray, np.ndarray, dict]]):
    """Max-probability rule written out voxel-wise: (label map, winner, number of voters)."""
    shape = preds[0][0].shape
    best, ref = np.full(shape, -np.inf), np.zeros(shape, np.uint8)
    winner, voters = np.full(shape, -1), np.zeros(shape, int)
    for k, (seg, probs, lut) in enumerate(preds):
        for c, v in lut.items():
            votes = seg == c
            voters += votes
            take = votes & (probs[c] > best)
            ref[take], best[take], winner[take] = v, probs[c][take], k
    return ref, winner, voters


def _check_geometry_and_outside(cases, out, case):
    """Output geometry = input geometry; background outside every model's boxes."""
    src = sitk.ReadImage(str(cases / "img" / f"{case}_0000.nii.gz"))
    res = sitk.ReadImage(str(out / f"{case}.nii.gz"))
    assert res.GetSize() == src.GetSize()
    assert res.GetSpacing() == src.GetSpacing()
    assert res.GetOrigin() == src.GetOrigin()
    assert res.GetDirection() == src.GetDirection()
    seg = sitk.GetArrayFromImage(res)
    side = json.loads((out / f"{case}.ctarr_multi.json").read_text())
    inside = np.zeros(seg.shape, bool)
    for m in side["models"]:
        for b in m["record"]["crops"]:
            s, e = b["index_start_xyz"], b["index_stop_xyz"]
            inside[s[2] : e[2], s[1] : e[1], s[0] : e[0]] = True
    assert (~inside).mean() > 0.1
    assert not seg[~inside].any()  # crops cover < 90 %
    assert {1, 2, 3} <= set(np.unique(seg[inside]).tolist())
    assert sum(m["voxels_won"] for m in side["models"]) == int((seg > 0).sum())
    return seg, side


def test_merged_map_is_max_probability_of_the_single_model_predictions(models, cases, multi_run, tmp_path):
    out, _ = multi_run
    seg, side = _check_geometry_and_outside(cases, out, "abd")
    preds = []
    for m, (model_key, region, lut) in zip(side["models"], SPEC_LUTS):
        assert m["status"] == "cropped"
        s, p = _single_model_outputs(models[model_key], region, cases, "abd", tmp_path)
        assert s.shape == seg.shape
        assert p.shape[1:] == seg.shape
        preds.append((s, p, lut))
    ref, winner, voters = _reference_merge(preds)
    assert np.array_equal(seg, ref)
    overlap = voters >= 2
    assert overlap.sum() > 1000
    assert side["overlap_voxels"] == int(overlap.sum())
    # overlaps are decided by probability, not by order: both the liver and the kidney model win some
    assert (winner[overlap] == 0).sum() > 100
    assert (winner[overlap] == 1).sum() > 100
    for k, m in enumerate(side["models"]):
        assert m["voxels_won_in_overlap"] == int((winner[overlap] == k).sum())
        assert m["voxels_won"] == int((winner == k).sum())


def test_region_outside_the_field_of_view_contributes_nothing(cases, multi_run):
    out, _ = multi_run
    seg, side = _check_geometry_and_outside(cases, out, "sm")
    liver, kidneys, bladder = side["models"]
    assert bladder["status"] == "outside the field of view"
    assert bladder["voxels_voted"] == 0
    assert bladder["voxels_won"] == 0
    assert "outside the field of view" in bladder["record"]["why"]
    assert liver["status"] == kidneys["status"] == "cropped"
    assert side["overlap_voxels"] > 1000
    assert not (seg == 4).any()


def test_one_registration_per_case_shared_by_all_models(multi_run):
    out, calls = multi_run
    assert calls == {"multi": 2, "predictor": 0}  # 2 cases, 3 models
    for case in ("abd", "sm"):
        side = json.loads((out / f"{case}.ctarr_multi.json").read_text())
        assert side["localisation"]["registrations"] == 1
        assert len(side["models"]) == 3
        assert all(m["seconds"] > 0 for m in side["models"])
    assert json.loads((out / "dataset.json").read_text())["labels"] == OUT_LABELS


def test_implausible_anatomy_every_model_runs_on_the_full_image(models, tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnunet_ctarr.inference.multi_predictor import MultiModelPredictor

    (tmp_path / "anat").mkdir()
    sitk.WriteImage(sitk.ReadImage(str(SMALL[1])) * 0, str(tmp_path / "anat" / "sm.nii.gz"))
    spec = load_spec(_spec(tmp_path / "spec.json", models, bladder=False))
    mp = MultiModelPredictor(spec, PrecomputedAnatomy(tmp_path / "anat"), use_mirroring=False)
    mp.anatomy.prepare({"sm": [str(SMALL[0])]})
    data, props = SimpleITKIO().read_images([str(SMALL[0])])
    seg, report = mp.predict_case("sm", data, props)
    assert report["localisation"]["refused"]
    assert all(
        m["status"] == "untrusted: whole image" and any("not trusted" in w for w in m["record"]["warnings"])
        for m in report["models"]
    )
    preds = []
    for model_key, _, lut in SPEC_LUTS[:2]:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        p = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
        p.initialize_from_trained_model_folder(str(models[model_key]), (0,))
        s, pr = p.predict_single_npy_array(data, props, None, None, True)  # stock, full image
        preds.append((s, pr, lut))
    ref, _, voters = _reference_merge(preds)
    assert np.array_equal(seg, ref)
    assert (voters >= 2).any()


def test_dicom_folder_input_via_cli(models, tmp_path):
    anat = tmp_path / "anat"
    anat.mkdir()
    shutil.copy(DICOM[1], anat / "example_ct_dicom.nii.gz")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"labels": {"background": 0, "liver": 1}, "models": [{"folder": str(models["liver"]), "region": "liver"}]}
        )
    )
    from nnunet_ctarr.cli.predict_multi import main as predict_multi

    argv = ["-i", str(DICOM[0]), "-o", str(tmp_path / "o"), "-spec", str(spec), "-anatomy_seg", str(anat)]
    flags = ["-device", "cpu", "--disable_tta", "--disable_progress_bar", "-step_size", str(TEST_STEP)]
    r = run_in_process(predict_multi, argv + flags + ["-npp", "0", "-nps", "0"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_geometry_as_dicom(tmp_path / "o" / "example_ct_dicom.nii.gz")
    side = json.loads((tmp_path / "o" / "example_ct_dicom.ctarr_multi.json").read_text())
    assert side["models"][0]["status"] == "cropped"
    assert side["localisation"]["registrations"] == 1


def test_merge_rule_on_synthetic_votes():
    m = ModelVotes((1, 1, 4), 2)
    m.add(0, np.array([[[1, 1, 1, 0]]]), np.array([[[0.6, 0.9, 0.7, 0.8]]], np.float32))
    m.add(1, np.array([[[0, 2, 2, 0]]]), np.array([[[0.99, 0.8, 0.7, 0.99]]], np.float32))
    # model 1's background (0.99) does not erase model 0's foreground; 0.9 > 0.8; tie -> first model
    assert m.labels.ravel().tolist() == [1, 1, 1, 0]
    m.add(1, np.array([[[0, 0, 3, 0]]]), np.array([[[0, 0, 0.75, 0]]], np.float32))
    assert m.labels.ravel().tolist() == [1, 1, 3, 0]
    overlap, per = m.stats()
    assert overlap == 2
    assert per[0]["voxels_won_in_overlap"] == 1
    assert per[1]["voxels_won_in_overlap"] == 1


def _bad(tmp_path, models, **change):
    d = json.loads(_spec(tmp_path / "ok.json", models).read_text())
    for k, v in change.items():
        if k == "out_labels":
            d["labels"] = v
        else:
            d["models"][0][k] = v
    (tmp_path / "bad.json").write_text(json.dumps(d))
    return tmp_path / "bad.json"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"folder": "/nonexistent/model"}, "model folder not found"),
        ({"region": "pancreas_tail"}, "unknown region 'pancreas_tail'"),
        ({"labels": {"liver": 7}}, "mapped to 7, which is not an output label"),
        ({"labels": {"spleen": "liver"}}, "'spleen' is not a label of the model"),
        ({"out_labels": {"background": 0, "liver": 1, "kidney": 1}}, "share the value 1"),
        ({"folds": [3]}, "checkpoint not found"),
        ({"fold": [0]}, "unknown key(s) ['fold']"),
        ({"name": "kidneys"}, "used more than once"),
        ({"crops": "padded"}, "\"crops\" must be one of ['fitted', 'exact']"),
    ],
)
def test_bad_specs_are_rejected_with_one_line(models, tmp_path, change, message):
    with pytest.raises(CTARRError) as e:
        load_spec(_bad(tmp_path, models, **change))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_spec_exits_1_with_one_line(models, cases, tmp_path):
    from nnunet_ctarr.cli.predict_multi import main

    r = run_in_process(
        main,
        [
            "-i",
            str(cases / "img"),
            "-o",
            str(tmp_path / "o"),
            "-spec",
            str(_bad(tmp_path, models, labels={"liver": "bladderx"})),
            "-anatomy_seg",
            str(cases / "anat"),
            "-device",
            "cpu",
        ],
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: spec models[0]")
    assert "bladderx" in lines[0]
    assert not (tmp_path / "o").exists()
