"""The one CLI vocabulary of nnunet-ctarr and the option groups every command shares.

* Every long option is accepted with one dash (nnU-Net's habit: ``-anatomy_seg``) and with two
  (``--anatomy_seg``); :class:`Parser` adds the other spelling. No abbreviation is accepted in
  either spelling (argparse takes single-dash prefixes even with ``allow_abbrev=False``).
* One word per idea, on every command: ``-r/--regions`` (``-region`` kept), ``--margin`` the extra
  margin in mm on top of a region's own, ``--on_untrusted {whole,skip,anyway}`` the one fallback,
  ``--qc`` a flag, ``-device`` the torch device of an anatomy model (the registration runs on the CPU).
  Old spellings still work for one release and say so: :func:`add_deprecated`.
* The anatomy options (``-anatomy_seg``, ``-anatomy_format``, ``-anatomy_model`` (a model
  folder or a keyword of ``core.anatomy.sources.ANATOMY_KEYWORDS``) with its folds and
  checkpoint), the atlas and the device are defined here once.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..core.anatomy.groups import ANATOMY_FORMATS
from ..core.anatomy.sources import ANATOMY_KEYWORDS, AnatomySource
from ..core.base.errors import CTARRError
from ..core.localise.decision import DEPRECATED_ON_UNTRUSTED, ON_UNTRUSTED
from ..core.regions.model_config import CROP_MODES


def both_spellings(names: tuple[str, ...]) -> tuple[str, ...]:
    """``("-name",)`` -> ``("-name", "--name")``; ``("--name",)`` -> ``("--name", "-name")``; a
    one-letter ``-x`` stays as it is."""
    out = list(names)
    for n in names:
        bare = n.lstrip("-")
        if len(bare) == 1:
            continue
        for other in (f"-{bare}", f"--{bare}"):
            if other not in out:
                out.append(other)
    return tuple(out)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` where every long option works with one and with two dashes,
    nothing is abbreviated, and description/epilog keep their formatting."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        if names and all(n.startswith("-") for n in names):
            names = both_spellings(names)
        return super().add_argument(*names, **kwargs)

    def _get_option_tuples(self, option_string: str) -> list:
        """No prefix matching at all (argparse matches single-dash prefixes even without abbreviations)."""
        return []


def warn_deprecated(old: str, new: str) -> None:
    print(f"warning: {old} is deprecated and will be removed in the next release; use {new}", file=sys.stderr)


class _Deprecated(argparse.Action):
    """An old option spelling: stores into the new option's ``dest`` (values mapped) and warns."""

    def __init__(self, option_strings, dest, new: str = "", values: dict | None = None, note: str = "", **kwargs):
        self.new, self.values, self.note = new, values or {}, note
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        if self.values and value not in self.values:
            parser.error(f"{option_string} {value}: {self.values.get('*', 'not supported any more')}; use {self.new}")
        mapped = self.values.get(value, value)
        if self.values and self.new.startswith("("):       # an option that is gone: say what happens now
            print(f"warning: {option_string} {value} is deprecated and does nothing: {self.new.strip('()')}",
                  file=sys.stderr)
        else:
            new = (f"{self.new} {mapped}" if self.values else self.new) + (f" ({self.note})" if self.note else "")
            warn_deprecated(f"{option_string} {value}" if self.values else option_string, new)
        setattr(namespace, self.dest, mapped)


def add_deprecated(p: argparse.ArgumentParser, old: str, dest: str, new: str, values: dict | None = None,
                   note: str = "", **kwargs) -> None:
    """``old`` (hidden from help) as an alias of the option ``new`` storing into ``dest``;
    ``values``: old value -> new value (any other value is refused with the text under ``"*"``)."""
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, values=values, note=note, **kwargs)


def _fallback(value: str) -> str:
    """An ``--on_untrusted`` value; the old ones (full, crop, refuse, mark) are mapped and warned about."""
    if value in DEPRECATED_ON_UNTRUSTED:
        warn_deprecated(f"--on_untrusted {value}", f"--on_untrusted {DEPRECATED_ON_UNTRUSTED[value]}")
        return DEPRECATED_ON_UNTRUSTED[value]
    return value


#: what --on_untrusted does, in every command's help
ON_UNTRUSTED_HELP = ("when the trust rule refuses the localisation (docs/trust.md): the whole image stands in for the "
                     "crop (whole{d_whole}: nothing lost), nothing for that case and region (skip{d_skip}), or the "
                     "crop anyway, marked untrusted (anyway{d_anyway}); the sidecar and the report say why")


