"""nnUNetPredictorCTARR / nnUNetv2_predict_ctarr with a tiny randomly initialised nnU-Net
model (real nnU-Net planning, architecture and sliding window) on the real CTs."""

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
from nnunet_ctarr.core.regions.cropping import MaxMerge, paste_pieces
from nnunet_ctarr.core.regions.region import load_region
from nnunet_ctarr.inference.export import foreground_confidence
from nnunet_ctarr.inference.predictor import nnUNetPredictorCTARR


@pytest.fixture(scope="session")
def tiny_model(random_models):
    return random_models["tiny"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "img").mkdir(), (d / "anat").mkdir()
    shutil.copy(ABDOMEN[0], d / "img" / "abd_0000.nii.gz")
    shutil.copy(ABDOMEN[1], d / "anat" / "abd.nii.gz")
    return d


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    """The 30-slice CT (the smallest bundled scan; its own anatomy is trusted for liver and kidneys,
    test_predict_multi) for the tests that predict a whole image."""
    d = tmp_path_factory.mktemp("small_inputs")
    (d / "img").mkdir(), (d / "anat").mkdir()
    shutil.copy(SMALL[0], d / "img" / "sm_0000.nii.gz")
    shutil.copy(SMALL[1], d / "anat" / "sm.nii.gz")
    return d


def cli_flags(model) -> list[str]:
    """nnUNetv2_predict_ctarr flags of the CLI tests: the model (fold 0, CPU), no TTA, the tests'
    tile step, no worker processes, sidecars written."""
    return [
        "-m",
        str(model),
        "-f",
        "0",
        "-device",
        "cpu",
        "--disable_tta",
        "-step_size",
        str(TEST_STEP),
        "-npp",
        "0",
        "-nps",
        "0",
        "--save_ctarr_json",
    ]


def stock_predictor(model):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    p = nnUNetPredictor(tile_step_size=TEST_STEP, use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(model), (0,))
    return p


#: stock nnU-Net's segmentations, the tests' reference: one prediction per model folder and image
_STOCK: dict = {}


