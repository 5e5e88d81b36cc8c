"""Calibration of the trust rule (nnunet_ctarr.core.localise.trust) on cases whose truth is known.

    python benchmarks/trust_calibration.py [--data examples/data] [--out docs/trust_calibration.md]

Three suites, every built-in region whose boxes reach into the image:

* **correct**: the perturbation suite (FOV cuts, array rotations/flips, zoom, header orientations,
  4 random combinations per subject), TotalSegmentator's 30-slice crop and the DICOM series; the
  anatomy is the (perturbed) TotalSegmentator map. Nothing here may be flagged while its organ
  is in view (>= 1 ml).
* **outside the atlas**: the chest CT's top 60-150 mm (neck, lung apices) and head-neck-like CTs
  (a synthetic head on top of the chest CT's top 30-90 mm). No crop of an organ that is not in the
  field of view, and none of a scan whose anatomy lies mostly outside the atlas, may be trusted.
* **anatomy errors**: model-like errors in the anatomy map of both subjects (vertebra level off
  by one, missed organ, false-positive blob, left/right swap, lost slices). No trusted crop may
  lose more than 3% of its organ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import LabelScheme
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks
from nnunet_ctarr.core.base.errors import LocalisationUntrusted, WarningLog
from nnunet_ctarr.core.base.images import match_label_to_image, read_image
from nnunet_ctarr.core.localise.localisation import locate, plan_region
from nnunet_ctarr.core.localise.trust import Trust, assess
from nnunet_ctarr.core.regions.cropping import crop_scores
from nnunet_ctarr.core.regions.region import builtin_regions, load_region
from nnunet_ctarr.evaluation.hard_cases import anatomy_errors, head_neck, upper_slab
from nnunet_ctarr.evaluation.perturbations import random_perturbations, standard_perturbations
from nnunet_ctarr.evaluation.scores import roi_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_perturbations import DICOM, SMALL, SUBJECTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _quiet() -> WarningLog:
    w = WarningLog()
    w.warn = w.append
    return w


def score(suite: str, name: str, image, anatomy_img, truth, atlas: Atlas, scheme: LabelScheme, regions) -> list[dict]:
    """One row per region whose boxes reach into the image."""
    try:
        loc = locate(image, AnatomyMasks.from_label_image(anatomy_img, scheme, _quiet(), name), atlas, None, _quiet())
    except LocalisationUntrusted as e:
        return [
            {
                "suite": suite,
                "case": name,
                "region": "(all)",
                "trusted": False,
                "reasons": Trust.refused(e).text(),
                "organ_ml": None,
                "kept": None,
            }
        ]
    rows = []
    vox_ml = float(np.prod(truth.GetSpacing())) / 1000.0
    for region in regions:
        plan = plan_region(image, loc, region, 0.0, warnings=_quiet())
        if not plan.usable:
            continue
        trust = assess(loc, atlas, region, plan, image)
        fg = roi_mask(truth, scheme, region.provenance.get("roi_structures_totalsegmentator_v2", []))
        kept = crop_scores(fg, plan.union_mask_zyx())["preserved_percent"] if fg.any() else None
        rows.append(
            {
                "suite": suite,
                "case": name,
                "region": region.name,
                "trusted": trust.trusted,
                "reasons": trust.text(),
                "organ_ml": float(fg.sum()) * vox_ml,
                "kept": kept,
                "dice": loc.registration.dice,
                **trust.measures,
            }
        )
    return rows


def cases(data: Path):
    """(suite, name, image, anatomy, truth) of all three suites."""
    for subject, (img_f, lab_f) in SUBJECTS.items():
        image, labels = read_image(data / img_f), read_image(data / lab_f)
        for p in standard_perturbations(image, labels) + random_perturbations(image, labels, 4, seed=7):
            yield "correct", f"{subject}/{p.name}", p.image, p.labels, p.labels
        for c in anatomy_errors(image, labels, f"{subject}/"):
            yield "anatomy errors", c.name, c.image, c.anatomy, c.labels
    for name, (img_f, lab_f) in (("small", SMALL), ("dicom", DICOM)):
        image = read_image(data / img_f)
        labels = match_label_to_image(read_image(data / lab_f), image)
        yield "correct", name, image, labels, labels
    chest = read_image(data / SUBJECTS["chest"][0]), read_image(data / SUBJECTS["chest"][1])
    for mm in (60, 90, 120, 150):
        img, lab = upper_slab(*chest, mm)
        yield "outside the atlas", f"chest_top_{mm}mm", img, lab, lab
    for mm in (30, 60, 90):
        img, lab = head_neck(*chest, neck_mm=mm)
        yield "outside the atlas", f"head_neck_{mm}mm_neck", img, lab, lab


def summary(rows: list[dict]) -> list[str]:
    """The acceptance line of each suite."""
    in_view = lambda r: r["organ_ml"] is not None and r["organ_ml"] >= 1.0  # noqa: E731
    out_of_view = lambda r: r["organ_ml"] is not None and r["organ_ml"] < 0.5  # noqa: E731
    checks = {
        "correct": ("no crop with its organ in view (>= 1 ml) flagged", lambda r: in_view(r) and not r["trusted"]),
        "outside the atlas": (
            "no trusted crop of an organ not in view, none of a head-neck scan",
            lambda r: r["trusted"] and (out_of_view(r) or "head_neck" in r["case"]),
        ),
        "anatomy errors": (
            "no trusted crop losing > 3% of its organ",
            lambda r: r["trusted"] and r["kept"] is not None and r["kept"] < 97.0,
        ),
    }
    md = ["| suite | region crops | trusted | flagged | acceptance | failing |", "|---|---|---|---|---|---|"]
    for suite, (text, bad) in checks.items():
        sel = [r for r in rows if r["suite"] == suite]
        md.append(
            f"| {suite} | {len(sel)} | {sum(r['trusted'] for r in sel)} | {sum(not r['trusted'] for r in sel)} "
            f"| {text} | {sum(bool(bad(r)) for r in sel)} |"
        )
    correct = [r["region_dice"] for r in rows if r["suite"] == "correct" and in_view(r) and r.get("region_dice")]
    return md + ["", f"Lowest region Dice among the correct crops: {min(correct):.2f} (threshold 0.30).", ""]


def table(rows: list[dict]) -> list[str]:
    md = [
        "| suite | case | region | organ ml | kept % | Dice | region Dice | trusted | reasons |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["trusted"] and not (r["kept"] is not None and r["kept"] < 97.0):
            continue  # clean trusted rows are only counted in the summary
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        md.append(
            f"| {r['suite']} | {r['case']} | {r['region']} | {fmt(r['organ_ml'], '.1f')} | {fmt(r['kept'], '.1f')}"
            f" | {fmt(r.get('dice'), '.2f')} | {fmt(r.get('region_dice'), '.2f')} | "
            f"{'yes' if r['trusted'] else 'no'} | {r['reasons']} |"
        )
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "trust_calibration.md"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    atlas, scheme = Atlas.load(), LabelScheme.named("ts_v2")
    regions = [load_region(str(p)) for p in builtin_regions().values()]
    rows = []
    for suite, name, image, anatomy, truth in cases(Path(args.data)):
        rows += score(suite, name, image, anatomy, truth, atlas, scheme, regions)
        print(f"{suite:18s} {name}", file=sys.stderr)
    md = [
        "# Trust rule calibration",
        "",
        "Written by `python benchmarks/trust_calibration.py`; the rule and its "
        "thresholds are in `nnunet_ctarr/core/localise/trust.py`, explained in `docs/trust.md`.",
        "",
    ]
    md += summary(rows) + ["Every untrusted row, and any trusted row losing > 3% of its organ:", ""] + table(rows)
    Path(args.out).write_text("\n".join(md) + "\n")
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main()
