"""The HU anatomy (``-anatomy_model hu``): masks against TotalSegmentator's, the coarse pose on
rotated and flipped copies, groups, the crop command with nothing but the CT, and the trust
rule on a case the HU anatomy cannot place."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, anatomy_of, run_in_process

from nnunet_ctarr.cli import crop
from nnunet_ctarr.core.anatomy.groups import GROUPS, LabelScheme
from nnunet_ctarr.core.anatomy.hu_anatomy import coarse_pose, hu_anatomy, hu_masks
from nnunet_ctarr.core.anatomy.volume import anatomy_to_volume
from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.base.images import canonical
from nnunet_ctarr.core.localise.localisation import locate
from nnunet_ctarr.core.localise.trust import assess
from nnunet_ctarr.evaluation.perturbations import array_op, cut_box

BONES = [
    GROUPS.index(g) + 1
    for g in (
        "vertebrae_C",
        "ribs_left",
        "ribs_right",
        "sternum",
        "vertebrae_T",
        "vertebrae_L",
        "sacrum",
        "hip_left",
        "hip_right",
    )
]
LUNGS = [GROUPS.index("lung_left") + 1, GROUPS.index("lung_right") + 1]


def ts_groups_3mm(labels, ts_v2) -> np.ndarray:
    return anatomy_to_volume(anatomy_of(labels, ts_v2)).labels


def ts_groups_native(path, groups: tuple[str, ...]) -> np.ndarray:
    """Mask of TotalSegmentator structures of these groups on the label file's own grid."""
    anat = anatomy_of(sitk.ReadImage(str(path)), LabelScheme.named("ts_v2"))
    return np.isin(sitk.GetArrayFromImage(anat.labels), [GROUPS.index(g) + 1 for g in groups])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.fixture(scope="module")
def chest_masks(chest):
    return hu_masks(chest[0])


def test_masks_match_totalsegmentator(chest, chest_masks, ts_v2):
    """Lungs and bone by HU agree with TotalSegmentator's lungs and bones (3 mm group maps)."""
    ts = ts_groups_3mm(chest[1], ts_v2)
    assert chest_masks.lungs.shape == ts.shape
    assert dice(chest_masks.lungs, np.isin(ts, LUNGS)) > 0.9
    assert dice(chest_masks.bone, np.isin(ts, BONES)) > 0.5
    assert chest_masks.body[ts > 0].mean() > 0.97 or (chest_masks.body | chest_masks.lungs)[ts > 0].mean() > 0.97


def test_bowel_gas_is_not_lung(abdomen, ts_v2):
    """The abdomen holds more bowel gas than lung; only the lung bases are taken as lung."""
    m = hu_masks(abdomen[0])
    ts_lung = np.isin(ts_groups_3mm(abdomen[1], ts_v2), LUNGS)
    assert m.lungs.sum() > 0.8 * ts_lung.sum()
    assert (m.lungs & ts_lung).sum() > 0.9 * m.lungs.sum()


@pytest.mark.parametrize("k,flip", [(1, False), (2, False), (0, True), (3, True)])
def test_coarse_pose_recovers_turns_and_flips(chest, chest_masks, atlas, k, flip):
    """The array turned by k quarter turns (and flipped in z), header kept: the coarse pose finds
    the orientation the TotalSegmentator-map registration finds, and lands within 15 mm of it."""

    def op(a):
        a = np.rot90(a, k, axes=(1, 2))
        return a[::-1] if flip else a

    img, lab = array_op(canonical(chest[0]), op), array_op(canonical(chest[1]), op)
    tf, info = coarse_pose(hu_masks(img), atlas)
    ref = locate(img, anatomy_of(lab, LabelScheme.named("ts_v2")), atlas).transform
    assert np.array_equal(tf.M, ref.M), info
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
    assert np.abs(tf.to_atlas(centre) - ref.to_atlas(centre)).max() < 15.0


def test_groups_agree_with_totalsegmentator(chest, atlas, ts_v2):
    """Each HU voxel takes the atlas group there: left/right lungs and ribs, vertebrae by level."""
    anat = hu_anatomy(chest[0], atlas)
    hu = anatomy_to_volume(anat).labels
    ts = ts_groups_3mm(chest[1], ts_v2)
    for g in ("lung_left", "lung_right", "ribs_left", "ribs_right", "vertebrae_T"):
        gid = GROUPS.index(g) + 1
        assert dice(hu == gid, ts == gid) > 0.6, g
    assert not anat.observed[GROUPS.index("liver")]  # organs are not expressed: weight 0


