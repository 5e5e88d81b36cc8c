"""nnUNetv2_ctarr_crop end to end, including batches, DICOM and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, DICOM, SMALL, run_in_process

from nnunet_ctarr.cli.crop import main
from nnunet_ctarr.core.regions.cropping import paste_back


def run_cli(args: list[str]):
    """In process (the entry point's behaviour: one-line errors, exit codes); one test below runs
    the installed command in a subprocess."""
    return run_in_process(main, args)


def run_subprocess(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnunet_ctarr.cli.crop", *args], capture_output=True, text=True)


def test_single_case_with_labels_and_qc(tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            "-i",
            str(ABDOMEN[0]),
            "--anatomy_seg",
            str(ABDOMEN[1]),
            "--labels",
            str(ABDOMEN[1]),
            "-r",
            "kidneys",
            "-o",
            str(out),
            "--qc",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "example_ct.ctarr.json",
        "example_ct_kidneys_box0.nii.gz",
        "example_ct_kidneys_box0_labels.nii.gz",
        "example_ct_kidneys_box1.nii.gz",
        "example_ct_kidneys_box1_labels.nii.gz",
        "example_ct_kidneys_qc.png",
    ]
    side = json.loads((out / "example_ct.ctarr.json").read_text())
    t = side["registration"]["transform"]
    assert t["k_rot"] == 0
    assert t["flip_xyz"] == [False, False, False]
    assert len(t["scale_xyz"]) == 3
    assert len(t["translation_mm_xyz"]) == 3
    assert 0 < side["registration"]["registration_dice"] <= 1
    kid = side["regions"]["kidneys"]
    assert side["schema"] == 2 and side["command"] == "crop"
    assert kid["trusted"] is True and kid["status"] == "cropped" and not kid["reasons"] and not kid["why"]
    for b in kid["boxes"]:
        assert len(b["index_start_xyz"]) == 3
        assert len(b["world_min_mm_lps"]) == 3
        assert all(s < e for s, e in zip(b["index_start_xyz"], b["index_stop_xyz"]))
    assert {"read_image", "read_anatomy_labels", "registration"} <= set(side["seconds"])
    assert kid["seconds"] > 0
    assert side["versions"]["atlas_id"] == kid["definition"]["atlas_id"]
    # the crops are where the sidecar says
    src = sitk.ReadImage(str(ABDOMEN[0]))
    crop = sitk.ReadImage(str(out / "example_ct_kidneys_box0.nii.gz"))
    b0 = kid["boxes"][0]
    assert list(crop.GetSize()) == b0["size_xyz"]
    assert np.allclose(crop.GetOrigin(), src.TransformIndexToPhysicalPoint(b0["index_start_xyz"]))
    # kidneys (TotalSegmentator ids 2, 3) are fully inside; paste-back restores them bit-exactly
    crops = [sitk.ReadImage(str(out / f"example_ct_kidneys_box{k}_labels.nii.gz")) for k in (0, 1)]
    lab = sitk.ReadImage(str(ABDOMEN[1]))
    back = sitk.GetArrayFromImage(paste_back(crops, lab, 0))
    kid = np.isin(sitk.GetArrayViewFromImage(lab), [2, 3])
    assert np.array_equal(back[kid], sitk.GetArrayViewFromImage(lab)[kid])


def test_batch_folder_matches_anatomy_by_case_id(tmp_path):
    imgs, anat = tmp_path / "imgs", tmp_path / "anat"
    imgs.mkdir(), anat.mkdir()
    shutil.copy(ABDOMEN[0], imgs / "example_ct_0000.nii.gz")  # nnU-Net channel naming
    shutil.copy(SMALL[0], imgs / "example_ct_sm.nii.gz")
    shutil.copy(ABDOMEN[1], anat / "example_ct.nii.gz")
    shutil.copy(SMALL[1], anat / "example_ct_sm_totalseg_v2.nii.gz")
    out = tmp_path / "out"
    r = run_cli(["-i", str(imgs), "--anatomy_seg", str(anat), "-r", "liver", "-o", str(out)])
    assert r.returncode == 0, r.stderr
    assert (out / "example_ct_liver.nii.gz").exists()
    assert (out / "example_ct_sm_liver.nii.gz").exists()
    assert not any(p.name.endswith("_0000.nii.gz") for p in out.iterdir())
    assert "2 of 2" in r.stdout


def test_dicom_folder_input(tmp_path):
    out = tmp_path / "out"
    code = main(
        ["-i", str(DICOM[0]), "--anatomy_seg", str(DICOM[1]), "--labels", str(DICOM[1]), "-r", "liver", "-o", str(out)]
    )
    assert code == 0
    side = json.loads((out / "example_ct_dicom.ctarr.json").read_text())
    crop = sitk.ReadImage(str(out / "example_ct_dicom_liver.nii.gz"))
    lab = sitk.ReadImage(str(out / "example_ct_dicom_liver_labels.nii.gz"))
    assert crop.GetSize() == lab.GetSize()
    assert np.allclose(crop.GetOrigin(), lab.GetOrigin())
    assert side["regions"]["liver"]["label_voxels_preserved_percent"] is not None


def test_list_regions():
    r = run_cli(["--list_regions"])
    assert r.returncode == 0
    for name in ("kidneys", "liver", "lungs", "spine", "heart"):
        assert name in r.stdout


def _one_line_error(r, needle: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, r.stderr
    assert needle in errors[0], r.stderr


def test_unknown_region(tmp_path):
    """The installed entry point in a subprocess: one line, no traceback."""
    r = run_subprocess(["-i", str(ABDOMEN[0]), "--anatomy_seg", str(ABDOMEN[1]), "-r", "kidney", "-o", str(tmp_path)])
    _one_line_error(r, "unknown region")


def test_missing_and_corrupt_inputs(tmp_path):
    r = run_cli(
        [
            "-i",
            str(tmp_path / "none.nii.gz"),
            "--anatomy_seg",
            str(ABDOMEN[1]),
            "-r",
            "liver",
            "-o",
            str(tmp_path / "o"),
        ]
    )
    _one_line_error(r, "not found")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage" * 100)
    r = run_cli(["-i", str(bad), "--anatomy_seg", str(ABDOMEN[1]), "-r", "liver", "-o", str(tmp_path / "o")])
    _one_line_error(r, "cannot read")


def _untrusted_whole_image(r, out, case: str, needle: str) -> None:
    """Default --on_untrusted whole: exit 1, the reason on one line, the whole image under the crop's name."""
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith(f"{case}: not trusted") and needle in line and "whole image written" in line, line
    src = sitk.ReadImage(str(ABDOMEN[0]))
    whole = sitk.ReadImage(str(out / f"{case}_liver.nii.gz"))
    assert whole.GetSize() == src.GetSize() and np.allclose(whole.GetOrigin(), src.GetOrigin())
    side = json.loads((out / f"{case}.ctarr.json").read_text())["regions"]["liver"]
    assert side["trusted"] is False and side["status"] == "untrusted: whole image" and needle in side["reasons"][0]
    assert side["outputs"] == [{"images": [f"{case}_liver.nii.gz"], "box": None, "labels": None}]


def test_anatomy_from_another_scan_is_untrusted(tmp_path):
    out = tmp_path / "o"
    r = run_cli(["-i", str(ABDOMEN[0]), "--anatomy_seg", str(CHEST[1]), "-r", "liver", "-o", str(out)])
    _untrusted_whole_image(r, out, "example_ct", "does not cover the image")


def test_sparse_anatomy_policies(tmp_path):
    lab = sitk.ReadImage(str(ABDOMEN[1]))
    only_liver = sitk.Cast(lab == 5, sitk.sitkUInt8) * 5
    p = tmp_path / "liver_only.nii.gz"
    sitk.WriteImage(only_liver, str(p))
    args = ["-i", str(ABDOMEN[0]), "--anatomy_seg", str(p), "--anatomy_format", "ts_v2", "-r", "liver"]
    r = run_cli([*args, "-o", str(tmp_path / "full")])
    _untrusted_whole_image(r, tmp_path / "full", "example_ct", "too sparse")
    r = run_cli([*args, "-o", str(tmp_path / "skip"), "--on_untrusted", "skip"])
    assert r.returncode == 1 and "nothing written" in r.stdout
    assert [p.name for p in (tmp_path / "skip").iterdir()] == ["example_ct.ctarr.json"]  # only why
    side = json.loads((tmp_path / "skip" / "example_ct.ctarr.json").read_text())
    assert side["regions"]["liver"]["status"] == "untrusted: skipped" and side["regions"]["liver"]["trusted"] is False
    r = run_cli([*args, "-o", str(tmp_path / "crop"), "-on_untrusted", "anyway"])  # no transform: nothing to crop
    assert r.returncode == 1 and "nothing written" in r.stdout, r.stdout + r.stderr
    assert "no box inside the image to crop anyway" in r.stderr
    assert [p.name for p in (tmp_path / "crop").iterdir()] == ["example_ct.ctarr.json"]


def test_region_outside_the_field_of_view_writes_nothing_but_the_sidecar(tmp_path):
    """Not in view is a verdict of a trusted localisation, not an error: exit 0, one line, the sidecar says why."""
    out = tmp_path / "o"
    r = run_cli(["-i", str(CHEST[0]), "--anatomy_seg", str(CHEST[1]), "-r", "urinary_bladder", "-o", str(out)])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.strip() == (
        "chest_ct_3mm: outside the field of view (region 'urinary_bladder' lies entirely outside the field of "
        "view); nothing written"
    )
    assert [p.name for p in out.iterdir()] == ["chest_ct_3mm.ctarr.json"]
    entry = json.loads((out / "chest_ct_3mm.ctarr.json").read_text())["regions"]["urinary_bladder"]
    assert entry["status"] == "outside the field of view" and "outside the field of view" in entry["why"]
    assert entry["trusted"] is True and entry["outputs"] == []


def test_non_hu_image_is_refused(tmp_path):
    img = sitk.ReadImage(str(ABDOMEN[0]))
    p = tmp_path / "mr_like.nii.gz"
    sitk.WriteImage(sitk.Cast(img, sitk.sitkFloat32) + 1024.0, str(p))
    r = run_cli(["-i", str(p), "--anatomy_seg", str(ABDOMEN[1]), "-r", "liver", "-o", str(tmp_path / "o")])
    _one_line_error(r, "Hounsfield")


def test_missing_required_arguments_is_a_usage_error():
    r = run_cli(["-r", "liver"])
    assert r.returncode == 2
    assert "missing required" in r.stderr
    assert "Traceback" not in r.stderr


def test_full_scan_mask_folder_for_a_cropped_ct(ts_root, tmp_path):
    """TotalSegmentator's folder of the full scan works for a CT cropped from it (world space)."""
    src = sitk.ReadImage(str(ABDOMEN[0]))
    part = src[:, :, 20:90]
    p = tmp_path / "part.nii.gz"
    sitk.WriteImage(part, str(p))
    out = tmp_path / "o"
    r = run_cli(["-i", str(p), "--anatomy_seg", str(ts_root / "s0001"), "-r", "kidneys", "-o", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    entry = json.loads((out / "part.ctarr.json").read_text())["regions"]["kidneys"]
    assert entry["trusted"]
    crop = sitk.ReadImage(str(out / "part_kidneys_box0.nii.gz"))
    b = entry["boxes"][0]
    assert np.allclose(crop.GetOrigin(), part.TransformIndexToPhysicalPoint(b["index_start_xyz"]))


def test_anatomy_smaller_than_the_image_names_the_coverage(tmp_path):
    lab = sitk.ReadImage(str(ABDOMEN[1]))[:, :, 40:60]
    p = tmp_path / "part_anat.nii.gz"
    sitk.WriteImage(lab, str(p))
    r = run_cli(["-i", str(ABDOMEN[0]), "--anatomy_seg", str(p), "-r", "liver", "-o", str(tmp_path / "o")])
    assert r.returncode == 1
    assert "does not cover the image in world space (it covers 18% of the image's extent" in r.stdout


def test_empty_input_folder_is_one_line_without_itk_noise(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_subprocess(
        ["-i", str(tmp_path / "empty"), "--anatomy_seg", str(ABDOMEN[1]), "-r", "liver", "-o", str(tmp_path / "o")]
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty'} holds no images (.nii.gz, .nii, .nrrd, .mha, .mhd) and no DICOM series"
    ], r.stderr


def test_several_regions_share_one_registration(tmp_path, monkeypatch):
    """-r liver kidneys urinary_bladder: one registration per scan, one sidecar with every region;
    the crops equal those of one-region runs."""
    from nnunet_ctarr.core import pipeline

    calls = []
    real = pipeline.locate_case
    monkeypatch.setattr(pipeline, "locate_case", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "multi"
    abdomen = ["-i", str(ABDOMEN[0]), "--anatomy_seg", str(ABDOMEN[1])]
    code = main([*abdomen, "-r", "liver", "kidneys", "urinary_bladder", "-o", str(out)])
    assert code == 0 and len(calls) == 1
    side = json.loads((out / "example_ct.ctarr.json").read_text())
    assert sorted(side["regions"]) == ["kidneys", "liver", "urinary_bladder"]
    assert all(e["trusted"] and e["status"] == "cropped" for e in side["regions"].values())
    single = tmp_path / "single"
    assert main([*abdomen, "-r", "kidneys", "-o", str(single)]) == 0
    for k in (0, 1):
        a = sitk.ReadImage(str(out / f"example_ct_kidneys_box{k}.nii.gz"))
        b = sitk.ReadImage(str(single / f"example_ct_kidneys_box{k}.nii.gz"))
        assert a.GetSize() == b.GetSize() and a.GetOrigin() == b.GetOrigin()
        assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


def test_all_regions_with_one_outside_the_field_of_view(tmp_path):
    """-r all on the chest CT: the bladder (outside) is one line, every other region is written."""
    out = tmp_path / "o"
    r = run_cli(["-i", str(CHEST[0]), "--anatomy_seg", str(CHEST[1]), "-r", "all", "-o", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert (
        "chest_ct_3mm/urinary_bladder: outside the field of view (region 'urinary_bladder' lies entirely outside "
        "the field of view); nothing written" in r.stdout.splitlines()
    )
    side = json.loads((out / "chest_ct_3mm.ctarr.json").read_text())["regions"]
    assert len(side) == 11 and side["urinary_bladder"]["status"] == "outside the field of view"
    assert side["liver"]["status"] == "cropped" and side["liver"]["trusted"]
    assert (out / "chest_ct_3mm_heart.nii.gz").exists() and not (out / "chest_ct_3mm_urinary_bladder.nii.gz").exists()


def test_continue_does_not_redo_a_case_with_nothing_written(tmp_path):
    """A region outside the field of view is recorded in the sidecar; ``--continue`` takes it as done
    (the same input and settings give the same answer) and rewrites nothing."""
    out = tmp_path / "o"
    args = ["-i", str(CHEST[0]), "--anatomy_seg", str(CHEST[1]), "-r", "urinary_bladder", "-o", str(out)]
    run_cli(args)
    side = out / "chest_ct_3mm.ctarr.json"
    before = side.stat().st_mtime_ns
    r = run_cli([*args, "--continue"])
    assert r.returncode == 0, r.stderr  # outside is a clean answer
    assert side.stat().st_mtime_ns == before
    assert "outside the field of view" in r.stderr + r.stdout


def test_two_channel_case_is_one_case_cropped_with_the_boxes_of_channel_0(tmp_path):
    """nnU-Net's CASE_0000 + CASE_0001: one case, every channel cut with the same boxes (located on channel 0)."""
    imgs, anat = tmp_path / "imgs", tmp_path / "anat"
    imgs.mkdir(), anat.mkdir()
    ct = sitk.ReadImage(str(SMALL[0]))
    sitk.WriteImage(ct, str(imgs / "sm_0000.nii.gz"))
    sitk.WriteImage(sitk.Cast(ct, sitk.sitkFloat32) * 0.5 + 7.0, str(imgs / "sm_0001.nii.gz"))  # another "channel"
    shutil.copy(SMALL[1], anat / "sm.nii.gz")
    out = tmp_path / "o"
    r = run_cli(["-i", str(imgs), "-anatomy_seg", str(anat), "-r", "liver", "-o", str(out)])
    assert r.returncode == 0, r.stderr
    side = json.loads((out / "sm.ctarr.json").read_text())
    assert len(side["input"]) == 2 and side["input"][0].endswith("sm_0000.nii.gz")
    names = side["regions"]["liver"]["outputs"][0]["images"]
    assert names == ["sm_liver_0000.nii.gz", "sm_liver_0001.nii.gz"]
    a, b = (sitk.ReadImage(str(out / n)) for n in names)
    assert a.GetSize() == b.GetSize() and a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing()
    assert np.allclose(sitk.GetArrayViewFromImage(a) * 0.5 + 7.0, sitk.GetArrayViewFromImage(b))


def test_two_inputs_writing_the_same_case_are_an_error_before_any_work(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(SMALL[0], imgs / "sm.nii.gz")
    shutil.copy(SMALL[0], imgs / "sm_0000.nii.gz")
    r = run_cli(["-i", str(imgs), "-anatomy_seg", str(SMALL[1]), "-r", "liver", "-o", str(tmp_path / "o")])
    _one_line_error(r, "would all write case 'sm'")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_continue_over_a_sidecar_of_the_previous_schema_redoes_the_case(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    old = {"case": "example_ct_sm", "input": str(SMALL[0]), "regions": {"liver": {"mode": "crop", "outputs": []}}}
    (out / "example_ct_sm.ctarr.json").write_text(json.dumps(old))  # 0.1's sidecar: no schema field
    r = run_cli(["-i", str(SMALL[0]), "-anatomy_seg", str(SMALL[1]), "-r", "liver", "-o", str(out), "--continue"])
    assert r.returncode == 0, r.stderr
    side = json.loads((out / "example_ct_sm.ctarr.json").read_text())
    assert side["schema"] == 2 and side["regions"]["liver"]["status"] == "cropped"
    assert (out / "example_ct_sm_liver.nii.gz").exists()


def test_a_bug_in_one_case_fails_that_case_only_and_the_report_is_written(tmp_path, monkeypatch):
    """Any exception of a case is its failed row (one line, the traceback in ctarr_errors.log); the
    batch goes on and always writes its report."""
    from nnunet_ctarr import api

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(SMALL[0], imgs / f"{name}.nii.gz")
    real = api.crop

    def buggy(image, *a, **k):
        if k.get("case") == "b":
            raise ZeroDivisionError("a bug")
        return real(image, *a, **k)

    monkeypatch.setattr(api, "crop", buggy)
    out = tmp_path / "o"
    r = run_cli(["-i", str(imgs), "-anatomy_seg", str(SMALL[1]), "-r", "liver", "-o", str(out)])
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error")] == [
        ln for ln in r.stderr.splitlines() if ln.startswith("error: b: internal error ZeroDivisionError")
    ]
    rows = json.loads((out / "ctarr_report.json").read_text())["rows"]
    assert [(x["case"], x["status"]) for x in rows] == [("a", "cropped"), ("b", "failed"), ("c", "cropped")]
    assert "ZeroDivisionError: a bug" in (out / "ctarr_errors.log").read_text()


def test_ctrl_c_keeps_the_rows_so_far_and_writes_the_report(tmp_path, monkeypatch):
    from nnunet_ctarr import api

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(SMALL[0], imgs / f"{name}.nii.gz")
    real = api.crop

    def interrupted(image, *a, **k):
        if k.get("case") == "b":
            raise KeyboardInterrupt
        return real(image, *a, **k)

    monkeypatch.setattr(api, "crop", interrupted)
    out = tmp_path / "o"
    r = run_cli(["-i", str(imgs), "-anatomy_seg", str(SMALL[1]), "-r", "liver", "-o", str(out)])
    assert r.returncode == 130 and "Traceback" not in r.stderr
    rep = json.loads((out / "ctarr_report.json").read_text())
    assert rep["interrupted"] is True
    assert [(x["case"], x["status"]) for x in rep["rows"]] == [("a", "cropped"), ("b", "failed"), ("c", "failed")]
    assert "INTERRUPTED" in r.stdout and (out / "a_liver.nii.gz").exists()


def test_a_replaced_input_invalidates_every_region_of_its_sidecar(tmp_path):
    """liver from input A, then heart from a replaced input B: --continue must not take liver as done,
    and the crops of A are not left beside B's sidecar."""
    src, out = tmp_path / "ct.nii.gz", tmp_path / "o"
    shutil.copy(ABDOMEN[0], src)
    base = ["-i", str(src), "-anatomy_seg", str(ABDOMEN[1]), "-o", str(out)]
    assert run_cli([*base, "-r", "liver"]).returncode == 0
    img = sitk.ReadImage(str(src))
    sitk.WriteImage(img + 0, str(src))  # the same voxels written again: another file (size, time)
    run_cli([*base, "-r", "kidneys"])
    side = json.loads((out / "ct.ctarr.json").read_text())
    assert sorted(side["regions"]) == ["kidneys"]  # liver was made from the old file
    assert not (out / "ct_liver.nii.gz").exists()
