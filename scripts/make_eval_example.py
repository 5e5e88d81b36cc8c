"""Write a small labelled dataset (liver labels of the two bundled subjects) for
``nnUNetv2_ctarr_evaluate``: OUT/imagesTr, OUT/labelsTr (liver = 1), OUT/anatomy.

    python scripts/make_eval_example.py OUT
"""
import shutil
import sys
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1] / "examples" / "data"
SUBJECTS = {"abdomen": "totalseg_example/example_ct", "chest": "chest_lidc/chest_ct_3mm"}

out = Path(sys.argv[1])
for sub in ("imagesTr", "labelsTr", "anatomy"):
    (out / sub).mkdir(parents=True, exist_ok=True)
for name, stem in SUBJECTS.items():
    shutil.copy(ROOT / f"{stem}.nii.gz", out / "imagesTr" / f"{name}_0000.nii.gz")
    shutil.copy(ROOT / f"{stem}_totalseg_v2.nii.gz", out / "anatomy" / f"{name}.nii.gz")
    lab = sitk.ReadImage(str(ROOT / f"{stem}_totalseg_v2.nii.gz"))
    sitk.WriteImage(sitk.Cast(lab == 5, sitk.sitkUInt8), str(out / "labelsTr" / f"{name}.nii.gz"))
print(f"wrote {out}")
