"""Two-scan prealignment and body-height scores on real scans with known relations."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, anatomy_of

from nnunet_ctarr.cli.prealign import body_height_main, prealign_main
from nnunet_ctarr.core.base.images import canonical
from nnunet_ctarr.core.localise.localisation import locate
from nnunet_ctarr.core.localise.prealign import body_height, itk_transform, moving_to_fixed
from nnunet_ctarr.evaluation.perturbations import array_op


def _cut(img, z0, z1):
    c = canonical(img)
    return c[:, :, z0:z1]


def test_subvolume_prealigns_to_its_source(abdomen, ts_v2, atlas):
    img, lab = abdomen
    fixed = locate(img, anatomy_of(lab, ts_v2), atlas)
    z_err = []
    for z0, z1 in ((0, 40), (30, 80), (70, 112)):
        sub_i, sub_l = _cut(img, z0, z1), _cut(lab, z0, z1)
        moving = locate(sub_i, anatomy_of(sub_l, ts_v2), atlas)
        A, b = moving_to_fixed(fixed.transform, moving.transform)
        # the sub-volume has correct world coordinates: the truth is the identity
        centre = np.array(sub_i.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in sub_i.GetSize()]))
        err = np.abs(A @ centre + b - centre)
        assert err.max() < 10.0, (z0, z1, err)
        z_err.append(err[2])
    assert np.median(z_err) <= 6.0, z_err  # the SSBR seed's target


def test_flipped_copy_prealigns_with_the_flip(abdomen, ts_v2, atlas, tmp_path):
    img, lab = abdomen
    c_img, c_lab = canonical(img), canonical(lab)
    flip = lambda a: a[::-1]
    f_img, f_lab = array_op(c_img, flip), array_op(c_lab, flip)
    fixed = locate(c_img, anatomy_of(c_lab, ts_v2), atlas)
    moving = locate(f_img, anatomy_of(f_lab, ts_v2), atlas)
    A, b = moving_to_fixed(fixed.transform, moving.transform)
    assert np.sign(A[2, 2]) == -1
    assert abs(A[0, 0]) > 0.9
    assert abs(A[1, 1]) > 0.9
    # resampling the flipped labels with the ITK transform brings the liver back in place
    tx = itk_transform(fixed.transform, moving.transform)
    back = sitk.Resample(f_lab, c_lab, tx, sitk.sitkNearestNeighbor, 0)
    liver_a = sitk.GetArrayViewFromImage(c_lab) == 5
    liver_b = sitk.GetArrayFromImage(back) == 5
    dice = 2 * (liver_a & liver_b).sum() / (liver_a.sum() + liver_b.sum())
    assert dice > 0.8


def test_prealign_cli_non_overlapping_scans_and_tfm(tmp_path):
    # chest (C5-L3) vs the lower abdomen-pelvis (below L3): little or no overlap
    img = sitk.ReadImage(str(ABDOMEN[0]))
    lab = sitk.ReadImage(str(ABDOMEN[1]))
    sitk.WriteImage(_cut(img, 0, 50), str(tmp_path / "pelvis.nii.gz"))
    sitk.WriteImage(_cut(lab, 0, 50), str(tmp_path / "pelvis_lab.nii.gz"))
    code = prealign_main(
        [
            "-fixed",
            str(CHEST[0]),
            "-moving",
            str(tmp_path / "pelvis.nii.gz"),
            "-o",
            str(tmp_path / "pre"),
            "--fixed_anatomy",
            str(CHEST[1]),
            "--moving_anatomy",
            str(tmp_path / "pelvis_lab.nii.gz"),
            "--anatomy_format",
            "ts_v2",
        ]
    )
    assert code == 0
    d = json.loads((tmp_path / "pre.json").read_text())
    tx = sitk.ReadTransform(str(tmp_path / "pre.tfm"))
    A = np.array(d["moving_to_fixed"]["matrix"])
    b = np.array(d["moving_to_fixed"]["translation_mm"])
    p = np.array([10.0, -150.0, 150.0])
    assert np.allclose(tx.TransformPoint((A @ p + b).tolist()), p, atol=1e-3)  # ITK file = fixed -> moving
    # the pelvis lies below the chest: its centre maps far below the chest's lowest slice
    lo_chest = min(
        sitk.ReadImage(str(CHEST[0])).TransformIndexToPhysicalPoint((0, 0, 0))[2],
        sitk.ReadImage(str(CHEST[0])).TransformIndexToPhysicalPoint((0, 0, 110))[2],
    )
    pel = sitk.ReadImage(str(tmp_path / "pelvis.nii.gz"))
    c = np.array(pel.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in pel.GetSize()]))
    assert (A @ c + b)[2] < lo_chest - 100


def test_body_height_is_consistent_between_overlapping_scans(abdomen, ts_v2, atlas, tmp_path):
    img, lab = abdomen
    full = locate(img, anatomy_of(lab, ts_v2), atlas)
    lo, hi = atlas.extent()
    h_full = body_height(canonical(img), full.transform, (lo[2], hi[2]))
    sub_i, sub_l = _cut(img, 40, 90), _cut(lab, 40, 90)
    sub = locate(sub_i, anatomy_of(sub_l, ts_v2), atlas)
    h_sub = body_height(sub_i, sub.transform, (lo[2], hi[2]))
    z_full = np.array(h_full["atlas_z_mm"])[40:90]
    assert np.abs(np.array(h_sub["atlas_z_mm"]) - z_full).max() < 8.0
    assert np.all(np.diff(h_full["atlas_z_mm"]) > 0)  # head-ward slices score higher
    code = body_height_main(
        [
            "-i",
            str(ABDOMEN[0]),
            "--anatomy_seg",
            str(ABDOMEN[1]),
            "-o",
            str(tmp_path / "h.json"),
            "--plot",
            str(tmp_path / "h.png"),
        ]
    )
    assert code == 0
    assert (tmp_path / "h.png").exists()
    d = json.loads((tmp_path / "h.json").read_text())
    assert len(d["atlas_z_mm"]) == img.GetSize()[2]
    assert -0.05 <= min(d["score"]) < max(d["score"]) <= 1.05


def test_an_untrusted_localisation_is_refused_unless_asked_anyway(tmp_path):
    """body_height on a head-neck-like CT (mostly anatomy the atlas lacks): by default one error line,
    exit 1, nothing written; with --on_untrusted anyway the result, marked trusted: false."""
    from conftest import run_in_process

    from nnunet_ctarr.core.base.images import read_image
    from nnunet_ctarr.evaluation.hard_cases import head_neck

    img, lab = head_neck(read_image(CHEST[0]), read_image(CHEST[1]), neck_mm=90.0)
    sitk.WriteImage(img, str(tmp_path / "hn.nii.gz"))
    sitk.WriteImage(lab, str(tmp_path / "hn_anat.nii.gz"))
    args = ["-i", str(tmp_path / "hn.nii.gz"), "-anatomy_seg", str(tmp_path / "hn_anat.nii.gz")]
    r = run_in_process(body_height_main, [*args, "-o", str(tmp_path / "h.json")])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error")][0].startswith("error: the localisation")
    assert not (tmp_path / "h.json").exists()
    r = run_in_process(body_height_main, [*args, "-o", str(tmp_path / "h2.json"), "--on_untrusted", "anyway"])
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "h2.json").read_text())
    assert d["trusted"] is False and "lies above it" in " ".join(d["trust"]["reasons"])
    r = run_in_process(body_height_main, [*args, "-o", str(tmp_path / "h3.json"), "--on_untrusted", "mark"])
    assert r.returncode == 0 and "deprecated" in r.stderr  # the old spelling still works and says so
