"""nnUNetv2_predict_ctarr: nnUNetv2_predict, but only inside a CTARR region.

Every flag of ``nnUNetv2_predict`` works as there; CTARR adds the region and the anatomy
source. Outputs have the input's size, spacing, origin and direction.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.anatomy.atlas import Atlas
from ..core.base.cases import case_id
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.files import check_output_folder
from ..core.localise.decision import Status
from ..core.regions.model_config import config_crops, config_region, read_model_config
from ..core.regions.region import atlas_named_by, check_region_atlas
from .common import parse, prepare_inputs, run_cli
from .dicom_output import add_output_type_arg, plan_dicom_outputs, write_dicom_outputs
from .options import (
    Parser,
    add_anatomy_args,
    add_atlas_arg,
    add_crops_arg,
    add_deprecated,
    add_fallback_arg,
    add_inference_args,
    add_margin_arg,
    add_qc_arg,
)
from .options import inference_anatomy_and_device as anatomy_and_device

EPILOG = """examples:
  nnUNetv2_predict_ctarr -i imagesTs -o pred -d 3 -c 3d_fullres -f 0 -r liver -anatomy_seg totalseg_maps/
  nnUNetv2_predict_ctarr -i imagesTs -o pred -m MODEL_FOLDER -r kidneys \\
      -anatomy_model nnUNet_results/Dataset297_TotalSegmentator_total_3mm/nnUNetTrainer__nnUNetPlans__3d_fullres
  (a model folder holding ctarr.json, written by nnUNetv2_ctarr_crop_dataset, brings its own region)

