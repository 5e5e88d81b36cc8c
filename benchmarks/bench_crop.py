"""Batch throughput of nnUNetv2_ctarr_crop on 3 mm CTs with precomputed anatomy.

    python benchmarks/bench_crop.py [--n 24] [--region liver] [--out docs/benchmark_crop.json]

Writes ``n`` 3 mm cases (the two bundled real subjects and perturbed copies of them: field
of view cuts, 90-degree rotations, z flips, zoom) into a temporary folder, runs the crop CLI
once over the whole folder (one process, like a user would) and reports wall time per case
and the per-stage seconds recorded in each case's sidecar.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ctarr.core.base.images import read_image
from nnunet_ctarr.evaluation.perturbations import standard_perturbations

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = {
    "abdomen": ("totalseg_example/example_ct.nii.gz", "totalseg_example/example_ct_totalseg_v2.nii.gz"),
    "chest": ("chest_lidc/chest_ct_3mm.nii.gz", "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz"),
}


def make_cases(data: Path, folder: Path, n: int) -> int:
    (folder / "images").mkdir(parents=True)
    (folder / "anatomy").mkdir()
    cases = []
    for subj, (img_f, lab_f) in SUBJECTS.items():
        for p in standard_perturbations(read_image(data / img_f), read_image(data / lab_f)):
            cases.append((f"{subj}_{p.name}", p.image, p.labels))
    cases = cases[:n]
    for name, img, lab in cases:
        sitk.WriteImage(img, str(folder / "images" / f"{name}.nii.gz"))
        sitk.WriteImage(lab, str(folder / "anatomy" / f"{name}.nii.gz"))
    return len(cases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--region", default="liver")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = make_cases(Path(args.data), tmp, args.n)
        cmd = [
            str(Path(sys.executable).parent / "nnUNetv2_ctarr_crop"),
            "-i",
            str(tmp / "images"),
            "--anatomy_seg",
            str(tmp / "anatomy"),
            "-r",
            args.region,
            "-o",
            str(tmp / "out"),
            "--device",
            args.device,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):  # 1: some case not cropped as trusted (reported below)
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            sys.exit(proc.returncode)
        sides = [json.loads(p.read_text()) for p in sorted((tmp / "out").glob("*.ctarr.json"))]
    per_case = [sum(v for k, v in s["seconds"].items() if not k.startswith("registration_")) for s in sides]
    stages = sorted({k for s in sides for k in s["seconds"]})
    result = {
        "exit_code": proc.returncode,
        "summary": proc.stdout.strip().splitlines(),
        "command": " ".join(
            [
                "nnUNetv2_ctarr_crop",
                "-i",
                "IMAGES",
                "--anatomy_seg",
                "ANATOMY",
                "-r",
                args.region,
                "-o",
                "OUT",
                "--device",
                args.device,
            ]
        ),
        "n_cases": n,
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "wall_seconds_total": round(wall, 2),
        "wall_seconds_per_case_incl_startup": round(wall / n, 3),
        "per_case_seconds_median": round(statistics.median(per_case), 3),
        "per_case_seconds_p90": round(float(np.percentile(per_case, 90)), 3),
        "per_case_seconds_max": round(max(per_case), 3),
        "stage_seconds_median": {
            k: round(statistics.median(s["seconds"].get(k, 0.0) for s in sides), 4) for k in stages
        },
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
