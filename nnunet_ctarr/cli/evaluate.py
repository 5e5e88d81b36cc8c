"""nnUNetv2_ctarr_evaluate: the CTARR paper's Table 2 for a labelled image folder and a region.

Per case: preserved foreground (%), foreground share of the scan before and after cropping,
voxel reduction factor, CTARR seconds, orientation found (and, with ``--perturbations``, whether
it is the known one). Writes ``OUT/evaluation.csv`` (worst
cases first) and ``OUT/summary.md``; ``--qc N`` adds QC pictures of the N worst cases.
The input may be an nnU-Net raw dataset folder (imagesTr + labelsTr) or image/label folders.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ..core.atlas import Atlas
from ..core.cropping import crop_scores
from ..core.errors import CTARRError, LocalisationUntrusted, WarningLog
from ..core.io import (
    case_id,
    check_output_folder,
    list_inputs,
    match_case_file,
    match_label_to_image,
    read_image,
    write_csv,
)
from ..core.pipeline import locate, plan_region
from ..core.qc import render_qc
from ..core.regions import load_region
from ..core.registration import RegistrationSettings
from ..core.trust import assess
from ..evaluation.scores import load_perturbations, orientation_check
from .common import parse, run_cli
from .options import Parser, add_anatomy_args, add_atlas_arg, add_device_arg, add_verbose_arg, anatomy_source

FIELDS = ["case", "preserved_fg_percent", "fg_voxels", "fg_share_before_percent", "fg_share_after_percent",
          "voxel_reduction", "ctarr_seconds", "orientation", "known_perturbation", "expected_orientation",
          "orientation_correct", "registration_dice", "trusted", "trust_reasons", "status", "warnings"]


def evaluate_case(img_path: Path, lab_path: Path, anatomy_source, region, atlas, args, known: dict | None = None):
    warnings = WarningLog(case=case_id(img_path))
    image = read_image(img_path)
    labels = match_label_to_image(read_image(lab_path), image, f"labels {lab_path.name}")
    lab = sitk.GetArrayViewFromImage(labels)
    fg = np.isin(lab, args.label_ids) if args.label_ids else lab > 0
    t0 = time.perf_counter()
    anatomy = anatomy_source.load(case_id(img_path), warnings)
    try:
        loc = locate(image, anatomy, atlas, RegistrationSettings(device=args.device), warnings)
    except LocalisationUntrusted as e:    # no localisation: a writer falls back to the full volume
        return {"case": case_id(img_path), "trusted": False, "trust_reasons": str(e),
                "status": "untrusted: nothing to crop"}, None
    plan = plan_region(image, loc, region, args.margin, warnings=warnings)
    trust = assess(loc, atlas, region, plan, image)
    secs = time.perf_counter() - t0
    sc = crop_scores(fg, plan.union_mask_zyx())
    row = {
        "case": case_id(img_path),
        "preserved_fg_percent": "" if sc["preserved_percent"] is None else round(sc["preserved_percent"], 3),
        "fg_voxels": sc["fg_voxels"],
        "fg_share_before_percent": round(sc["fg_share_before"], 4),
        "fg_share_after_percent": round(sc["fg_share_after"], 4),
        "voxel_reduction": round(1.0 / max(sc["crop_voxel_fraction"], 1.0 / fg.size), 3),
        "ctarr_seconds": round(secs, 3),
        "orientation": loc.transform.orientation_text,
        **orientation_check(loc.transform.M, known),
        "registration_dice": round(loc.registration.dice, 3),
        "trusted": trust.trusted,
        "trust_reasons": trust.text(),
        "status": ("ok" if trust.trusted else "untrusted") if plan.usable else "region outside the field of view",
        "warnings": " | ".join(warnings),
    }
    return row, (img_path, loc, plan)


def build_parser() -> Parser:
    ap = Parser(prog="nnUNetv2_ctarr_evaluate", description=__doc__)
    ap.add_argument("-i", dest="images", required=True, help="image folder, or an nnU-Net raw dataset folder")
    ap.add_argument("--labels", default=None, help="label folder (default: labelsTr of the dataset)")
    add_anatomy_args(ap)
    ap.add_argument("-r", dest="region", required=True)
    ap.add_argument("-o", dest="out", required=True)
    ap.add_argument("--label_ids", type=int, nargs="+", default=None, help="foreground label ids (default: all > 0)")
    ap.add_argument("--margin", type=float, default=0.0)
    add_atlas_arg(ap)
    add_device_arg(ap)
    ap.add_argument("--perturbations", default=None,
                    help="JSON {case: {perturbation, expected_M}} of scans with a known perturbation: marks the "
                         "orientation found right/wrong (scripts/make_eval_example.py writes one)")
    ap.add_argument("--qc", type=int, default=0, help="QC pictures for the N worst cases")
    add_verbose_arg(ap)
    return ap


def _image_and_label_folders(args) -> tuple[Path, Path]:
    src = Path(args.images)
    labels_dir = Path(args.labels) if args.labels else None
    if (src / "imagesTr").is_dir():
        labels_dir = labels_dir or src / "labelsTr"
        src = src / "imagesTr"
    if labels_dir is None:
        raise CTARRError("give --labels FOLDER (or an nnU-Net dataset folder with imagesTr/labelsTr)")
    return src, labels_dir


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    src, labels_dir = _image_and_label_folders(args)
    region, atlas = load_region(args.region), Atlas.load(args.atlas)
    known = load_perturbations(args.perturbations)
    inputs = list_inputs(src)
    cases = [case_id(p) for p in inputs]
    anatomy = anatomy_source(args, device=args.device, verbose=args.verbose)
    anatomy.prepare({c: [str(p)] for c, p in zip(cases, inputs)})
    out = check_output_folder(args.out)
    rows, keep_for_qc = [], {}
    for img in tqdm(inputs, desc="evaluating", file=sys.stderr, disable=len(inputs) < 2):
        c = case_id(img)
        try:
            lab = match_case_file(labels_dir, c, cases, "label map")
            row, extra = evaluate_case(img, lab, anatomy, region, atlas, args, known.get(c))
            if extra is not None:
                keep_for_qc[c] = extra
        except CTARRError as e:
            row = {"case": c, "status": f"error: {e}"}
        rows.append(row)
    # worst first: wrong orientation, then least foreground preserved; failed/empty cases last
    rows.sort(key=lambda r: (r.get("preserved_fg_percent") in ("", None), r.get("orientation_correct") is not False,
                             r.get("preserved_fg_percent", 101)))
    write_csv(out / "evaluation.csv", rows, FIELDS)
    md = _summary(rows, region.name, args.images)
    (out / "summary.md").write_text("\n".join(md) + "\n")
    ok = [r for r in rows if r.get("preserved_fg_percent") not in ("", None)]
    for r in ok[:args.qc]:
        img_path, loc, plan = keep_for_qc[r["case"]]
        render_qc(out / f"{r['case']}_qc.png", read_image(img_path), loc.anatomy_volume, plan,
                  f"{r['case']} | {region.name} | preserved {r['preserved_fg_percent']}%")
    print("\n".join(md[2:10]))
    return 0


def _summary(rows: list[dict], region: str, images: str) -> list[str]:
    """summary.md: the Table 2 means, the known-perturbation count and the worst cases."""
    ok = [r for r in rows if r.get("preserved_fg_percent") not in ("", None)]
    md = [f"# CTARR evaluation: region `{region}` on `{images}`", "",
          f"Cases: {len(rows)} ({len(ok)} with foreground, {len(rows) - len(ok)} without or failed)", ""]
    if not ok:
        return md
    col = lambda k: np.array([float(r[k]) for r in ok])
    md += ["| preserved foreground | foreground before | foreground after | voxel reduction | CTARR s (median) |",
           "|---|---|---|---|---|",
           f"| {col('preserved_fg_percent').mean():.2f}% (min {col('preserved_fg_percent').min():.2f}%) | "
           f"{col('fg_share_before_percent').mean():.3f}% | {col('fg_share_after_percent').mean():.3f}% | "
           f"{col('voxel_reduction').mean():.2f}x | {np.median(col('ctarr_seconds')):.2f} |", ""]
    untrusted = [r for r in rows if r.get("trusted") is False]
    lossy = [r for r in ok if r.get("trusted") and float(r["preserved_fg_percent"]) < 97.0]
    md += [f"Untrusted (a writer falls back to the full volume): {len(untrusted)}; trusted crops losing > 3% of the "
           f"foreground: {len(lossy)}" + (f" ({', '.join(r['case'] for r in lossy)})" if lossy else ""), ""]
    checked = [r for r in ok if r.get("orientation_correct") != ""]
    if checked:
        right = sum(r["orientation_correct"] is True for r in checked)
        md += [f"Known perturbations: orientation right in {right} of {len(checked)} scans", ""]
    md += ["Worst cases:", "", "| case | preserved | orientation found | known perturbation | right | Dice | trusted "
           "| status |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['case']} | {r['preserved_fg_percent']}% | {r['orientation']} | {r.get('known_perturbation', '')} | "
           f"{ {True: 'yes', False: '**NO**', '': ''}[r.get('orientation_correct', '')] } | "
           f"{r['registration_dice']} | {'yes' if r['trusted'] else '**no**'} | {r['status']} |" for r in ok[:10]]
    return md


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
