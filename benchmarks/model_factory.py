"""Randomly initialised nnU-Net model folders, planned by nnU-Net itself (tests, benchmarks).

As in the CTARR paper's speed experiments: real architecture and real sliding window, random
weights. nnU-Net reads its ``nnUNet_raw/preprocessed/results`` paths at import time, so the
folders are built in a subprocess with its own temporary paths::

    python benchmarks/model_factory.py -o MODEL_DIR -i ct1.nii.gz ct2.nii.gz -l lab1.nii.gz lab2.nii.gz \\
        --labels '{"background": 0, "liver": 1}' [--tiny] [--spacing 1.5 1.5 2.5]
    python benchmarks/model_factory.py --specs specs.json   # several folders, one process

The result is ``MODEL_DIR`` with ``dataset.json``, ``plans.json`` and
``fold_0/checkpoint_final.pth`` (trainer ``nnUNetTrainer``, configuration ``3d_fullres``),
usable with ``nnUNetv2_predict_from_modelfolder``/``nnUNetPredictor``. ``make_random_models``
builds several folders in one process (one interpreter start and nnU-Net import for all; the
test suite builds its models this way, tests/conftest.py).

Anatomy models (``benchmarks/anatomy_nets.py``): ``ctarr_anatomy`` gives the 3d_fullres entry
of ``nnUNetPlans_CTARR3mm`` (``nnunet_ctarr.training.planners.ctarr_configuration``: 3 mm, 64^3
patch, raw HU) and the network of ``nnUNetTrainerCTARRAnatomy`` (CT windows + U-Net; predicting
needs the CTARR trainers on ``nnUNet_extTrainer``); ``trainer_name`` and ``mirror_axes``
stamp another trainer into the checkpoint (e.g. TotalSegmentator's
``nnUNetTrainer_4000epochs_NoMirroring`` with no mirroring axes).
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


def model_spec(
    out: str | Path,
    images: list[str],
    labels: list[str],
    label_names: dict[str, int],
    tiny: bool = True,
    spacing: list[float] | None = None,
    seed: int = 0,
    dataset_id: int = 987,
    gpu_memory_gb: float | None = None,
    ctarr_anatomy: bool = False,
    trainer_name: str | None = None,
    mirror_axes: tuple[int, ...] | None = None,
) -> dict:
    """One model folder to build (the arguments of :func:`make_random_model`), as JSON-able data."""
    return {
        "out": str(out),
        "images": [str(i) for i in images],
        "labels": [str(x) for x in labels],
        "label_names": label_names,
        "tiny": tiny,
        "spacing": [float(x) for x in spacing] if spacing else None,
        "seed": seed,
        "dataset_id": dataset_id,
        "gpu_memory_gb": gpu_memory_gb,
        "ctarr_anatomy": ctarr_anatomy,
        "trainer_name": trainer_name,
        "mirror_axes": None if mirror_axes is None else [int(a) for a in mirror_axes],
    }


def make_random_models(specs: list[dict]) -> list[Path]:
    """Build the model folders of ``specs`` (:func:`model_spec`) in one subprocess; returns their paths."""
    with tempfile.TemporaryDirectory(prefix="ctarr_model_specs_") as tmp:
        spec_file = Path(tmp) / "specs.json"
        spec_file.write_text(json.dumps(specs))
        res = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--specs", str(spec_file)], capture_output=True, text=True
        )
    if res.returncode != 0:
        raise RuntimeError(f"model factory failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return [Path(s["out"]) for s in specs]


def make_random_model(
    out: str | Path, images: list[str], labels: list[str], label_names: dict[str, int], **options
) -> Path:
    """Build one model folder in a subprocess (see module docstring; ``options``: those of
    :func:`model_spec`); returns ``out``."""
    return make_random_models([model_spec(out, images, labels, label_names, **options)])[0]


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


#: foreground voxels sampled for the intensity statistics (nnU-Net: 10^8 for the dataset; each
#: bundled CT has fewer than 10^6, and the percentiles over 10^8 samples were most of a build)
FINGERPRINT_SAMPLES = 10**6


def _nnunet_in_this_process() -> None:
    """nnU-Net's fingerprint extractor analyses the cases in a spawned process pool (an interpreter
    start and nnU-Net import per dataset) and lists the dataset's files with a pool of 12 forked
    processes; here both run in thread pools of this process (the same code)."""
    import multiprocessing.dummy
    from types import SimpleNamespace

    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.utilities import utils

    fingerprint_extractor.multiprocessing = SimpleNamespace(get_context=lambda method: multiprocessing.dummy)
    utils.Pool = multiprocessing.dummy.Pool


def _fingerprint(dataset_id: int) -> None:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset

    class Extractor(DatasetFingerprintExtractor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = FINGERPRINT_SAMPLES

    extract_fingerprint_dataset(dataset_id, Extractor, num_processes=1, verbose=False, show_progress_bar=False)


def _build_all(specs: list[dict]) -> None:
    work = Path(tempfile.mkdtemp(prefix="ctarr_model_factory_"))
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[k] = str(work / k)
        (work / k).mkdir()
    _nnunet_in_this_process()
    try:
        for spec in specs:
            _build(spec, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build(spec: dict, work: Path) -> None:
    import SimpleITK as sitk
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    d = spec["dataset_id"]
    name = f"Dataset{d:03d}_CTARRRandom"
    raw = work / "nnUNet_raw" / name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for i, (img, lab) in enumerate(zip(spec["images"], spec["labels"])):
        im = sitk.ReadImage(img)
        sitk.WriteImage(im, str(raw / "imagesTr" / f"case{i:03d}_0000.nii.gz"))
        lb = sitk.ReadImage(lab)
        lb.CopyInformation(im)
        sitk.WriteImage(sitk.Cast(lb, sitk.sitkUInt8), str(raw / "labelsTr" / f"case{i:03d}.nii.gz"))
    labels = spec["label_names"]
    dj = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": len(spec["images"]),
        "file_ending": ".nii.gz",
        "name": name,
        "description": "randomly initialised model for nnunet-ctarr tests/benchmarks",
    }
    (raw / "dataset.json").write_text(json.dumps(dj, indent=2))
    _fingerprint(d)
    plans_id = plan_experiments(
        [d], gpu_memory_target_in_gb=spec["gpu_memory_gb"], overwrite_target_spacing=spec["spacing"]
    )
    plans_file = work / "nnUNet_preprocessed" / name / f"{plans_id}.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"] = {k: v for k, v in plans["configurations"].items() if k == "3d_fullres"}
    cfg = plans["configurations"]["3d_fullres"]
    if spec["tiny"]:
        _shrink(cfg)
    trainer, mirror = nnUNetTrainer, (0, 1, 2)
    if spec.get("ctarr_anatomy"):
        from nnunet_ctarr.trainers.anatomy import nnUNetTrainerCTARRAnatomy
        from nnunet_ctarr.training.planners import PLANS_NAME, ctarr_configuration

        cfg.update(ctarr_configuration())
        cfg["normalization_schemes"], cfg["use_mask_for_norm"] = ["NoNormalization"], [False]
        plans["plans_name"] = PLANS_NAME
        trainer, mirror = nnUNetTrainerCTARRAnatomy, (0,)  # the trainer's inference_allowed_mirroring_axes
    if spec.get("mirror_axes") is not None:
        mirror = tuple(spec["mirror_axes"]) or None
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    torch.manual_seed(spec["seed"])
    n_out = pm.get_label_manager(dj).num_segmentation_heads
    net = trainer.build_network_architecture(pm, cm, 1, n_out, enable_deep_supervision=False)
    out = Path(spec["out"])
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "network_weights": net.state_dict(),
            "trainer_name": spec.get("trainer_name") or trainer.__name__,
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dj},
            "inference_allowed_mirroring_axes": mirror,
        },
        out / "fold_0" / "checkpoint_final.pth",
    )
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    (out / "dataset.json").write_text(json.dumps(dj, indent=2))
    # a later spec may reuse the dataset id
    shutil.rmtree(raw, ignore_errors=True)
    shutil.rmtree(work / "nnUNet_preprocessed" / name, ignore_errors=True)
    print(
        json.dumps(
            {
                "model": str(out),
                "patch_size": cfg["patch_size"],
                "spacing": cfg["spacing"],
                "features": cfg["architecture"]["arch_kwargs"]["features_per_stage"],
            }
        )
    )


def _axes(text: str | None) -> tuple[int, ...] | None:
    """``--mirror_axes`` text: None (the trainer's), "none" -> (), "0,1,2" -> (0, 1, 2)."""
    if text is None:
        return None
    return () if text == "none" else tuple(int(v) for v in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", default=None, help="JSON file: a list of model_spec() dicts (then no -o/-i/-l)")
    ap.add_argument("-o")
    ap.add_argument("-i", nargs="+")
    ap.add_argument("-l", nargs="+")
    ap.add_argument("--labels", help="JSON: name -> id, incl. background")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--ctarr_anatomy", action="store_true", help="the CTARR 3 mm anatomy plan and trainer network")
    ap.add_argument("--trainer_name", default=None, help="trainer name stamped into the checkpoint")
    ap.add_argument("--mirror_axes", default=None, help="inference mirroring axes, e.g. 0 or 0,1,2 or none")
    ap.add_argument("--spacing", nargs=3, type=float, default=None, help="target spacing z y x")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpu_memory_gb", type=float, default=None, help="nnU-Net planner memory target (patch size)")
    ap.add_argument("-d", type=int, default=987)
    args = ap.parse_args()
    if args.specs:
        _build_all(json.loads(Path(args.specs).read_text()))
        return
    if not (args.o and args.i and args.l and args.labels):
        ap.error("-o, -i, -l and --labels are required (or --specs)")
    _build_all(
        [
            model_spec(
                args.o,
                args.i,
                args.l,
                json.loads(args.labels),
                args.tiny,
                args.spacing,
                args.seed,
                args.d,
                args.gpu_memory_gb,
                args.ctarr_anatomy,
                args.trainer_name,
                _axes(args.mirror_axes),
            )
        ]
    )


if __name__ == "__main__":
    main()