def test_crop_with_nothing_but_the_ct(tmp_path):
    """``-anatomy_model hu``: the kidneys cropped from the raw CT, trusted, every kidney voxel kept."""
    r = run_in_process(
        crop.main,
        [
            "-i",
            str(ABDOMEN[0]),
            "-anatomy_model",
            "hu",
            "-r",
            "kidneys",
            "--labels",
            str(ABDOMEN[1]),
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "out" / "example_ct.ctarr.json").read_text())
    assert "HU anatomy" in side["anatomy"]
    entry = side["regions"]["kidneys"]
    assert entry["trusted"] is True
    assert entry["status"] == "cropped"
    kidneys = ts_groups_native(ABDOMEN[1], ("kidney_left", "kidney_right"))
    inside = np.zeros_like(kidneys)
    for b in entry["boxes"]:
        (x0, y0, z0), (x1, y1, z1) = b["index_start_xyz"], b["index_stop_xyz"]
        inside[z0:z1, y0:y1, x0:x1] = True
    assert kidneys.sum() > 1000
    assert (kidneys & inside).sum() == kidneys.sum()
    assert entry["voxel_fraction_kept"] < 0.2


def test_lower_pelvis_turned_is_not_trusted_wrongly(abdomen, atlas, ts_v2):
    """No lungs in view and the array turned: the HU anatomy cannot tell the orientation. Its
    localisation is either right or flagged untrusted, never a confident wrong crop."""
    img_c, lab_c = canonical(abdomen[0]), canonical(abdomen[1])
    size = np.array(img_c.GetSize())
    lo, hi = np.array([0, 0, 0]), np.array([size[0], size[1], int(0.55 * size[2])])
    cut_i, cut_l = cut_box(img_c, lo, hi), cut_box(lab_c, lo, hi)
    op = lambda a: np.rot90(a, 1, axes=(1, 2))  # noqa: E731
    img, lab = array_op(cut_i, op), array_op(cut_l, op)
    loc = locate(img, hu_anatomy(img, atlas), atlas)
    ref = locate(img, anatomy_of(lab, ts_v2), atlas).transform
    assert np.array_equal(loc.transform.M, ref.M) or not assess(loc, atlas).trusted


def test_no_lungs_no_bone_is_one_clear_error(atlas):
    """A 'CT' of water: the HU anatomy says what it did not find."""
    img = sitk.Image([40, 40, 20], sitk.sitkInt16) + 0
    img.SetSpacing([3.0, 3.0, 3.0])
    with pytest.raises(CTARRError, match="no lungs and no bone"):
        hu_anatomy(img, atlas)


