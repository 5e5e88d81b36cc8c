"""nnUNetv2_ctarr_build_atlas: build a CTARR atlas from labelled scans (paper 3.2).

Inputs (any mix): a TotalSegmentator-layout root (``sXXXX/segmentations/<structure>.nii.gz``),
an nnU-Net raw dataset folder (its ``labelsTr``; label names from ``dataset.json``), a folder
of label maps, or label map files / per-structure mask folders.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.anatomy.groups import GROUPS, LabelScheme
from ..core.anatomy.masks import AnatomyMasks, load_anatomy
from ..core.anatomy.volume import anatomy_to_volume
from ..core.base.cases import case_id, is_image_file
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.images import read_image
from ..core.base.nnunet_format import foreground_labels
from ..core.build.atlas_builder import build_atlas
from .common import parse, run_cli
from .options import Parser, add_device_arg, add_verbose_arg

EPILOG = """examples:
  # paper recipe from the public TotalSegmentator dataset (scans showing all 19 groups)
  nnUNetv2_ctarr_build_atlas -i Totalsegmentator_dataset_v201 -o atlas.npz --min_groups 19 --max_scans 40
  # from an nnU-Net dataset with the 19 CTARR labels
  nnUNetv2_ctarr_build_atlas -i $nnUNet_raw/Dataset500_CTARRAnatomy -o atlas.npz
"""


def discover(paths: list[str]) -> list[tuple[str, Path, str]]:
    """(case, path, format) for every labelled scan found in ``paths``."""
    found: list[tuple[str, Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CTARRError(f"input not found: {p}")
        if p.is_file():
            found.append((case_id(p), p, "auto"))
        elif (p / "segmentations").is_dir():
            found.append((p.name, p, "mask_folder"))
        elif (p / "labelsTr").is_dir():
            found += [(case_id(f), f, "nnunet") for f in sorted((p / "labelsTr").iterdir()) if is_image_file(f)]
        else:
            subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "segmentations").is_dir())
            files = sorted(f for f in p.iterdir() if is_image_file(f))
            found += [(d.name, d, "mask_folder") for d in subs] + [(case_id(f), f, "auto") for f in files]
    if not found:
        raise CTARRError(f"no labelled scans found in {paths}")
    return found


def nnunet_scheme(label_file: Path) -> LabelScheme:
    ds = label_file.parent.parent / "dataset.json"
    try:
        dataset_json = json.loads(ds.read_text())
    except (OSError, ValueError) as e:
        raise CTARRError(f"cannot read label names from {ds}: {e}") from None
    names = {v: k for k, v in foreground_labels(dataset_json, str(ds)).items()}
    return LabelScheme(f"nnU-Net dataset {ds.parent.name}", names)


def load_case(path: Path, fmt: str, warnings: WarningLog) -> AnatomyMasks:
    if fmt == "nnunet":
        return AnatomyMasks.from_label_image(read_image(path), nnunet_scheme(path), warnings, path.name)
    return load_anatomy(path, fmt, warnings)


def build_parser() -> Parser:
    ap = Parser(prog="nnUNetv2_ctarr_build_atlas", description=__doc__, epilog=EPILOG)
    ap.add_argument("-i", dest="inputs", nargs="+", required=True)
    ap.add_argument("-o", dest="output", required=True, help="atlas file (.npz)")
    ap.add_argument("--min_groups", type=int, default=0,
                    help="use only scans showing at least this many of the 19 groups")
    ap.add_argument("--max_scans", type=int, default=50, help="pairwise registration is quadratic: use at most this "
                                                              "many scans (those showing the most groups)")
    ap.add_argument("--spacing", type=float, default=3.0)
    add_device_arg(ap, what="warping the masks onto the atlas grid (the registration runs on the CPU)")
    add_verbose_arg(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    cases = discover(args.inputs)
    vols, names, n_groups = [], [], []
    for case, path, fmt in tqdm(cases, desc="reading anatomy", file=sys.stderr, disable=len(cases) < 3):
        try:
            a = load_case(path, fmt, WarningLog())
        except CTARRError as e:
            logging.getLogger("nnunet_ctarr").warning(f"skipped {case}: {e}")
            continue
        v = anatomy_to_volume(a, args.spacing)
        k = int((v.volumes_mm3() > 0).sum())
        if k >= max(args.min_groups, 2):
            vols.append(v), names.append(case), n_groups.append(k)
    if len(vols) < 2:
        raise CTARRError(f"need at least 2 scans with >= {args.min_groups} groups, found {len(vols)}")
    order = np.argsort(n_groups, kind="stable")[::-1][:args.max_scans]
    vols, names = [vols[i] for i in order], [names[i] for i in order]
    atlas = build_atlas(vols, names, args.spacing, device=args.device)
    atlas.meta["provenance"] = f"nnUNetv2_ctarr_build_atlas from {args.inputs}"
    atlas.save(args.output)
    cov = {g: round(float(atlas.prob[i].max()), 2) for i, g in enumerate(GROUPS)}
    print(f"atlas {atlas.atlas_id} from {len(vols)} scan(s) -> {args.output}; grid {atlas.shape_zyx[::-1]} (x,y,z) "
          f"at {args.spacing} mm; groups without data: {atlas.meta['groups_without_data'] or 'none'}")
    if args.verbose:
        print(json.dumps(cov))
    return 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