"""


def build_parser() -> Parser:
    p = Parser(prog="nnUNetv2_predict_ctarr", description=__doc__, epilog=EPILOG)
    # --- nnUNetv2_predict's flags (same names, same defaults)
    p.add_argument("-i", type=str, required=True, help="input folder (nnU-Net naming: CASE_0000.nii.gz), a single "
                                                       "image, or a DICOM folder / folder of DICOM folders")
    p.add_argument("-o", type=str, required=True, help="output folder")
    p.add_argument("-d", type=str, default=None, help="dataset name or id (with -c, -p, -tr; needs nnUNet_results)")
    p.add_argument("-p", type=str, default="nnUNetPlans", help="plans identifier. Default: nnUNetPlans")
    p.add_argument("-tr", type=str, default="nnUNetTrainer", help="trainer class. Default: nnUNetTrainer")
    p.add_argument("-c", type=str, default=None, help="configuration, e.g. 3d_fullres")
    p.add_argument("-f", nargs="+", type=str, default=(0, 1, 2, 3, 4), help="folds. Default: 0 1 2 3 4")
    add_inference_args(p)
    p.add_argument("--save_probabilities", action="store_true", help="full-size probabilities (.npz + .pkl)")
    p.add_argument("--continue_prediction", action="store_true")
    p.add_argument("-chk", type=str, default="checkpoint_final.pth")
    p.add_argument("-prev_stage_predictions", type=str, default=None)
    p.add_argument("-num_parts", type=int, default=1)
    p.add_argument("-part_id", type=int, default=0)
    # --- model folder directly (as nnUNetv2_predict_from_modelfolder)
    p.add_argument("-m", type=str, default=None, help="trained model folder (instead of -d/-c/-p/-tr)")
    # --- CTARR
    p.add_argument("-r", "--regions", "-region", dest="regions", default=None,
                   help="region name or region .json (default: the model folder's ctarr.json)")
    add_anatomy_args(p)
    add_margin_arg(p, None, "the model's ctarr.json, else 0")
    add_fallback_arg(p, what="when the trust rule refuses the localisation (docs/trust.md): predict the whole image "
                             "(whole, default: nothing lost), write no output for the case (skip), or predict the "
                             "crop anyway (anyway). A region outside the field of view writes background")
    add_deprecated(p, "--on_miss", "on_miss", "(a region outside the field of view writes background)",
                   {"empty": "empty", "*": "removed: a region outside the field of view now writes background; an "
                                           "untrusted localisation predicts the whole image (--on_untrusted whole)"})
    add_crops_arg(p)
    add_qc_arg(p, "a QC picture per case into the output folder")
    p.add_argument("--save_ctarr_json", action="store_true", help="<case>.ctarr.json per case in the output folder")
    add_atlas_arg(p)
    add_output_type_arg(p)
    return p


if TYPE_CHECKING:
    from ..inference.plans import CasePlan


def _model_folder(args) -> str:
    if args.m:
        return args.m
    if not (args.d and args.c):
        raise CTARRError("give the model as -m MODEL_FOLDER or with -d DATASET -c CONFIGURATION [-p -tr]")
    if not os.environ.get("nnUNet_results"):
        raise CTARRError("-d needs nnU-Net's results folder: set nnUNet_results (export nnUNet_results=/path/to/"
                         "nnUNet_results), or give the model folder with -m MODEL_FOLDER")
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    try:
        return get_output_folder(args.d, args.tr, args.p, args.c)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        raise CTARRError(f"no model for -d {args.d} -c {args.c} in {os.environ['nnUNet_results']}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    dicom_plan = plan_dicom_outputs(args)   # DICOM inputs checked before any prediction
    from ..training.trainer_path import ensure_ext_trainer_path
    ensure_ext_trainer_path()                 # models trained with the CTARR trainers are found
    from ..inference.predictor import nnUNetPredictorCTARR

    model = _model_folder(args)
    if not os.path.isdir(model):
        raise CTARRError(f"model folder not found: {model}")
    model_ctarr = read_model_config(model)
    region = config_region(model_ctarr, args.regions)
    if region is None:
        raise CTARRError("no region: pass -r NAME (or a model folder whose ctarr.json / dataset.json names one)")
    margin = args.margin if args.margin is not None else float(model_ctarr.get("margin_mm", 0.0))
    crops = config_crops(model_ctarr, args.crops)
    anatomy, device = anatomy_and_device(args)
    atlas = Atlas.load(atlas_named_by([args.regions] if args.regions else [], args.atlas))
    check_region_atlas(region, atlas.atlas_id, WarningLog())
    check_output_folder(args.o)
    with tempfile.TemporaryDirectory(prefix="ctarr_inputs_") as tmp:
        source = prepare_inputs(Path(args.i), Path(tmp))
        predictor = nnUNetPredictorCTARR(tile_step_size=args.step_size, use_gaussian=True,
                                         use_mirroring=not args.disable_tta,
                                         perform_everything_on_device=not args.not_on_device, device=device,
                                         verbose=args.verbose, verbose_preprocessing=args.verbose,
                                         allow_tqdm=not args.disable_progress_bar)
        predictor.initialize_from_trained_model_folder(model, [f if f == "all" else int(f) for f in args.f], args.chk)
        predictor.ctarr_setup(region, anatomy, atlas, margin, args.on_untrusted,
                              sidecar_folder=args.o if args.save_ctarr_json else None,
                              qc_folder=args.o if args.qc else None, fit_tiles=crops == "fitted")
        outs = [os.path.join(args.o, case_id(files[0])) for files in source] if isinstance(source, list) else args.o
        _predict(predictor, args, source, outs)
    return max(_report(predictor.ctarr_plans), write_dicom_outputs(dicom_plan, args.o))


def _predict(predictor, args, source, outs) -> None:
    if args.npp == 0 and args.nps == 0:
        predictor.predict_from_files_sequential(source, outs, args.save_probabilities, not args.continue_prediction,
                                                args.prev_stage_predictions)
    else:
        predictor.predict_from_files(source, outs, args.save_probabilities, not args.continue_prediction,
                                     max(args.npp, 1), max(args.nps, 1), args.prev_stage_predictions,
                                     args.num_parts, args.part_id)


def _report(plans: dict[str, CasePlan]) -> int:
    """One line per case; exit code 1 when a case could not be predicted (named in the last line)."""
    for case, plan in plans.items():
        r = plan.record
        detail = {Status.FAILED: f": {plan.error}", Status.CROPPED: "", Status.ANYWAY: ""}.get(plan.status,
                                                                                                f" ({r.why})")
        if plan.status in (Status.CROPPED, Status.ANYWAY) and r.voxel_fraction_kept is not None:
            detail = f", {100 * r.voxel_fraction_kept:.1f}% of the voxels"
        print(f"{case}: {plan.status.value}{detail}", file=sys.stderr)
    failed = [c for c, p in plans.items() if p.status is Status.FAILED]
    if failed:
        print(f"error: {len(failed)} of {len(plans)} case(s) not predicted: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