def stock_on(model, img: sitk.Image) -> np.ndarray:
    """Stock nnU-Net's segmentation of ``img`` (computed once per model folder and image content)."""
    arr = sitk.GetArrayFromImage(img)[None].astype(np.float32)
    key = (str(model), arr.tobytes(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    if key not in _STOCK:
        props = {
            "spacing": list(img.GetSpacing())[::-1],
            "sitk_stuff": {"spacing": img.GetSpacing(), "origin": img.GetOrigin(), "direction": img.GetDirection()},
        }
        _STOCK[key] = stock_predictor(model).predict_single_npy_array(arr, props)
    return _STOCK[key].copy()


def ctarr_predictor(model, region, anat, on_untrusted="whole", sidecar=None, fit_tiles=True):
    p = nnUNetPredictorCTARR(
        tile_step_size=TEST_STEP, use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False
    )
    p.initialize_from_trained_model_folder(str(model), (0,))
    p.ctarr_setup(
        load_region(region),
        PrecomputedAnatomy(anat),
        on_untrusted=on_untrusted,
        sidecar_folder=sidecar,
        fit_tiles=fit_tiles,
    )
    return p


def region_record(path) -> dict:
    """The one region's record of a predicted case's sidecar (the crop command's schema)."""
    side = json.loads(Path(path).read_text())
    assert side["schema"] == 2 and side["command"] == "predict" and len(side["regions"]) == 1
    return next(iter(side["regions"].values()))


def _box_slices(side):
    """The crops the predictor ran (region boxes fitted to the model's tiles)."""
    for b in side["crops"]:
        s, e = b["index_start_xyz"], b["index_stop_xyz"]
        yield (slice(s[2], e[2]), slice(s[1], e[1]), slice(s[0], e[0])), (s, e)


@pytest.mark.parametrize("region,sequential", [("liver", True), ("kidneys", False)])
def test_inside_equals_stock_on_crop_and_outside_is_background(tiny_model, inputs, tmp_path, region, sequential):
    out = tmp_path / "out"
    p = ctarr_predictor(tiny_model, region, inputs / "anat", sidecar=str(out))
    if sequential:
        p.predict_from_files_sequential(str(inputs / "img"), str(out), save_probabilities=True)
    else:
        p.predict_from_files(
            str(inputs / "img"),
            str(out),
            save_probabilities=True,
            num_processes_preprocessing=1,
            num_processes_segmentation_export=1,
        )
    src = sitk.ReadImage(str(inputs / "img" / "abd_0000.nii.gz"))
    res = sitk.ReadImage(str(out / "abd.nii.gz"))
    assert res.GetSize() == src.GetSize()
    assert res.GetSpacing() == src.GetSpacing()
    assert res.GetOrigin() == src.GetOrigin()
    assert res.GetDirection() == src.GetDirection()
    seg = sitk.GetArrayFromImage(res)
    side = region_record(out / "abd.ctarr.json")
    assert side["status"] == "cropped"
    inside = np.zeros(seg.shape, bool)
    crops = list(_box_slices(side))
    cover = np.zeros(seg.shape, np.uint8)
    for sl, _ in crops:
        cover[sl] += 1
    for sl, (s, e) in crops:  # where crops overlap, the highest probability wins (tested below)
        stock = stock_on(tiny_model, src[s[0] : e[0], s[1] : e[1], s[2] : e[2]])
        alone = cover[sl] == 1
        assert alone.mean() > 0.5
        assert np.array_equal(seg[sl][alone], stock[alone])
        inside[sl] = True
    assert inside.mean() < 0.5
    assert np.all(seg[~inside] == 0)
    probs = np.load(out / "abd.npz")["probabilities"]
    assert probs.shape == (3,) + seg.shape
    assert np.all(probs[0][~inside] == 1)
    assert np.all(probs[1:, ~inside] == 0)
    assert np.array_equal(probs.argmax(0)[inside], seg[inside])


def test_fitted_crops_run_no_more_tiles_than_the_region_boxes(tiny_model, inputs, tmp_path):
    """Fitting grows the crops with real image instead of nnU-Net's padding: more voxels
    predicted, never more sliding-window tiles (counted where nnU-Net makes them)."""
    ran, sides = {}, {}
    for fit in (False, True):
        out = tmp_path / str(fit)
        p = ctarr_predictor(tiny_model, "kidneys", inputs / "anat", sidecar=str(out), fit_tiles=fit)
        tiles, make = [], p._internal_get_sliding_window_slicers

        def counting(size, tiles=tiles, make=make):
            tiles.append(len(make(size)))
            return make(size)

        p._internal_get_sliding_window_slicers = counting
        p.predict_from_files_sequential(str(inputs / "img"), str(out))
        sides[fit] = region_record(out / "abd.ctarr.json")
        assert sum(c["tiles"] for c in sides[fit]["crops"]) == sum(tiles)  # the sidecar's count is nnU-Net's
        ran[fit] = sum(tiles)
    assert ran[True] <= ran[False]
    kept = {fit: s["voxel_fraction_kept"] for fit, s in sides.items()}
    assert kept[True] > kept[False] == sides[True]["measures"]["region_voxel_fraction"]
    exact = [(c["index_start_xyz"], c["index_stop_xyz"]) for c in sides[False]["crops"]]
    for c in sides[True]["crops"]:  # every region box lies inside the crop made from it
        for k in c["region_boxes"]:
            assert np.all(np.array(c["index_start_xyz"]) <= exact[k][0])
            assert np.all(np.array(c["index_stop_xyz"]) >= exact[k][1])


def test_dicom_folder_input_keeps_dicom_geometry(tiny_model, tmp_path):
    anat = tmp_path / "anat"
    anat.mkdir()
    shutil.copy(DICOM[1], anat / "example_ct_dicom.nii.gz")
    from nnunet_ctarr.cli.predict import main as predict

    argv = ["-i", str(DICOM[0]), "-o", str(tmp_path / "o"), "-r", "liver", "-anatomy_seg", str(anat)]
    r = run_in_process(predict, argv + cli_flags(tiny_model))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_geometry_as_dicom(tmp_path / "o" / "example_ct_dicom.nii.gz")
    assert region_record(tmp_path / "o" / "example_ct_dicom.ctarr.json")["status"] == "cropped"


def _scrambled_anatomy(path, source=SMALL[1]):
    """An anatomy map with its labels shuffled: organs in anatomically impossible places."""
    lab = sitk.ReadImage(str(source))
    a = sitk.GetArrayFromImage(lab)
    rng = np.random.default_rng(3)
    perm = np.arange(256)
    perm[1:118] = rng.permutation(np.arange(1, 118))
    img = sitk.GetImageFromArray(perm[a].astype(np.uint8))
    img.CopyInformation(lab)
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("case", ["blank", "scrambled"])
def test_implausible_anatomy_falls_back_to_full_prediction(tiny_model, small_inputs, tmp_path, case):
    anat = tmp_path / "anat"
    anat.mkdir()
    if case == "blank":
        lab = sitk.ReadImage(str(SMALL[1])) * 0
        sitk.WriteImage(lab, str(anat / "sm.nii.gz"))
    else:
        _scrambled_anatomy(anat / "sm.nii.gz")
    out = tmp_path / "out"
    p = ctarr_predictor(tiny_model, "liver", anat, sidecar=str(out))
    p.predict_from_files_sequential(str(small_inputs / "img"), str(out))
    side = region_record(out / "sm.ctarr.json")
    assert side["status"] == "untrusted: whole image"
    assert any("not trusted" in w for w in side["warnings"])
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "sm.nii.gz")))
    assert np.array_equal(seg, stock_on(tiny_model, sitk.ReadImage(str(SMALL[0]))))


