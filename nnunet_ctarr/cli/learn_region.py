"""nnUNetv2_ctarr_learn_region: learn a region (boxes in atlas mm) from a labelled nnU-Net dataset.

Paper 3.4: every training case's anatomy is registered to the atlas, the chosen labels are
warped into atlas space, the heatmap (share of scans showing the labels, over the scans whose
field of view covers the voxel) is thresholded, connected components become boxes, overlapping
boxes are merged, and the margin is stored with the region.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.anatomy.atlas import Atlas
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.images import read_image
from ..core.base.nnunet_format import load_raw_dataset
from ..core.build.region_learning import learn_region
from ..core.localise.settings import RegistrationSettings
from .common import parse, run_cli
from .options import (
    Parser,
    add_anatomy_args,
    add_atlas_arg,
    add_deprecated,
    add_device_arg,
    add_verbose_arg,
    anatomy_source,
)

EPILOG = """example:
  nnUNetv2_ctarr_learn_region -d 3 -l liver -name liver_ds3 -anatomy_seg totalseg_maps/ -o liver_ds3.json
  nnUNetv2_ctarr_crop -i ct.nii.gz --anatomy_seg ct_total.nii.gz -r liver_ds3.json -o crops/
"""


def build_parser() -> Parser:
    p = Parser(prog="nnUNetv2_ctarr_learn_region", description=__doc__, epilog=EPILOG)
    p.add_argument("-d", required=True, help="dataset: id, DatasetXXX_Name, or folder (imagesTr + labelsTr)")
    p.add_argument("-l", nargs="+", default=None, help="label names or values forming the region (default: all "
                                                       "foreground labels)")
    p.add_argument("-name", required=True, help="region name")
    p.add_argument("-o", default=None, help="output region .json (default: NAME.json)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="heatmap threshold: share of scans (default 0 = any scan; paper 3.4)")
    p.add_argument("--region_margin", type=float, default=10.0,
                   help="the region's own margin in mm, stored with it (default 10; commands add --margin on top)")
    add_deprecated(p, "--margin", "region_margin", "--region_margin", type=float)
    add_device_arg(p)
    add_atlas_arg(p)
    add_verbose_arg(p)
    add_anatomy_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    ds = load_raw_dataset(args.d, need_labels=True)
    labels = ds.label_values(args.l)
    anatomy = anatomy_source(args, device=args.device, verbose=args.verbose)
    atlas = Atlas.load(args.atlas)
    anatomy.prepare({c.case: [str(f) for f in c.images] for c in ds.training})
    values = np.array(list(labels.values()))
    errors: list[str] = []

    def cases():
        for c in ds.training:
            try:
                lab = read_image(c.label)
                roi = sitk.GetImageFromArray(np.isin(sitk.GetArrayViewFromImage(lab), values).astype(np.uint8))
                roi.CopyInformation(lab)
                yield c.case, anatomy.load(c.case, WarningLog()), roi
            except CTARRError as e:
                errors.append(f"{c.case}: {e}")

    learned = learn_region(cases(), atlas, args.name, args.threshold, args.region_margin, RegistrationSettings(),
                           provenance={"dataset": ds.folder.name, "labels": labels})
    out = Path(args.o or f"{args.name}.json")
    learned.region.save(out)
    skipped = errors + learned.skipped
    print(f"region '{args.name}' from {learned.n_scans} of {len(ds.training)} training scans of {ds.folder.name} "
          f"(labels {', '.join(labels)}; threshold {args.threshold}, margin {args.region_margin} mm) -> {out}")
    for k, (lo, hi) in enumerate(learned.region.boxes_mm):
        size = hi - lo
        print(f"  box {k}: {size[0]:.0f} x {size[1]:.0f} x {size[2]:.0f} mm (x y z, without margin), "
              f"atlas mm {np.round(lo).astype(int).tolist()} .. {np.round(hi).astype(int).tolist()}")
    for s in skipped:
        logging.getLogger("nnunet_ctarr").warning(f"not used: {s}")
    return 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
