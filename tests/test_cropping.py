"""Crops overlay their source exactly; paste-back is bit-exact; FOV edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DICOM, anatomy_of

from nnunet_ctarr.core.base.images import match_label_to_image, read_image
from nnunet_ctarr.core.localise.localisation import locate, plan_region
from nnunet_ctarr.core.regions.cropping import crop_image, paste_back, plan_crops
from nnunet_ctarr.core.regions.region import Region, load_region


def _assert_overlays(crop: sitk.Image, src: sitk.Image, n: int = 200) -> None:
    assert np.allclose(crop.GetSpacing(), src.GetSpacing())
    assert np.allclose(crop.GetDirection(), src.GetDirection())
    rng = np.random.default_rng(1)
    for _ in range(n):
        idx = [int(rng.integers(0, s)) for s in crop.GetSize()]
        p = crop.TransformIndexToPhysicalPoint(idx)
        j = src.TransformPhysicalPointToContinuousIndex(p)
        assert np.allclose(j, np.round(j), atol=1e-4)  # crop voxel centres are source voxel centres
        assert crop[idx] == src[[int(round(v)) for v in j]]


@pytest.fixture(scope="module")
def chest_loc(chest, ts_v2, atlas):
    img, lab = chest
    return locate(img, anatomy_of(lab, ts_v2), atlas)


@pytest.mark.parametrize("region", ["kidneys", "heart", "lungs"])
def test_crop_overlays_source_in_world_space(chest, chest_loc, region):
    img = chest[0]  # stored with a flipped y axis
    plan = plan_region(img, chest_loc, load_region(region))
    for b in plan.usable:
        crop = crop_image(img, b)
        _assert_overlays(crop, img)
        # the crop's first voxel is where the plan says, in world mm
        assert np.allclose(crop.GetOrigin(), img.TransformIndexToPhysicalPoint([int(v) for v in b.start_xyz]))


def test_dicom_crop_overlays_source(atlas, ts_v2):
    img = read_image(DICOM[0])
    lab = match_label_to_image(read_image(DICOM[1]), img)
    loc = locate(img, anatomy_of(lab, ts_v2), atlas)
    plan = plan_region(img, loc, load_region("liver"))
    crop = crop_image(img, plan.usable[0])
    _assert_overlays(crop, img)


def test_paste_back_is_bit_exact(chest, chest_loc):
    img, lab = chest
    plan = plan_region(img, chest_loc, load_region("kidneys"))
    assert len(plan.usable) == 2
    fill = -3000
    crops = [crop_image(img, b) for b in plan.usable]
    pasted = paste_back(crops, img, fill_value=fill)
    a, p = sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(pasted)
    inside = plan.union_mask_zyx()
    assert np.array_equal(p[inside], a[inside])
    assert np.all(p[~inside] == fill)
    assert pasted.GetSize() == img.GetSize()
    assert pasted.GetOrigin() == img.GetOrigin()
    assert pasted.GetDirection() == img.GetDirection()
    assert pasted.GetSpacing() == img.GetSpacing()


def test_partial_box_is_cut_to_the_image_and_pad_restores_full_box(chest, chest_loc):
    img = chest[0]
    tf = chest_loc.transform
    # a 60 mm box in the middle of the slice that reaches 60 mm beyond the top of the scan
    from nnunet_ctarr.core.base.geometry import Geometry

    wlo, whi = Geometry.of(img).bounds()
    centre = 0.5 * (wlo + whi)
    world_lo = np.array([centre[0] - 30, centre[1] - 30, whi[2] - 40.0])
    world_hi = world_lo + np.array([60.0, 60.0, 100.0])
    box_atlas = np.stack(tf.box_to_atlas(world_lo, world_hi))[None]
    plan = plan_crops(img, tf, box_atlas)
    b = plan.boxes[0]
    assert b.status == "partial"
    assert 0 < b.fraction_inside < 1
    crop = crop_image(img, b)
    assert np.all(np.array(crop.GetSize()) == b.size_xyz)
    padded = crop_image(img, b, pad_to_full_box=True, fill_value=-1024)
    assert np.all(np.array(padded.GetSize()) == b.full_stop_xyz - b.full_start_xyz)
    _assert_overlays(crop, img, 50)
    # padded voxels carry the fill value; original ones are untouched
    back = paste_back([padded], img, fill_value=-5000)
    inside = plan.union_mask_zyx()
    assert np.array_equal(sitk.GetArrayViewFromImage(back)[inside], sitk.GetArrayViewFromImage(img)[inside])


def test_box_entirely_outside_is_reported(chest, chest_loc):
    img = chest[0]
    tf = chest_loc.transform
    lo = np.array(img.GetOrigin()) + np.array([0, 0, 2000.0])
    plan = plan_crops(img, tf, np.stack(tf.box_to_atlas(lo, lo + 50))[None])
    assert plan.boxes[0].status == "outside"
    assert not plan.usable


def test_z_only_keeps_full_xy(chest, chest_loc):
    img = chest[0]
    plan = plan_region(img, chest_loc, load_region("heart"), z_only=True)
    b = plan.usable[0]
    assert b.start_xyz[0] == 0
    assert b.stop_xyz[0] == img.GetSize()[0]
    assert b.start_xyz[1] == 0
    assert b.stop_xyz[1] == img.GetSize()[1]
    assert b.stop_xyz[2] - b.start_xyz[2] < img.GetSize()[2]


def test_region_margin_grows_boxes():
    r = Region("t", np.array([[[0, 0, 0], [10, 20, 30]]]), margin_mm=10)
    assert np.allclose(r.boxes_with_margin(5)[0], [[-15, -15, -15], [25, 35, 45]])