def test_region_outside_fov(tiny_model, small_inputs, tmp_path):
    """The bladder lies below the 30-slice upper-abdomen CT: not in this image, background written
    (what the crop command calls outside the field of view), no network run."""
    out = tmp_path / "out"
    p = ctarr_predictor(tiny_model, "urinary_bladder", small_inputs / "anat", sidecar=str(out))
    p.predict_from_files_sequential(str(small_inputs / "img"), str(out), save_probabilities=True)
    side = region_record(out / "sm.ctarr.json")
    assert side["status"] == "outside the field of view" and side["trusted"] is True
    assert "outside the field of view" in side["why"]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "sm.nii.gz")))
    assert not seg.any()
    probs = np.load(out / "sm.npz")["probabilities"]
    assert np.all(probs[0] == 1) and probs.dtype == np.float32     # the dtype of every other case's


def test_npy_entry_points_match_file_path(tiny_model, inputs, tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    data, props = SimpleITKIO().read_images([str(inputs / "img" / "abd_0000.nii.gz")])
    p = ctarr_predictor(tiny_model, "kidneys", inputs / "anat")
    single = p.predict_single_npy_array(data, props, anatomy=sitk.ReadImage(str(ABDOMEN[1])), case="abd")
    listed = p.predict_from_list_of_npy_arrays(
        [data], None, [props], None, num_processes=1, anatomy=[sitk.ReadImage(str(ABDOMEN[1]))], cases=["abd"]
    )
    p2 = ctarr_predictor(tiny_model, "kidneys", inputs / "anat")
    p2.predict_from_files_sequential(str(inputs / "img"), str(tmp_path / "o"))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o" / "abd.nii.gz")))
    assert np.array_equal(single, ref)
    assert np.array_equal(listed[0], ref)
    # one case that fails (its anatomy file is missing) gives None; the batch goes on
    anatomies = [str(tmp_path / "missing.nii.gz"), sitk.ReadImage(str(ABDOMEN[1]))]
    both = p.predict_from_list_of_npy_arrays([data, data], None, [props, props], None, num_processes=1,
                                             anatomy=anatomies, cases=["gone", "abd"])
    assert both[0] is None and np.array_equal(both[1], ref)
    with pytest.raises(CTARRError, match="gone"):
        p.predict_single_npy_array(data, props, anatomy=str(tmp_path / "missing.nii.gz"), case="gone")


def test_model_folder_ctarr_json_sets_region(tiny_model, inputs, tmp_path):
    """In process (the installed command runs in test_dicom_folder_input_keeps_dicom_geometry)."""
    from nnunet_ctarr.cli.predict import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "ctarr.json").write_text(json.dumps({"region": "liver", "margin_mm": 5.0, "crops": "exact"}))
    argv = ["-i", str(inputs / "img"), "-o", str(tmp_path / "o"), "-anatomy_seg", str(inputs / "anat")]
    r = run_in_process(main, argv + cli_flags(model))
    assert r.returncode == 0, r.stderr[-3000:]
    side = json.loads((tmp_path / "o" / "abd.ctarr.json").read_text())["regions"]["liver"]
    assert side["status"] == "cropped" and side["definition"]["extra_margin_mm"] == 5.0
    assert side["outputs"] == [{"images": ["abd.nii.gz"], "box": None, "labels": None}]
    box, crop = side["boxes"][0], side["crops"][0]  # "crops": "exact" -> the region box itself
    assert len(side["crops"]) == 1
    assert (crop["index_start_xyz"], crop["index_stop_xyz"]) == (box["index_start_xyz"], box["index_stop_xyz"])