def add_fallback_arg(p: argparse.ArgumentParser, default: str = "whole", choices: tuple[str, ...] = ON_UNTRUSTED,
                     what: str = "") -> None:
    """``--on_untrusted {whole,skip,anyway}``, the one fallback of every command."""
    marks = {f"d_{c}": (", default" if c == default else "") for c in ON_UNTRUSTED}
    p.add_argument("--on_untrusted", choices=choices, default=default, type=_fallback,
                   help=what or ON_UNTRUSTED_HELP.format(**marks))


def add_regions_arg(p: argparse.ArgumentParser, many: bool = True, required: bool = False) -> None:
    """``-r/--regions`` (and ``-region``): region names, region .json files, or ``all``."""
    p.add_argument("-r", "--regions", "-region", dest="regions", nargs="+" if many else None, required=required,
                   default=None,
                   help="region name(s) (see nnUNetv2_ctarr_crop --list_regions), region .json file(s), or 'all' "
                        "(every built-in region); several regions share one registration per scan" if many else
                        "region name or region .json")


def add_margin_arg(p: argparse.ArgumentParser, default: float | None = 0.0, note: str = "") -> None:
    """``--margin MM``: the extra margin on top of a region's own (every command means the same)."""
    shown = default if default is not None else note
    p.add_argument("--margin", type=float, default=default,
                   help=f"extra margin in mm on top of the region's own (default {shown})")


def add_qc_arg(p: argparse.ArgumentParser, what: str = "a QC picture <case>_<region>_qc.png per case and region"
               ) -> None:
    p.add_argument("--qc", action="store_true", help=f"write {what}")


#: what a command says when it uses the HU anatomy because no anatomy option was given
HU_DEFAULT_NOTE = ("from the CT's HU values (no -anatomy_seg or -anatomy_model given: -anatomy_model hu; "
                   "TotalSegmentator maps or weights place tighter crops, docs/anatomy.md)")


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
        keywords = "; ".join(f"{k}: {v}" for k, v in ANATOMY_KEYWORDS.items())
        p.add_argument("-anatomy_model", default=None,
                       help="instead of -anatomy_seg: predict the anatomy with an nnU-Net model folder (labels: "
                            f"CTARR groups or TotalSegmentator names), or a keyword ({keywords}); runs on -device")
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
                   what: str = "the anatomy model (-anatomy_model); the registration runs on the CPU") -> None:
    p.add_argument("-device", default=default, help=f"torch device of {what} (cpu, cuda, cuda:1, mps)")


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
    p.add_argument("-v", "--verbose", action="store_true", help="more log output (and the traceback of a failed case)")


def anatomy_source(args, device: str = "cpu", step_size: float = 0.5, disable_tta: bool = False,
                   npp: int = 2, nps: int = 2, verbose: bool = False, atlas=None) -> AnatomySource:
    """The anatomy source of parsed arguments (at most one of ``-anatomy_seg`` / ``-anatomy_model``;
    none: the HU anatomy, said on stderr) through ``nnunet_ctarr.api.anatomy_source``; ``atlas``: the
    atlas loaded already (the HU anatomy uses it; default: ``-atlas``)."""
    from ..api import anatomy_source as source_of
    model = getattr(args, "anatomy_model", None)
    if args.anatomy_seg and model:
        raise CTARRError("give one anatomy source: -anatomy_seg FILE_OR_FOLDER or -anatomy_model "
                         f"MODEL_FOLDER|{'|'.join(ANATOMY_KEYWORDS)} (none: the HU anatomy)")
    if not (args.anatomy_seg or hasattr(args, "anatomy_model")):
        raise CTARRError("give the anatomy: -anatomy_seg FILE_OR_FOLDER")
    if not args.anatomy_seg and not model:
        print(f"anatomy: {HU_DEFAULT_NOTE}", file=sys.stderr)
    folds = None if getattr(args, "anatomy_folds", None) is None else \
        [f if f == "all" else int(f) for f in args.anatomy_folds]
    return source_of(args.anatomy_seg or model, kind="map" if args.anatomy_seg else "model",
                     fmt=args.anatomy_format, atlas=atlas if atlas is not None else getattr(args, "atlas", None),
                     device=device, folds=folds, checkpoint=getattr(args, "anatomy_chk", "checkpoint_final.pth"),
                     step_size=step_size, disable_tta=disable_tta or getattr(args, "anatomy_disable_tta", False),
                     npp=npp, nps=nps, verbose=verbose)


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
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise CTARRError(f"-device {name}: no CUDA device here (torch {torch.__version__}); use -device cpu")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise CTARRError("-device mps: no MPS device here; use -device cpu")
    return torch.device(name)


def inference_anatomy_and_device(args):
    """(anatomy source, torch device) of the nnU-Net commands; the anatomy model runs with the
    same sliding-window settings and worker counts as the main model."""
    anatomy = anatomy_source(args, args.device, args.step_size, args.disable_tta, args.npp, args.nps, args.verbose)
    return anatomy, inference_device(args.device)
