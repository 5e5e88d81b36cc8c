"""nnUNetv2_ctarr_prealign and nnUNetv2_ctarr_body_height.

prealign: -fixed FIXED -moving MOVING -> the axis-aligned transform between the two scans (both registered to
the atlas, transforms composed), as an ITK transform file (``OUT.tfm``, usable with
``sitk.Resample(moving, fixed, sitk.ReadTransform(...))`` and as an initial transform in
ANTs/elastix) and ``OUT.json``. Works when the scans overlap little or not at all.

body_height: the atlas z (mm) of every axial slice, and a normalised score, as JSON (and a plot).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.anatomy.atlas import Atlas
from ..core.anatomy.sources import PrecomputedAnatomy
from ..core.base.cases import case_id
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.files import atomic_write, write_json
from ..core.base.images import read_image
from ..core.localise.decision import locate_case
from ..core.localise.prealign import body_height, itk_transform, moving_to_fixed
from .common import parse, run_cli
from .options import (
    Parser,
    add_anatomy_args,
    add_atlas_arg,
    add_device_arg,
    add_fallback_arg,
    add_verbose_arg,
    anatomy_source,
    warn_deprecated,
)


def _locate(image_path: str, anatomy: tuple, atlas: Atlas, on_untrusted: str, what: str = "the scan"):
    """Image, localisation and trust verdict (``anatomy``: a prepared source and the scan's key in
    it), through the one decision's localisation and scan verdict; an untrusted localisation writes
    nothing (one line) unless ``on_untrusted`` is ``anyway`` (the result, marked untrusted)."""
    warnings = WarningLog()
    image = read_image(image_path)
    source, key = anatomy
    located = locate_case(image, source.load(key, warnings), atlas, warnings=warnings)
    trust = located.scan_trust(atlas)
    if not trust.trusted:
        if on_untrusted == "skip":
            raise CTARRError(f"the localisation of {what} is not trusted ({trust.text()}); nothing written "
                             "(--on_untrusted anyway writes the result marked as untrusted)")
        warnings.warn(f"the localisation of {what} is not trusted ({trust.text()}); result marked")
    if located.localisation is None:
        raise CTARRError(f"{what}: no localisation to write ({trust.text()})")
    return image, located.localisation, trust


def _add_common(ap: Parser) -> Parser:
    """Options shared by both commands."""
    add_fallback_arg(ap, default="skip", choices=("skip", "anyway"),
                     what="an untrusted localisation (docs/trust.md): write nothing, one error line (skip, default), "
                          "or write the result with trusted: false and the reasons (anyway)")
    add_atlas_arg(ap)
    add_device_arg(ap)
    add_verbose_arg(ap)
    return ap


def build_prealign_parser() -> Parser:
    ap = Parser(prog="nnUNetv2_ctarr_prealign", description=__doc__)
    ap.add_argument("-fixed", default=None, help="fixed image (file or DICOM folder)")
    ap.add_argument("-moving", default=None, help="moving image (file or DICOM folder)")
    ap.add_argument("images", nargs="*", help=argparse.SUPPRESS)     # deprecated: FIXED MOVING as positionals
    ap.add_argument("-o", dest="out", required=True, help="output prefix: OUT.tfm and OUT.json")
    ap.add_argument("--fixed_anatomy", default=None, help="anatomy map of the fixed image (with --moving_anatomy)")
    ap.add_argument("--moving_anatomy", default=None, help="anatomy map of the moving image (with --fixed_anatomy)")
    add_anatomy_args(ap)    # -anatomy_seg FOLDER (both maps, by case id) or -anatomy_model (both scans)
    return _add_common(ap)


def build_body_height_parser() -> Parser:
    ap = Parser(prog="nnUNetv2_ctarr_body_height", description=__doc__)
    ap.add_argument("-i", dest="image", required=True)
    add_anatomy_args(ap)
    ap.add_argument("-o", dest="out", required=True, help="JSON file")
    ap.add_argument("--plot", default=None, help="PNG of the score curve")
    return _add_common(ap)


def _pair_anatomy(args) -> dict[str, tuple]:
    """``fixed``/``moving`` -> (prepared anatomy source, key): the two maps of ``--fixed_anatomy``
    / ``--moving_anatomy``, or one source for both scans (``-anatomy_seg FOLDER`` matched by case
    id, ``-anatomy_model`` predicting both)."""
    images = {"fixed": args.fixed, "moving": args.moving}
    maps = {"fixed": args.fixed_anatomy, "moving": args.moving_anatomy}
    if any(maps.values()):
        if args.anatomy_seg or args.anatomy_model:
            raise CTARRError("give the anatomy once: --fixed_anatomy and --moving_anatomy, or -anatomy_seg FOLDER, "
                             "or -anatomy_model MODEL")
        if not all(maps.values()):
            raise CTARRError("--fixed_anatomy and --moving_anatomy go together (or use -anatomy_seg FOLDER / "
                             "-anatomy_model MODEL for both scans)")
        out = {r: (PrecomputedAnatomy(maps[r], args.anatomy_format), case_id(images[r])) for r in images}
        for r, (src, key) in out.items():
            src.prepare({key: [images[r]]})
        return out
    source = anatomy_source(args, device=args.device, verbose=args.verbose)
    keys = {r: case_id(images[r]) for r in images} if args.anatomy_seg else {r: r for r in images}
    if keys["fixed"] == keys["moving"]:
        raise CTARRError(f"both scans have the case id {keys['fixed']}: a folder of anatomy maps cannot tell them "
                         "apart; give --fixed_anatomy and --moving_anatomy")
    source.prepare({keys[r]: [images[r]] for r in images})
    return {r: (source, keys[r]) for r in images}


def prealign_main(argv: list[str] | None = None) -> int:
    parser = build_prealign_parser()
    args = parse(parser, argv)
    if args.images:
        if len(args.images) != 2 or args.fixed or args.moving:
            parser.error("give the scans as -fixed FIXED -moving MOVING")
        warn_deprecated("FIXED MOVING as positional arguments", "-fixed FIXED -moving MOVING")
        args.fixed, args.moving = args.images
    if not (args.fixed and args.moving):
        parser.error("missing required argument(s): -fixed and -moving")
    t0 = time.perf_counter()
    atlas = Atlas.load(args.atlas)
    anatomy = _pair_anatomy(args)
    _, fixed, f_trust = _locate(args.fixed, anatomy["fixed"], atlas, args.on_untrusted, "the fixed scan")
    _, moving, m_trust = _locate(args.moving, anatomy["moving"], atlas, args.on_untrusted, "the moving scan")
    A, b = moving_to_fixed(fixed.transform, moving.transform)
    tx = itk_transform(fixed.transform, moving.transform)
    out = Path(args.out)
    tfm, js = Path(f"{out}.tfm"), Path(f"{out}.json")              # a prefix: dots in it are kept
    atomic_write(tfm, ".tfm", lambda tmp: sitk.WriteTransform(tx, tmp))
    write_json(js, {
        "moving_to_fixed": {"matrix": np.round(A, 6).tolist(), "translation_mm": np.round(b, 3).tolist(),
                            "formula": "p_fixed = matrix @ p_moving + translation (world LPS mm)"},
        "itk_transform_file": tfm.name,
        "itk_convention": "maps fixed points to moving points: sitk.Resample(moving, fixed, transform)",
        "trusted": f_trust.trusted and m_trust.trusted,
        "trust": {"fixed": f_trust.to_dict(), "moving": m_trust.to_dict()},
        "fixed_registration": fixed.registration.to_dict(),
        "moving_registration": moving.registration.to_dict(),
        "warnings": list(fixed.warnings) + list(moving.warnings),
        "seconds": round(time.perf_counter() - t0, 3),
    })
    print(f"moving -> fixed: translation {np.round(b, 1).tolist()} mm, per-axis scale (x, y, z of FIXED) "
          f"{np.round(np.abs(A).max(axis=1), 3).tolist()} -> {tfm}")
    return 0


def body_height_main(argv: list[str] | None = None) -> int:
    args = parse(build_body_height_parser(), argv)
    atlas = Atlas.load(args.atlas)
    source = anatomy_source(args, device=args.device, verbose=args.verbose)
    source.prepare({case_id(args.image): [args.image]})
    image, loc, trust = _locate(args.image, (source, case_id(args.image)), atlas, args.on_untrusted)
    lo, hi = atlas.extent()
    res = body_height(image, loc.transform, (float(lo[2]), float(hi[2])))
    res.update(trusted=trust.trusted, trust=trust.to_dict())
    res["registration"] = loc.registration.to_dict()
    res["warnings"] = list(loc.warnings)
    if args.plot and not args.plot.lower().endswith(".png"):
        raise CTARRError(f"--plot {args.plot}: give a .png file name")
    write_json(Path(args.out), res)
    if args.plot:
        _plot(res, Path(args.image).name, Path(args.plot))
    z = res["atlas_z_mm"]
    print(f"{len(z)} slices, atlas z {min(z):.1f} .. {max(z):.1f} mm -> {args.out}")
    return 0


def _plot(res: dict, title: str, path: Path) -> None:
    """The body-height curve as a PNG (written atomically, umask permissions)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.outputs.qc import save_figure
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(res["atlas_z_mm"])), res["atlas_z_mm"])
    ax.set_xlabel(f"slice index (image axis {'xyz'[res['slice_axis_xyz']]})")
    ax.set_ylabel("atlas z (mm, head up)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


def prealign_entry() -> None:
    run_cli(prealign_main)


def body_height_entry() -> None:
    run_cli(body_height_main)
