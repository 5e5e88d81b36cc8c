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

from ..core.atlas import Atlas
from ..core.crop_writer import versions
from ..core.errors import CTARRError, WarningLog
from ..core.io import write_json
from ..core.nnunet_format import load_raw_dataset, raw_root
from ..core.region_settings import CONFIG_NAME, make_config
from ..core.regions import check_region_atlas, load_region
from ..training.dataset_crops import CropJob, crop_case
from .common import map_cases, parse, run_cli
from .options import Parser, add_anatomy_args, add_atlas_arg, add_device_arg, add_workers_arg, anatomy_source

EPILOG = """example:
  nnUNetv2_ctarr_crop_dataset -d 3 -r liver -o 503 --train_margin 10 -anatomy_seg totalseg_maps/
  nnUNetv2_plan_and_preprocess -d 503 -c 3d_fullres && nnUNetv2_train 503 3d_fullres 0
  # the region comes from the model folder:
  nnUNetv2_predict_ctarr -i imagesTs -o pred -d 503 -c 3d_fullres -f 0 -anatomy_seg totalseg_maps/
"""


def build_parser() -> Parser:
    p = Parser(prog="nnUNetv2_ctarr_crop_dataset", description=__doc__, epilog=EPILOG)
    p.add_argument("-d", required=True, help="source dataset: id, DatasetXXX_Name, or folder")
    p.add_argument("-r", required=True, help="region name or region .json")
    p.add_argument("-o", required=True, type=int, help="id of the new dataset")
    p.add_argument("-name", default=None, help="name of the new dataset (default: <source name>CTARR<Region>)")
    p.add_argument("--train_margin", type=float, default=10.0,
                   help="extra margin in mm around the region's boxes (default 10); stored in ctarr.json so "
                        "predictions crop the same way")
    p.add_argument("--on_fail", choices=["full", "skip"], default="full",
                   help="case whose localisation fails or misses the region: copy it uncropped (default) or "
                        "leave it out")
    p.add_argument("--no_test", action="store_true", help="do not crop imagesTs")
    add_workers_arg(p, default=max(1, min(4, (os.cpu_count() or 1) - 1)))
    add_device_arg(p, what="the anatomy model (-anatomy_model)")
    add_atlas_arg(p)
    p.add_argument("--verbose", action="store_true")
    add_anatomy_args(p)
    return p


_WORKER: dict = {}
logger = logging.getLogger("nnunet_ctarr")


def _init_worker(anatomy, atlas_path: str | None, threads: int | None = 1) -> None:
    """Per-case warnings go into the report and the summary, not interleaved with the progress bar."""
    logging.getLogger("nnunet_ctarr").setLevel(logging.ERROR)
    if threads:
        import torch
        torch.set_num_threads(threads)
    _WORKER.update(anatomy=anatomy, atlas=Atlas.load(atlas_path))


def _run(job: CropJob) -> dict:
    return crop_case(job, _WORKER["anatomy"], _WORKER["atlas"])


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    src = load_raw_dataset(args.d, need_labels=True)
    region = load_region(args.r)
    atlas_id = Atlas.load(args.atlas).atlas_id
    check_region_atlas(region, atlas_id, WarningLog())
    anatomy = anatomy_source(args, device=args.device, verbose=args.verbose)
    name = args.name or f"{src.folder.name.split('_', 1)[-1]}CTARR{region.name.title().replace('_', '')}"
    dst = raw_root() / f"Dataset{args.o:03d}_{name}"
    if dst.exists() and any(dst.iterdir()):
        raise CTARRError(f"{dst} exists and is not empty; choose another -o or remove it")
    if any(p.name.startswith(f"Dataset{args.o:03d}_") for p in raw_root().glob("Dataset*")) and not dst.exists():
        raise CTARRError(f"dataset id {args.o} is already used in {raw_root()}")
    cases = [(c, "Tr") for c in src.training] + ([] if args.no_test else [(c, "Ts") for c in src.test])
    anatomy.prepare({c.case: [str(f) for f in c.images] for c, _ in cases})
    jobs = [CropJob(c, split, dst, src.file_ending, region, args.train_margin, args.on_fail) for c, split in cases]
    rows = map_cases(_run, jobs, args.np, _init_worker, (anatomy, args.atlas), f"cropping {region.name}")
    n_train = sum(len(r["outputs"]) for r in rows if r["split"] == "Tr")
    if n_train == 0:
        raise CTARRError("no training case could be cropped: " + "; ".join(r.get("error", "") for r in rows[:3]))
    # a model trained on these crops is predicted on the same crops (not on tile-fitted ones)
    cfg = make_config(region, args.train_margin, crops="exact", source_dataset=src.folder.name)
    dj = dict(src.dataset_json, name=name, numTraining=n_train, ctarr=cfg)
    write_json(dst / "dataset.json", dj)
    write_json(dst / CONFIG_NAME, cfg)
    write_json(dst / "ctarr_crop_report.json", {"source": str(src.folder), "region": region.to_dict(),
                                                "train_margin_mm": args.train_margin, "cases": rows,
                                                "versions": versions(atlas_id, args.r)})
    _print_summary(rows, dst, n_train)
    return 1 if any(r["status"] == "error" for r in rows) else 0


def _print_summary(rows: list[dict], dst: Path, n_train: int) -> None:
    print(f"{'case':<24} {'status':<8} {'crops':>5} {'voxels/crop':>11} {'fg lost %':>9}")
    for r in rows:
        red = r.get("voxel_reduction")
        lost = r.get("lost_foreground_pct")
        print(f"{r['case']:<24} {r['status']:<8} {len(r['outputs']):>5} "
              f"{'' if red is None else f'{red:.2f}x':>11} {'' if lost is None else f'{lost:.3f}':>9}")
        for w in r["warnings"]:
            logger.warning(w)
        if r["status"] == "error":
            logger.error(f"{r['case']}: {r['error']}")
    cropped = [r for r in rows if r["status"] == "cropped"]
    if cropped:
        reds = sorted(r["voxel_reduction"] for r in cropped)
        lost = [r.get("lost_foreground_pct") or 0.0 for r in cropped]
        print(f"{len(cropped)}/{len(rows)} cases cropped, median voxel reduction {reds[len(reds) // 2]:.2f}x, "
              f"label foreground lost: max {max(lost):.3f}% ({sum(x > 0 for x in lost)} cases with any loss)")
    print(f"-> {dst} ({n_train} training cases); region settings in {dst / CONFIG_NAME}")


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
