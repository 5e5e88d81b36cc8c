"""Crops of the bundled abdomen CT through an imported (fabricated) ctarr checkout vs the originals.

Fabricates a checkout of github.com/ThomasBudd/ctarr in its file format from the shipped starter
atlas and regions (``tests/ctarr_fabricate.py``), imports it with ``nnUNetv2_ctarr_import_ctarr``
into a temporary data folder, registers the CT's TotalSegmentator anatomy to the original atlas,
to the original with full coverage (what upstream's format can carry) and to the imported atlas,
and prints, per region, the largest difference of the index boxes in voxels. In-sample: the
abdomen CT is one of the two subjects that built the starter atlas (the point is the conversion).

    python benchmarks/ctarr_import_check.py
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from ctarr_fabricate import fabricate  # noqa: E402

from nnunet_ctarr.cli.import_ctarr import main as import_main  # noqa: E402
from nnunet_ctarr.core.anatomy.atlas import Atlas  # noqa: E402
from nnunet_ctarr.core.anatomy.masks import load_anatomy  # noqa: E402
from nnunet_ctarr.core.base.errors import WarningLog  # noqa: E402
from nnunet_ctarr.core.localise.localisation import locate, plan_region  # noqa: E402
from nnunet_ctarr.core.regions.region import Region, builtin_regions, load_region  # noqa: E402

DATA = REPO / "examples" / "data" / "totalseg_example"


def ranges(image, loc, region, clipped: bool) -> np.ndarray:
    boxes = plan_region(image, loc, region).boxes
    return np.array([[b.start_xyz, b.stop_xyz] if clipped else [b.full_start_xyz, b.full_stop_xyz] for b in boxes])


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        compare(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare(tmp: Path) -> None:
    os.environ["NNUNET_CTARR_DATA"] = str(tmp / "data")
    orig = Atlas.load()
    fabricate(tmp / "ctarr", orig, [Region.from_file(p) for p in builtin_regions().values()])
    import_main([str(tmp / "ctarr")])
    image = sitk.ReadImage(str(DATA / "example_ct.nii.gz"))
    anatomy = load_anatomy(DATA / "example_ct_totalseg_v2.nii.gz", warnings=WarningLog())
    full = replace(orig, coverage=np.ones_like(orig.coverage), meta={}, _cache={})
    lo, lf, li = (locate(image, anatomy, a) for a in (orig, full, Atlas.load("ctarr")))
    print(f"\nscale: original {np.round(lo.transform.scale, 4)}, full coverage {np.round(lf.transform.scale, 4)}, "
          f"imported {np.round(li.transform.scale, 4)}; translation imported - full coverage "
          f"{np.round(li.transform.translation - lf.transform.translation, 3)} mm")
    print("| region | boxes | vs original (crops, voxels) | vs original with full coverage (full boxes, voxels) |")
    print("|---|---|---|---|")
    for name in builtin_regions():
        r, ri = load_region(name), load_region(f"ctarr:{name}")
        d_o = np.abs(ranges(image, li, ri, True) - ranges(image, lo, r, True)).max()
        d_f = np.abs(ranges(image, li, ri, False) - ranges(image, lf, r, False)).max()
        print(f"| {name} | {len(r.boxes_mm)} | {d_o} | {d_f} |")


if __name__ == "__main__":
    main()
