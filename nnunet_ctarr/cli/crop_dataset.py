"""nnUNetv2_ctarr_crop_dataset: an nnU-Net raw dataset cropped to a CTARR region.

Writes ``DatasetDST_<name>`` in nnUNet_raw: crops of every training (and test) case, one case
per region box, the source's ``dataset.json`` with the new numTraining, and the CTARR settings
(``ctarr.json`` + ``dataset.json["ctarr"]``) so that ``nnUNetv2_predict_ctarr`` uses the same
region for models trained on it without being told. Reports voxel reduction and lost label
foreground per case (``ctarr_crop_report.json``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..core.anatomy.atlas import Atlas
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.files import write_json_if_changed
from ..core.base.nnunet_format import load_raw_dataset, raw_root
from ..core.localise.decision import Policy, Status
from ..core.outputs.case_writer import versions
from ..core.regions.model_config import CONFIG_NAME, make_config
from ..core.regions.region import atlas_named_by, check_region_atlas, load_region
from ..training.crop_records import crop_and_record, crop_settings, failed_row, finished_row, recorded_rows
from ..training.dataset_crops import CropJob
from .common import WORKER, WorkerDied, init_worker, map_cases, parse, run_cli
from .options import (
    Parser,
    add_anatomy_args,
    add_atlas_arg,
    add_deprecated,
    add_device_arg,
    add_fallback_arg,
    add_parts_args,
    add_regions_arg,
    add_verbose_arg,
    add_workers_arg,
    anatomy_source,
    part_suffix,
    select_part,
)

EPILOG = """example:
  nnUNetv2_ctarr_crop_dataset -d 3 -r liver -o 503 --margin 10 -anatomy_seg totalseg_maps/
  nnUNetv2_plan_and_preprocess -d 503 -c 3d_fullres && nnUNetv2_train 503 3d_fullres 0
  # the region comes from the model folder:
  nnUNetv2_predict_ctarr -i imagesTs -o pred -d 503 -c 3d_fullres -f 0 -anatomy_seg totalseg_maps/
"""


def build_parser() -> Parser:
    p = Parser(prog="nnUNetv2_ctarr_crop_dataset", description=__doc__, epilog=EPILOG)
    p.add_argument("-d", required=True, help="source dataset: id, DatasetXXX_Name, or folder")
    add_regions_arg(p, many=False, required=True)
    p.add_argument("-o", required=True, type=int, help="id of the new dataset")
    p.add_argument("-name", default=None, help="name of the new dataset (default: <source name>CTARR<Region>)")
    p.add_argument("--margin", type=float, default=10.0,
                   help="extra margin in mm on top of the region's own (default 10); stored in ctarr.json so "
                        "predictions crop the same way")
    add_deprecated(p, "--train_margin", "margin", "--margin", type=float)
    add_fallback_arg(p, choices=("whole", "skip", "anyway"),
                     what="a case whose localisation the trust rule refuses (docs/trust.md): copy it uncropped "
                          "(whole, default: no label lost), leave it out (skip), or crop it anyway (anyway). A "
                          "case without the region in view is left out (outside the field of view)")
    add_deprecated(p, "--on_fail", "on_untrusted", "--on_untrusted", {"full": "whole", "skip": "skip"},
                   note="a case whose region is outside the field of view is now left out, not copied whole")
    p.add_argument("--no_test", action="store_true", help="do not crop imagesTs")
    add_workers_arg(p, default=max(1, min(4, (os.cpu_count() or 1) - 1)))
    add_device_arg(p, what="the anatomy model (-anatomy_model)")
    add_parts_args(p)
    add_atlas_arg(p)
    add_verbose_arg(p)
    add_anatomy_args(p)
    return p


logger = logging.getLogger("nnunet_ctarr")


def _run(job: CropJob) -> dict:
    return crop_and_record(job, WORKER["job"], WORKER["anatomy"], WORKER["atlas"])


def _key(job: CropJob) -> tuple[str, str]:
    return job.case.case, job.split


def _target(args, src, region) -> tuple[str, Path]:
    """The new dataset's name and folder; a non-empty folder only with parts or ``--continue``."""
    name = args.name or f"{src.folder.name.split('_', 1)[-1]}CTARR{region.name.title().replace('_', '')}"
    dst = raw_root() / f"Dataset{args.o:03d}_{name}"
    if dst.exists() and any(dst.iterdir()) and args.num_parts == 1 and not args.resume:
        raise CTARRError(f"{dst} exists and is not empty; choose another -o, remove it, or pass --continue to "
                         "finish it")
    if any(p.name.startswith(f"Dataset{args.o:03d}_") for p in raw_root().glob("Dataset*")) and not dst.exists():
        raise CTARRError(f"dataset id {args.o} is already used in {raw_root()}")
    return name, dst


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    src = load_raw_dataset(args.d, need_labels=True)
    region = load_region(args.regions)
    args.atlas = atlas_named_by([args.regions], args.atlas)
    atlas_id = Atlas.load(args.atlas).atlas_id
    check_region_atlas(region, atlas_id, WarningLog())
    name, dst = _target(args, src, region)
    cases = [(c, "Tr") for c in src.training] + ([] if args.no_test else [(c, "Ts") for c in src.test])
    policy = Policy(args.on_untrusted, args.margin)
    all_jobs = [CropJob(c, split, dst, src.file_ending, region, policy) for c, split in cases]
    jobs = select_part(all_jobs, args)
    settings = crop_settings(region, policy, atlas_id, src.folder)
    done = {_key(j): row for j in jobs if args.resume and (row := finished_row(j, settings)) is not None}
    todo = [j for j in jobs if _key(j) not in done]
    anatomy = anatomy_source(args, device=args.device, verbose=args.verbose)
    if todo:                  # a model predicts here, once, before any worker; not for cases done before
        anatomy.prepare({j.case.case: [str(f) for f in j.case.images] for j in todo})
    new, stopped = _crop_all(todo, args.np, (settings, anatomy, args.atlas), region.name)
    rows = [done.get(_key(j)) or new.get(_key(j)) or failed_row(j, f"not done: {stopped}") for j in jobs]
    if stopped:
        return _stopped(dst, rows, args, stopped, len(jobs) - len(done) - len(new), len(done))
    if args.num_parts > 1:
        write_json_if_changed(dst / f"ctarr_crop_report{part_suffix(args)}.json", {"cases": rows})
    complete = rows if args.num_parts == 1 else recorded_rows(all_jobs, settings)
    _print_summary(rows, len(done))
    if complete is None:
        print(f"-> {dst}: part {args.part_id} of {args.num_parts} done; dataset.json is written by the part that "
              "finishes last (or by a run with --continue once all parts are done)")
    else:
        _write_dataset_files(dst, src, region, name, args, complete, atlas_id)
    return 0 if all(r["status"] in (Status.CROPPED.value, Status.OUTSIDE.value) for r in rows) else 1


