"""nnUNetv2_ctarr_crop: crop an anatomical region from CT scans (no interpolation)."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from ..core.atlas import Atlas
from ..core.crop_writer import ON_UNTRUSTED, CropOptions, crop_case
from ..core.errors import CTARRError, WarningLog
from ..core.io import case_id, check_output_folder, list_inputs, match_case_file
from ..core.regions import Region, builtin_regions, check_region_atlas, load_region
from ..core.registration import RegistrationSettings
from .common import parse, run_cli
from .options import Parser, add_anatomy_args, add_atlas_arg, add_device_arg, add_verbose_arg, anatomy_source

EPILOG = """examples:
  nnUNetv2_ctarr_crop -i examples/data/totalseg_example/example_ct.nii.gz \\
      --anatomy_seg examples/data/totalseg_example/example_ct_totalseg_v2.nii.gz -r kidneys -o out --qc
  nnUNetv2_ctarr_crop -i scans/ --anatomy_seg totalseg_out/ --labels gt/ -r liver -o crops/
  nnUNetv2_ctarr_crop -i scans/ --anatomy_seg totalseg_out/ -r liver spleen kidneys -o crops/   # one registration

"""


def build_parser() -> Parser:
    p = Parser(prog="nnUNetv2_ctarr_crop", description=__doc__, epilog=EPILOG)
    p.add_argument("-i", dest="input", help="image file, DICOM folder, or folder of images/DICOM folders (batch)")
    p.add_argument("-o", dest="output", help="output folder")
    p.add_argument("-r", dest="region", nargs="+",
                   help="region name(s) (see --list_regions), region .json file(s), or 'all' (every built-in "
                        "region); several regions share one registration per scan")
    add_anatomy_args(p, model=False)
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
    missing = [f for f, v in (("-i", args.input), ("-o", args.output), ("-r", args.region),
                              ("-anatomy_seg", args.anatomy_seg)) if not v]
    if missing:
        parser.error(f"missing required argument(s): {' '.join(missing)}")
    regions = load_regions(args.region)
    atlas = Atlas.load(args.atlas)
    for region in regions:
        check_region_atlas(region, atlas.atlas_id, WarningLog())
    settings = RegistrationSettings(device=args.device)
    inputs = list_inputs(args.input)
    cases = [case_id(p) for p in inputs]
    anatomy = anatomy_source(args)
    anatomy.prepare({case_id(p): [str(p)] for p in inputs})
    opts = CropOptions(args.margin, args.z_only, args.pad, args.fill_value, args.qc, not args.no_hu_check,
                       args.allow_nonfinite, args.on_untrusted)
    out = check_output_folder(args.output)
    counts = dict.fromkeys(("crop", "full", "skip", "crop_untrusted", "outside", "error"), 0)
    for src in tqdm(inputs, desc="ctarr crop", disable=len(inputs) == 1, file=sys.stderr):
        case = case_id(src)
        try:
            lab = match_case_file(Path(args.labels), case, cases, "label map") if args.labels else None
            entries = crop_case(src, anatomy, lab, out, regions, atlas, opts, settings)
        except CTARRError as e:
            counts["error"] += len(regions)
            print(f"error: {case}: {e}", file=sys.stderr)
            continue
        for name, entry in entries.items():
            counts[entry["mode"] + ("_untrusted" if entry["mode"] == "crop" and not entry["trusted"] else "")] += 1
            who = case if len(regions) == 1 else f"{case}/{name}"
            if entry["mode"] == "outside":
                print(f"error: {who}: {entry['error']}", file=sys.stderr)
            elif len(inputs) == 1:
                print(case_line(who, entry, out))
    n = len(inputs) * len(regions)
    if n > 1:
        what = "case(s)" if len(regions) == 1 else "case-region pair(s)"
        print(f"{counts['crop']} of {n} {what} cropped; untrusted: {counts['full']} written whole, "
              f"{counts['skip']} skipped, {counts['crop_untrusted']} cropped anyway; {counts['outside']} outside the "
              f"field of view; {counts['error']} failed -> {out}")
    return 0 if counts["crop"] == n else 1


def load_regions(names: list[str]) -> list[Region]:
    """The regions of ``-r`` (``all``: every built-in one); a name given twice counts once."""
    names = list(builtin_regions()) if names == ["all"] else list(dict.fromkeys(names))
    regions = [load_region(n) for n in names]
    dup = {r.name for r in regions if sum(q.name == r.name for q in regions) > 1}
    if dup:
        raise CTARRError(f"two regions share the name {', '.join(sorted(dup))}: their crops would collide")
    return regions


def case_line(case: str, entry: dict, out: Path) -> str:
    """The one-line result of a single case."""
    if entry["mode"] == "skip":
        return f"{case}: not trusted ({'; '.join(entry['trust']['reasons'])}); nothing written"
    if entry["mode"] == "full":
        return f"{case}: not trusted ({'; '.join(entry['trust']['reasons'])}); whole image written -> {out}"
    t = entry["transform"]
    return (f"{case}: {len(entry['outputs'])} crop(s), {100 * entry['voxel_fraction_kept']:.1f}% of the voxels, "
            f"orientation {t['orientation']}, Dice {entry['trust']['registration_dice']:.2f}, "
            + ("trusted" if entry["trusted"] else "NOT TRUSTED (cropped anyway)") + f" -> {out}")


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
