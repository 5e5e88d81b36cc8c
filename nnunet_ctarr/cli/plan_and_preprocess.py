"""nnUNetv2_ctarr_plan_and_preprocess: fingerprint -> CTARR 3 mm plan -> preprocessing.

The same steps as ``nnUNetv2_plan_and_preprocess``, with the planner of
``nnunet_ctarr.planners`` (3 mm isotropic, 64^3 patch, 3d_fullres only, plans name
``nnUNetPlans_CTARR3mm``). Needs the usual ``nnUNet_raw`` and ``nnUNet_preprocessed``.
"""
from __future__ import annotations

import os

from ..core.base.errors import CTARRError
from .common import parse, run_cli
from .options import Parser, add_verbose_arg


def build_parser() -> Parser:
    ap = Parser(prog="nnUNetv2_ctarr_plan_and_preprocess", description=__doc__)
    ap.add_argument("-d", nargs="+", type=int, required=True, help="dataset id(s)")
    ap.add_argument("-np", type=int, default=4, help="processes for fingerprint and preprocessing")
    ap.add_argument("--verify_dataset_integrity", action="store_true")
    ap.add_argument("--no_pp", action="store_true", help="plan only")
    add_verbose_arg(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    missing = [k for k in ("nnUNet_raw", "nnUNet_preprocessed") if not os.environ.get(k)]
    if missing:
        raise CTARRError(f"set {' and '.join(missing)} (nnU-Net's data folders) first")
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiment_dataset,
        preprocess,
    )

    from ..training.planners import PLANS_NAME, CTARR3mmPlanner
    for d in args.d:
        try:
            extract_fingerprints([d], num_processes=args.np, check_dataset_integrity=args.verify_dataset_integrity,
                                 verbose=args.verbose)
        except (RuntimeError, AssertionError, FileNotFoundError) as e:
            raise CTARRError(f"dataset {d}: fingerprint extraction failed: {str(e).splitlines()[0][:200]}") from None
        plan_experiment_dataset(d, CTARR3mmPlanner, overwrite_plans_name=PLANS_NAME)
        if not args.no_pp:
            preprocess([d], plans_identifier=PLANS_NAME, configurations=("3d_fullres",), num_processes=(args.np,),
                       verbose=args.verbose)
        print(f"dataset {d}: plans {PLANS_NAME} (3d_fullres, 3 mm, 64^3) "
              + ("planned" if args.no_pp else "planned and preprocessed"))
    return 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