def _crop_all(todo: list[CropJob], n_workers: int, initargs: tuple, name: str) -> tuple[dict, str]:
    """Crop the cases to do: (report rows by case key, why the run stopped before the end or "")."""
    new: dict = {}
    try:
        for key, row in zip(map(_key, todo), map_cases(_run, todo, n_workers, init_worker, initargs,
                                                       f"cropping {name}")):
            new[key] = row
    except (KeyboardInterrupt, WorkerDied) as e:
        return new, "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
    return new, ""


def _stopped(dst: Path, rows: list[dict], args, why: str, n_left: int, n_done: int) -> int:
    """A run stopped early (Ctrl-C, a dead worker): the report of the cases so far (the others ``not
    done``), no dataset.json; exit code 130."""
    _print_summary(rows, n_done)
    write_json_if_changed(dst / f"ctarr_crop_report{part_suffix(args)}.json", {"cases": rows, "interrupted": why})
    logger.error(f"{why}; {n_left} case(s) not done; dataset.json not written: run the same command with "
                 "--continue to crop the rest")
    return 130


def _write_dataset_files(dst: Path, src, region, name: str, args, rows: list[dict], atlas_id: str) -> None:
    """dataset.json (numTraining of every part), ctarr.json and ctarr_crop_report.json; a file that
    would not change is not rewritten."""
    n_train = sum(len(r["outputs"]) for r in rows if r["split"] == "Tr")
    if n_train == 0:
        why = [f"{r['case']}: {r.get('error') or r.get('why') or r['status']}" for r in rows[:3]]
        raise CTARRError("no training case could be cropped: " + "; ".join(why))
    # a model trained on these crops is predicted on the same crops (not on tile-fitted ones)
    cfg = make_config(region, args.margin, crops="exact", source_dataset=src.folder.name)
    write_json_if_changed(dst / "dataset.json", dict(src.dataset_json, name=name, numTraining=n_train, ctarr=cfg))
    write_json_if_changed(dst / CONFIG_NAME, cfg)
    write_json_if_changed(dst / "ctarr_crop_report.json", {
        "source": str(src.folder), "region": region.to_dict(), "margin_mm": args.margin,
        "cases": rows, "versions": versions(atlas_id, args.regions)})
    print(f"-> {dst} ({n_train} training cases); region settings in {dst / CONFIG_NAME}")


def _print_summary(rows: list[dict], n_done: int) -> None:
    print(f"{'case':<24} {'status':<27} {'crops':>5} {'voxels/crop':>11} {'fg lost %':>9}")
    for r in rows:
        red, lost = r.get("voxel_reduction"), r.get("lost_foreground_pct")
        print(f"{r['case']:<24} {r['status']:<27} {len(r['outputs']):>5} "
              f"{'' if red is None else f'{red:.2f}x':>11} {'' if lost is None else f'{lost:.3f}':>9}")
        for w in r["warnings"]:
            logger.warning(f"{r['case']}: {w}")
        if r["status"] == Status.FAILED.value:
            logger.error(f"{r['case']}: {r['error']}")
    cropped = [r for r in rows if r["status"] == Status.CROPPED.value]
    if cropped:
        reds = sorted(r["voxel_reduction"] for r in cropped)
        lost = [r.get("lost_foreground_pct") or 0.0 for r in cropped]
        print(f"{len(cropped)}/{len(rows)} cases cropped" + (f" ({n_done} done before)" if n_done else "")
              + f", median voxel reduction {reds[len(reds) // 2]:.2f}x, label foreground lost: max {max(lost):.3f}% "
              f"({sum(x > 0 for x in lost)} cases with any loss)")


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
