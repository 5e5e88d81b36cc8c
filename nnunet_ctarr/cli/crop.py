"""nnUNetv2_ctarr_crop: crop an anatomical region from CT scans (no interpolation)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.anatomy.atlas import Atlas
from ..core.base.cases import case_id, list_inputs, match_case_file
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.files import check_output_folder
from ..core.localise.settings import RegistrationSettings
from ..core.outputs.batch_report import BatchReport
from ..core.outputs.case_writer import ON_UNTRUSTED, CropOptions, already_done, crop_case
from ..core.regions.region import Region, builtin_regions, check_region_atlas, load_region, load_regions
from .common import WORKER, init_worker, map_cases, parse, run_cli
from .options import (
    Parser,
    add_anatomy_args,
    add_atlas_arg,
    add_device_arg,
    add_parts_args,
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
    p.add_argument("-i", dest="input", help="image file, DICOM folder, or folder of images/DICOM folders (batch)")
    p.add_argument("-o", dest="output", help="output folder")
    p.add_argument("-r", dest="region", nargs="+",
                   help="region name(s) (see --list_regions), region .json file(s), or 'all' (every built-in "
                        "region); several regions share one registration per scan")
    add_anatomy_args(p)
    p.add_argument("--labels", help="label map(s) to crop alongside (file, or folder matched by case id)")
    p.add_argument("--margin", type=float, default=0.0, help="extra margin in mm on top of the region's own")
    p.add_argument("--z_only", action="store_true", help="crop only along the head-feet axis")
    p.add_argument("--pad", action="store_true", help="pad crops to the full box where the region leaves the image")
    p.add_argument("--fill_value", type=float, default=None,
                   help="padding value for --pad (default: image minimum)")
    p.add_argument("--qc", action="store_true", help="write a QC picture <case>_<region>_qc.png")
    add_atlas_arg(p)
    p.add_argument("--no_hu_check", action="store_true", help="accept images that do not look like CT in HU")
    p.add_argument("--allow_nonfinite", action="store_true",
                   help="replace NaN/Inf voxels by the image minimum (reported) instead of refusing the image")
    p.add_argument("--on_untrusted", choices=ON_UNTRUSTED, default="full",
                   help="when the trust rule refuses a localisation: write the whole image under the crop's name "
                        "(full, default: no foreground lost), write nothing (skip), or write the crop anyway (crop); "
                        "the sidecar says trusted: false with the reasons")
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
    missing = [f for f, v in (("-i", args.input), ("-o", args.output), ("-r", args.region)) if not v]
    if missing:
        parser.error(f"missing required argument(s): {' '.join(missing)}")
    regions = load_regions(args.region)
    atlas = Atlas.load(args.atlas)
    for region in regions:
        check_region_atlas(region, atlas.atlas_id, WarningLog())
    all_inputs = list_inputs(args.input)
    cases = [case_id(p) for p in all_inputs]
    inputs = select_part(all_inputs, args)
    anatomy = anatomy_source(args, device=args.device, verbose=args.verbose)
    anatomy.prepare({case_id(p): [str(p)] for p in inputs})   # a model predicts here, once, before any worker
    opts = CropOptions(args.margin, args.z_only, args.pad, args.fill_value, args.qc, not args.no_hu_check,
                       args.allow_nonfinite, args.on_untrusted)
    out = check_output_folder(args.output)
    job = _CropJob(args.labels, cases, out, regions, opts, args.device, args.resume, len(regions) == 1)
    report = BatchReport()
    for case, entries, done_before, error in map_cases(_crop_one, inputs, args.np, init_worker,
                                                        (job, anatomy, atlas if args.np <= 1 else args.atlas),
                                                        "ctarr crop"):
        if error is not None:
            report.add_error(case, [r.name for r in regions], error)
        else:
            report.add(case, entries, done_before)
    if len(all_inputs) > 1:                    # a batch; a one-scan run has its sidecar
        report.write(out, part_suffix(args), qc=args.qc)
    if len(report.rows) == 1:
        line = case_line(report.rows[0], out)
        if line:                               # failed / outside: their error line is printed already
            print(line)
    else:
        print("\n".join(report.summary_lines(out, len(regions) == 1)))
    return 0 if report.all_clean else 1


@dataclass(frozen=True)
class _CropJob:
    """What every case of a run shares (sent once to each worker)."""
    labels: str | None
    cases: list[str]
    out: Path
    regions: list[Region]
    opts: CropOptions
    device: str
    resume: bool
    one_region: bool


def _crop_one(src: Path) -> tuple[str, dict | None, bool, str | None]:
    """One case: (case, sidecar entries, found done by --continue, error). A user error is one line
    and the batch goes on."""
    job, case = WORKER["job"], case_id(src)
    try:
        lab = match_case_file(Path(job.labels), case, job.cases, "label map") if job.labels else None
        entries = already_done(src, job.out, job.regions, WORKER["atlas"], job.opts, lab is not None,
                               WORKER["anatomy"]) if job.resume else None
        done_before = entries is not None
        if not done_before:
            entries = crop_case(src, WORKER["anatomy"], lab, job.out, job.regions, WORKER["atlas"], job.opts,
                                RegistrationSettings(device=job.device))
    except CTARRError as e:
        print(f"error: {case}: {e}", file=sys.stderr)
        return case, None, False, str(e)
    for name, entry in entries.items():
        if entry["mode"] == "outside":
            print(f"error: {case if job.one_region else case + '/' + name}: {entry['error']}", file=sys.stderr)
    return case, entries, done_before, None


def case_line(row: dict, out: Path) -> str:
    """The one-line result of a single case and region (a report row); empty when it failed or
    lies outside the field of view (its error line says so)."""
    who, status = row["case"], row["status"]
    if status in ("failed", "outside the field of view"):
        return ""
    if status.startswith("untrusted") and status != "untrusted: cropped anyway":
        what = "nothing written" if status == "untrusted: skipped" else f"whole image written -> {out}"
        return f"{who}: not trusted ({row['reasons']}); {what}"
    return (f"{who}: {row['n_outputs']} crop(s), {100 * row['voxel_fraction_kept']:.1f}% of the voxels, "
            f"orientation {row['orientation']}, Dice {row['registration_dice']:.2f}, "
            + ("trusted" if row["trusted"] else "NOT TRUSTED (cropped anyway)") + f" -> {out}")


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
