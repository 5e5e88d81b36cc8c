"""Anatomy on the registration's working grid: label ids picked onto the 3 mm grid and mapped to groups
there give the MaskVolume that mapping the full-resolution map and resampling it with SimpleITK gives."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, DICOM, SMALL

import nnunet_ctarr
from nnunet_ctarr.core.anatomy.grid import GridSampler, sample_nearest
from nnunet_ctarr.core.anatomy.groups import GROUPS, LabelScheme
from nnunet_ctarr.core.anatomy.label_maps import present_labels
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks, load_anatomy, load_mask_folder
from nnunet_ctarr.core.anatomy.volume import anatomy_to_volume
from nnunet_ctarr.core.base.errors import WarningLog
from nnunet_ctarr.core.base.geometry import Geometry


def _reference(groups: sitk.Image, spacing: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """(origin, labels) the way the registration grid was made before: the full-resolution group map
    reoriented to LPS and resampled nearest-neighbour by SimpleITK (kept as is on an LPS 3 mm grid)."""
    lab = sitk.DICOMOrient(groups, "LPS")
    if np.allclose(lab.GetDirection(), np.eye(3).ravel(), atol=1e-6) and np.allclose(lab.GetSpacing(), spacing):
        return np.array(lab.GetOrigin()), sitk.GetArrayFromImage(lab)
    grid = Geometry.of(lab).resampling_grid(spacing).to_reference()
    res = sitk.Resample(lab, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return np.array(res.GetOrigin()), sitk.GetArrayFromImage(res)


def _groups_eagerly(img: sitk.Image, scheme: LabelScheme) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(img)
    lut = np.concatenate([scheme.lut, np.zeros(max(0, int(arr.max()) + 1 - scheme.lut.size), np.uint8)])
    out = sitk.GetImageFromArray(lut[arr])
    out.CopyInformation(img)
    return out


@pytest.mark.parametrize("path", [ABDOMEN[1], CHEST[1], SMALL[1], DICOM[1]], ids=["abdomen", "chest", "small", "dicom"])
def test_working_grid_equals_simpleitk_resampling(path, ts_v2):
    img = sitk.ReadImage(str(path))
    for code in ("LPS", "RAS", "ILP", "PSR"):  # every axis order and sense the scan may be stored in
        stored = sitk.DICOMOrient(img, code)
        vol = anatomy_to_volume(AnatomyMasks.from_label_image(stored, ts_v2, WarningLog(), "t"))
        origin, labels = _reference(_groups_eagerly(stored, ts_v2))
        assert np.allclose(vol.origin, origin, atol=1e-9)
        assert np.array_equal(vol.labels, labels), (path.name, code)


def test_picks_equal_simpleitks_on_every_orientation_and_half_voxel_ties():
    """Grids like 0.8 mm -> 3 mm put grid points exactly half-way between voxels (every 4th point):
    the voxel picked there is the one SimpleITK picks, in every stored orientation."""
    rng = np.random.default_rng(0)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product([1, -1], repeat=3):
            for spacing in ((0.8, 0.8, 1.5), (0.703125, 0.703125, 2.5)):
                d = np.zeros((3, 3))
                d[list(perm), [0, 1, 2]] = signs
                size = [int(v) for v in rng.integers(16, 40, 3)]
                img = sitk.GetImageFromArray(rng.integers(1, 250, size[::-1]).astype(np.uint8))
                img.SetDirection(d.ravel().tolist())
                img.SetSpacing(spacing)
                img.SetOrigin((rng.integers(-300, 300, 3) * 0.5).tolist())
                grid, picked = sample_nearest(img)
                origin, labels = _reference(img)
                assert np.array_equal(grid.origin, origin) and np.array_equal(picked, labels), (perm, signs, spacing)


def test_oblique_map_is_resampled_by_simpleitk(ts_v2):
    img = sitk.ReadImage(str(SMALL[1]))
    c, s = np.cos(0.2), np.sin(0.2)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    assert GridSampler.for_image(img) is None
    vol = anatomy_to_volume(AnatomyMasks.from_label_image(img, ts_v2, WarningLog(), "t"))
    origin, labels = _reference(_groups_eagerly(img, ts_v2))
    assert np.allclose(vol.origin, origin) and np.array_equal(vol.labels, labels)


def test_source_ids_are_mapped_lazily_and_counted_exactly(ts_v2):
    img = sitk.ReadImage(str(CHEST[1]))
    w = WarningLog()
    anat = load_anatomy(CHEST[1], "ts_v2", w)
    assert anat.lut is not None and anat.label_map.GetPixelID() == img.GetPixelID()  # ids kept as read
    assert any("[118]" in x for x in w)  # the id outside the scheme is still reported
    groups = sitk.GetArrayViewFromImage(anat.labels)
    assert np.array_equal(groups, sitk.GetArrayViewFromImage(_groups_eagerly(img, ts_v2)))
    assert np.array_equal(anat.group_voxel_counts(), np.bincount(groups.ravel(), minlength=20)[1:20])
    assert anat.group_voxel_counts()[GROUPS.index("lung_left")] > 0


def test_present_labels_is_numpys_unique():
    rng = np.random.default_rng(1)
    for arr in (
        rng.integers(0, 300, (20, 30, 40)).astype(np.uint16),
        rng.integers(0, 5, (8, 9, 10)).astype(np.uint8),
        rng.integers(0, 1 << 20, (5, 6, 7)).astype(np.int32),
        rng.integers(0, 9, (5, 6, 7)).astype(np.float32),
    ):
        assert np.array_equal(present_labels(arr), np.unique(arr))


def test_mask_folder_built_on_the_working_grid(ts_root):
    """Every mask picked onto the 3 mm grid as it is read: the same MaskVolume as the full-resolution
    group map resampled afterwards."""
    folder = ts_root / "s0001" / "segmentations"  # the abdomen, stored with x and y reversed
    full = load_mask_folder(folder, WarningLog())
    small = load_mask_folder(folder, WarningLog(), spacing=3.0)
    a, b = anatomy_to_volume(full), anatomy_to_volume(small)
    assert np.array_equal(a.origin, b.origin) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.observed, b.observed) and b.labels.any()


def test_atlas_file_inflated_by_isal_equals_numpy_and_damage_is_one_line(tmp_path):
    from nnunet_ctarr.core.anatomy.atlas import DEFAULT_ATLAS, Atlas, read_npz
    from nnunet_ctarr.core.base.errors import CTARRError

    path = Path(nnunet_ctarr.__file__).parent / "resources" / DEFAULT_ATLAS
    ours, ref = read_npz(path), np.load(path)
    assert sorted(ours) == sorted(ref.files)
    assert all(np.array_equal(ours[k], ref[k]) for k in ref.files)
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF  # inside the deflated probabilities
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(CTARRError, match="cannot load atlas .*bad.npz"):
        Atlas.load(tmp_path / "bad.npz")


def test_npz_members_read_without_a_copy_equal_numpy(tmp_path):
    """Any array numpy writes to an .npz (stored or deflated, C or Fortran order, any dtype, 0-d)
    reads back with the same dtype, shape and values; an object array is refused (no pickles)."""
    from nnunet_ctarr.core.anatomy.atlas import read_npz

    rng = np.random.default_rng(3)
    arrays = {
        "u8": rng.integers(0, 255, (4, 5, 6, 7)).astype(np.uint8),
        "f64_fortran": np.asfortranarray(rng.normal(size=(3, 4, 5))),
        "big_endian": rng.integers(-9, 9, (5, 3)).astype(">i4"),
        "flags": rng.integers(0, 2, 19).astype(bool),
        "text": np.array('{"a": 1}'),
    }
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "a.npz", **arrays)
        ours = read_npz(tmp_path / "a.npz")
        for k, v in arrays.items():
            assert ours[k].dtype == v.dtype and ours[k].shape == v.shape and np.array_equal(ours[k], v), (save, k)
    np.savez(tmp_path / "o.npz", o=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="object arrays"):
        read_npz(tmp_path / "o.npz")


def test_atlas_warm_up_in_a_thread_gives_the_same_registration():
    """The atlas side of the registration computed in a background thread while the case is read:
    the same transform, Dice and caches as a registration that computes them itself."""
    from nnunet_ctarr.core.anatomy.atlas import _WARMING, Atlas
    from nnunet_ctarr.core.anatomy.masks import load_anatomy
    from nnunet_ctarr.core.anatomy.volume import anatomy_to_volume
    from nnunet_ctarr.core.base.errors import WarningLog
    from nnunet_ctarr.core.localise.registration import register

    vol = anatomy_to_volume(load_anatomy(CHEST[1], warnings=WarningLog()))
    cold, warm = Atlas.load(), Atlas.load()
    warm.warm_up()
    assert id(warm) in _WARMING or "moments" in warm._cache
    a, b = register(vol, cold), register(vol, warm)
    assert id(warm) not in _WARMING
    assert np.array_equal(a.transform.scale, b.transform.scale)
    assert np.array_equal(a.transform.translation, b.transform.translation) and a.dice == b.dice
    for key in ("moments", ("pool", 2), ("pool", 4)):
        x, y = cold._cache[key], warm._cache[key]
        assert all(np.array_equal(p, q) for p, q in zip(x, y)), key
