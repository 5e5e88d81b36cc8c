"""Perturbation suite on the two real subjects + the DICOM series (acceptance of issue #2).

    python benchmarks/eval_perturbations.py [--data examples/data] [--out docs/perturbation_results.md]

For every perturbed copy (field-of-view cuts, 90-degree xy rotations and z flips of the
array with the header left alone, zoom 0.85/1.15, other storage orientations) the anatomy is
the perturbed TotalSegmentator map; every built-in region is cropped and scored against the
perturbed organ labels: preserved organ voxels, crop share of the scan, orientation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import LabelScheme
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks
from nnunet_ctarr.core.base.errors import WarningLog
from nnunet_ctarr.core.base.images import match_label_to_image, read_image
from nnunet_ctarr.core.localise.settings import RegistrationSettings
from nnunet_ctarr.core.regions.region import builtin_regions, load_region
from nnunet_ctarr.evaluation.perturbations import orientation_of, random_perturbations, standard_perturbations
from nnunet_ctarr.evaluation.scores import score_case

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = {
    "abdomen": ("totalseg_example/example_ct.nii.gz", "totalseg_example/example_ct_totalseg_v2.nii.gz"),
    "chest": ("chest_lidc/chest_ct_3mm.nii.gz", "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz"),
}
#: TotalSegmentator's own 30-slice crop of example_ct, labelled on the crop alone
SMALL = ("totalseg_example/example_ct_sm.nii.gz", "totalseg_example/example_ct_sm_totalseg_v2.nii.gz")
DICOM = ("totalseg_example/example_ct_dicom", "totalseg_example/example_ct_dicom_totalseg_v2.nii.gz")


def run(data: Path, settings: RegistrationSettings | None = None, n_random: int = 0) -> list[dict]:
    torch.set_num_threads(2)
    atlas = Atlas.load()
    regions = [load_region(str(p)) for p in builtin_regions().values()]
    scheme = LabelScheme.named("ts_v2")
    rows = []
    for subj, (img_f, lab_f) in SUBJECTS.items():
        image, labels = read_image(data / img_f), read_image(data / lab_f)
        m0 = None
        for p in standard_perturbations(image, labels) + random_perturbations(image, labels, n_random, seed=1):
            anat = AnatomyMasks.from_label_image(p.labels, scheme, WarningLog(), p.name)
            s = score_case(f"{subj}/{p.name}", p.image, anat, p.labels, scheme, atlas, regions, settings)
            M = np.array(s.orientation)
            if p.name == "original":
                m0 = M
            expected = m0 @ orientation_of(p.R)
            rows.append(_row(s, bool(np.array_equal(M, expected))))
    for name, (img_f, lab_f) in (("abdomen_30_slices", SMALL), ("dicom_upper_abdomen", DICOM)):
        image = read_image(data / img_f)
        labels = match_label_to_image(read_image(data / lab_f), image)
        anat = AnatomyMasks.from_label_image(labels, scheme, WarningLog(), name)
        s = score_case(f"{name}/original", image, anat, labels, scheme, atlas, regions, settings)
        rows.append(_row(s, bool(np.array_equal(np.array(s.orientation), np.eye(3)))))
    return rows


def _row(s, orientation_ok: bool) -> dict:
    return {
        "case": s.case,
        "orientation_ok": orientation_ok,
        "orientation": s.orientation_text,
        "scale": s.scale,
        "dice": round(s.dice, 3),
        "seconds": round(s.seconds, 3),
        "warnings": s.warnings,
        "regions": {
            r.region: {
                "preserved": round(r.preserved_percent, 3),
                "crop_fraction": round(r.crop_voxel_fraction, 4),
                "fg_before": round(r.fg_share_before, 3),
                "fg_after": round(r.fg_share_after, 3),
            }
            for r in s.regions
        },
    }


def summary(rows: list[dict]) -> dict:
    pres = [r["preserved"] for row in rows for r in row["regions"].values()]
    frac = [r["crop_fraction"] for row in rows for r in row["regions"].values()]
    return {
        "n_cases": len(rows),
        "n_case_regions": len(pres),
        "preserved_mean": float(np.mean(pres)),
        "preserved_min": float(np.min(pres)),
        "crop_fraction_mean": float(np.mean(frac)),
        "orientation_ok": sum(r["orientation_ok"] for r in rows),
        "seconds_median": float(np.median([r["seconds"] for r in rows])),
    }


def markdown(rows: list[dict]) -> str:
    names = sorted({k for r in rows for k in r["regions"]})
    s = summary(rows)
    lines = [
        f"Cases: {s['n_cases']}, case-region pairs: {s['n_case_regions']}; preserved organ voxels mean "
        f"{s['preserved_mean']:.3f}%, min {s['preserved_min']:.3f}%; crop share of the scan mean "
        f"{100 * s['crop_fraction_mean']:.1f}%; orientation recovered {s['orientation_ok']}/{s['n_cases']}; "
        f"registration median {s['seconds_median']:.2f} s.",
        "",
        "| case | orientation found | ok | scale | Dice | " + " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        cells = []
        for n in names:
            v = r["regions"].get(n)
            cells.append("" if v is None else f"{v['preserved']:.1f} / {100 * v['crop_fraction']:.0f}%")
        lines.append(
            f"| {r['case']} | {r['orientation']} | {'yes' if r['orientation_ok'] else '**NO**'} | "
            f"{', '.join(f'{x:.2f}' for x in r['scale'])} | {r['dice']:.2f} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    lines.append("Cells: preserved organ voxels (%) / crop share of the scan's voxels.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--out", default=None, help="write a markdown table here")
    ap.add_argument("--json", default=None)
    ap.add_argument("--random", type=int, default=20, help="random combined perturbations per subject")
    ap.add_argument("--optimizer", default="paper", choices=["adam", "paper"])
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--min_improvement", type=float, default=None)
    args = ap.parse_args()
    settings = RegistrationSettings(optimizer=args.optimizer)
    if args.lr is not None:
        settings.lr = args.lr
    if args.min_improvement is not None:
        settings.min_improvement = args.min_improvement
    rows = run(Path(args.data), settings, args.random)
    md = markdown(rows)
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"settings": vars(settings), "summary": summary(rows), "cases": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
