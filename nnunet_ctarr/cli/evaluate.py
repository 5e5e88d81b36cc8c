"""nnUNetv2_ctarr_evaluate: the CTARR paper's Table 2 for a labelled image folder and one or more regions.

Per case and region: preserved foreground (%), foreground share of the scan before and after
cropping, voxel reduction factor, CTARR seconds, orientation found (and, with ``--perturbations``,
whether it is the known one). Per scan one image read, one label read, one anatomy load and one
registration serve every region. Writes ``OUT/evaluation.csv`` (one row per case and region, worst
cases first), ``OUT/summary.md`` (a section per region) and ``OUT/evaluation.json`` (what
``--continue`` compares); ``--qc`` adds QC pictures of the ``--qc_worst`` worst cases per region. The input
may be an nnU-Net raw dataset folder (imagesTr + labelsTr) or image/label folders.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..core.anatomy.atlas import Atlas
from ..core.base.cases import case_id, list_inputs, match_case_file
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.files import check_output_folder, write_csv, write_text
from ..core.localise.decision import Policy, Status
from ..core.outputs.batch_report import outcome_lines
from ..core.regions.region import Region, atlas_named_by, check_region_atlas, load_regions
from ..evaluation.resume import case_stamp, finished_rows, run_settings, write_results
from ..evaluation.scores import load_perturbations
from ..evaluation.table import (
    FIELDS,
    STATUSES,
    EvalSettings,
    draw_worst,
    evaluate_case,
    failed_rows,
    sort_rows,
    summary,
    worst_rows,
)
from .common import WORKER, WorkerDied, init_worker, internal_error, map_cases, parse, run_cli, without_case
from .options import (
    Parser,
    add_anatomy_args,
    add_atlas_arg,
    add_device_arg,
    add_fallback_arg,
    add_margin_arg,
    add_parts_args,
    add_qc_arg,
    add_regions_arg,
    add_verbose_arg,
    add_workers_arg,
    anatomy_source,
    part_suffix,
    select_part,
)


def build_parser() -> Parser:
    ap = Parser(prog="nnUNetv2_ctarr_evaluate", description=__doc__)
    ap.add_argument("-i", dest="images", required=True, help="image folder, or an nnU-Net raw dataset folder")
    ap.add_argument("--labels", default=None, help="label folder (default: labelsTr of the dataset)")
    add_anatomy_args(ap)
    add_regions_arg(ap, required=True)
    ap.add_argument("-o", dest="out", required=True)
    ap.add_argument("--label_ids", type=int, nargs="+", default=None, help="foreground label ids (default: all > 0)")
    add_margin_arg(ap)
    add_fallback_arg(ap, what="the status of a case whose localisation the trust rule refuses: what a writer would "
                              "do (whole, default; skip; anyway); the boxes are scored either way")
    add_atlas_arg(ap)
    add_device_arg(ap)
    ap.add_argument("--perturbations", default=None,
                    help="JSON {case: {perturbation, expected_M}} of scans with a known perturbation: marks the "
                         "orientation found right/wrong (scripts/make_eval_example.py writes one)")
    add_qc_arg(ap, "QC pictures <case>_<region>_qc.png of the worst cases of each region (--qc_worst)")
    ap.add_argument("--qc_worst", type=int, default=5, help="how many worst cases per region --qc draws (default 5)")
    add_workers_arg(ap)
    add_parts_args(ap)
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


@dataclass(frozen=True)
class _EvalJob:
    """What every case of a run shares (sent once to each worker)."""
    labels: Path
    cases: list[str]
    regions: list[Region]
    settings: EvalSettings
    known: dict
    verbose: bool = False


def _evaluate_one(img: Path) -> list[dict]:
    """The rows of one case; a user error is one line and rows with status failed."""
    job, case = WORKER["job"], case_id(img)
    try:
        lab = match_case_file(job.labels, case, job.cases, "label map")
        return evaluate_case(img, lab, WORKER["anatomy"], job.regions, WORKER["atlas"], job.settings,
                             job.known.get(case))
    except CTARRError as e:
        logging.getLogger("nnunet_ctarr").error(f"{case}: {without_case(str(e), case)}")
        return failed_rows(case, job.regions, str(e))
    except Exception as e:                     # noqa: BLE001 (one case's bug must not lose the batch)
        line, tb = internal_error(e)
        logging.getLogger("nnunet_ctarr").error(f"{case}: {line}\n{tb}" if job.verbose else f"{case}: {line}")
        return failed_rows(case, job.regions, line)


def _stamps(job: _EvalJob, inputs: list[Path]) -> dict[str, dict]:
    """The input stamps of the cases whose label map is found (the others fail when evaluated)."""
    out = {}
    for img in inputs:
        try:
            lab = match_case_file(job.labels, case_id(img), job.cases, "label map")
            out[case_id(img)] = case_stamp(img, lab, job.known.get(case_id(img)))
        except (CTARRError, OSError):
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    src, labels_dir = _image_and_label_folders(args)
    args.atlas = atlas_named_by(args.regions, args.atlas)      # -r SET:REGION brings its set's atlas
    regions, atlas = load_regions(args.regions), Atlas.load(args.atlas)
    for region in regions:
        check_region_atlas(region, atlas.atlas_id, WarningLog())
    all_inputs = list_inputs(src)
    inputs = select_part(all_inputs, args)
    settings = EvalSettings(Policy(args.on_untrusted, args.margin), tuple(args.label_ids) if args.label_ids else None)
    job = _EvalJob(labels_dir, [case_id(p) for p in all_inputs], regions, settings,
                   load_perturbations(args.perturbations), args.verbose)
    out = check_output_folder(args.out)
    run = run_settings(args.margin, args.label_ids, atlas.atlas_id,
                       {"seg": args.anatomy_seg, "format": args.anatomy_format, "model": args.anatomy_model},
                       args.on_untrusted)
    stamps = _stamps(job, inputs)
    done = finished_rows(out, run, regions, stamps) if args.resume else {}
    todo = [p for p in inputs if case_id(p) not in done]
    anatomy = anatomy_source(args, device=args.device, verbose=args.verbose,
                             atlas=atlas if args.np <= 1 else None)        # workers load their own
    if todo:                  # a model predicts here, once, before any worker; not for rows kept
        anatomy.prepare({case_id(p): [str(p)] for p in todo})
    new, interrupted = _evaluate_all(todo, job, anatomy, atlas if args.np <= 1 else args.atlas, args.np)
    rows = sort_rows([r for p in inputs for r in (done.get(case_id(p)) or new[p])], regions)
    md = _write_tables(out, part_suffix(args), rows, regions, args.images, run, stamps)
    if interrupted:
        return 130
    if args.qc:
        _draw(out, rows, args.qc_worst, inputs, set(done), anatomy, regions, atlas, settings)
    print("\n".join(md))
    print("\n".join(outcome_lines(rows, STATUSES, (Status.CROPPED.value,), "cropped", out, len(regions) == 1,
                                  f" ({len(done)} case(s) done before)" if done else "")))
    return 0 if all(r["status"] in (Status.CROPPED.value, Status.OUTSIDE.value) for r in rows) else 1


def _evaluate_all(todo: list[Path], job: _EvalJob, anatomy, atlas, n_workers: int) -> tuple[dict, bool]:
    """Rows of every case to evaluate; Ctrl-C or a dead worker keeps the rows so far (the others
    are failed rows saying so) so that the tables are written."""
    new: dict[Path, list[dict]] = {}
    try:
        for p, rows in zip(todo, map_cases(_evaluate_one, todo, n_workers, init_worker, (job, anatomy, atlas),
                                           "ctarr evaluate")):
            new[p] = rows
    except (KeyboardInterrupt, WorkerDied) as e:
        msg = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
        logging.getLogger("nnunet_ctarr").error(f"{msg}; the tables hold the cases done so far")
        for p in todo:
            new.setdefault(p, failed_rows(case_id(p), job.regions, f"not done: {msg}"))
        return new, True
    return new, False


def _write_tables(out: Path, part: str, rows: list[dict], regions: list[Region], images: str, run: dict,
                  stamps: dict[str, dict]) -> list[str]:
    """``evaluation<part>.csv``, ``.json`` and ``summary<part>.md``; returns the console's lines
    (each region's counts and table)."""
    write_csv(out / f"evaluation{part}.csv", rows, FIELDS)
    write_results(out / f"evaluation{part}.json", run, regions, stamps, rows)
    sections = [summary(rows, r.name, images) for r in regions]
    write_text(out / f"summary{part}.md", "\n".join(line for md in sections for line in md) + "\n")
    return [line for md in sections for line in [md[0], *md[2:10]]]


def _draw(out: Path, rows: list[dict], n: int, inputs: list[Path], done: set[str], anatomy, regions: list[Region],
          atlas: Atlas, settings: EvalSettings) -> None:
    """QC pictures of the worst rows; cases taken from an earlier run get their anatomy prepared now."""
    picked = worst_rows(rows, regions, n)
    by_case = {case_id(p): p for p in inputs}
    if done & set(picked):
        anatomy.prepare({c: [str(by_case[c])] for c in picked})
    draw_worst(out, picked, by_case, anatomy, regions, atlas, settings)


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
