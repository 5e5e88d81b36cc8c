"""Write a small labelled dataset for ``nnUNetv2_ctarr_evaluate`` from the two bundled subjects:
the scans as stored plus perturbed copies whose orientation is known (array turned 90 deg in xy
with the header left alone, z-flipped, cut to the upper 60 %), all with liver labels:
OUT/imagesTr, OUT/labelsTr (liver = 1), OUT/anatomy, OUT/perturbations.json.

    python scripts/make_eval_example.py OUT
"""

import argparse
import json
from pathlib import Path

import SimpleITK as sitk

from nnunet_ctarr.evaluation.perturbations import orientation_of, standard_perturbations

ROOT = Path(__file__).resolve().parents[1] / "examples" / "data"
SUBJECTS = {
    "abdomen": ("totalseg_example/example_ct", ("rot90_xy", "fov_upper_60pct")),
    "chest": ("chest_lidc/chest_ct_3mm", ("flip_z", "rot270_xy")),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output folder")
    args = ap.parse_args()
    out = Path(args.out)
    for sub in ("imagesTr", "labelsTr", "anatomy"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    known = {}
    for name, (stem, picks) in SUBJECTS.items():
        img, lab = (
            sitk.ReadImage(str(ROOT / f"{stem}.nii.gz")),
            sitk.ReadImage(str(ROOT / f"{stem}_totalseg_v2.nii.gz")),
        )
        versions = {p.name: p for p in standard_perturbations(img, lab)}
        for pick in ("original",) + picks:
            p, case = versions[pick], name if pick == "original" else f"{name}_{pick}"
            sitk.WriteImage(p.image, str(out / "imagesTr" / f"{case}_0000.nii.gz"))
            sitk.WriteImage(p.labels, str(out / "anatomy" / f"{case}.nii.gz"))
            sitk.WriteImage(sitk.Cast(p.labels == 5, sitk.sitkUInt8), str(out / "labelsTr" / f"{case}.nii.gz"))
            known[case] = {"perturbation": pick, "expected_M": orientation_of(p.R).astype(int).tolist()}
    (out / "perturbations.json").write_text(json.dumps(known, indent=1) + "\n")
    print(f"wrote {out}: {len(known)} cases ({', '.join(known)})")


if __name__ == "__main__":
    main()
