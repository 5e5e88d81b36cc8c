"""Crops fitted to nnU-Net's sliding-window tiles: same tiles, more image, merged boxes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ABDOMEN, anatomy_of

from nnunet_ctarr.core.base.images import read_image
from nnunet_ctarr.core.localise.localisation import locate, plan_region
from nnunet_ctarr.core.regions.region import load_region
from nnunet_ctarr.inference.tiling import TileGeometry, fit_boxes, grow_box


def geometry(patch_zyx, model_spacing_zyx, image_spacing_xyz, transpose=(0, 1, 2), step=0.5) -> TileGeometry:
    cm = SimpleNamespace(patch_size=list(patch_zyx), spacing=list(model_spacing_zyx))
    return TileGeometry.from_nnunet(cm, SimpleNamespace(transpose_forward=list(transpose)), image_spacing_xyz, step)


#: nnU-Net's 3d_fullres plan for CT at 1.5 x 1.5 x 2.5 mm (benchmarks/bench_predict.py, 8 GB target)
CT_PLAN = dict(patch_zyx=(96, 160, 160), model_spacing_zyx=(2.5, 1.5, 1.5))


def test_tile_count_is_nnunets_own():
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    g = geometry(**CT_PLAN, image_spacing_xyz=(1.5, 1.5, 2.5))
    for size in [(240, 240, 133), (100, 90, 40), (161, 320, 97)]:
        shape = [max(n, p) for n, p in zip(size[::-1], CT_PLAN["patch_zyx"])]
        steps = compute_steps_for_sliding_window(shape, CT_PLAN["patch_zyx"], 0.5)
        assert g.tiles(size) == np.prod([len(s) for s in steps])
    # a finer image is resampled by nnU-Net first: 0.75 mm in x/y -> half the size in network voxels
    fine = geometry(**CT_PLAN, image_spacing_xyz=(0.75, 0.75, 2.5))
    assert fine.tiles((320, 320, 96)) == 1
    assert fine.tiles((322, 320, 96)) == 2


def test_transposed_and_2d_models():
    # model axes (x, z, y) of the image: transpose_forward [2, 0, 1] on (z, y, x) arrays
    g = geometry((64, 32, 16), (1.0, 2.0, 3.0), (1.0, 1.0, 1.0), transpose=(2, 0, 1))
    assert g.patch_xyz == (64, 16, 32)
    assert g.ratio_xyz == (1.0, 1 / 3, 1 / 2)
    flat = geometry((128, 128), (0.8, 0.8), (0.8, 0.8, 5.0))  # 2d model: one tile set per slice
    assert flat.patch_xyz == (128, 128, 1)
    assert flat.tiles((100, 100, 7)) == 7
    assert flat.largest_size(2, 7, 50) == 7  # slices are never added for free


@pytest.mark.parametrize("seed", range(5))
def test_grown_box_contains_the_box_needs_the_same_tiles_and_is_maximal(seed):
    rng = np.random.default_rng(seed)
    g = geometry(
        (int(rng.integers(16, 96)), int(rng.integers(32, 160)), int(rng.integers(32, 160))),
        (2.5, 1.5, 1.5),
        tuple(rng.uniform(0.6, 3.0, 3)),
        step=float(rng.choice([0.5, 0.7, 1.0])),
    )
    image = rng.integers(50, 400, 3)
    for _ in range(20):
        start = np.array([rng.integers(0, n - 5) for n in image])
        stop = np.array([rng.integers(s + 1, n + 1) for s, n in zip(start, image)])
        s2, e2 = grow_box((start, stop), image, g)
        assert np.all(s2 <= start)
        assert np.all(e2 >= stop)
        assert np.all(s2 >= 0)
        assert np.all(e2 <= image)
        for a in range(3):
            n = g.tiles_along(a, int(stop[a] - start[a]))
            assert g.tiles_along(a, int(e2[a] - s2[a])) == n
            if e2[a] - s2[a] < image[a]:  # one voxel more would cost another tile row
                assert g.tiles_along(a, int(e2[a] - s2[a]) + 1) > n


@pytest.fixture(scope="module")
def abdomen_kidneys(atlas, ts_v2):
    img, lab = read_image(ABDOMEN[0]), read_image(ABDOMEN[1])
    loc = locate(img, anatomy_of(lab, ts_v2), atlas)
    return img, plan_region(img, loc, load_region("kidneys"))


@pytest.mark.parametrize(
    "patch_zyx,tiles",
    [
        ((96, 160, 160), 2),  # both boxes span 267 mm > 240 mm in x
        ((80, 192, 192), 1),
    ],
)  # a wider patch (288 mm) holds both
def test_kidney_boxes_merge_when_that_costs_no_more_tiles(abdomen_kidneys, patch_zyx, tiles):
    img, plan = abdomen_kidneys
    assert len(plan.usable) == 2
    g = geometry(patch_zyx, (2.5, 1.5, 1.5), img.GetSpacing())
    boxes = [(b.start_xyz, b.stop_xyz) for b in plan.usable]
    assert [g.tiles(e - s) for s, e in boxes] == [1, 1]
    crops = fit_boxes(boxes, img.GetSize(), g)
    assert len(crops) == 1
    assert crops[0]["region_boxes"] == [0, 1]
    assert crops[0]["tiles"] == tiles
    s, e = np.array(crops[0]["start_xyz"]), np.array(crops[0]["stop_xyz"])
    for bs, be in boxes:  # both kidney boxes stay inside the crop
        assert np.all(s <= bs)
        assert np.all(e >= be)


def test_boxes_far_apart_stay_separate(abdomen_kidneys):
    img, plan = abdomen_kidneys
    g = geometry((16, 32, 32), (3.0, 3.0, 3.0), img.GetSpacing())  # small patch: union costs more
    boxes = [(b.start_xyz, b.stop_xyz) for b in plan.usable]
    crops = fit_boxes(boxes, img.GetSize(), g)
    assert [c["region_boxes"] for c in crops] == [[0], [1]]
    assert [c["tiles"] for c in crops] == [g.tiles(e - s) for s, e in boxes]