@pytest.mark.parametrize("k,flip", [(0, False), (1, True), (2, False), (3, True)])
def test_atlas_gather_equals_per_voxel_mapping(atlas, k, flip):
    """The axis-aligned gather that labels the HU voxels equals mapping every voxel on its own."""
    from nnunet_ctarr.core.anatomy.hu_anatomy import _atlas_on_scan
    from nnunet_ctarr.core.anatomy.hu_pose import atlas_views
    from nnunet_ctarr.core.base.geometry import Geometry
    from nnunet_ctarr.core.base.transform import AtlasTransform

    amap = atlas_views(atlas)["bone_label"]
    g = Geometry.aligned(np.array([-100.0, -50.0, 20.0]), np.array([3.0, 3.0, 3.0]), (50, 60, 70))
    tf = AtlasTransform(k, (False, False, flip), np.array([0.9, 1.1, 1.05]), np.array([150.0, 200.0, 300.0]))
    vals, above = _atlas_on_scan(amap, tf, g, atlas)
    zyx = np.argwhere(np.ones(g.shape_zyx, bool))
    idx = np.rint((tf.to_atlas(g.origin + zyx[:, ::-1] * g.spacing) - atlas.origin) / atlas.spacing).astype(int)
    size = np.array(atlas.shape_zyx[::-1])
    idx[:, 2] = np.clip(idx[:, 2], 0, size[2] - 1)  # above and below the atlas: its top / bottom slice
    ok = np.all((idx >= 0) & (idx < size), 1)
    ref = np.zeros(len(zyx), np.uint8)
    ref[ok] = amap[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
    assert ref.astype(bool).sum() > 10000
    assert np.array_equal(vals.ravel(), ref)
    assert np.array_equal(
        above.ravel(),
        np.rint((tf.to_atlas(g.origin + zyx[:, ::-1] * g.spacing)[:, 2] - atlas.origin[2]) / atlas.spacing[2])
        >= size[2],
    )


def test_crop_without_an_anatomy_option_uses_the_hu_anatomy_and_says_so(tmp_path):
    """No -anatomy_seg / -anatomy_model: the HU anatomy (the console and the sidecar say so); the same
    crop as with -anatomy_model hu."""
    from conftest import run_in_process

    from nnunet_ctarr.cli.crop import main

    base = ["-i", str(ABDOMEN[0]), "-r", "kidneys"]
    r = run_in_process(main, [*base, "-o", str(tmp_path / "default")])
    assert r.returncode == 0, r.stderr
    assert "anatomy: from the CT's HU values (no -anatomy_seg or -anatomy_model given" in r.stderr
    side = json.loads((tmp_path / "default" / "example_ct.ctarr.json").read_text())
    assert side["settings"]["anatomy"] == {"model": "hu", "because": "no -anatomy_seg or -anatomy_model was given"}
    assert run_in_process(main, [*base, "-o", str(tmp_path / "hu"), "-anatomy_model", "hu"]).returncode == 0
    explicit = json.loads((tmp_path / "hu" / "example_ct.ctarr.json").read_text())
    assert side["regions"]["kidneys"]["boxes"] == explicit["regions"]["kidneys"]["boxes"]


# ------------------------------------------------------------------ out of sample (issue 21)
def _with_spacing(img: sitk.Image, spacing) -> sitk.Image:
    out = sitk.Image(img)
    out.SetSpacing([float(s) for s in spacing])
    return out


@pytest.mark.parametrize(
    "spacing", [(0.98, 0.98, 6.0), (4.0, 4.0, 2.5), (0.5, 0.5, 7.5), (10.0, 0.3, 3.0), (0.3, 0.3, 10.0)]
)
def test_mixed_thick_and_thin_spacings_give_a_result_or_one_clear_error(chest, atlas, spacing):
    """One axis >= 3 mm and another < 3 mm crashed the old resampling (a zero Gaussian sigma): every
    spacing gives an anatomy or a CTARRError, never anything else."""
    img = _with_spacing(cut_box(canonical(chest[0]), np.array([20, 20, 30]), np.array([100, 100, 70])), spacing)
    try:
        anat = hu_anatomy(img, atlas)
    except CTARRError:
        return
    assert sitk.GetArrayViewFromImage(anat.labels).max() > 0


@pytest.mark.parametrize("n_slices", [1, 2, 3])
def test_one_to_three_slices_give_a_result_or_one_clear_error(chest, abdomen, atlas, n_slices):
    for image in (chest[0], abdomen[0], _with_spacing(canonical(chest[0]), (0.7, 0.7, 5.0))):
        img = canonical(image)
        z = img.GetSize()[2] // 2
        try:
            hu_anatomy(img[:, :, z : z + n_slices], atlas)
        except CTARRError as e:
            assert "\n" not in str(e)


def test_working_grid_does_not_grow_with_the_input_resolution(chest):
    """The same chest at 3 mm and resampled to 0.7 x 0.7 x 1 mm (12x the voxels): the HU masks are
    computed on grids of the same size; a huge scan gets a coarser grid, never more voxels."""
    from nnunet_ctarr.core.anatomy.hu_masks import MAX_VOXELS, working_grid
    from nnunet_ctarr.core.base.geometry import Geometry

    img = canonical(chest[0])
    lo, hi = Geometry.of(img).bounds()
    size = np.floor((hi - lo) / [0.7, 0.7, 1.0]).astype(int)
    fine_geo = Geometry(size, [0.7, 0.7, 1.0], lo + np.array([0.35, 0.35, 0.5]))
    fine = sitk.Resample(img, fine_geo.to_reference(sitk.sitkInt16), sitk.Transform(), sitk.sitkLinear, -1024)
    assert np.prod(fine_geo.size_xyz) > 10 * np.prod(img.GetSize())
    coarse_m, fine_m = hu_masks(img), hu_masks(fine)
    assert np.abs(np.array(coarse_m.geometry.size_xyz) - fine_m.geometry.size_xyz).max() <= 1
    assert dice(coarse_m.lungs[: fine_m.lungs.shape[0]], fine_m.lungs[: coarse_m.lungs.shape[0]]) > 0.9
    huge = Geometry((2048, 2048, 4000), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0))
    assert np.prod(working_grid(huge).size_xyz) <= MAX_VOXELS * 1.01


@pytest.mark.parametrize("subject,k,flip", [("abdomen", 2, False), ("abdomen", 1, True), ("chest", 3, True)])
def test_orientation_recovered_on_a_turned_or_flipped_scan(chest, abdomen, atlas, subject, k, flip):
    """The array turned by k quarter turns (and flipped in z), header kept: the HU anatomy fixes
    the orientation that maps it back (the same as the TotalSegmentator map's registration)."""
    image, labels = chest if subject == "chest" else abdomen

    def op(a):
        a = np.rot90(a, k, axes=(1, 2))
        return a[::-1] if flip else a

    img, lab = array_op(canonical(image), op), array_op(canonical(labels), op)
    anat = hu_anatomy(img, atlas)
    ref = locate(img, anatomy_of(lab, LabelScheme.named("ts_v2")), atlas).transform
    assert anat.orientation == (ref.k_rot, ref.flip)
    assert (ref.k_rot, ref.flip) != (0, (False, False, False))


