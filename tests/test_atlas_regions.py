"""The shipped atlas and regions, the atlas builder (partial fields of view) and the region
learner (paper 3.4)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, anatomy_of

from nnunet_ctarr.cli.build_atlas import main as build_atlas_main
from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import GROUPS
from nnunet_ctarr.core.build.region_learning import learn_region
from nnunet_ctarr.core.regions.region import boxes_from_heatmap, builtin_regions, load_region


def test_starter_atlas_is_complete_where_data_exist(atlas):
    assert atlas.prob.shape[0] == 19
    assert np.allclose(atlas.spacing, 3.0)
    assert atlas.coverage.min() >= 0
    assert atlas.coverage.max() <= 1
    missing = {GROUPS[i] for i in np.nonzero(~atlas.observed)[0]}
    assert missing == {"skull", "brain"}  # neither subject shows the head
    assert set(atlas.meta["groups_without_data"]) == missing
    # the overlap of the two subjects (upper abdomen) is covered by both
    assert atlas.coverage.max() == 1.0
    assert np.isclose(atlas.coverage, 0.5, atol=0.01).any()


def test_every_builtin_region_belongs_to_the_shipped_atlas(atlas):
    regions = builtin_regions()
    assert {
        "kidneys",
        "liver",
        "spleen",
        "pancreas",
        "gallbladder",
        "stomach",
        "colon",
        "urinary_bladder",
        "heart",
        "lungs",
        "spine",
    } <= set(regions)
    for name in regions:
        r = load_region(name)
        assert r.atlas_id == atlas.atlas_id
        lo, hi = atlas.extent()
        assert np.all(r.boxes_mm[:, 0] >= lo - 60)
        assert np.all(r.boxes_mm[:, 1] <= hi + 60)
    assert len(load_region("kidneys").boxes_mm) == 2


def test_build_atlas_cli_from_totalsegmentator_layout_reproduces_shipped_atlas(tmp_path, atlas, ts_root):
    assert build_atlas_main(["-i", str(ts_root), "-o", str(tmp_path / "a.npz")]) == 0
    """The same grid and groups; every group's centre of mass within 0.5 mm of the shipped atlas and
    the probabilities equal up to boundary voxels (the shipped atlas was built with the torch
    refinement; the NumPy one finds the same transforms to ~0.15 mm, which moves a boundary
    voxel's probability by up to ~0.06)."""
    rebuilt = Atlas.load(tmp_path / "a.npz")
    assert rebuilt.shape_zyx == atlas.shape_zyx
    assert np.array_equal(rebuilt.observed, atlas.observed)
    diff = np.abs(rebuilt.prob - atlas.prob)
    assert diff.max() <= 0.1
    assert diff.mean() < 1e-4
    com_shift = np.abs(rebuilt.centres_of_mass() - atlas.centres_of_mass())[atlas.observed]
    assert com_shift.max() < 0.5


def test_learned_kidney_region_has_two_boxes_and_matches_shipped(atlas, ts_v2):
    names = ts_v2.names
    ids = [i for i, n in names.items() if n.startswith("kidney")]
    cases = []
    for name, (_, lab_f) in (("abdomen", ABDOMEN), ("chest", CHEST)):
        lab = sitk.ReadImage(str(lab_f))
        roi = sitk.GetImageFromArray(np.isin(sitk.GetArrayViewFromImage(lab), ids).astype(np.uint8))
        roi.CopyInformation(lab)
        cases.append((name, anatomy_of(lab, ts_v2), roi))
    learned = learn_region(cases, atlas, "kidneys", margin_mm=20, progress=False)
    assert learned.n_scans == 2
    assert len(learned.region.boxes_mm) == 2
    shipped = load_region("kidneys").boxes_mm
    assert np.abs(learned.region.boxes_mm - shipped).max() <= 6.0
    # right kidney (patient right = -x in LPS) comes first
    assert learned.region.boxes_mm[0, 1, 0] < learned.region.boxes_mm[1, 0, 0]
    assert 0 < learned.heatmap.max() <= 1


def test_heatmap_components_and_merging():
    heat = np.zeros((20, 20, 40), np.float32)
    heat[2:6, 2:6, 2:8] = 1.0  # component A
    heat[4:8, 4:8, 7:12] = 0.5  # touches A -> one component
    heat[2:6, 2:6, 30:36] = 1.0  # separate component B
    heat[10:12, 10:12, 30:32] = 0.01  # noise below threshold
    boxes = boxes_from_heatmap(heat, origin=np.zeros(3), spacing=np.full(3, 3.0), threshold=0.05)
    assert len(boxes) == 2
    assert np.allclose(boxes[0], [[4.5, 4.5, 4.5], [34.5, 22.5, 22.5]])  # voxel edges, xyz
    # overlapping boxes of separate components are merged
    heat2 = np.zeros((20, 20, 20), np.float32)
    heat2[0:10, 0, 0:10] = 1
    heat2[0, 0:10, 5] = 1
    heat2[5, 5, 2] = 1  # isolated voxel inside the box of the first component
    assert len(boxes_from_heatmap(heat2, np.zeros(3), np.ones(3), 0.0)) == 1


def test_nnunet_label_names_map_to_groups_and_region_labels_are_refused(tmp_path):
    import json

    import pytest

    from nnunet_ctarr.cli.build_atlas import nnunet_scheme
    from nnunet_ctarr.core.base.errors import CTARRError

    ds = tmp_path / "Dataset700_X"
    (ds / "labelsTr").mkdir(parents=True)
    labels = {"background": 0, "liver": 1, "kidney_left": 2, "ignore": 3}
    (ds / "dataset.json").write_text(json.dumps({"labels": labels}))
    assert nnunet_scheme(ds / "labelsTr" / "c.nii.gz").names == {1: "liver", 2: "kidney_left"}  # ignore is not anatomy
    (ds / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "kidneys": [1, 2]}}))
    with pytest.raises(CTARRError, match="region-based label 'kidneys'"):
        nnunet_scheme(ds / "labelsTr" / "c.nii.gz")


def test_a_loaded_atlas_converts_only_what_is_asked_with_the_values_of_the_whole():
    lazy, whole = Atlas.load(), Atlas.load()
    full = whole.prob                                                   # the whole float32 array, made once
    assert lazy.__dict__.get("_prob") is None and lazy.shape_zyx == full.shape[1:]
    g = GROUPS.index("liver")
    for index in [(g,), (g, slice(10, 40), slice(5, 60), slice(0, 30)),
                  (np.array([g, 0]), np.array([50, 60]), np.array([40, 41]), np.array([60, 61]))]:
        assert np.array_equal(lazy.prob_values(index), full[index])
    mass, first = lazy._prob_moments()                                  # exact integer sums of the stored values
    assert np.allclose(mass, full.sum((1, 2, 3), dtype=np.float64), rtol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(lazy.pooled(2)[:2], whole.pooled(2)[:2]))
    assert lazy.__dict__.get("_prob") is None                           # nothing above needed all of it
