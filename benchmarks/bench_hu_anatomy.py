"""Seconds per step of the HU anatomy on the two bundled 3 mm scans, and the registration of the
TotalSegmentator map of the same scan for comparison (best of 3 per step).

    python benchmarks/bench_hu_anatomy.py
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
SCANS = {
    "chest_ct_3mm": ("chest_lidc/chest_ct_3mm.nii.gz", "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz"),
    "example_ct": ("totalseg_example/example_ct.nii.gz", "totalseg_example/example_ct_totalseg_v2.nii.gz"),
}


def best(fn, *args, n: int = 3):
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    torch.set_num_threads(2)
    atlas = Atlas.load()
    hu_pose.atlas_views(atlas)
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("| scan | masks | coarse pose | groups | registration (HU) | HU total | registration (TS map) |")
    print("|---|---|---|---|---|---|---|")
    for name, (ct, lab) in SCANS.items():
        img, ts = read_image(DATA / ct), load_anatomy(DATA / lab)
        t_m, m = best(H.hu_masks, img)
        t_p, (tf, _) = best(H.coarse_pose, m, atlas)
        t_g, _ = best(H.label_groups, m, tf, atlas)
        anat = H.hu_anatomy(img, atlas)
        t_r, _ = best(locate, img, anat, atlas)
        t_ts, _ = best(locate, img, ts, atlas)
        total = t_m + t_p + t_g + t_r
        print(f"| {name} | {t_m:.3f} | {t_p:.3f} | {t_g:.3f} | {t_r:.3f} | {total:.3f} | {t_ts:.3f} |")


if __name__ == "__main__":
    main()
