"""Registration accuracy and speed: the paper's plain gradient step vs. the default.

    python benchmarks/bench_registration.py [--out docs/registration_benchmark.md]

Accuracy is measured where the answer is known:
* zoom: the scan's spacing is scaled by f (0.85 ... 1.15) with the array unchanged, so the
  found scale must be the unperturbed scale / f (relative error reported per axis, max);
* synthetic: the atlas is replaced by the subject's own masks moved by a known per-axis
  scale and translation; the error is the largest distance between where the found and the
  true transform put the scan's corners (mm).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import LabelScheme
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks
from nnunet_ctarr.core.anatomy.volume import MaskVolume, anatomy_to_volume
from nnunet_ctarr.core.base.errors import WarningLog
from nnunet_ctarr.core.base.images import canonical, read_image
from nnunet_ctarr.core.base.transform import AtlasTransform
from nnunet_ctarr.core.build.atlas_builder import _average
from nnunet_ctarr.core.localise.registration import register
from nnunet_ctarr.core.localise.settings import RegistrationSettings

ROOT = Path(__file__).resolve().parents[1]
LABELS = {
    "abdomen": "totalseg_example/example_ct_totalseg_v2.nii.gz",
    "chest": "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz",
}
CONFIGS = {
    "default = paper (plain GD, step 0.05, halve if gain < 0.005)": RegistrationSettings(),
    "paper step rule, Adam steps 0.02": RegistrationSettings(optimizer="adam", lr=0.02),
    "Adam steps 0.02, halve if gain < 0.002": RegistrationSettings(optimizer="adam", lr=0.02, min_improvement=0.002),
}
ZOOMS = (0.85, 0.9, 1.1, 1.15)
SYNTH = [
    AtlasTransform(0, (False,) * 3, s, t)
    for s, t in (
        ([1.1, 0.9, 1.05], [10, -20, 30]),
        ([0.9, 0.95, 1.12], [-15, 5, -40]),
        ([1.0, 1.0, 1.0], [-20, 35, 88.5]),
    )
]


def volume(labels: sitk.Image, scheme: LabelScheme, zoom: float = 1.0) -> MaskVolume:
    img = sitk.Image(canonical(labels))
    img.SetSpacing([s * zoom for s in img.GetSpacing()])
    return anatomy_to_volume(AnatomyMasks.from_label_image(img, scheme, WarningLog()))


def corner_error(vol: MaskVolume, a: AtlasTransform, b: AtlasTransform) -> float:
    lo, hi = vol.extent()
    c = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    return float(np.abs(a.to_atlas(c) - b.to_atlas(c)).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    atlas = Atlas.load()
    scheme = LabelScheme.named("ts_v2")
    labels = {k: read_image(Path(args.data) / v) for k, v in LABELS.items()}
    vols = {(k, z): volume(lab, scheme, z) for k, lab in labels.items() for z in (1.0,) + ZOOMS}
    register(vols[("abdomen", 1.0)], atlas)  # warm-up
    results = {}
    for name, cfg in CONFIGS.items():
        cfg.device = args.device
        zoom_err, synth_err, times, iters = [], [], [], []
        for subj in labels:
            base = register(vols[(subj, 1.0)], atlas, cfg).transform.scale
            for z in ZOOMS:
                t0 = time.perf_counter()
                r = register(vols[(subj, z)], atlas, cfg)
                times.append(time.perf_counter() - t0)
                iters.append(r.n_iterations)
                zoom_err.append(float(np.abs(r.transform.scale * z / base - 1).max()))
            for tf in SYNTH:
                prob, cov, grid = _average([vols[(subj, 1.0)]], [tf], 3.0, "cpu")
                fixed = MaskVolume(grid.origin, grid.spacing, vols[(subj, 1.0)].observed, prob=prob, coverage=cov)
                r = register(vols[(subj, 1.0)], fixed, cfg)
                synth_err.append(corner_error(vols[(subj, 1.0)], r.transform, tf))
        results[name] = {
            "zoom_scale_rel_error_median": statistics.median(zoom_err),
            "zoom_scale_rel_error_max": max(zoom_err),
            "synthetic_corner_error_mm_median": statistics.median(synth_err),
            "synthetic_corner_error_mm_max": max(synth_err),
            "seconds_median": statistics.median(times),
            "iterations_median": statistics.median(iters),
        }
    lines = [
        "| update rule | zoom: scale error median / max | synthetic: corner error mm median / max | "
        "seconds median | iterations median |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {100 * r['zoom_scale_rel_error_median']:.1f}% / {100 * r['zoom_scale_rel_error_max']:.1f}% | "
            f"{r['synthetic_corner_error_mm_median']:.1f} / {r['synthetic_corner_error_mm_max']:.1f} | "
            f"{r['seconds_median']:.2f} | {r['iterations_median']:.0f} |"
        )
    md = "\n".join(lines)
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
