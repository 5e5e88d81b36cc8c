"""Reading images with exact geometry, canonical orientation, label matching, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, DICOM

from nnunet_ctarr.core.base.cases import case_id, list_inputs
from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.base.geometry import Geometry
from nnunet_ctarr.core.base.images import canonical, check_ct_intensities, match_label_to_image, read_image


def test_dicom_series_reads_as_volume():
    img = read_image(DICOM[0])
    assert img.GetSize() == (512, 512, 20)
    assert np.allclose(img.GetSpacing(), (0.9765625, 0.9765625, 2.0))


def test_flipped_dicom_labels_are_matched_in_world_space():
    img = read_image(DICOM[0])
    lab = read_image(DICOM[1])
    assert np.sign(lab.GetDirection()[4]) != np.sign(img.GetDirection()[4])  # stored with flipped y
    matched = match_label_to_image(lab, img)
    assert matched.GetSize() == img.GetSize()
    a_lab, a_m = sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(matched)
    assert np.array_equal(a_m, a_lab[:, ::-1, :])  # exact, no interpolation
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = [int(rng.integers(0, n)) for n in img.GetSize()]
        p = img.TransformIndexToPhysicalPoint(idx)
        j = lab.TransformPhysicalPointToIndex(p)
        assert matched[idx] == lab[j]


def test_canonical_orientation_is_lps_and_keeps_world_geometry():
    img = read_image(CHEST[0])  # stored LAS-like: direction diag(1, -1, 1)
    can = canonical(img)
    assert np.allclose(can.GetDirection(), np.eye(3).ravel())
    lo1, hi1 = Geometry.of(img).bounds()
    lo2, hi2 = Geometry.of(can).bounds()
    assert np.allclose(lo1, lo2)
    assert np.allclose(hi1, hi2)
    p = img.TransformIndexToPhysicalPoint((10, 20, 30))
    assert img[10, 20, 30] == can[can.TransformPhysicalPointToIndex(p)]


def test_case_id_strips_extension_and_channel_suffix(tmp_path):
    assert case_id(tmp_path / "liver_001_0000.nii.gz") == "liver_001"
    assert case_id(tmp_path / "scan.mha") == "scan"
    d = tmp_path / "dicomcase"
    d.mkdir()
    assert case_id(d) == "dicomcase"


def test_list_inputs_finds_images_and_dicom_subfolders(tmp_path):
    sitk.WriteImage(read_image(ABDOMEN[0]), str(tmp_path / "a.nii.gz"))
    (tmp_path / "notes.txt").write_text("x")
    import shutil

    shutil.copytree(DICOM[0], tmp_path / "b")
    found = list_inputs(tmp_path)
    assert [p.name for p in found] == ["a.nii.gz", "b"]


@pytest.mark.parametrize("content", [b"", b"not a nifti at all" * 10])
def test_corrupt_file_is_a_clear_error(tmp_path, content):
    p = tmp_path / "broken.nii.gz"
    p.write_bytes(content)
    with pytest.raises(CTARRError, match="cannot read"):
        read_image(p)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CTARRError, match="not found"):
        read_image(tmp_path / "nope.nii.gz")


def test_2d_image_is_refused(tmp_path):
    p = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16), str(p))
    with pytest.raises(CTARRError, match="3D"):
        read_image(p)
    p3 = tmp_path / "slab.nii.gz"
    sitk.WriteImage(sitk.Image(64, 64, 1, sitk.sitkInt16), str(p3))
    with pytest.raises(CTARRError, match="2D"):
        read_image(p3)


def test_constant_and_non_hu_images_are_refused():
    img = read_image(ABDOMEN[0])
    check_ct_intensities(img)  # the real CT passes
    const = sitk.Image(img.GetSize(), sitk.sitkInt16)
    with pytest.raises(CTARRError, match="constant"):
        check_ct_intensities(const)
    shifted = sitk.Cast(img, sitk.sitkFloat32) + 1024.0  # unsigned storage without rescale
    with pytest.raises(CTARRError, match="Hounsfield"):
        check_ct_intensities(shifted)
    normalised = (sitk.Cast(img, sitk.sitkFloat32) + 1024.0) / 4000.0
    with pytest.raises(CTARRError, match="Hounsfield"):
        check_ct_intensities(normalised)


def test_chest_padding_value_is_accepted():
    img = read_image(CHEST[0])
    assert sitk.GetArrayViewFromImage(img).min() == -2048  # outside the circular FOV
    check_ct_intensities(img)


def test_label_grid_that_does_not_cover_the_image_is_an_error():
    img = read_image(ABDOMEN[0])
    other = read_image(CHEST[1])
    with pytest.raises(CTARRError, match="does not match the image"):
        match_label_to_image(other, img)
