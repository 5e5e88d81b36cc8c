"""The one CLI convention of nnunet-ctarr and the option groups every command shares.

* Every option is accepted with one dash (nnU-Net's habit: ``-anatomy_seg``) and with two
  (``--anatomy_seg``); :class:`Parser` adds the other spelling to every option it is given.
* The anatomy options (``-anatomy_seg``, ``-anatomy_format``, ``-anatomy_model`` (a model
  folder, ``totalsegmentator[:3mm|:6mm]`` or ``hu``) with its folds and checkpoint), the atlas and
  the device are defined here once and used by every command that locates.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..core.anatomy import totalseg_weights
from ..core.anatomy.groups import ANATOMY_FORMATS
from ..core.anatomy.sources import PrecomputedAnatomy
from ..core.base.errors import CTARRError
from ..core.regions.model_config import CROP_MODES


def both_spellings(names: tuple[str, ...]) -> tuple[str, ...]:
    """``("-x",)`` -> ``("-x", "--x")``; ``("--name",)`` -> ``("--name", "-name")``."""
    out = list(names)
    for n in names:
        bare = n.lstrip("-")
        for other in (f"-{bare}", f"--{bare}"):
            if other not in out:
                out.append(other)
    return tuple(out)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` where every option works with one and with two dashes
    (no abbreviations, raw description/epilog formatting)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        if names and all(n.startswith("-") for n in names):
            names = both_spellings(names)
        return super().add_argument(*names, **kwargs)


#: what a command says when it uses the HU anatomy because no anatomy option was given
HU_DEFAULT_NOTE = ("from the CT's HU values (no -anatomy_seg or -anatomy_model given: -anatomy_model hu; "
                   "TotalSegmentator maps or weights place tighter crops, docs/anatomy.md)")

#: ``-anatomy_model`` keywords besides a model folder (help texts; ``core.totalseg_weights``, ``core.hu_anatomy``)
ANATOMY_MODEL_KEYWORDS = ("totalsegmentator", "totalsegmentator:3mm", "totalsegmentator:6mm", "hu")


def add_anatomy_args(p: argparse.ArgumentParser, model: bool = True, required: bool = False) -> None:
    """``-anatomy_seg`` and ``-anatomy_format``; with ``model`` (every command that locates) also
    ``-anatomy_model`` and its ``-anatomy_folds`` / ``-anatomy_chk``. ``required`` (only without
    ``model``): argparse demands ``-anatomy_seg``; otherwise :func:`anatomy_source` demands one."""
    p.add_argument("-anatomy_seg", default=None, required=required and not model,
                   help="anatomy label file or folder (TotalSegmentator v1/v2 map, its per-structure mask "
                        "folder, or a 19-class map); a folder is matched by case id")
    p.add_argument("-anatomy_format", default="auto", choices=ANATOMY_FORMATS,
                   help="format of -anatomy_seg (default: detected)")
    if model:
        p.add_argument("-anatomy_model", default=None,
                       help="instead of -anatomy_seg: predict the anatomy with an nnU-Net model folder (labels: "
                            "CTARR groups or TotalSegmentator names), or a keyword: totalsegmentator (= "
                            "totalsegmentator:3mm, TotalSegmentator's 3 mm total model), totalsegmentator:6mm (its "
                            "6 mm model; both from TotalSegmentator's weights folder, docs/anatomy.md), hu (HU "
                            "thresholds, no model; the default when neither -anatomy_seg nor -anatomy_model is given); "
                            "runs on -device")
        p.add_argument("-anatomy_folds", nargs="+", default=None,
                       help="folds of -anatomy_model (default: all found; 0 for totalsegmentator)")
        p.add_argument("-anatomy_chk", default="checkpoint_final.pth", help="checkpoint of -anatomy_model")
        p.add_argument("--anatomy_disable_tta", action="store_true",
                       help="-anatomy_model without test-time mirroring (the CTARR anatomy trainer mirrors in z: "
                            "about half the network time; the predict commands' --disable_tta also does this)")


def add_atlas_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-atlas", default=None, help="atlas .npz, or the name of an imported atlas set (nnUNetv2_ctarr_"
                                                "import_ctarr; its regions: -r NAME:REGION) (default: the shipped "
                                                "starter atlas)")


def add_device_arg(p: argparse.ArgumentParser, default: str = "cpu",
                   what: str = "an anatomy model (-anatomy_model; the registration runs on the CPU)") -> None:
    p.add_argument("-device", default=default, help=f"torch device for {what} (cpu, cuda, cuda:1, mps)")


def add_workers_arg(p: argparse.ArgumentParser, default: int = 1) -> None:
    p.add_argument("-np", type=int, default=default,
                   help=f"worker processes (default {default}); torch threads per worker = cores // np; "
                        "results are identical to -np 1")


def add_parts_args(p: argparse.ArgumentParser) -> None:
    """nnU-Net's sharding: part ``k`` of ``N`` takes every N-th case from the k-th (sorted order)."""
    p.add_argument("-num_parts", type=int, default=1, help="split the cases into this many parts (default 1)")
    p.add_argument("-part_id", type=int, default=0, help="which part this run does (0 .. num_parts-1)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="skip cases already done in the output folder with the same input, settings and version")


def select_part(items: list, args) -> list:
    """The items of part ``args.part_id`` of ``args.num_parts`` (every case in exactly one part)."""
    if args.num_parts < 1 or not 0 <= args.part_id < args.num_parts:
        raise CTARRError(f"-part_id must be in 0 .. {args.num_parts - 1} and -num_parts >= 1 "
                         f"(got -part_id {args.part_id} -num_parts {args.num_parts})")
    return items[args.part_id::args.num_parts]


def part_suffix(args) -> str:
    return f".part{args.part_id}of{args.num_parts}" if args.num_parts > 1 else ""


def add_verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="more log output")


