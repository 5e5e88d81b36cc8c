"""Geometry fuzz: synthetic CT-like volumes of every geometry, pixel type and file form either read
with the world geometry they were written with, or give one CTARRError line (never another
exception, never a silently misplaced image); the crop command on a few of them ends with an exit
code or a one-line error. Volumes are tiny (the whole file runs in seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fuzz_phantoms import (
    phantom,
    phantom_labels,
    rotation,
    world_centroid,
    write_dicom_series,
    write_nibabel,
)

from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.base.geometry import Geometry
from nnunet_ctarr.core.base.images import read_image

PIR = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # index x -> posterior, y -> inferior, z -> right


def _read_same(path: Path, written: sitk.Image, tol: float = 0.0) -> sitk.Image:
    """read_image gives the written grid and voxels (to ``tol``)."""
    img = read_image(path)
    assert Geometry.of(img).same_grid(Geometry.of(written), tol=1e-4), (Geometry.of(img), Geometry.of(written))
    a, b = sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(written)
    assert a.shape == b.shape
    assert np.abs(a.astype(float) - b.astype(float)).max() <= tol
    return img


def _one_line_error(path: Path, needle: str) -> str:
    with pytest.raises(CTARRError) as e:  # any other exception type fails the test
        read_image(path)
    msg = str(e.value)
    assert "\n" not in msg and ".cxx" not in msg and ".hxx" not in msg and "0x" not in msg, msg
    assert needle in msg, msg
    return msg


# ----------------------------------------------------------------- spacing, slices, size, direction
GEOMETRIES = {
    "iso_0.3": ((64, 64, 24), (0.3, 0.3, 0.3), None),
    "iso_10": ((64, 64, 8), (10.0, 10.0, 10.0), None),
    "aniso_0.5_10_2": ((64, 48, 16), (0.5, 10.0, 2.0), None),
    "aniso_7.5_0.3_1": ((64, 80, 12), (7.5, 0.3, 1.0), None),
    "three_slices": ((64, 64, 3), (0.98, 0.98, 5.0), None),
    "1100_slices": ((64, 64, 1100), (6.0, 6.0, 0.3), None),
    "inplane_1024": ((1024, 1024, 3), (0.4, 0.4, 3.0), None),
    "oblique": ((64, 56, 20), (0.8, 0.9, 2.5), rotation(20, 10, 30)),
    "pir": ((40, 50, 64), (2.0, 3.0, 1.5), PIR),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_every_geometry_reads_with_its_world_geometry(tmp_path, name):
    size, spacing, direction = GEOMETRIES[name]
    img = phantom(size, spacing, direction if direction is not None else np.eye(3), origin_xyz=(-31.5, 12.25, -400))
    suffixes = (".nii",) if size[0] * size[1] * size[2] > 1e6 else (".nii.gz", ".nrrd", ".mha")
    for suffix in suffixes:
        sitk.WriteImage(img, str(tmp_path / f"ct{suffix}"))
        _read_same(tmp_path / f"ct{suffix}", img)


@pytest.mark.parametrize("n_slices,needle", [(1, "a single slice, 2D"), (2, "too thin")])
def test_one_or_two_slices_are_one_clear_line(tmp_path, n_slices, needle):
    img = phantom((64, 64, n_slices), (0.8, 0.8, 5.0))
    for suffix in (".nii.gz", ".nrrd"):
        sitk.WriteImage(img, str(tmp_path / f"thin{suffix}"))
        assert "at least 3 voxels" in _one_line_error(tmp_path / f"thin{suffix}", needle)
    write_dicom_series(img, tmp_path / "dicom")
    _one_line_error(tmp_path / "dicom", needle if n_slices > 1 else "2D")


def test_sheared_grids_are_resampled_to_their_world_positions(tmp_path):
    """NRRD keeps a non-orthogonal direction, a NIfTI sform can hold a shear (SimpleITK refuses
    those): both come back on an orthogonal grid with every structure where it was written."""
    img = phantom((48, 40, 24), (0.8, 0.8, 2.0), origin_xyz=(5, -10, 30))
    m = np.eye(3)
    m[:, 2] = [0.0, np.sin(np.radians(12)), np.cos(np.radians(12))]  # slice axis leaning 12 deg in y
    sheared = sitk.Image(img)
    sheared.SetDirection(tuple(m.ravel()))
    sitk.WriteImage(sheared, str(tmp_path / "shear.nrrd"))
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ m * np.array(img.GetSpacing())
    affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.array(img.GetOrigin())
    write_nibabel(img, tmp_path / "shear.nii.gz", affine=affine)
    for name in ("shear.nrrd", "shear.nii.gz"):
        got = read_image(tmp_path / name)
        d = np.array(got.GetDirection()).reshape(3, 3)
        assert np.allclose(d.T @ d, np.eye(3), atol=1e-6)
        for lo, hi in ((350, 5000), (-500, 5000)):  # the spine rod, the body (midway thresholds)
            assert np.allclose(world_centroid(got, lo, hi), world_centroid(sheared, lo, hi), atol=0.3), name


# ----------------------------------------------------------------- DICOM: straight, oblique, tilted, gaps
def test_dicom_series_straight_and_oblique_keep_their_geometry(tmp_path):
    for name, direction in (("axial", np.eye(3)), ("oblique", rotation(0, 0, 25))):
        img = phantom((40, 36, 12), (0.9, 0.9, 2.5), direction, origin_xyz=(-18, -16, 50))
        write_dicom_series(img, tmp_path / name)
        _read_same(tmp_path / name, img)


def test_gantry_tilted_dicom_is_placed_by_its_slice_positions(tmp_path):
    """SimpleITK alone puts the slices of a 15 deg tilted series along their normal (the last of 20
    slices 2 mm apart ~10 mm off); read_image puts every structure where the files say it is."""
    img = phantom((48, 40, 20), (0.8, 0.8, 2.0), origin_xyz=(-20, -16, 100))
    write_dicom_series(img, tmp_path / "tilt", tilt_deg=15)
    truth = sitk.Image(img)  # the grid the files describe (sheared)
    d = np.eye(3)
    d[:, 1] = [0, np.cos(np.radians(15)), np.sin(np.radians(15))]
    truth.SetDirection(tuple(d.ravel()))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "tilt")))
    naive = reader.Execute()
    assert np.linalg.norm(world_centroid(naive, 350, 5000) - world_centroid(truth, 350, 5000)) > 4
    got = read_image(tmp_path / "tilt")
    for lo, hi in ((350, 5000), (-500, 5000)):
        assert np.allclose(world_centroid(got, lo, hi), world_centroid(truth, lo, hi), atol=0.3), (lo, hi)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    img = phantom((32, 32, 10), (1.0, 1.0, 2.0))
    write_dicom_series(img, tmp_path / "gap", drop_slice=4)
    _one_line_error(tmp_path / "gap", "unevenly spaced")


# ----------------------------------------------------------------- pixel types, scaling, 4-D, vectors
@pytest.mark.parametrize(
    "dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]
)
def test_every_pixel_type_reads_exactly(tmp_path, dtype):
    hu = phantom((40, 32, 10), (0.7, 0.7, 3.0), rotation(0, 0, 90))
    arr = sitk.GetArrayFromImage(hu).astype(float)
    info = np.iinfo(dtype) if dtype[0] in "ui" else None
    if info is not None:  # fit the phantom's range into the type
        arr = np.clip(np.round((arr + 1000) / 1700 * min(info.max, 4000) + max(info.min, -1000)), info.min, info.max)
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.CopyInformation(hu)
    for suffix in (".nii.gz", ".mha"):
        sitk.WriteImage(img, str(tmp_path / f"t{suffix}"))
        got = _read_same(tmp_path / f"t{suffix}", img)
        assert sitk.GetArrayViewFromImage(got).dtype == np.dtype(dtype)


@pytest.mark.parametrize(
    "stored,slope,inter", [("uint16", 1.0, -1024.0), ("int16", 0.5, 0.0), ("uint8", 2.21, -1024.0)]
)
def test_scaled_nifti_reads_in_hounsfield_units(tmp_path, stored, slope, inter):
    img = phantom((40, 32, 12), (0.7, 0.7, 2.5), origin_xyz=(3, 4, 5))
    path = write_nibabel(sitk.Cast(img, sitk.sitkFloat32), tmp_path / f"scaled_{stored}.nii.gz", stored, slope, inter)
    got = read_image(path)
    assert Geometry.of(got).same_grid(Geometry.of(img), tol=1e-4)
    info = np.iinfo(stored)
    expected = np.clip(sitk.GetArrayViewFromImage(img), info.min * slope + inter, info.max * slope + inter)
    assert np.abs(sitk.GetArrayViewFromImage(got) - expected).max() <= slope / 2 + 1e-3


def test_four_d_and_vector_images(tmp_path):
    img = phantom((32, 32, 8), (1.0, 1.0, 3.0))
    _read_same(write_nibabel(img, tmp_path / "one_volume.nii.gz", extra_dims=(1,)), img)
    sitk.WriteImage(sitk.JoinSeries([img]), str(tmp_path / "one_volume.nrrd"))
    assert read_image(tmp_path / "one_volume.nrrd").GetSize() == img.GetSize()
    write_nibabel(img, tmp_path / "two_volumes.nii.gz", extra_dims=(2,))
    _one_line_error(tmp_path / "two_volumes.nii.gz", "4D")
    sitk.WriteImage(sitk.Compose([img, img, img]), str(tmp_path / "vector.nrrd"))
    _one_line_error(tmp_path / "vector.nrrd", "3 components per voxel")


def test_invalid_headers_are_one_line(tmp_path):
    sitk.WriteImage(phantom((8, 8, 8), (1, 1, 1)), str(tmp_path / "ok.mha"), False)
    head = (tmp_path / "ok.mha").read_bytes()
    (tmp_path / "zero.mha").write_bytes(head.replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 1 0"))
    (tmp_path / "singular.mha").write_bytes(
        head.replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 1 0 0 0 0 1")
    )
    (tmp_path / "sheared60.mha").write_bytes(
        head.replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 0.866 0.5 0 0 0 1")
    )
    (tmp_path / "junk.nrrd").write_bytes(b"NRRD0004\ntype: what\n\n")
    _one_line_error(tmp_path / "sheared60.mha", "sheared by 60")
    _one_line_error(tmp_path / "zero.mha", "spacing")
    _one_line_error(tmp_path / "singular.mha", "direction")
    _one_line_error(tmp_path / "junk.nrrd", "cannot read")


# ----------------------------------------------------------------- anatomy maps and mask folders
def test_anatomy_maps_of_every_form_give_the_same_groups(tmp_path):
    from nnunet_ctarr.core.anatomy.masks import load_anatomy

    img = phantom((40, 36, 16), (1.2, 1.2, 3.0), rotation(0, 15, 20), origin_xyz=(7, -3, 12))
    labels = phantom_labels(img)
    counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=20)[1:]
    forms = {
        "u8.nii.gz": sitk.sitkUInt8,
        "i16.nrrd": sitk.sitkInt16,
        "u32.mha": sitk.sitkUInt32,
        "i64.nii.gz": sitk.sitkInt64,
        "f32.nii.gz": sitk.sitkFloat32,
    }
    for name, pixel in forms.items():
        sitk.WriteImage(sitk.Cast(labels, pixel), str(tmp_path / name))
    write_nibabel(labels, tmp_path / "four_d.nii.gz", extra_dims=(1,))
    for name in [*forms, "four_d.nii.gz"]:
        anatomy = load_anatomy(tmp_path / name, "ctarr19")
        assert Geometry.of(anatomy.labels).same_grid(Geometry.of(img), tol=1e-4), name
        assert np.array_equal(anatomy.group_voxel_counts(), counts), name
    masks = tmp_path / "segmentations"
    masks.mkdir()
    arr = sitk.GetArrayFromImage(labels)
    for i, (structure, group) in enumerate(
        (("lung_upper_lobe_left", 12), ("lung_upper_lobe_right", 13), ("heart", 14), ("vertebrae_T5", 6))
    ):
        mask = sitk.GetImageFromArray((arr == group).astype(("uint8", "int16", "float32", "uint8")[i]))
        mask.CopyInformation(labels)
        mask = sitk.Flip(mask, [False, True, False]) if structure == "heart" else mask  # same voxels, y flipped
        sitk.WriteImage(mask, str(masks / f"{structure}.nii.gz"))
    anatomy = load_anatomy(masks)
    assert np.array_equal(anatomy.group_voxel_counts(), counts)
    huge = sitk.Cast(labels, sitk.sitkUInt32)
    huge[0, 0, 0] = 4_000_000_000  # a stray id: ignored, no 4-billion-entry table
    sitk.WriteImage(huge, str(tmp_path / "huge.nrrd"))
    assert np.array_equal(load_anatomy(tmp_path / "huge.nrrd", "ctarr19").group_voxel_counts(), counts)
    negative = sitk.Cast(labels, sitk.sitkInt16) - 1
    sitk.WriteImage(negative, str(tmp_path / "negative.nii.gz"))
    with pytest.raises(CTARRError, match="negative values"):
        load_anatomy(tmp_path / "negative.nii.gz")
    sitk.WriteImage(labels[:, :, :2], str(tmp_path / "thin.nii.gz"))
    with pytest.raises(CTARRError, match="too thin"):
        load_anatomy(tmp_path / "thin.nii.gz")


# ----------------------------------------------------------------- the crop command on a few of them
def _crop(tmp_path: Path, image: Path, anatomy: Path | None) -> int:
    from nnunet_ctarr.cli import crop

    argv = ["-i", str(image), "-r", "lungs", "-o", str(tmp_path / "out")]
    try:
        return crop.main(argv + (["-anatomy_seg", str(anatomy)] if anatomy is not None else []))
    except SystemExit as e:
        return e.code


def _status(out: Path, case: str) -> str:
    """The lungs region's status in the case's sidecar (the run ended with a decision, not a crash)."""
    return json.loads((out / f"{case}.ctarr.json").read_text())["regions"]["lungs"]["status"]


ENDED = ("cropped", "untrusted: whole image", "outside the field of view")


def test_crop_command_on_scaled_four_d_tilted_and_thin_inputs(tmp_path):
    base = phantom((48, 40, 24), (6.0, 6.0, 8.0), origin_xyz=(-141, -117, -92))
    labels = tmp_path / "labels.nii.gz"
    sitk.WriteImage(phantom_labels(base), str(labels))
    scaled = write_nibabel(
        sitk.Cast(base, sitk.sitkFloat32), tmp_path / "scaled_4d.nii.gz", "uint16", 1.0, -1024.0, extra_dims=(1,)
    )
    code = _crop(tmp_path / "s", scaled, labels)
    status = _status(tmp_path / "s" / "out", "scaled_4d")
    assert status in ENDED and code == (0 if status != "untrusted: whole image" else 1)
    assert (tmp_path / "s" / "out" / "scaled_4d_lungs.nii.gz").exists() or status == ENDED[2]
    write_dicom_series(base, tmp_path / "tilted", tilt_deg=15)
    grid = read_image(tmp_path / "tilted")
    sitk.WriteImage(
        sitk.Resample(phantom_labels(base), grid, sitk.Transform(), sitk.sitkNearestNeighbor),
        str(tmp_path / "tilted_labels.nii.gz"),
    )
    code = _crop(tmp_path / "t", tmp_path / "tilted", tmp_path / "tilted_labels.nii.gz")
    assert _status(tmp_path / "t" / "out", "tilted") in ENDED[:2] and code in (0, 1)
    written = sitk.ReadImage(str(tmp_path / "t" / "out" / "tilted_lungs.nii.gz"))
    assert Geometry.of(grid).overlap(Geometry.of(written))[1] > 0.999  # on the tilt-corrected grid
    sitk.WriteImage(phantom((48, 40, 2), (6.0, 6.0, 8.0)), str(tmp_path / "two.nii.gz"))
    assert _crop(tmp_path / "two", tmp_path / "two.nii.gz", labels) == 1  # one error line, exit 1


def test_crop_command_hu_default_on_thick_slices(tmp_path):
    sitk.WriteImage(phantom((64, 64, 12), (0.98, 0.98, 6.0)), str(tmp_path / "thick.nii.gz"))
    code = _crop(tmp_path, tmp_path / "thick.nii.gz", None)
    out = tmp_path / "out"
    # a decision (any status, the sidecar says which) or one error line for a phantom with too little anatomy
    assert code in (0, 1) and ((out / "thick.ctarr.json").exists() or not list(out.glob("*.nii*")))


def test_predict_planner_takes_the_stored_grid_and_refuses_a_4d_file(tmp_path):
    """The predictor plans on the grid nnU-Net's reader predicts on: a sheared NRRD as stored (from
    its header); a 4-D series is one line, not an nnU-Net crash."""
    from conftest import ABDOMEN

    from nnunet_ctarr.core.anatomy.atlas import Atlas
    from nnunet_ctarr.core.anatomy.sources import PrecomputedAnatomy
    from nnunet_ctarr.core.localise.decision import Status
    from nnunet_ctarr.core.regions.region import load_regions
    from nnunet_ctarr.inference.planner import CasePlanner
    from nnunet_ctarr.inference.plans import CTARRSettings
    from nnunet_ctarr.inference.tiling import TileGeometry

    img = sitk.ReadImage(str(ABDOMEN[0]))
    anatomy = PrecomputedAnatomy(ABDOMEN[1])
    anatomy.prepare({"shear": [], "four": []})
    planner = CasePlanner(CTARRSettings(load_regions(["liver"])[0], Atlas.load()), anatomy,
                          lambda g: TileGeometry((64, 64, 64), (1.0, 1.0, 1.0), 1.0))
    m = np.eye(3)
    m[:, 2] = [0.0, np.sin(np.radians(2)), np.cos(np.radians(2))]   # slice axis leaning 2 deg in y
    sheared = sitk.Image(img)
    sheared.SetDirection(tuple((np.array(img.GetDirection()).reshape(3, 3) @ m).ravel()))
    sitk.WriteImage(sheared, str(tmp_path / "shear.nrrd"))
    plan = planner.plan_file(str(tmp_path / "shear.nrrd"), "shear")
    assert plan.status is Status.CROPPED and plan.geometry.same_grid(Geometry.of(sheared))
    assert not plan.geometry.same_grid(Geometry.of(read_image(tmp_path / "shear.nrrd")))   # not the resampled grid
    sitk.WriteImage(sitk.JoinSeries([img, img]), str(tmp_path / "four.nii.gz"))
    plan = planner.plan_file(str(tmp_path / "four.nii.gz"), "four")
    assert plan.status is Status.FAILED and "expected a 3D image" in plan.error