def test_merge_takes_most_confident_box_and_background_outside():
    p1 = np.zeros((3, 2, 2, 4), np.float32)
    p1[0], p1[1] = 0.3, 0.7  # box 1: class 1 with 0.7
    p2 = np.zeros((3, 2, 2, 4), np.float32)
    p2[0], p2[2] = 0.1, 0.9  # box 2: class 2 with 0.9
    probs = np.zeros((3, 2, 2, 10), np.float32)
    probs[0] = 1.0
    pieces = [(p1, [0, 0, 0], [4, 2, 2]), (p2, [2, 0, 0], [6, 2, 2])]
    paste_pieces(probs, pieces, foreground_confidence)
    assert np.all(probs[1, :, :, 0:2] == 0.7)  # box 1 alone
    assert np.all(probs[2, :, :, 2:4] == 0.9) and np.all(probs[1, :, :, 2:4] == 0)  # overlap: the more confident box
    assert np.all(probs[0, :, :, 6:] == 1)  # outside: background
    merge = MaxMerge((2, 2, 10))  # the winners, through the same merge
    for k, (p, a, b) in enumerate(pieces):
        merge.add(k, foreground_confidence(p), (slice(0, 2), slice(0, 2), slice(a[0], b[0])))
    assert np.all(merge.winner[..., 0:2] == 0) and np.all(merge.winner[..., 2:6] == 1)
    assert np.all(merge.winner[..., 6:] == -1)


def test_cli_errors_are_one_line(tiny_model, inputs, tmp_path):
    from nnunet_ctarr.cli.predict import main

    base = ["-i", str(inputs / "img"), "-o", str(tmp_path / "o"), "-m", str(tiny_model), "-f", "0", "-device", "cpu"]
    r = run_in_process(main, base + ["-r", "liver", "-anatomy_seg", str(inputs / "anat"), "-anatomy_model", "hu"])
    assert r.returncode == 1
    assert "give one anatomy source" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_in_process(main, base + ["-anatomy_seg", str(inputs / "anat")])
    assert r.returncode == 1
    assert "no region" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="session")
def random_anatomy_model(random_models):
    """A 19-group anatomy model with random weights: its anatomy is garbage, as an untrained
    model's would be, and the predictor must notice."""
    return random_models["anatomy19"]


def test_anatomy_model_source_is_mapped_by_names_and_untrusted_output_falls_back(
    tiny_model, random_anatomy_model, small_inputs, tmp_path
):
    from nnunet_ctarr.inference.anatomy_model import ModelAnatomy

    src = ModelAnatomy(
        random_anatomy_model, folds=(0,), device="cpu", step_size=TEST_STEP, disable_tta=True, npp=0, nps=0
    )
    assert src.scheme.observed.all()  # dataset.json names = the 19 groups
    p = nnUNetPredictorCTARR(
        tile_step_size=TEST_STEP, use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False
    )
    p.initialize_from_trained_model_folder(str(tiny_model), (0,))
    out = tmp_path / "out"
    p.ctarr_setup(load_region("liver"), src, sidecar_folder=str(out))
    p.predict_from_files_sequential(str(small_inputs / "img"), str(out))
    assert src.label_file("sm").exists()  # the anatomy model ran once, at its own resolution
    side = region_record(out / "sm.ctarr.json")
    assert side["status"] == "untrusted: whole image"
    assert any("not trusted" in w for w in side["warnings"])
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "sm.nii.gz")))
    assert np.array_equal(seg, stock_on(tiny_model, sitk.ReadImage(str(SMALL[0]))))