def anatomy_source(args, device: str = "cpu", step_size: float = 0.5, disable_tta: bool = False,
                   npp: int = 2, nps: int = 2, verbose: bool = False):
    """The anatomy source of parsed arguments (exactly one of ``-anatomy_seg`` / ``-anatomy_model``):
    precomputed maps, an nnU-Net model folder, TotalSegmentator's model (found as TotalSegmentator
    finds it) or the HU anatomy. nnU-Net is imported only when a model is used."""
    model = getattr(args, "anatomy_model", None)
    if args.anatomy_seg and model:
        raise CTARRError("give one anatomy source: -anatomy_seg FILE_OR_FOLDER or -anatomy_model "
                         f"MODEL_FOLDER|{'|'.join(ANATOMY_MODEL_KEYWORDS)} (none: the HU anatomy)")
    if not (args.anatomy_seg or hasattr(args, "anatomy_model")):
        raise CTARRError("give the anatomy: -anatomy_seg FILE_OR_FOLDER")
    if args.anatomy_seg:
        return PrecomputedAnatomy(args.anatomy_seg, args.anatomy_format)
    if not model or model.strip().lower() == "hu":
        from ..core.anatomy.hu_anatomy import HUAnatomy
        if not model:
            print(f"anatomy: {HU_DEFAULT_NOTE}", file=sys.stderr)
        return HUAnatomy(getattr(args, "atlas", None), default=not model)
    folds = None if args.anatomy_folds is None else [f if f == "all" else int(f) for f in args.anatomy_folds]
    name = None
    if totalseg_weights.model_for(model) is not None:
        folder, folds, ts = totalseg_weights.resolve(model, folds, args.anatomy_chk)
        model, name = folder, ts.keyword
    from ..inference.anatomy_model import ModelAnatomy
    disable_tta = disable_tta or getattr(args, "anatomy_disable_tta", False)
    return ModelAnatomy(model, folds, args.anatomy_chk, device, step_size, disable_tta, npp, nps, verbose, name=name)


# ---------------------------------------------------------------------- nnU-Net inference flags
def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        return default


def add_inference_args(p: argparse.ArgumentParser, npp_help: str | None = None) -> None:
    """The sliding-window/device flags of ``nnUNetv2_predict`` (same names and defaults)."""
    p.add_argument("-step_size", type=float, default=0.5)
    p.add_argument("--disable_tta", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("-npp", type=int, default=env_int("nnUNet_npp", 3), help=npp_help)
    p.add_argument("-nps", type=int, default=env_int("nnUNet_nps", 3), help=npp_help)
    add_device_arg(p, "cuda", "nnU-Net")
    p.add_argument("--disable_progress_bar", action="store_true")
    p.add_argument("--not_on_device", action="store_true")


def add_crops_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--crops", choices=list(CROP_MODES), default=None,
                   help="fitted: the region's boxes merged and grown with real image up to the size the model's "
                        "sliding-window tiles cover anyway (no extra network cost); exact: the region boxes. "
                        "Default: the model's ctarr.json (exact for models trained on crops), else fitted")


def inference_device(name: str):
    """``-device`` as a torch device; on CPU all cores are used (as ``nnUNetv2_predict``)."""
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise CTARRError(f"-device must be cpu, cuda or mps, got {name}")
    import torch
    if name == "cpu":
        import multiprocessing
        torch.set_num_threads(multiprocessing.cpu_count())
    return torch.device(name)


def inference_anatomy_and_device(args):
    """(anatomy source, torch device) of the nnU-Net commands; the anatomy model runs with the
    same sliding-window settings and worker counts as the main model."""
    anatomy = anatomy_source(args, args.device, args.step_size, args.disable_tta, args.npp, args.nps, args.verbose)
    return anatomy, inference_device(args.device)
