"""nnUNetv2_predict_ctarr_multi: several nnU-Net models, each only inside its own CTARR region,
merged into one label map.

One anatomy load and one atlas registration per case serve every model. Each voxel takes the
output label of the model/class with the highest probability among the models whose own
segmentation has foreground there (docs/predict_multi.md). Outputs have the input's size,
spacing, origin and direction; <case>.ctarr_multi.json records per model the region, boxes,
seconds, warnings and voxels won in overlaps.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ..atlas import Atlas
from ..errors import CTARRError
from ..io import case_id
from ..regions import check_region_atlas
from .anatomy_args import add_anatomy_args, anatomy_source
from .common import run_cli, setup_logging
from .predict import env_int, prepare_inputs

EPILOG = """examples:
  nnUNetv2_predict_ctarr_multi -i imagesTs -o pred -spec organs.json -anatomy_seg totalseg_maps/
  nnUNetv2_predict_ctarr_multi -i dicom_folders/ -o pred -spec organs.json -device cpu \\
      -anatomy_model nnUNet_results/Dataset297_TotalSegmentator_total_3mm/nnUNetTrainer__nnUNetPlans__3d_fullres

spec (relative paths are relative to the spec file):
  {"labels": {"background": 0, "liver": 1, "kidney_left": 2, "kidney_right": 3},
   "models": [{"folder": "models/liver", "region": "liver", "folds": [0], "labels": {"liver": "liver"}},
              {"folder": "models/kidneys", "region": "kidneys", "margin": 5,
               "labels": {"1": "kidney_left", "2": "kidney_right"}}]}
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnUNetv2_predict_ctarr_multi", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", type=str, required=True, help="input folder (nnU-Net naming: CASE_0000.nii.gz), a single "
                                                       "image, or a DICOM folder / folder of DICOM folders")
    p.add_argument("-o", type=str, required=True, help="output folder")
    p.add_argument("-spec", type=str, required=True, help="JSON: output labels and the models (folder, region, "
                                                          "label mapping, optional folds/checkpoint/margin)")
    p.add_argument("-step_size", type=float, default=0.5)
    p.add_argument("--disable_tta", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--continue_prediction", action="store_true", help="skip cases whose outputs exist")
    p.add_argument("-npp", type=int, default=env_int("nnUNet_npp", 3), help="anatomy model only")
    p.add_argument("-nps", type=int, default=env_int("nnUNet_nps", 3), help="anatomy model only")
    p.add_argument("-device", type=str, default="cuda", help="cuda, cpu or mps")
    p.add_argument("--disable_progress_bar", action="store_true")
    p.add_argument("--not_on_device", action="store_true")
    # --- CTARR (as nnUNetv2_predict_ctarr)
    add_anatomy_args(p)
    p.add_argument("--on_miss", choices=["empty", "full"], default="empty",
                   help="a model's region outside the field of view: the model contributes nothing (default, "
                        "warning) or predicts the full volume")
    p.add_argument("-atlas", type=str, default=None, help="atlas .npz (default: shipped starter atlas)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from ..multi_predict import MultiModelPredictor, group_channels, load_spec
    spec = load_spec(args.spec)
    if bool(args.anatomy_seg) == bool(args.anatomy_model):     # checked before any model is loaded
        raise CTARRError("give exactly one anatomy source: -anatomy_seg FOLDER or -anatomy_model MODEL_FOLDER")
    if args.device not in ("cpu", "cuda", "mps"):
        raise CTARRError(f"-device must be cpu, cuda or mps, got {args.device}")
    src = Path(args.i)
    if not src.exists():
        raise CTARRError(f"input not found: {src}")
    from ..trainer_path import ensure_ext_trainer_path
    ensure_ext_trainer_path()                 # models trained with the CTARR trainers are found
    import torch
    if args.device == "cpu":
        import multiprocessing
        torch.set_num_threads(multiprocessing.cpu_count())
    n_ch = spec.models[0].n_channels
    with tempfile.TemporaryDirectory(prefix="ctarr_inputs_") as tmp:
        source = prepare_inputs(src, Path(tmp))
        if isinstance(source, str):
            lists = group_channels(source, spec.file_ending, n_ch)
        else:
            if n_ch != 1:
                raise CTARRError(f"the models take {n_ch} channels; give a folder with CASE_XXXX files")
            lists = {case_id(files[0]): files for files in source}
        anatomy = anatomy_source(args, args.device, args.step_size, args.disable_tta, args.npp, args.nps,
                                 args.verbose)
        atlas = Atlas.load(args.atlas)
        for m in spec.models:
            check_region_atlas(m.region, atlas.atlas_id)
        predictor = MultiModelPredictor(spec, anatomy, atlas, torch.device(args.device),
                                        args.on_miss, args.step_size, not args.disable_tta,
                                        not args.not_on_device, args.verbose, not args.disable_progress_bar)
        os.makedirs(args.o, exist_ok=True)
        reports = predictor.predict_files(lists, args.o, overwrite=not args.continue_prediction)
    for case, r in reports.items():
        parts = [f"{m['name']} {m['mode']} ({m['voxels_won']} vox)" for m in r["models"]]
        print(f"{case}: " + ", ".join(parts) + f"; overlap {r['overlap_voxels']} vox", file=sys.stderr)
    return 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