def test_anatomy_model_with_totalsegmentator_names(tmp_path):
    from nnunet_ctarr.core.anatomy.groups import totalsegmentator_scheme
    from nnunet_ctarr.inference.anatomy_model import ModelAnatomy

    folder = tmp_path / "ts_model"
    folder.mkdir()
    labels = {"background": 0, **{n: i for i, n in totalsegmentator_scheme(1).items()}}
    (folder / "dataset.json").write_text(
        json.dumps({"labels": labels, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"})
    )
    (folder / "plans.json").write_text("{}")
    src = ModelAnatomy(folder)
    from nnunet_ctarr.core.anatomy.groups import GROUPS

    unobserved = {GROUPS[i] for i in np.nonzero(~src.scheme.observed)[0]}
    assert unobserved == {"skull", "sternum"}  # v1 names: heart from chambers, no skull/sternum


def test_missing_anatomy_is_an_error_for_that_case_and_untrusted_still_falls_back(tiny_model, tmp_path, capsys):
    """Fallback is not for user errors: a case without its anatomy file is not predicted, is
    named, and the exit code is 1; the other cases run, an untrusted one on the full volume."""
    from nnunet_ctarr.cli.predict import main

    img, anat, out = tmp_path / "img", tmp_path / "anat", tmp_path / "out"
    img.mkdir(), anat.mkdir()
    shutil.copy(ABDOMEN[0], img / "abd_0000.nii.gz")
    shutil.copy(ABDOMEN[1], anat / "abd.nii.gz")
    shutil.copy(SMALL[0], img / "blank_0000.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(SMALL[1])) * 0, str(anat / "blank.nii.gz"))
    shutil.copy(SMALL[0], img / "nofile_0000.nii.gz")  # no anatomy for this case
    base = [
        "-o",
        str(out),
        "-r",
        "liver",
        "-anatomy_seg",
        str(anat),
        *cli_flags(tiny_model),
        "--disable_progress_bar",
    ]
    assert main(["-i", str(img)] + base) == 1
    err = capsys.readouterr().err
    assert "error: 1 of 3 case(s) not predicted: nofile" in err
    sides = {c: region_record(out / f"{c}.ctarr.json") for c in ("abd", "blank", "nofile")}
    assert sides["nofile"]["status"] == "failed"
    assert "no anatomy segmentation for case 'nofile'" in sides["nofile"]["error"]
    assert not (out / "nofile.nii.gz").exists()
    assert sides["abd"]["status"] == "cropped"
    assert (out / "abd.nii.gz").exists()
    assert sides["blank"]["status"] == "untrusted: whole image"
    assert any("not trusted" in w for w in sides["blank"]["warnings"])
    assert sitk.ReadImage(str(out / "blank.nii.gz")).GetSize() == sitk.ReadImage(str(SMALL[0])).GetSize()
    # the untrusted fallback alone is no error
    only = tmp_path / "only_blank"
    only.mkdir()
    shutil.copy(SMALL[0], only / "blank_0000.nii.gz")
    assert main(["-i", str(only)] + base) == 0


def test_a_damaged_input_is_a_failed_case_not_a_prediction(tiny_model, tmp_path):
    """nnU-Net's reader zero-fills a cut file; the predict command refuses it (one line, exit 1)."""
    from nnunet_ctarr.cli.predict import main

    img, anat = tmp_path / "img", tmp_path / "anat"
    img.mkdir(), anat.mkdir()
    (img / "cut_0000.nii.gz").write_bytes(Path(SMALL[0]).read_bytes()[:5000])
    shutil.copy(SMALL[1], anat / "cut.nii.gz")
    r = run_in_process(
        main,
        ["-i", str(img), "-o", str(tmp_path / "o"), "-r", "liver", "-anatomy_seg", str(anat), *cli_flags(tiny_model)],
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "damaged or incomplete" in r.stderr and "not predicted: cut" in r.stderr
    assert not (tmp_path / "o" / "cut.nii.gz").exists()
