"""Seconds per step of the HU anatomy, and the registration of the TotalSegmentator map of the same
scan for comparison (best of 5 per step; the atlas' views are computed once beforehand, as in a batch).

    python benchmarks/bench_hu_anatomy.py

Scans: the native chest (512 x 512 x 133, 0.7 x 0.7 x 2.5 mm; from ../shared/data when there), the
bundled 3 mm chest and the abdomen. The HU anatomy works on a fixed working grid, so its seconds
should not grow with the input's resolution (the block averaging of the first step reads every voxel
once, in C++).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from nnunet_ctarr.core.anatomy import hu_anatomy as H
from nnunet_ctarr.core.anatomy import hu_pose
from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.masks import load_anatomy
from nnunet_ctarr.core.base.images import read_image
from nnunet_ctarr.core.localise.localisation import locate

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
SHARED = Path("/work/shared/data")
SCANS = {
    "chest_ct (native)": (SHARED / "chest_lidc/chest_ct.nii.gz", SHARED / "chest_lidc/chest_ct_totalseg_v2.nii.gz"),
    "chest_ct_3mm": (DATA / "chest_lidc/chest_ct_3mm.nii.gz", DATA / "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz"),
    "example_ct": (
        DATA / "totalseg_example/example_ct.nii.gz",
        DATA / "totalseg_example/example_ct_totalseg_v2.nii.gz",
    ),
}


def best(fn, *args, n: int = 5):
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    torch.set_num_threads(2)
    atlas = Atlas.load()
    t_views, _ = best(lambda: (atlas._cache.pop("hu_views", None), hu_pose.atlas_views(atlas)), n=3)
    print(f"load average {os.getloadavg()[0]:.1f}; atlas views (once per process) {t_views:.3f} s")
    print(
        "| scan | voxels | working grid | masks | coarse pose | refined pose | groups | HU anatomy | "
        "registration (HU) | HU total | registration (TS map) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (ct, lab) in SCANS.items():
        if not ct.exists():
            continue
        img, ts = read_image(ct), load_anatomy(lab)
        t_m, m = best(H.hu_masks, img)
        t_p, (tf, _) = best(H.coarse_pose, m, atlas)
        t_r, (tf, _) = best(hu_pose.refine_pose, m, atlas, tf)
        t_g, _ = best(H.label_groups, m, tf, atlas)
        t_a, anat = best(H.hu_anatomy, img, atlas)
        t_reg, _ = best(locate, img, anat, atlas)
        t_ts, _ = best(locate, img, ts, atlas)
        print(
            f"| {name} | {'x'.join(map(str, img.GetSize()))} | {'x'.join(map(str, m.geometry.size_xyz))} | "
            f"{t_m:.3f} | {t_p:.3f} | {t_r:.3f} | {t_g:.3f} | {t_a:.3f} | {t_reg:.3f} | {t_a + t_reg:.3f} | "
            f"{t_ts:.3f} |"
        )


if __name__ == "__main__":
    main()
