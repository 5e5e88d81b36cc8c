"""The anatomy-source options shared by the CLIs (-anatomy_seg / -anatomy_model)."""
from __future__ import annotations

import argparse

from ..anatomy_source import ModelAnatomy, PrecomputedAnatomy
from ..errors import CTARRError

FORMATS = ["auto", "ts_v2", "ts_v1", "ctarr19", "mask_folder"]


def add_anatomy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-anatomy_seg", type=str, default=None,
                   help="precomputed anatomy maps (TotalSegmentator v1/v2 maps or mask folders, 19-class maps), "
                        "matched by case id")
    p.add_argument("-anatomy_format", type=str, default="auto", choices=FORMATS)
    p.add_argument("-anatomy_model", type=str, default=None,
                   help="nnU-Net model folder predicting the anatomy (CTARR groups or TotalSegmentator names)")
    p.add_argument("-anatomy_folds", nargs="+", type=str, default=None)
    p.add_argument("-anatomy_chk", type=str, default="checkpoint_final.pth")


def anatomy_source(args, device: str = "cpu", step_size: float = 0.5, disable_tta: bool = False,
                   npp: int = 2, nps: int = 2, verbose: bool = False):
    """A PrecomputedAnatomy or ModelAnatomy from parsed arguments (exactly one must be given)."""
    if bool(args.anatomy_seg) == bool(args.anatomy_model):
        raise CTARRError("give exactly one anatomy source: -anatomy_seg FOLDER or -anatomy_model MODEL_FOLDER")
    if args.anatomy_seg:
        return PrecomputedAnatomy(args.anatomy_seg, args.anatomy_format)
    folds = None if args.anatomy_folds is None else [f if f == "all" else int(f) for f in args.anatomy_folds]
    return ModelAnatomy(args.anatomy_model, folds, args.anatomy_chk, device, step_size, disable_tta, npp, nps,
                        verbose)
