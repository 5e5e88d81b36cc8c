"""nnUNetv2_predict_ctarr_multi: several nnU-Net models, each only inside its own CTARR region,
merged into one label map.

One anatomy load and one atlas registration per case serve every model. Each voxel takes the
output label of the model/class with the highest probability among the models whose own
segmentation has foreground there (docs/predict_multi.md). Outputs have the input's size,
spacing, origin and direction; <case>.ctarr_multi.json records per model the region, boxes,
seconds, warnings and voxels won in overlaps.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ..core.anatomy.atlas import Atlas
from ..core.base.cases import case_id
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.files import check_output_folder
from ..core.base.nnunet_format import group_channels
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
)
from .options import inference_anatomy_and_device as anatomy_and_device

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


def build_parser() -> Parser:
    p = Parser(prog="nnUNetv2_predict_ctarr_multi", description=__doc__, epilog=EPILOG)
    p.add_argument("-i", type=str, required=True, help="input folder (nnU-Net naming: CASE_0000.nii.gz), a single "
                                                       "image, or a DICOM folder / folder of DICOM folders")
    p.add_argument("-o", type=str, required=True, help="output folder")
    p.add_argument("-spec", type=str, required=True, help="JSON: output labels and the models (folder, region, "
                                                          "label mapping, optional folds/checkpoint/margin)")
    add_inference_args(p, npp_help="anatomy model only")
    p.add_argument("--continue_prediction", action="store_true", help="skip cases whose outputs exist")
    # --- CTARR (as nnUNetv2_predict_ctarr)
    add_anatomy_args(p)
    add_atlas_arg(p)
    add_crops_arg(p)
    add_fallback_arg(p, what="when the trust rule refuses the localisation for a model's region (docs/trust.md): the "
                             "model predicts the whole image (whole, default), contributes nothing (skip), or "
                             "predicts its crop anyway (anyway). A region outside the field of view contributes "
                             "nothing")
    add_deprecated(p, "--on_miss", "on_miss", "(a region outside the field of view contributes nothing)",
                   {"empty": "empty", "*": "removed: a region outside the field of view contributes nothing"})
    add_output_type_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    dicom_plan = plan_dicom_outputs(args)   # DICOM inputs checked before any prediction
    from ..inference.multi_predictor import MultiModelPredictor
    from ..inference.multi_spec import load_spec
    spec = load_spec(args.spec)
    # checked before any model is loaded
    anatomy, device = anatomy_and_device(args)
    src = Path(args.i)
    from ..training.trainer_path import ensure_ext_trainer_path
    ensure_ext_trainer_path()                 # models trained with the CTARR trainers are found
    n_ch = spec.models[0].n_channels
    with tempfile.TemporaryDirectory(prefix="ctarr_inputs_") as tmp:
        source = prepare_inputs(src, Path(tmp))
        if isinstance(source, str):
            lists = {c: [str(f) for f in files]
                     for c, files in group_channels(Path(source), spec.file_ending, n_ch, "the models take").items()}
            if not lists:
                raise CTARRError(f"{source} holds no images named CASE_0000{spec.file_ending}")
        else:
            if n_ch != 1:
                raise CTARRError(f"the models take {n_ch} channels; give a folder with CASE_XXXX files")
            lists = {case_id(files[0]): files for files in source}
        check_output_folder(args.o)
        atlas = Atlas.load(atlas_named_by([m.region_ref for m in spec.models], args.atlas))   # SET:REGION: its atlas
        for m in spec.models:
            check_region_atlas(m.region, atlas.atlas_id, WarningLog())
        predictor = MultiModelPredictor(spec, anatomy, atlas, device,
                                        args.on_untrusted, args.step_size, not args.disable_tta,
                                        not args.not_on_device, args.verbose, not args.disable_progress_bar,
                                        crops=args.crops)
        reports = predictor.predict_files(lists, args.o, overwrite=not args.continue_prediction)
    for case, r in reports.items():
        parts = [f"{m['name']} {m['status']} ({m['voxels_won']} vox)" for m in r["models"]]
        print(f"{case}: " + ", ".join(parts) + f"; overlap {r['overlap_voxels']} vox", file=sys.stderr)
    for case, err in predictor.failed.items():
        print(f"error: {case}: {err}", file=sys.stderr)
    if predictor.failed:
        print(f"error: {len(predictor.failed)} of {len(lists)} case(s) not predicted: {', '.join(predictor.failed)}",
              file=sys.stderr)
    partly = [c for c, r in reports.items() if any(m["status"] == "failed" for m in r["models"])]
    if partly:                                  # a model that could not plan the case: its labels are missing
        print(f"error: {len(partly)} case(s) with a model that failed: {', '.join(partly)}", file=sys.stderr)
    return max(1 if predictor.failed or partly else 0, write_dicom_outputs(dicom_plan, args.o))


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
