"""HU anatomy (``-anatomy_model hu``) side by side with TotalSegmentator-map anatomy.

    python benchmarks/eval_hu_anatomy.py [--random 10] [--out docs/hu_anatomy_results.md] [--json F]

The cases of the perturbation suite (both subjects: field-of-view cuts, array rotations and
z flips, zoom, storage orientations, random combinations), the 30-slice scan and the DICOM
series. Every built-in region is scored as the crop command writes it: a trusted localisation is
cropped, an untrusted one falls back to the whole volume (100 % kept, 100 % of the voxels).
Per anatomy: preserved organ voxels, crop share, orientation recovered, trusted share, seconds
per scan (anatomy + registration), and the cases that lose > 3 % of an organ while trusted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import LabelScheme
from nnunet_ctarr.core.anatomy.hu_anatomy import hu_anatomy
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks
from nnunet_ctarr.core.base.errors import LocalisationUntrusted, WarningLog
from nnunet_ctarr.core.base.images import match_label_to_image, read_image
from nnunet_ctarr.core.regions.region import builtin_regions, load_region
from nnunet_ctarr.evaluation.perturbations import orientation_of, random_perturbations, standard_perturbations
from nnunet_ctarr.evaluation.scores import score_case

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = {
    "abdomen": ("totalseg_example/example_ct.nii.gz", "totalseg_example/example_ct_totalseg_v2.nii.gz"),
    "chest": ("chest_lidc/chest_ct_3mm.nii.gz", "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz"),
}
SINGLE = {
    "abdomen_30_slices": ("totalseg_example/example_ct_sm.nii.gz", "totalseg_example/example_ct_sm_totalseg_v2.nii.gz"),
    "dicom_upper_abdomen": (
        "totalseg_example/example_ct_dicom",
        "totalseg_example/example_ct_dicom_totalseg_v2.nii.gz",
    ),
}


def cases(data: Path, n_random: int):
    """(name, image, TS v2 labels, expected orientation matrix or None = that of 'original')."""
    for subj, (img_f, lab_f) in SUBJECTS.items():
        image, labels = read_image(data / img_f), read_image(data / lab_f)
        for p in standard_perturbations(image, labels) + random_perturbations(image, labels, n_random, seed=1):
            yield f"{subj}/{p.name}", p.image, p.labels, orientation_of(p.R)
    for name, (img_f, lab_f) in SINGLE.items():
        image = read_image(data / img_f)
        yield f"{name}/original", image, match_label_to_image(read_image(data / lab_f), image), np.eye(3, dtype=int)


def score(name, image, labels, anatomy_fn, atlas, regions, margin: float) -> dict:
    """One case with one anatomy source, as the crop command would write it."""
    scheme = LabelScheme.named("ts_v2")
    t0 = time.perf_counter()
    try:
        anat = anatomy_fn(image)
        t_anat = time.perf_counter() - t0
        s = score_case(name, image, anat, labels, scheme, atlas, regions, extra_margin_mm=margin)
    except LocalisationUntrusted as e:
        return {"case": name, "refused": str(e), "seconds": time.perf_counter() - t0, "regions": {}}
    regions_out = {}
    for r in s.regions:
        regions_out[r.region] = {
            "preserved": r.preserved_percent if r.trusted else 100.0,
            "preserved_if_cropped": r.preserved_percent,
            "crop_fraction": r.crop_voxel_fraction if r.trusted else 1.0,
            "trusted": r.trusted,
            "reasons": list(r.trust_reasons),
        }
    return {
        "case": name,
        "M": np.rint(np.array(s.orientation)).astype(int).tolist(),
        "dice": s.dice,
        "seconds": t_anat + s.seconds,
        "seconds_anatomy": t_anat,
        "regions": regions_out,
    }


def present_regions(labels, regions) -> list[str]:
    from nnunet_ctarr.evaluation.scores import roi_mask

    scheme = LabelScheme.named("ts_v2")
    return [
        r.name
        for r in regions
        if r.provenance.get("roi_structures_totalsegmentator_v2")
        and roi_mask(labels, scheme, r.provenance["roi_structures_totalsegmentator_v2"]).any()
    ]


def run(data: Path, n_random: int, margin: float) -> list[dict]:
    torch.set_num_threads(2)
    atlas = Atlas.load()
    regions = [load_region(str(p)) for p in builtin_regions().values()]
    sources = {
        "totalsegmentator_map": lambda lab: (
            lambda img: AnatomyMasks.from_label_image(lab, LabelScheme.named("ts_v2"), WarningLog(), "ts")
        ),
        "hu": lambda lab: lambda img: hu_anatomy(img, atlas),
    }
    rows, first_M = [], {}
    for name, image, labels, R in cases(data, n_random):
        present = present_regions(labels, regions)
        for src, make in sources.items():
            row = score(name, image, labels, make(labels), atlas, regions, margin if src == "hu" else 0.0)
            for r in present:
                row["regions"].setdefault(
                    r,
                    {
                        "preserved": 100.0,
                        "preserved_if_cropped": None,
                        "crop_fraction": 1.0,
                        "trusted": False,
                        "reasons": [row.get("refused", "")],
                    },
                )
            subj = name.split("/")[0]
            if name.endswith("/original") and "M" in row:
                first_M.setdefault((subj, src), np.array(row["M"]))
            expected = first_M.get((subj, src), np.eye(3, dtype=int)) @ R
            row["orientation_ok"] = "M" in row and bool(np.array_equal(np.array(row["M"]), expected))
            row["source"] = src
            rows.append(row)
    return rows


def summary(rows: list[dict], src: str) -> dict:
    rs = [r for r in rows if r["source"] == src]
    cells = [c for r in rs for c in r["regions"].values()]
    trusted_ok = [r["orientation_ok"] for r in rs if any(c["trusted"] for c in r["regions"].values())]
    silent = [
        f"{r['case']}:{k} {c['preserved']:.1f}%"
        for r in rs
        for k, c in r["regions"].items()
        if c["trusted"] and c["preserved"] < 97.0
    ]
    return {
        "cases": len(rs),
        "case_regions": len(cells),
        "preserved_mean": float(np.mean([c["preserved"] for c in cells])),
        "preserved_min": float(np.min([c["preserved"] for c in cells])),
        "crop_fraction_mean": float(np.mean([c["crop_fraction"] for c in cells])),
        "trusted_share": float(np.mean([c["trusted"] for c in cells])),
        "orientation_ok": sum(r["orientation_ok"] for r in rs),
        "orientation_ok_trusted": f"{sum(trusted_ok)}/{len(trusted_ok)}",
        "seconds_median": float(np.median([r["seconds"] for r in rs])),
        "trusted_and_losing_over_3pct": silent,
    }


def markdown(rows: list[dict], margin: float) -> str:
    out = [
        f"HU anatomy extra margin: {margin:.0f} mm (TotalSegmentator maps: 0 mm).",
        "",
        "| anatomy | cases | case-regions | organ voxels kept mean / min (%) | crop share mean | trusted | "
        "orientation ok (all / trusted cases) | s per scan (median) | trusted yet > 3 % lost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for src in ("totalsegmentator_map", "hu"):
        s = summary(rows, src)
        out.append(
            f"| {src} | {s['cases']} | {s['case_regions']} | {s['preserved_mean']:.2f} / {s['preserved_min']:.2f} "
            f"| {100 * s['crop_fraction_mean']:.1f}% | {100 * s['trusted_share']:.0f}% | {s['orientation_ok']} / "
            f"{s['orientation_ok_trusted']} | {s['seconds_median']:.2f} | "
            f"{len(s['trusted_and_losing_over_3pct'])} {'; '.join(s['trusted_and_losing_over_3pct'][:5])} |"
        )
    out += [
        "",
        "| case | " + " | ".join(f"{s} kept % / share / trusted" for s in ("TS map", "HU")) + " |",
        "|---|---|---|",
    ]
    by_case: dict[str, dict] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["source"]] = r
    for case, d in by_case.items():
        cells = []
        for src in ("totalsegmentator_map", "hu"):
            r = d[src]
            cells.append(
                "; ".join(
                    f"{k} {c['preserved']:.1f}/{100 * c['crop_fraction']:.0f}%/{'y' if c['trusted'] else 'n'}"
                    for k, c in sorted(r["regions"].items())
                )
                + ("" if r["orientation_ok"] else " **orientation wrong**")
            )
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--random", type=int, default=10, help="random combined perturbations per subject")
    ap.add_argument("--margin", type=float, default=0.0, help="extra margin (mm) for the HU anatomy crops")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = run(Path(args.data), args.random, args.margin)
    text = markdown(rows, args.margin)
    print(text)
    if args.out:
        Path(args.out).write_text(
            "# HU anatomy vs TotalSegmentator maps\n\nMade by `python benchmarks/eval_hu_anatomy.py "
            f"--random {args.random} --margin {args.margin:g}`.\n\n" + text + "\n"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
