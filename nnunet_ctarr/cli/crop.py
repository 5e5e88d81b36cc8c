"""nnUNetv2_ctarr_crop: crop an anatomical region from CT scans (no interpolation)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .. import api
from ..core.anatomy.atlas import Atlas
from ..core.base.cases import InputCase, list_cases, match_case_file
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.files import as_json, check_output_folder
from ..core.base.nifti import DEFAULT_LEVEL, LEVELS
from ..core.localise.decision import Status
from ..core.outputs.batch_report import BatchReport
from ..core.outputs.case_writer import CropOptions, case_stamp, region_definition, write_case
from ..core.outputs.records import CaseRecord, ReportRow
from ..core.outputs.sidecar import finished_regions
from ..core.regions.region import Region, atlas_named_by, builtin_regions, check_region_atlas, load_region, load_regions
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

EPILOG = """examples:
  nnUNetv2_ctarr_crop -i examples/data/totalseg_example/example_ct.nii.gz \\
      --anatomy_seg examples/data/totalseg_example/example_ct_totalseg_v2.nii.gz -r kidneys -o out --qc
  nnUNetv2_ctarr_crop -i scans/ --anatomy_seg totalseg_out/ --labels gt/ -r liver -o crops/
  nnUNetv2_ctarr_crop -i scans/ --anatomy_seg totalseg_out/ -r liver spleen kidneys -o crops/   # one registration
  nnUNetv2_ctarr_crop -i scans/ -anatomy_model totalsegmentator -device cuda -r liver -o crops/  # TS's 3 mm model