def test_heart_centred_crop_keeps_the_header_orientation_and_its_lungs(chest, atlas, ts_v2):
    """A 180 mm field of view around the heart (the lungs run into the crop's edges): the lungs are
    still found, the header orientation is kept, and a trusted lungs crop keeps the lungs in view."""
    from nnunet_ctarr.core.localise.localisation import plan_region
    from nnunet_ctarr.core.regions.cropping import crop_scores
    from nnunet_ctarr.core.regions.region import load_region
    from nnunet_ctarr.evaluation.acquisitions import fov_crops
    from nnunet_ctarr.evaluation.scores import roi_mask

    name, img, lab = next(c for c in fov_crops(*chest) if c[0] == "fov_cardiac_180mm")
    m = hu_masks(img)
    ts_lungs = np.isin(ts_groups_3mm(lab, ts_v2), LUNGS)
    assert m.lungs.sum() > 0.8 * ts_lungs.sum()
    anat = hu_anatomy(img, atlas)
    assert anat.orientation == (0, (False, False, False))
    loc = locate(img, anat, atlas)
    region = load_region("lungs")
    plan = plan_region(img, loc, region)
    if assess(loc, atlas, region, plan, img).trusted:
        fg = roi_mask(lab, ts_v2, region.provenance["roi_structures_totalsegmentator_v2"])
        assert crop_scores(fg, plan.union_mask_zyx())["preserved_percent"] >= 97.0


def test_contrast_filled_heart_is_not_bone(chest, ts_v2):
    """The bundled chest is contrast-enhanced (heart and aorta above 150 HU): the bone mask leaves the
    blood out and still holds the skeleton."""
    m = hu_masks(chest[0])
    ts = ts_groups_3mm(chest[1], ts_v2)
    heart = ts == GROUPS.index("heart") + 1
    assert m.bone[heart].mean() < 0.05
    assert m.bone[np.isin(ts, BONES)].mean() > 0.6


def _organ_regions():
    from nnunet_ctarr.core.regions.region import load_region

    return [load_region(r) for r in ("liver", "heart", "lungs", "kidneys")]


def _trusted_organ_crops(img, atlas) -> list[str]:
    from nnunet_ctarr.core.localise.localisation import plan_region

    try:
        loc = locate(img, hu_anatomy(img, atlas), atlas)
    except CTARRError:
        return []
    out = []
    for region in _organ_regions():
        plan = plan_region(img, loc, region)
        if plan.usable and assess(loc, atlas, region, plan, img).trusted:
            out.append(region.name)
    return out


def test_head_neck_like_scan_is_not_taken_for_a_chest(chest, atlas):
    """A synthetic head on the top 60 mm of the chest (neck, lung apices): the header orientation is
    kept, bone above the atlas is skull, and no liver, heart, lungs or kidneys crop is trusted."""
    from nnunet_ctarr.evaluation.hard_cases import head_neck

    img, _ = head_neck(*chest, neck_mm=60)
    anat = hu_anatomy(img, atlas)
    assert anat.orientation == (0, (False, False, False))
    assert (sitk.GetArrayViewFromImage(anat.labels) == GROUPS.index("skull") + 1).sum() > 1000
    assert _trusted_organ_crops(img, atlas) == []


HEADNECK = (
    Path("/work/shared/data/headneck_openkbp")
    if not os.environ.get("CTARR_DATA")
    else Path(os.environ["CTARR_DATA"]).parent / "headneck_openkbp"
)


@pytest.mark.skipif(not HEADNECK.is_dir(), reason="real head-neck scans not available (../shared/data)")
def test_real_head_neck_scans_give_no_trusted_organ_crop(atlas):
    """The three OpenKBP planning CTs (~4 x 4 x 2.5 mm: the spacings that crashed): no error, the
    header orientation kept, no trusted liver, heart, lungs or kidneys crop."""
    from nnunet_ctarr.core.base.images import read_image

    for ct in sorted(HEADNECK.glob("pt_*/ct.nii.gz")):
        img = read_image(ct)
        assert hu_anatomy(img, atlas).orientation == (0, (False, False, False)), ct
        assert _trusted_organ_crops(img, atlas) == [], ct
