"""The one trust rule (core.trust) on cases it must catch, built from the bundled scans.

Head-neck-like CTs (the chest CT's upper slices with a synthetic head on top) asked for organs
below the neck, and an anatomy-error suite (model-like errors in the anatomy map); the
perturbation suite's side (no correct localisation flagged) is in test_perturbation_suite.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST, anatomy_of, run_in_process

from nnunet_ctarr.cli.crop import main
from nnunet_ctarr.core.base.images import read_image
from nnunet_ctarr.core.regions.region import load_region
from nnunet_ctarr.evaluation.hard_cases import anatomy_errors, head_neck
from nnunet_ctarr.evaluation.scores import score_case

ORGANS = ("liver", "heart", "lungs", "kidneys", "spleen", "urinary_bladder", "spine")


@pytest.fixture(scope="module")
def head_neck_files(tmp_path_factory):
    img, lab = head_neck(read_image(CHEST[0]), read_image(CHEST[1]), neck_mm=90.0)
    d = tmp_path_factory.mktemp("headneck")
    sitk.WriteImage(img, str(d / "hn.nii.gz"))
    sitk.WriteImage(lab, str(d / "hn_anat.nii.gz"))
    return d / "hn.nii.gz", d / "hn_anat.nii.gz"


@pytest.mark.parametrize("region", ["liver", "heart", "lungs"])
def test_head_neck_scan_gets_no_trusted_crop(head_neck_files, tmp_path, region):
    """Default policy: the whole image under the crop's name, trusted false, the atlas coverage named."""
    img, anat = head_neck_files
    out = tmp_path / "o"
    r = run_in_process(main, ["-i", str(img), "--anatomy_seg", str(anat), "-r", region, "-o", str(out)])
    assert r.returncode == 1, r.stderr
    assert "the atlas covers vertebrae_C to urinary_bladder" in r.stdout
    assert "skull" in r.stdout and "brain" in r.stdout and "above it" in r.stdout
    entry = json.loads((out / "hn.ctarr.json").read_text())["regions"][region]
    assert entry["trusted"] is False and entry["status"] == "untrusted: whole image"
    assert sitk.ReadImage(str(out / f"hn_{region}.nii.gz")).GetSize() == sitk.ReadImage(str(img)).GetSize()


def test_on_untrusted_crop_marks_the_crop(head_neck_files, tmp_path):
    img, anat = head_neck_files
    out = tmp_path / "o"
    r = run_in_process(
        main, ["-i", str(img), "--anatomy_seg", str(anat), "-r", "lungs", "-o", str(out), "--on_untrusted", "anyway"]
    )
    assert r.returncode == 1
    assert "NOT TRUSTED (cropped anyway)" in r.stdout
    entry = json.loads((out / "hn.ctarr.json").read_text())["regions"]["lungs"]
    assert entry["trusted"] is False and entry["status"] == "untrusted: cropped anyway" and entry["boxes"]
    assert sitk.ReadImage(str(out / "hn_lungs.nii.gz")).GetSize() != sitk.ReadImage(str(img)).GetSize()


def test_two_regions_into_one_folder_keep_both_sidecar_entries(tmp_path):
    out = tmp_path / "o"
    for region in ("liver", "kidneys", "liver"):
        r = run_in_process(
            main, ["-i", str(ABDOMEN[0]), "--anatomy_seg", str(ABDOMEN[1]), "-r", region, "-o", str(out)]
        )
        assert r.returncode == 0, r.stderr
    side = json.loads((out / "example_ct.ctarr.json").read_text())
    assert sorted(side["regions"]) == ["kidneys", "liver"]
    assert [o["images"] for o in side["regions"]["kidneys"]["outputs"]] == [
        ["example_ct_kidneys_box0.nii.gz"],
        ["example_ct_kidneys_box1.nii.gz"],
    ]
    assert side["regions"]["liver"]["outputs"][0]["images"] == ["example_ct_liver.nii.gz"]


@pytest.fixture(scope="module")
def error_suite(atlas, ts_v2):
    regions = [load_region(n) for n in ORGANS]
    rows = []
    # the abdomen here; both subjects in benchmarks/trust_calibration.py (docs/trust.md)
    for name, (img_f, lab_f) in (("abdomen", ABDOMEN),):
        for case in anatomy_errors(read_image(img_f), read_image(lab_f), f"{name}/"):
            s = score_case(case.name, case.image, anatomy_of(case.anatomy, ts_v2), case.labels, ts_v2, atlas, regions)
            rows += [(case.name, r) for r in s.regions]
    return rows


def test_anatomy_errors_never_lose_an_organ_unflagged(error_suite):
    """Vertebra level off by one, missed organs, false-positive blobs, left/right swaps, lost slices:
    no trusted crop loses more than 3% of an organ."""
    assert len({c for c, _ in error_suite}) >= 12
    lossy = [
        (c, r.region, round(r.preserved_percent, 2)) for c, r in error_suite if r.trusted and r.preserved_percent < 97.0
    ]
    assert not lossy, lossy


def test_anatomy_errors_that_hide_the_organ_are_flagged(error_suite):
    """A missed organ leaves its region without support: never a trusted crop."""
    missed = [(c, r) for c, r in error_suite if "missed_" in c and c.split("missed_")[1] == r.region]
    assert len(missed) >= 4
    assert all(not r.trusted for _, r in missed), [c for c, r in missed if r.trusted]
    assert np.mean([r.trusted for c, r in error_suite if "vertebrae" in c]) == 1.0


def test_anatomy_only_of_groups_the_atlas_lacks_says_so(head_neck_files, tmp_path):
    img, anat = head_neck_files
    lab = sitk.ReadImage(str(anat))
    a = sitk.GetArrayFromImage(lab)
    only = np.where(np.isin(a, [90, 91]), a, 0).astype(np.uint8)  # TotalSegmentator v2: brain, skull
    head = sitk.GetImageFromArray(only)
    head.CopyInformation(lab)
    sitk.WriteImage(head, str(tmp_path / "head_anat.nii.gz"))
    r = run_in_process(
        main,
        [
            "-i",
            str(img),
            "--anatomy_seg",
            str(tmp_path / "head_anat.nii.gz"),
            "--anatomy_format",
            "ts_v2",
            "-r",
            "liver",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert r.returncode == 1
    assert (
        "0 usable group(s) (none); the scan also shows skull, brain, which the atlas (covering vertebrae_C to "
        "urinary_bladder) lacks" in r.stdout
    )


def test_region_about_a_group_the_atlas_lacks_is_never_trusted(atlas, ts_v2, abdomen):
    from nnunet_ctarr.core.localise.localisation import locate, plan_region
    from nnunet_ctarr.core.localise.trust import assess
    from nnunet_ctarr.core.regions.region import Region

    image, labels = abdomen
    loc = locate(image, anatomy_of(labels, ts_v2), atlas)
    liver = load_region("liver")
    brain = Region("brain", liver.boxes_mm, 10.0, atlas.atlas_id, {"roi_structures_totalsegmentator_v2": ["brain"]})
    trust = assess(loc, atlas, brain, plan_region(image, loc, brain), image)
    assert not trust.trusted and "is about brain, which the atlas does not contain" in trust.text()
