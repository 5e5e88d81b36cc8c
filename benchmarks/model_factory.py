"""Randomly initialised nnU-Net model folders, planned by nnU-Net itself (tests, benchmarks).

As in the CTARR paper's speed experiments: real architecture and real sliding window, random
weights. nnU-Net reads its ``nnUNet_raw/preprocessed/results`` paths at import time, so the
folder is built in a subprocess with its own temporary paths::

    python benchmarks/model_factory.py -o MODEL_DIR -i ct1.nii.gz ct2.nii.gz -l lab1.nii.gz lab2.nii.gz \\
        --labels '{"background": 0, "liver": 1}' [--tiny] [--spacing 1.5 1.5 2.5]

The result is ``MODEL_DIR`` with ``dataset.json``, ``plans.json`` and
``fold_0/checkpoint_final.pth`` (trainer ``nnUNetTrainer``, configuration ``3d_fullres``),
usable with ``nnUNetv2_predict_from_modelfolder``/``nnUNetPredictor``.

Anatomy models (``benchmarks/anatomy_nets.py``): ``--ctarr_anatomy`` gives the 3d_fullres entry
of ``nnUNetPlans_CTARR3mm`` (``nnunet_ctarr.training.planners.ctarr_configuration``: 3 mm, 64^3
patch, raw HU) and the network of ``nnUNetTrainerCTARRAnatomy`` (CT windows + U-Net; predicting
needs the CTARR trainers on ``nnUNet_extTrainer``); ``--trainer_name`` and ``--mirror_axes``
stamp another trainer into the checkpoint (e.g. TotalSegmentator's
``nnUNetTrainer_4000epochs_NoMirroring`` with ``--mirror_axes none``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def make_random_model(
    out: str | Path,
    images: list[str],
    labels: list[str],
    label_names: dict[str, int],
    tiny: bool = True,
    spacing: list[float] | None = None,
    seed: int = 0,
    dataset_id: int = 987,
    extra_args: list[str] | None = None,
    ctarr_anatomy: bool = False,
    trainer_name: str | None = None,
    mirror_axes: tuple[int, ...] | None = None,
) -> Path:
    """Build the model folder in a subprocess (see module docstring); returns ``out``."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "-o",
        str(out),
        "-i",
        *map(str, images),
        "-l",
        *map(str, labels),
        "--labels",
        json.dumps(label_names),
        "--seed",
        str(seed),
        "-d",
        str(dataset_id),
    ]
    if tiny:
        cmd.append("--tiny")
    if ctarr_anatomy:
        cmd.append("--ctarr_anatomy")
    if trainer_name:
        cmd += ["--trainer_name", trainer_name]
    if mirror_axes is not None:
        cmd += ["--mirror_axes", ",".join(map(str, mirror_axes)) or "none"]
    if spacing:
        cmd += ["--spacing", *map(str, spacing)]
    cmd += extra_args or []
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"model factory failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return Path(out)


def _shrink(cfg: dict) -> None:
    """3 stages, 4-8-16 features, 32^3 patch: a real nnU-Net architecture that runs on a CPU."""
    arch = cfg["architecture"]["arch_kwargs"]
    n = 3
    arch["n_stages"] = n
    arch["features_per_stage"] = [4, 8, 16]
    arch["kernel_sizes"] = [[3, 3, 3]] * n
    arch["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    arch["n_conv_per_stage"] = [1] * n
    arch["n_conv_per_stage_decoder"] = [1] * (n - 1)
    cfg["patch_size"] = [32, 32, 32]
    cfg["batch_size"] = 2


def _build(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="ctarr_model_factory_"))
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[k] = str(work / k)
        (work / k).mkdir()
    import SimpleITK as sitk
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    name = f"Dataset{args.d:03d}_CTARRRandom"
    raw = work / "nnUNet_raw" / name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for i, (img, lab) in enumerate(zip(args.i, args.l)):
        im = sitk.ReadImage(img)
        sitk.WriteImage(im, str(raw / "imagesTr" / f"case{i:03d}_0000.nii.gz"))
        lb = sitk.ReadImage(lab)
        lb.CopyInformation(im)
        sitk.WriteImage(sitk.Cast(lb, sitk.sitkUInt8), str(raw / "labelsTr" / f"case{i:03d}.nii.gz"))
    labels = json.loads(args.labels)
    dj = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": len(args.i),
        "file_ending": ".nii.gz",
        "name": name,
        "description": "randomly initialised model for nnunet-ctarr tests/benchmarks",
    }
    (raw / "dataset.json").write_text(json.dumps(dj, indent=2))
    extract_fingerprints([args.d], num_processes=1, verbose=False, show_progress_bar=False)
    plans_id = plan_experiments(
        [args.d], gpu_memory_target_in_gb=args.gpu_memory_gb, overwrite_target_spacing=args.spacing
    )
    plans_file = work / "nnUNet_preprocessed" / name / f"{plans_id}.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"] = {k: v for k, v in plans["configurations"].items() if k == "3d_fullres"}
    cfg = plans["configurations"]["3d_fullres"]
    if args.tiny:
        _shrink(cfg)
    trainer, mirror = nnUNetTrainer, (0, 1, 2)
    if args.ctarr_anatomy:
        from nnunet_ctarr.trainers.anatomy import nnUNetTrainerCTARRAnatomy
        from nnunet_ctarr.training.planners import PLANS_NAME, ctarr_configuration

        cfg.update(ctarr_configuration())
        cfg["normalization_schemes"], cfg["use_mask_for_norm"] = ["NoNormalization"], [False]
        plans["plans_name"] = PLANS_NAME
        trainer, mirror = nnUNetTrainerCTARRAnatomy, (0,)  # the trainer's inference_allowed_mirroring_axes
    if args.mirror_axes is not None:
        mirror = None if args.mirror_axes == "none" else tuple(int(v) for v in args.mirror_axes.split(","))
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    torch.manual_seed(args.seed)
    n_out = pm.get_label_manager(dj).num_segmentation_heads
    net = trainer.build_network_architecture(pm, cm, 1, n_out, enable_deep_supervision=False)
    out = Path(args.o)
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "network_weights": net.state_dict(),
            "trainer_name": args.trainer_name or trainer.__name__,
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dj},
            "inference_allowed_mirroring_axes": mirror,
        },
        out / "fold_0" / "checkpoint_final.pth",
    )
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    (out / "dataset.json").write_text(json.dumps(dj, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "model": str(out),
                "patch_size": cfg["patch_size"],
                "spacing": cfg["spacing"],
                "features": cfg["architecture"]["arch_kwargs"]["features_per_stage"],
                "parameters": sum(p.numel() for p in net.parameters()),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", required=True)
    ap.add_argument("-i", nargs="+", required=True)
    ap.add_argument("-l", nargs="+", required=True)
    ap.add_argument("--labels", required=True, help="JSON: name -> id, incl. background")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--ctarr_anatomy", action="store_true", help="the CTARR 3 mm anatomy plan and trainer network")
    ap.add_argument("--trainer_name", default=None, help="trainer name stamped into the checkpoint")
    ap.add_argument("--mirror_axes", default=None, help="inference mirroring axes, e.g. 0 or 0,1,2 or none")
    ap.add_argument("--spacing", nargs=3, type=float, default=None, help="target spacing z y x")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpu_memory_gb", type=float, default=None, help="nnU-Net planner memory target (patch size)")
    ap.add_argument("-d", type=int, default=987)
    _build(ap.parse_args())


if __name__ == "__main__":
    main()
