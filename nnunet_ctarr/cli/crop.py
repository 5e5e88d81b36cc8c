"""nnUNetv2_ctarr_crop: crop an anatomical region from CT scans (no interpolation)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ..anatomy import load_anatomy
from ..atlas import Atlas
from ..cropping import crop_image
from ..errors import CTARRError, WarningLog
from ..evaluation import crop_scores
from ..io import (case_id, check_ct_intensities, list_inputs, match_case_file, match_label_to_image, read_image,
                  write_image)
from ..pipeline import groups_present, locate, plan_region
from ..qc import render_qc
from ..registration import RegistrationSettings
from ..regions import builtin_regions, check_region_atlas, load_region
from .common import run_cli, setup_logging, versions, write_json

EPILOG = """examples:
  nnUNetv2_ctarr_crop -i examples/data/totalseg_example/example_ct.nii.gz \\
      --anatomy_seg examples/data/totalseg_example/example_ct_totalseg_v2.nii.gz -r kidneys -o out --qc
  nnUNetv2_ctarr_crop -i scans/ --anatomy_seg totalseg_out/ --labels gt/ -r liver -o crops/

"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnUNetv2_ctarr_crop", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", dest="input", help="image file, DICOM folder, or folder of images/DICOM folders (batch)")
    p.add_argument("-o", dest="output", help="output folder")
    p.add_argument("-r", dest="region", help="region name (see --list_regions) or region .json file")
    p.add_argument("--anatomy_seg", help="anatomy label file or folder (TotalSegmentator v1/v2 map, its "
                                         "per-structure mask folder, or a 19-class map); folder = one per case")
    p.add_argument("--anatomy_format", default="auto", choices=["auto", "ts_v2", "ts_v1", "ctarr19", "mask_folder"])
    p.add_argument("--labels", help="label map(s) to crop alongside (file, or folder matched by case id)")
    p.add_argument("--margin", type=float, default=0.0, help="extra margin in mm on top of the region's own")
    p.add_argument("--z_only", action="store_true", help="crop only along the head-feet axis")
    p.add_argument("--pad", action="store_true", help="pad crops to the full box where the region leaves the image")
    p.add_argument("--fill_value", type=float, default=None,
                   help="padding value for --pad (default: image minimum)")
    p.add_argument("--qc", action="store_true", help="write a QC picture <case>_<region>_qc.png")
    p.add_argument("--atlas", default=None, help="atlas .npz (default: the shipped starter atlas)")
    p.add_argument("--no_hu_check", action="store_true", help="accept images that do not look like CT in HU")
    p.add_argument("--device", default="cpu", help="torch device for the registration (cpu, cuda, cuda:1)")
    p.add_argument("--list_regions", action="store_true", help="list the built-in regions and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def list_regions_text() -> str:
    lines = []
    for name, path in builtin_regions().items():
        r = load_region(str(path))
        sizes = ", ".join("x".join(str(int(round(v))) for v in (b[1] - b[0])) for b in r.boxes_mm)
        lines.append(f"{name:16s} {len(r.boxes_mm)} box(es), size(s) {sizes} mm + margin {r.margin_mm:g} mm, "
                     f"from {r.provenance.get('n_scans', '?')} scan(s)")
    return "\n".join(lines)


def crop_case(src: Path, anat_path: Path, label_path: Path | None, out: Path, region, atlas: Atlas,
              args, settings: RegistrationSettings) -> dict:
    """Process one case; on error, removes whatever it wrote and re-raises."""
    case = case_id(src)
    warnings = WarningLog()
    seconds: dict[str, float] = {}
    written: list[Path] = []
    t = time.perf_counter()
    try:
        image = read_image(src)
        if not args.no_hu_check:
            check_ct_intensities(image, f"image {src.name}")
        seconds["read_image"] = time.perf_counter() - t
        t = time.perf_counter()
        anatomy = load_anatomy(anat_path, args.anatomy_format, warnings)
        labels = None
        if label_path is not None:
            labels = match_label_to_image(read_image(label_path), image, f"label map {label_path.name}")
        seconds["read_anatomy_labels"] = time.perf_counter() - t
        t = time.perf_counter()
        loc = locate(image, anatomy, atlas, settings, warnings)
        seconds["registration"] = time.perf_counter() - t
        t = time.perf_counter()
        plan = plan_region(image, loc, region, args.margin, args.z_only, warnings)
        usable = plan.usable
        if not usable:
            raise CTARRError(f"region '{region.name}' lies entirely outside the field of view of {src.name}; "
                             "nothing written")
        fill = 0.0                     # only used by --pad: default is the image minimum
        if args.pad:
            fill = float(args.fill_value) if args.fill_value is not None else \
                float(sitk.GetArrayViewFromImage(image).min())
        outputs = []
        for b in usable:
            suffix = f"_box{b.index}" if len(plan.boxes) > 1 else ""
            name = f"{case}_{region.name}{suffix}"
            img_path = out / f"{name}.nii.gz"
            write_image(crop_image(image, b, args.pad, fill), img_path)
            written.append(img_path)
            entry = {"box": b.index, "image": img_path.name}
            if labels is not None:
                lab_path = out / f"{name}_labels.nii.gz"
                write_image(crop_image(labels, b, args.pad, 0), lab_path)
                written.append(lab_path)
                entry["labels"] = lab_path.name
            outputs.append(entry)
        keep = plan.union_mask_zyx()
        if labels is not None:
            sc = crop_scores(sitk.GetArrayViewFromImage(labels) > 0, keep)
            preserved, n_all = sc["preserved_percent"], sc["fg_voxels"]
            if sc["fg_kept"] < n_all:
                warnings.warn(f"{n_all - sc['fg_kept']} of {n_all} label voxels ({100 - preserved:.2f}%) lie outside the crop(s)")
        seconds["crop_write"] = time.perf_counter() - t
        if args.qc:
            t = time.perf_counter()
            qc_path = out / f"{case}_{region.name}_qc.png"
            title = (f"{case} | region {region.name} | orientation: {loc.transform.orientation_text} | "
                     f"scale {np.round(loc.transform.scale, 2).tolist()} | Dice {loc.registration.dice:.2f}")
            render_qc(qc_path, image, loc.anatomy_volume, plan, title)
            written.append(qc_path)
            seconds["qc"] = time.perf_counter() - t
        sidecar = {
            "case": case,
            "input": str(src),
            "anatomy": anatomy.source,
            "anatomy_groups_present": groups_present(loc.anatomy_volume),
            "image": {"size_xyz": list(image.GetSize()), "spacing_xyz": list(image.GetSpacing()),
                      "origin_xyz": list(image.GetOrigin()), "direction": list(image.GetDirection())},
            "region": {"name": region.name, "margin_mm": region.margin_mm, "extra_margin_mm": args.margin,
                       "z_only": args.z_only, "atlas_id": region.atlas_id},
            "registration": loc.registration.to_dict(),
            "boxes": [b.to_dict() for b in plan.boxes],
            "voxel_fraction_kept": round(float(keep.mean()), 5),
            "outputs": outputs,
            "warnings": list(warnings),
            "seconds": {k: round(v, 4) for k, v in {**seconds, **{f"registration_{k}": v for k, v in loc.seconds.items()}}.items()},
            "versions": versions(atlas.atlas_id, region.provenance.get("source", "")),
        }
        if labels is not None:
            sidecar["label_voxels_preserved_percent"] = None if preserved is None else round(preserved, 4)
        side_path = out / f"{case}.ctarr.json"
        write_json(side_path, sidecar)
        return sidecar
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.list_regions:
        print(list_regions_text())
        return 0
    missing = [f for f, v in (("-i", args.input), ("-o", args.output), ("-r", args.region),
                              ("--anatomy_seg", args.anatomy_seg)) if not v]
    if missing:
        parser.error(f"missing required argument(s): {' '.join(missing)}")
    region = load_region(args.region)
    atlas = Atlas.load(args.atlas)
    check_region_atlas(region, atlas.atlas_id)
    settings = RegistrationSettings(device=args.device)
    inputs = list_inputs(args.input)
    cases = [case_id(p) for p in inputs]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for src in tqdm(inputs, desc="ctarr crop", disable=len(inputs) == 1, file=sys.stderr):
        case = case_id(src)
        try:
            anat = match_case_file(Path(args.anatomy_seg), case, cases, "anatomy segmentation")
            lab = match_case_file(Path(args.labels), case, cases, "label map") if args.labels else None
            side = crop_case(src, anat, lab, out, region, atlas, args, settings)
            if len(inputs) == 1:
                print(f"{case}: {len(side['outputs'])} crop(s), {100 * side['voxel_fraction_kept']:.1f}% of the voxels, "
                      f"orientation {side['registration']['transform']['orientation']}, "
                      f"Dice {side['registration']['registration_dice']:.2f} -> {out}")
        except CTARRError as e:
            failures += 1
            print(f"error: {case}: {e}", file=sys.stderr)
    if len(inputs) > 1:
        print(f"{len(inputs) - failures} of {len(inputs)} case(s) cropped -> {out}")
    return 1 if failures else 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
