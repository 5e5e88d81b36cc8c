"""nnUNetv2_ctarr_import_ctarr: import the original CTARR's atlas and region boxes.

Reads ``ctarr/file_storage/seg_atlas.npy`` and every ``<region>.npy`` of a checkout of
github.com/ThomasBudd/ctarr (Apache-2.0) and writes them in this package's formats as an atlas
set ``FOLDER/NAME/`` (``atlas.npz``, ``regions/<region>.json``, ``NOTICE``), replacing an earlier
import of that name. FOLDER defaults to the user data folder ($NNUNET_CTARR_DATA, else
$XDG_DATA_HOME/nnunet_ctarr, else ~/.local/share/nnunet_ctarr); there the set is selected by
name: ``-atlas NAME -r NAME:REGION`` (``-r NAME:all``: every region). Conventions: docs/ctarr_import.md.
"""
from __future__ import annotations

from pathlib import Path

from ..core.base.user_data import ENV, data_root
from ..core.build.atlas_set import write_set
from ..core.build.ctarr_import import convert, notice, read_checkout
from .common import parse, run_cli
from .options import Parser

EPILOG = """examples:
  git clone https://github.com/ThomasBudd/ctarr
  nnUNetv2_ctarr_import_ctarr ctarr
  nnUNetv2_ctarr_crop -i ct.nii.gz -anatomy_seg ct_totalseg.nii.gz -atlas ctarr -r ctarr:brain -o out
"""


def build_parser() -> Parser:
    ap = Parser(prog="nnUNetv2_ctarr_import_ctarr", description=__doc__, epilog=EPILOG)
    ap.add_argument("checkout", metavar="CTARR_CHECKOUT", help="a checkout of github.com/ThomasBudd/ctarr "
                                                                 "(or its ctarr/ or ctarr/file_storage/ folder)")
    ap.add_argument("-o", dest="output", default=None,
                    help=f"folder that receives NAME/ (default: the user data folder: ${ENV}, else "
                         "~/.local/share/nnunet_ctarr)")
    ap.add_argument("--name", default="ctarr", help="name of the atlas set (default: ctarr)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    checkout = read_checkout(args.checkout)
    imported = convert(checkout)
    root = Path(args.output).expanduser() if args.output else data_root()
    folder = write_set(imported.atlas, imported.regions, notice(imported), root, args.name)
    a = imported.atlas
    commit = checkout.commit[:12] if checkout.commit else "unknown: no .git"
    print(f"ctarr checkout {checkout.root} (commit {commit}) -> {folder}")
    print(f"atlas {a.atlas_id}: grid {' x '.join(map(str, a.shape_zyx[::-1]))} (x, y, z) at {a.spacing[0]:g} mm, "
          f"groups without data: {', '.join(a.meta['groups_without_data']) or 'none'}")
    print("axes: " + "; ".join(imported.axis_map.describe()))
    print(f"{len(imported.regions)} region(s), margin 10 mm: {', '.join(r.name for r in imported.regions) or 'none'}")
    for r in imported.regions:
        share = r.provenance.get("atlas_mass_in_box", {}).get("share", 1.0)
        if share < 0.5:
            print(f"warning: region {r.name} holds only {share:.0%} of the atlas "
                  f"{'+'.join(r.provenance['atlas_mass_in_box']['groups'])} (with its 10 mm margin)")
    same_root = root.resolve() == data_root().resolve()
    print(f"use: -atlas {args.name} -r {args.name}:REGION" if same_root else
          f"use: {ENV}={root} and -atlas {args.name} -r {args.name}:REGION, or -atlas {folder / 'atlas.npz'} "
          f"-r {folder / 'regions' / 'REGION.json'}")
    return 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
