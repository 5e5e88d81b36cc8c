"""nnUNetv2_ctarr_evaluate on a small labelled folder built from the real scans."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST

from nnunet_ctarr.cli.evaluate import main
from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.masks import load_anatomy
from nnunet_ctarr.core.base.errors import WarningLog
from nnunet_ctarr.core.localise.localisation import locate, plan_region
from nnunet_ctarr.core.regions.region import load_region


def test_evaluate_liver_table_worst_first_and_qc(tmp_path):
    imgs, labs, anat = tmp_path / "imagesTr", tmp_path / "labelsTr", tmp_path / "anat"
    for d in (imgs, labs, anat):
        d.mkdir()
    for name, (img_f, lab_f) in (("abd", ABDOMEN), ("chest", CHEST)):
        shutil.copy(img_f, imgs / f"{name}_0000.nii.gz")
        shutil.copy(lab_f, anat / f"{name}.nii.gz")
        lab = sitk.ReadImage(str(lab_f))
        liver = sitk.Cast(lab == 5, sitk.sitkUInt8)
        sitk.WriteImage(liver, str(labs / f"{name}.nii.gz"))
    out = tmp_path / "eval"
    assert (
        main(
            ["-i", str(tmp_path), "--anatomy_seg", str(anat), "-r", "liver", "-o", str(out), "--qc", "--qc_worst", "1"]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out / "evaluation.csv")))
    assert [r["case"] for r in rows]
    assert len(rows) == 2
    pres = [float(r["preserved_fg_percent"]) for r in rows]
    assert pres == sorted(pres)
    assert min(pres) >= 99.5
    atlas, region = Atlas.load(), load_region("liver")
    for r in rows:
        assert float(r["fg_share_after_percent"]) > float(r["fg_share_before_percent"])
        assert float(r["voxel_reduction"]) > 1.5
        assert r["orientation"] == "as in header"
        # the table against an independent count: register the case again, cut the liver map with
        # the region's index boxes, count voxels with numpy
        image = sitk.ReadImage(str(imgs / f"{r['case']}_0000.nii.gz"))
        loc = locate(image, load_anatomy(anat / f"{r['case']}.nii.gz", warnings=WarningLog()), atlas)
        liver = sitk.GetArrayFromImage(sitk.ReadImage(str(labs / f"{r['case']}.nii.gz"))) > 0
        covered = np.zeros(liver.shape, bool)
        for b in plan_region(image, loc, region).usable:
            (x0, y0, z0), (x1, y1, z1) = b.start_xyz, b.stop_xyz
            covered[z0:z1, y0:y1, x0:x1] = True
        kept, n_crop = int((liver & covered).sum()), int(covered.sum())
        assert abs(float(r["preserved_fg_percent"]) - 100 * kept / liver.sum()) < 1e-3
        assert abs(float(r["voxel_reduction"]) - liver.size / n_crop) < 1e-2
        assert abs(float(r["fg_share_after_percent"]) - 100 * kept / n_crop) < 1e-3
    assert "preserved foreground" in (out / "summary.md").read_text()
    assert len(list(out.glob("*_qc.png"))) == 1


def test_known_perturbations_marked_right_and_wrong(tmp_path):
    """The example script's perturbed copies are all recovered; a deliberately wrong expectation is
    marked wrong and listed first."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_eval_example.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    known = json.loads((tmp_path / "perturbations.json").read_text())
    assert known["abdomen_rot90_xy"]["expected_M"] != known["abdomen"]["expected_M"]
    known["chest"]["expected_M"] = [[1, 0, 0], [0, 1, 0], [0, 0, -1]]  # wrong on purpose
    (tmp_path / "wrong.json").write_text(json.dumps(known))
    out = tmp_path / "eval"
    assert (
        main(
            [
                "-i",
                str(tmp_path),
                "--anatomy_seg",
                str(tmp_path / "anatomy"),
                "-r",
                "liver",
                "-o",
                str(out),
                "--perturbations",
                str(tmp_path / "wrong.json"),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out / "evaluation.csv")))
    assert len(rows) == 6
    assert rows[0]["case"] == "chest"
    assert rows[0]["orientation_correct"] == "False"
    assert all(r["orientation_correct"] == "True" for r in rows[1:])
    by_case = {r["case"]: r for r in rows}
    assert by_case["abdomen_rot90_xy"]["expected_orientation"] == "90 deg xy rotation"
    assert by_case["chest_flip_z"]["orientation"] == "z flip"
    assert "orientation right in 5 of 6 scans" in (out / "summary.md").read_text()
