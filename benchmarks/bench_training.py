"""What training the CTARR anatomy model costs: network FLOPs and augmentation throughput.

No GPU is needed (nor used): the network's forward+backward FLOPs per iteration are counted
on the meta device, the data-augmentation pipeline of ``nnUNetTrainerCTARRAnatomy`` is timed
on this CPU, and both are turned into a GPU-time estimate for the paper's 250 000 steps
(docs/training.md). Writes docs/benchmark_training.json and .md.

    python benchmarks/bench_training.py [--samples 40]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
STEPS = 250_000
BATCH = 4
PATCH = (64, 64, 64)
#: effective bf16/fp16 throughput of 3D convolutions under autocast (about a third of the
#: dense peak: A100 312, H100 SXM 989 TFLOPS); an assumption, stated in the output
EFFECTIVE_TFLOPS = {"A100": 100.0, "H100": 250.0}


def network_flops(n_classes: int = 20) -> tuple[float, float]:
    """(GFLOP per training iteration, million parameters) of the planned anatomy network."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    from nnunet_ctarr.trainers.anatomy import nnUNetTrainerCTARRAnatomy
    from nnunet_ctarr.training.planners import ctarr_configuration

    cm = ConfigurationManager(ctarr_configuration())
    with torch.device("meta"):
        net = nnUNetTrainerCTARRAnatomy.build_network_architecture(None, cm, 1, n_classes, True)
        x = torch.randn(BATCH, 1, *PATCH)
        with FlopCounterMode(display=False) as fc:
            out = net(x)
            sum(o.float().mean() for o in out).backward()
    return fc.get_total_flops() / 1e9, sum(p.numel() for p in net.parameters()) / 1e6


def augmentation_seconds(samples: int) -> float:
    """CPU seconds per training sample through the trainer's augmentation (one thread)."""
    import numpy as np

    from nnunet_ctarr.trainers.anatomy import ctarr_training_transforms

    torch.set_num_threads(1)
    initial = (PATCH[0], math.ceil(PATCH[1] * math.sqrt(2) * 1.4), math.ceil(PATCH[2] * math.sqrt(2) * 1.4))
    tr = ctarr_training_transforms(PATCH, [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.125, 0.125, 0.125]])
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.normal(0, 300, (1, *initial)).astype(np.float32))
    seg = torch.from_numpy(rng.integers(0, 20, (1, *initial)).astype(np.int16))
    for _ in range(3):
        tr(image=img.clone(), segmentation=seg.clone())
    t = time.perf_counter()
    for _ in range(samples):
        tr(image=img.clone(), segmentation=seg.clone())
    return (time.perf_counter() - t) / samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()
    gflop, mparams = network_flops()
    aug = augmentation_seconds(args.samples)
    rows = []
    for gpu, tflops in EFFECTIVE_TFLOPS.items():
        gpu_h = STEPS * gflop / (tflops * 1e3) / 3600
        for workers in (8, 16, 32):
            da_h = STEPS * BATCH * aug / workers / 3600
            rows.append(
                {
                    "gpu": gpu,
                    "effective_tflops": tflops,
                    "da_workers": workers,
                    "gpu_compute_h": round(gpu_h, 2),
                    "augmentation_h": round(da_h, 2),
                    "expected_h": round(max(gpu_h, da_h), 2),
                }
            )
    result = {
        "steps": STEPS,
        "batch": BATCH,
        "patch": PATCH,
        "gflop_per_iteration": round(gflop, 1),
        "million_parameters": round(mparams, 2),
        "augmentation_ms_per_sample_1_thread": round(1e3 * aug, 1),
        "cpu": os.cpu_count(),
        "torch": torch.__version__,
        "estimates": rows,
    }
    (ROOT / "docs" / "benchmark_training.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Training cost of the CTARR anatomy model (benchmarks/bench_training.py)",
        "",
        f"- network (nnU-Net plan `nnUNetPlans_CTARR3mm`, 20 outputs): {mparams:.1f} M parameters, "
        f"**{gflop:.0f} GFLOP** forward+backward per iteration (batch {BATCH}, {PATCH[0]}³), counted with "
        "`torch.utils.flop_counter` on the meta device",
        f"- augmentation (Table 5 pipeline, 64×127×127 input per sample): **{1e3 * aug:.0f} ms** per sample on "
        f"one CPU core of this machine ({os.cpu_count()} cores)",
        f"- {STEPS:,} steps (paper) = nnU-Net's 1000 epochs × 250 iterations",
        "",
        "| GPU (assumed effective TFLOPS) | DA workers | GPU compute h | augmentation h | expected h |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['gpu']} ({r['effective_tflops']:.0f}) | {r['da_workers']} | {r['gpu_compute_h']:.1f} | "
            f"{r['augmentation_h']:.1f} | **{r['expected_h']:.1f}** |"
        )
    lines += [
        "",
        "Expected = the slower of GPU compute and CPU augmentation (nnU-Net overlaps them). "
        "The effective TFLOPS are assumptions (about a third of the dense fp16/bf16 peak), not measurements; "
        "no GPU was available to this project.",
    ]
    (ROOT / "docs" / "benchmark_training.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
