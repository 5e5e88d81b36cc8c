"""Reading images with exact geometry, canonical orientation, label matching, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, DICOM

from nnunet_ctarr.core.base.cases import (
    InputCase,
    case_id,
    check_unique_case_ids,
    list_cases,
    list_inputs,
    match_case_file,
)
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


@pytest.mark.parametrize(
    "name,content",
    [("junk.nrrd", b"NRRD0004\ntype: nonsense\n\n"), ("junk.mha", b"x" * 64), ("noext.dat", b"\0" * 500)],
)
def test_unreadable_files_are_one_line_without_itk_source_paths(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(CTARRError) as e:
        read_image(p)
    msg = str(e.value)
    assert msg.startswith(f"cannot read {p}") and "\n" not in msg
    for noise in (".cxx", ".hxx", "Exception thrown", "ERROR:", "0x"):
        assert noise not in msg, msg


def _touch(folder, *names):
    folder.mkdir(exist_ok=True)
    for n in names:
        (folder / n).mkdir() if n.endswith("/") else (folder / n).write_bytes(b"")
    return folder


def test_single_case_matches_anatomy_like_a_batch(tmp_path):
    """The finding: ``-i example_ct.nii.gz -anatomy_seg folder/`` with the three bundled maps said
    'several files match'; a batch of the three scans found each one's map."""
    maps = _touch(
        tmp_path / "maps",
        "example_ct_totalseg_v2.nii.gz",
        "example_ct_sm_totalseg_v2.nii.gz",
        "example_ct_dicom_totalseg_v2.nii.gz",
    )
    batch = ["example_ct", "example_ct_sm", "example_ct_dicom"]
    for case in batch:
        expected = maps / f"{case}_totalseg_v2.nii.gz"
        assert match_case_file(maps, case, batch, "anatomy") == expected
        assert match_case_file(maps, case, [case], "anatomy") == expected  # single file, same answer
    # the exact case id comes first: <case>.<ext>, <case>_0000.<ext>, a folder <case>/
    for exact in ("example_ct.nii.gz", "example_ct_0000.nrrd", "example_ct/"):
        folder = _touch(tmp_path / exact.replace("/", "_d"), exact, "example_ct_totalseg_v2.nii.gz")
        assert match_case_file(folder, "example_ct", ["example_ct"], "anatomy") == folder / exact.rstrip("/")
    two = _touch(tmp_path / "two", "example_ct.nii.gz", "example_ct.nrrd")
    with pytest.raises(CTARRError, match="several anatomy entries are named after case 'example_ct'"):
        match_case_file(two, "example_ct", ["example_ct"], "anatomy")
    # no common pattern: still ambiguous, said in one line
    amb = _touch(tmp_path / "amb", "case_a.nii.gz", "case_b.nii.gz")
    with pytest.raises(CTARRError, match=r"several anatomy files match case 'case'.*case_a.*case_b"):
        match_case_file(amb, "case", ["case"], "anatomy")
    # a folder without entries named after the single case is the case's own mask folder
    masks = _touch(tmp_path / "segmentations", "liver.nii.gz", "spleen.nii.gz")
    assert match_case_file(masks, "example_ct", ["example_ct"], "anatomy") == masks


def test_nnunet_channel_files_are_one_case_channel_0_first(tmp_path):
    folder = _touch(tmp_path / "in", "b_0001.nii.gz", "b_0000.nii.gz", "a.nii.gz", "c_0000.nrrd")
    shutil.copytree(DICOM[0], folder / "d")
    cases = list_cases(folder)
    assert [(c.case, [p.name for p in c.channels]) for c in cases] == [
        ("a", ["a.nii.gz"]),
        ("b", ["b_0000.nii.gz", "b_0001.nii.gz"]),
        ("c", ["c_0000.nrrd"]),
        ("d", ["d"]),
    ]
    assert all(isinstance(c, InputCase) for c in cases) and cases[1].first.name == "b_0000.nii.gz"
    assert [p.name for p in list_inputs(folder)] == [
        "a.nii.gz",
        "b_0000.nii.gz",
        "b_0001.nii.gz",
        "c_0000.nrrd",
        "d",
    ]  # list_inputs keeps listing every input
    with pytest.raises(CTARRError, match=r"b_0000.nii.gz, b_0001.nii.gz would all write case 'b'"):
        check_unique_case_ids(list_inputs(folder))


@pytest.mark.parametrize(
    "names",
    [("a.nii.gz", "a.nrrd"), ("a.nii.gz", "a_0000.nii.gz"), ("a.mha", "a/"), ("a_0000.nii.gz", "a_0002.nii.gz")],
)
def test_inputs_that_would_write_the_same_outputs_are_refused_before_any_work(tmp_path, names):
    folder = _touch(tmp_path / "in", *names)
    if "a/" in names:
        shutil.rmtree(folder / "a")
        shutil.copytree(DICOM[0], folder / "a")
    with pytest.raises(CTARRError, match=r"would all write case 'a'") as e:
        list_cases(folder)
    assert "\n" not in str(e.value)
    with pytest.raises(CTARRError, match=r"would all write case 'a'"):
        check_unique_case_ids(list_inputs(folder))


def _stored(img: sitk.Image, order: tuple[int, int, int], flip: tuple[bool, bool, bool], dtype) -> sitk.Image:
    return sitk.Cast(sitk.Flip(sitk.PermuteAxes(img, order), flip), dtype)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_header_geometry_is_the_grid_the_voxels_read_with(tmp_path, suffix):
    from nnunet_ctarr.core.base.images import read_geometry

    img = sitk.ReadImage(str(CHEST[0]))
    for k, (order, flip, dtype) in enumerate([((0, 1, 2), (False, False, False), sitk.sitkInt16),
                                              ((1, 0, 2), (True, False, False), sitk.sitkFloat32),
                                              ((2, 0, 1), (False, True, True), sitk.sitkInt32)]):
        path = tmp_path / f"s{k}{suffix}"
        sitk.WriteImage(_stored(img, order, flip, dtype), str(path))
        geo = read_geometry(path)
        assert geo is not None and geo == Geometry.of(read_image(path))


def test_header_geometry_leaves_to_the_voxel_read_what_only_it_can_tell(tmp_path):
    from nnunet_ctarr.core.base.images import read_geometry

    img = sitk.ReadImage(str(CHEST[0]))
    assert read_geometry(DICOM[0]) is None                           # a DICOM folder
    sitk.WriteImage(sitk.JoinSeries([img]), str(tmp_path / "one.nii.gz"))     # 4-D, one volume: read as 3-D
    assert read_geometry(tmp_path / "one.nii.gz") == Geometry.of(read_image(tmp_path / "one.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([img, img]), str(tmp_path / "two.nii.gz"))  # a time series: refused by a read
    assert read_geometry(tmp_path / "two.nii.gz") is None
    sheared = sitk.Image(img)
    m = np.eye(3)
    m[2, 1] = np.sin(np.radians(15))                                  # a gantry tilt of 15 degrees
    sheared.SetDirection(tuple((m / np.linalg.norm(m, axis=0)).ravel()))
    sitk.WriteImage(sheared, str(tmp_path / "tilt.nrrd"))
    assert read_geometry(tmp_path / "tilt.nrrd") is None
    sitk.WriteImage(img, str(tmp_path / "full.nii"))
    raw = (tmp_path / "full.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CTARRError):                                   # damaged: the same refusal as a read
        read_geometry(tmp_path / "cut.nii")
