"""DICOM SEG and RTSTRUCT outputs (core/outputs/dicom*.py, -output_type of the predict commands),
read back by the independent readers of benchmarks/dicom_readback.py (pydicom + numpy; no
highdicom, no scikit-image, nothing of the package): SEG frames placed in world coordinates from
the SEG's own plane position and orientation, RTSTRUCT contours taken into their slice's plane and
filled at its pixel centres (even-odd rule).

Series: the bundled real CT series with its UIDs repaired in a copy (it ships anonymised with empty
Study/Series UIDs), the same series stored with the column direction flipped (rows mirrored), and
the same pixels with a 15 degree gantry tilt."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DICOM, assert_same_geometry_as_dicom, run_in_process
from dicom_readback import RING, dice, label_map, make_variants, read_rtstruct, read_seg, series_files

from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.outputs.dicom import Algorithm, write_dicom

#: TotalSegmentator v2 labels of the series (kidney_right: none in these 20 slices), and a ring (a hole)
LABELS = {1: "spleen", 2: "kidney_right", 5: "liver", 6: "stomach", 7: "pancreas", 52: "aorta", 98: "rib_left_7"}
LABELS[RING] = "ring"
ALGO = Algorithm("nnunet-ctarr", "test", "test_model")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return make_variants(tmp_path_factory.mktemp("dicom_series"))


@pytest.fixture(scope="module")
def labels_of(series) -> dict[str, np.ndarray]:
    orig = label_map(series["original"], LABELS)
    return {"original": orig, "flipped": label_map(series["flipped"], LABELS), "tilted": orig}  # tilt: same pixels


# ----------------------------------------------------------------------------- tests
def test_flipped_series_label_map_is_the_mirrored_one(labels_of):
    """Fixture check: the world-resampled map on the flipped series is the original's with rows and
    slices reversed (the flipped column direction turns the normal: SimpleITK sorts the slices along it)."""
    assert np.array_equal(labels_of["flipped"], labels_of["original"][::-1, ::-1, :])
    assert {1, 5, 6, 7, 52, 98, 200} <= set(np.unique(labels_of["original"]).tolist())


@pytest.mark.parametrize("variant", ["original", "flipped", "tilted"])
def test_seg_reads_back_voxel_for_voxel(series, labels_of, variant, tmp_path):
    lab = labels_of[variant]
    r = write_dicom("dicom_seg", lab, series_files(series[variant]), LABELS, tmp_path / "x_seg.dcm", ALGO)
    assert r.empty == ["kidney_right"] and [s.number for s in r.segments] == list(range(1, len(LABELS) + 1))
    assert (r.tilt_deg > 14.9) == (variant == "tilted")
    assert np.array_equal(read_seg(tmp_path / "x_seg.dcm", series[variant], LABELS), lab)


@pytest.mark.parametrize("variant", ["original", "flipped", "tilted"])
def test_rtstruct_contours_rasterise_back_to_the_label_map(series, labels_of, variant, tmp_path):
    lab = labels_of[variant]
    write_dicom("dicom_rtstruct", lab, series_files(series[variant]), LABELS, tmp_path / "x_rt.dcm", ALGO)
    masks = read_rtstruct(tmp_path / "x_rt.dcm", series[variant])
    assert sorted(masks) == sorted(LABELS.values())
    scores = {n: dice(masks[n], lab == v) for v, n in LABELS.items()}
    assert min(scores.values()) >= 0.99, scores
    assert sum(int((masks[n] != (lab == v)).sum()) for v, n in LABELS.items()) == 0  # pixel-edge contours: exact


def test_bad_inputs_are_one_clear_error(series, labels_of, tmp_path):
    files, lab = series_files(series["original"]), labels_of["original"]
    with pytest.raises(CTARRError, match="StudyInstanceUID is empty or missing in 20 of 20"):
        write_dicom("dicom_seg", lab, series_files(DICOM[0]), LABELS, tmp_path / "a.dcm", ALGO)
    with pytest.raises(CTARRError, match="does not match the DICOM series"):
        write_dicom("dicom_seg", np.transpose(lab, (2, 1, 0)), files, LABELS, tmp_path / "a.dcm", ALGO)
    with pytest.raises(CTARRError, match="different SeriesInstanceUIDs"):
        write_dicom(
            "dicom_rtstruct",
            lab,
            files[:10] + series_files(series["flipped"])[10:],
            LABELS,
            tmp_path / "a.dcm",
            ALGO,
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["predict", "predict_multi"])
def test_cli_refuses_non_dicom_input_before_predicting(command, tmp_path):
    import importlib

    main = importlib.import_module(f"nnunet_ctarr.cli.{command}").main
    model = ["-m", str(tmp_path / "no_model")] if command == "predict" else ["-spec", str(tmp_path / "no.json")]
    for src, why in ((DICOM[1], "is a file"), (DICOM[0], "StudyInstanceUID is empty")):
        r = run_in_process(main, ["-i", str(src), "-o", str(tmp_path / "o"), "-output_type", "dicom_seg", *model])
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and why in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_predict_writes_a_seg_equal_to_the_nifti_prediction(random_models, series, tmp_path):
    """End to end: nnUNetv2_predict_ctarr on the repaired series, -output_type dicom_seg."""
    from test_predictor import cli_flags

    from nnunet_ctarr.cli.predict import main as predict

    case = tmp_path / "ct1"
    shutil.copytree(series["original"], case)
    (tmp_path / "anat").mkdir()
    shutil.copy(DICOM[1], tmp_path / "anat" / "ct1.nii.gz")
    argv = ["-i", str(case), "-o", str(tmp_path / "o"), "-region", "liver", "-anatomy_seg", str(tmp_path / "anat")]
    r = run_in_process(predict, argv + cli_flags(random_models["tiny"]) + ["-output_type", "dicom_seg"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ct1: dicom_seg -> " in r.stderr
    assert_same_geometry_as_dicom(tmp_path / "o" / "ct1.nii.gz", case)
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o" / "ct1.nii.gz")))
    assert nifti.any()
    seg = read_seg(tmp_path / "o" / "ct1_seg.dcm", case, {1: "liver", 2: "kidney"})  # the model's dataset.json
    assert np.array_equal(seg, nifti)


def test_prediction_grid_check_and_dataset_json_labels(series):
    from nnunet_ctarr.cli.dicom_output import output_labels
    from nnunet_ctarr.core.base.geometry import Geometry
    from nnunet_ctarr.core.outputs.dicom_series import DicomSeries

    s = DicomSeries.read(series_files(series["flipped"]))
    grid = Geometry.of(sitk.ReadImage(series_files(series["flipped"])))
    s.check_grid(grid, "prediction")  # the series' own SimpleITK grid
    lps = Geometry(grid.size_xyz, grid.spacing_xyz, grid.origin_xyz)  # written as if reoriented to LPS
    with pytest.raises(CTARRError, match="prediction is not on the grid of its DICOM series"):
        s.check_grid(lps, "prediction")
    plain = {"labels": {"background": 0, "liver": 1, "tumour": 2, "ignore": 3}}
    assert output_labels(plain) == {1: "liver", 2: "tumour"}
    regions = {"labels": {"background": 0, "kidney": [1, 2], "tumour": 2}, "regions_class_order": [1, 2]}
    assert output_labels(regions) == {1: "kidney", 2: "tumour"}


def test_empty_prediction_describes_every_label_without_voxels(series, tmp_path):
    import pydicom

    files, empty = series_files(series["original"]), np.zeros((20, 512, 512), np.uint8)
    r = write_dicom("dicom_seg", empty, files, LABELS, tmp_path / "e_seg.dcm", ALGO)
    assert r.empty == list(LABELS.values())
    assert int(pydicom.dcmread(tmp_path / "e_seg.dcm").NumberOfFrames) == len(LABELS)  # one per segment, not per slice
    assert not read_seg(tmp_path / "e_seg.dcm", series["original"], LABELS).any()
    write_dicom("dicom_rtstruct", empty, files, LABELS, tmp_path / "e_rt.dcm", ALGO)
    masks = read_rtstruct(tmp_path / "e_rt.dcm", series["original"])
    assert sorted(masks) == sorted(LABELS.values()) and not any(m.any() for m in masks.values())