"""


def build_parser() -> Parser:
    p = Parser(prog="nnUNetv2_ctarr_crop", description=__doc__, epilog=EPILOG)
    p.add_argument("-i", dest="input", help="image file, DICOM folder, or folder of images/DICOM folders (batch; "
                                            "nnU-Net's CASE_0000, CASE_0001 ... are the channels of one case)")
    p.add_argument("-o", dest="output", help="output folder")
    add_regions_arg(p)
    add_anatomy_args(p)
    p.add_argument("--labels", help="label map(s) to crop alongside (file, or folder matched by case id)")
    add_margin_arg(p)
    p.add_argument("--z_only", action="store_true", help="crop only along the head-feet axis")
    p.add_argument("--pad", action="store_true", help="pad crops to the full box where the region leaves the image")
    p.add_argument("--fill_value", type=float, default=None,
                   help="padding value for --pad (default: image minimum)")
    p.add_argument("--compression", choices=["none", *map(str, LEVELS)], default=str(DEFAULT_LEVEL),
                   help=f"gzip level of the crops (ISA-L, 0 fastest .. 3 smallest; default {DEFAULT_LEVEL}), or none: "
                        "uncompressed .nii files")
    p.add_argument("--boxes_only", action="store_true",
                   help="write only the sidecar and the report (boxes as index ranges and world corners), no image; "
                        "with an anatomy map or model only the image headers are read (the HU and finite-value "
                        "checks run when nnunet_ctarr.api.crops_from_sidecar cuts the crops later)")
    add_qc_arg(p)
    add_atlas_arg(p)
    p.add_argument("--no_hu_check", action="store_true", help="accept images that do not look like CT in HU")
    p.add_argument("--allow_nonfinite", action="store_true",
                   help="replace NaN/Inf voxels by the image minimum (reported) instead of refusing the image")
    add_fallback_arg(p)
    add_device_arg(p)
    add_workers_arg(p)
    add_parts_args(p)
    p.add_argument("--list_regions", action="store_true", help="list the built-in regions and exit")
    add_verbose_arg(p)
    return p


def list_regions_text() -> str:
    lines = []
    for name, path in builtin_regions().items():
        r = load_region(str(path))
        sizes = ", ".join("x".join(str(int(round(v))) for v in (b[1] - b[0])) for b in r.boxes_mm)
        lines.append(f"{name:16s} {len(r.boxes_mm)} box(es), size(s) {sizes} mm + margin {r.margin_mm:g} mm, "
                     f"from {r.provenance.get('n_scans', '?')} scan(s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if args.list_regions:
        print(list_regions_text())
        return 0
    missing = [f for f, v in (("-i", args.input), ("-o", args.output), ("-r", args.regions)) if not v]
    if missing:
        parser.error(f"missing required argument(s): {' '.join(missing)}")
    regions = load_regions(args.regions)
    args.atlas = atlas_named_by(args.regions, args.atlas)      # -r SET:REGION brings its set's atlas
    atlas = Atlas.load(args.atlas)
    for region in regions:
        check_region_atlas(region, atlas.atlas_id, WarningLog())
    all_inputs = list_cases(args.input)                      # nnU-Net's CASE_0000, CASE_0001 ...: one case
    cases = [c.case for c in all_inputs]
    inputs = select_part(all_inputs, args)
    out = check_output_folder(args.output)
    anatomy = anatomy_source(args, device=args.device, verbose=args.verbose,
                             atlas=atlas if args.np <= 1 else None)        # workers load their own
    anatomy.prepare({c.case: [str(p) for p in c.channels] for c in inputs})   # a model predicts once, before workers
    opts = CropOptions(args.margin, args.z_only, args.pad, args.fill_value, args.qc, not args.no_hu_check,
                       args.allow_nonfinite, args.on_untrusted, args.boxes_only, args.compression)
    job = _CropJob(args.labels, cases, out, regions, opts, args.resume, args.verbose)
    report = _run(job, inputs, anatomy, atlas if args.np <= 1 else args.atlas, args.np)
    if len(all_inputs) > 1 or report.interrupted:   # a batch; a one-scan run has its sidecar
        report.write(out, part_suffix(args), qc=args.qc)
    _print_result(report, out, len(regions) == 1)
    return 130 if report.interrupted else (0 if report.all_clean else 1)


def _run(job: _CropJob, inputs: list[InputCase], anatomy, atlas, n_workers: int) -> BatchReport:
    """Every case into the report; a failed case is a row with its reason, Ctrl-C or a dead worker
    stops the run with the rows so far (the cases not done are named)."""
    report = BatchReport()
    done = set()
    try:
        for case, record, done_before, error, tb in map_cases(_crop_one, inputs, n_workers, init_worker,
                                                              (job, anatomy, atlas), "ctarr crop"):
            done.add(case)
            if error is not None:
                report.add_error(case, [r.name for r in job.regions], error)
                _log_failure(job.out, case, error, tb, job.verbose)
            else:
                report.add(record, done_before)
    except (KeyboardInterrupt, WorkerDied) as e:
        report.interrupted = True
        left = [c.case for c in inputs if c.case not in done]
        msg = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
        logging.getLogger("nnunet_ctarr").error(f"{msg}; not done: {len(left)} case(s)")
        for c in left:
            report.add_error(c, [r.name for r in job.regions], f"not done: {msg}")
    return report


def _log_failure(out: Path, case: str, error: str, tb: str | None, verbose: bool) -> None:
    """The case's error line; an internal error's traceback goes to ``ctarr_errors.log`` (and with -v to stderr)."""
    logging.getLogger("nnunet_ctarr").error(f"{case}: {without_case(error, case)}")
    if tb is None:
        return
    try:
        with open(out / "ctarr_errors.log", "a") as f:
            f.write(f"--- {case}\n{tb}\n")
    except OSError:
        pass
    if verbose:
        logging.getLogger("nnunet_ctarr").error(tb)


@dataclass(frozen=True)
class _CropJob:
    """What every case of a run shares (sent once to each worker)."""
    labels: str | None
    cases: list[str]
    out: Path
    regions: list[Region]
    opts: CropOptions
    resume: bool
    verbose: bool


def _crop_one(src: InputCase) -> tuple[str, CaseRecord | None, bool, str | None, str | None]:
    """One case (every channel cropped with the boxes of channel 0): (case, sidecar record, found
    done by --continue, error, traceback). Never raises: a user error is its one line, anything else
    an internal error whose traceback is kept."""
    job, case = WORKER["job"], src.case
    try:
        lab = match_case_file(Path(job.labels), case, job.cases, "label map") if job.labels else None
        stamp = case_stamp(case, list(src.channels), WORKER["atlas"], job.opts, lab is not None,
                           WORKER["anatomy"].stamp(case))
        if job.resume and (record := _done_before(job, stamp)) is not None:
            return case, record, True, None, None
        crops = api.crop(list(src.channels), job.regions, WORKER["anatomy"], atlas=WORKER["atlas"], labels=lab,
                         prepared=True,
                         on_untrusted=job.opts.on_untrusted, margin_mm=job.opts.margin_mm, z_only=job.opts.z_only,
                         pad=job.opts.pad, fill_value=job.opts.fill_value, boxes_only=job.opts.boxes_only, lazy=True,
                         read_voxels=job.opts.qc,
                         hu_check=job.opts.hu_check, allow_nonfinite=job.opts.allow_nonfinite, case=case)
        return case, write_case(crops, stamp, job.out, job.opts), False, None, None
    except CTARRError as e:
        return case, None, False, str(e), None
    except Exception as e:                     # noqa: BLE001 (one case's bug must not lose the batch)
        line, tb = internal_error(e)
        return case, None, False, line, tb


def _done_before(job: _CropJob, stamp: CaseRecord) -> CaseRecord | None:
    """The case's sidecar record when ``--continue`` finds every region done with these settings."""
    found = finished_regions(job.out / f"{stamp.case}.ctarr.json", stamp, [r.name for r in job.regions])
    if found is None or any(as_json(region_definition(r, job.opts.margin_mm, job.opts.z_only))
                            != found[r.name].definition for r in job.regions):
        return None
    return stamp.with_regions(found)


def _print_result(report: BatchReport, out: Path, one_region: bool) -> None:
    """One line per region of a one-scan run, else the batch summary."""
    cases = {r.case for r in report.rows}
    if len(cases) == 1 and not report.interrupted:
        for row in report.rows:
            line = case_line(row, out, one_region)
            if line:
                print(line)
        return
    print("\n".join(report.summary_lines(out, one_region)))


def case_line(row: ReportRow, out: Path, one_region: bool = True) -> str:
    """The one-line result of a case and region (empty when it failed: its error line says so)."""
    who = row.case if one_region else f"{row.case}/{row.region}"
    if row.status == Status.FAILED.value:
        return ""
    if row.status == Status.OUTSIDE.value:
        return f"{who}: outside the field of view ({row.reasons}); nothing written"
    if row.status in (Status.WHOLE.value, Status.SKIPPED.value):
        what = "nothing written" if row.status == Status.SKIPPED.value else f"whole image written -> {out}"
        return f"{who}: not trusted ({row.reasons}); {what}"
    what = f"{row.n_outputs} crop(s)" if row.n_outputs else f"{row.n_boxes} box(es) (boxes only)"
    return (f"{who}: {what}, {100 * row.voxel_fraction_kept:.1f}% of the voxels, "
            f"orientation {row.orientation}, Dice {row.registration_dice:.2f}, "
            + ("trusted" if row.trusted else "NOT TRUSTED (cropped anyway)") + f" -> {out}")


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
