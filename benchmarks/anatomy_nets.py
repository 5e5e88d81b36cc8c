"""What the anatomy step costs when a network computes it (``-anatomy_model``), for bench_predict.

Two random-weight nnU-Net models of the real architectures, built by ``model_factory.py``:

* ``ctarr``: the project's anatomy model, ``nnUNetPlans_CTARR3mm`` (3 mm isotropic, 64^3 patch,
  5-stage PlainConvUNet 32 -> 320 features, raw HU into the fixed CT-window layer of
  ``nnUNetTrainerCTARRAnatomy``), 19 groups + background.
* ``totalseg``: TotalSegmentator's ``total`` 3 mm model (task 297, ``--fast``; trainer
  ``nnUNetTrainer_4000epochs_NoMirroring``, plans ``nnUNetPlans``, 3d_fullres, fold 0), 117
  structures + background. Its plans are not in the TotalSegmentator wheel (the weights zip brings
  them), so nnU-Net's default planner plans it here at 3 mm for a fabricated dataset of the
  assumed typical CT: 133 x 133 x 150 voxels at 3 mm (400 x 400 x 450 mm: a 512^2 scan with
  0.78 mm pixels over thorax and abdomen).

Each model predicts each scan through ``nnunet_ctarr.inference.anatomy_model.ModelAnatomy`` (what
``-anatomy_model`` runs), one scan per ``prepare`` (no worker processes), tile step 0.5, mirroring
off, then ``load`` turns the label map into the 19 groups. Timed: the model load
(``initialize_from_trained_model_folder``, once per run in a batch), ``prepare`` (load + resample
+ sliding window + export) and ``load``; reported per scan is the prediction without the model
load (what each further scan of a batch costs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
TYPICAL_TS_CT_XYZ = (133, 133, 150)  # voxels at 3 mm, the assumption above
MODELS = {
    "ctarr": "CTARR anatomy (nnUNetPlans_CTARR3mm, 19 groups + bg)",
    "totalseg": "TotalSegmentator total 3 mm (planned: nnU-Net default, 117 + bg)",
}


def _fabricated_ct(folder: Path, size_xyz: tuple[int, int, int]) -> tuple[list[Path], list[Path]]:
    """Two noise 'CTs' of the given size at 3 mm with a foreground block (only the planner reads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    imgs, labs = [], []
    for k in range(2):
        im = sitk.GetImageFromArray(rng.normal(0, 300, size_xyz[::-1]).astype(np.int16))
        im.SetSpacing((3.0, 3.0, 3.0))
        lab = np.zeros(size_xyz[::-1], np.uint8)
        lab[10:-10, 10:-10, 10:-10] = 1
        lb = sitk.GetImageFromArray(lab)
        lb.CopyInformation(im)
        imgs.append(folder / f"ct{k}.nii.gz")
        labs.append(folder / f"lab{k}.nii.gz")
        sitk.WriteImage(im, str(imgs[-1]))
        sitk.WriteImage(lb, str(labs[-1]))
    return imgs, labs


def build_models(tmp: Path) -> dict[str, dict]:
    """Random-weight model folders: name -> {folder, patch_size, n_stages, features, parameters}."""
    from model_factory import make_random_model

    from nnunet_ctarr.core.anatomy.groups import GROUPS, totalsegmentator_scheme

    ct_imgs, ct_labs = _fabricated_ct(tmp / "ctarr_data", (122, 101, 112))  # patch and spacing are fixed
    ts_imgs, ts_labs = _fabricated_ct(tmp / "ts_data", TYPICAL_TS_CT_XYZ)
    ctarr_labels = {"background": 0, **{g: i + 1 for i, g in enumerate(GROUPS)}}
    ts_labels = {"background": 0, **{n: i for i, n in totalsegmentator_scheme(2).items()}}
    spec = {
        "ctarr": dict(images=ct_imgs, labels=ct_labs, label_names=ctarr_labels, ctarr_anatomy=True, dataset_id=500),
        "totalseg": dict(
            images=ts_imgs,
            labels=ts_labs,
            label_names=ts_labels,
            dataset_id=297,
            trainer_name="nnUNetTrainer_4000epochs_NoMirroring",
            mirror_axes=(),  # TotalSegmentator's NoMirroring trainers
        ),
    }
    out = {}
    for name, kw in spec.items():
        folder = make_random_model(tmp / f"anatomy_{name}", tiny=False, spacing=[3.0, 3.0, 3.0], **kw)
        cfg = json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"]
        arch = cfg["architecture"]["arch_kwargs"]
        chk = folder / "fold_0" / "checkpoint_final.pth"
        out[name] = {
            "title": MODELS[name],
            "folder": str(folder),
            "patch_size_zyx": cfg["patch_size"],
            "spacing_zyx": cfg["spacing"],
            "n_stages": arch["n_stages"],
            "features_per_stage": arch["features_per_stage"],
            "n_outputs": len(kw["label_names"]),
            "checkpoint_mb_weights_only": round(chk.stat().st_size / 1e6, 1),
        }
    return out


def tiles(shape_zyx, patch, step: float) -> int:
    """Sliding-window tiles nnU-Net runs on an image of this shape at the model's spacing."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    padded = [max(s, p) for s, p in zip(shape_zyx, patch)]
    return int(np.prod([len(s) for s in compute_steps_for_sliding_window(padded, patch, step)]))


def time_models(
    models: dict[str, dict], scans: dict[str, Path], device: str = "cpu", step: float = 0.5, mirroring: bool = False
) -> list[dict]:
    """One row per model and scan (see the module docstring)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_ctarr.core.base.errors import WarningLog
    from nnunet_ctarr.inference.anatomy_model import ModelAnatomy
    from nnunet_ctarr.training.trainer_path import ensure_ext_trainer_path

    ensure_ext_trainer_path()  # nnUNetTrainerCTARRAnatomy, as the CLIs do
    rows = []
    for name, m in models.items():
        t0 = time.perf_counter()
        p = nnUNetPredictor(tile_step_size=step, use_mirroring=mirroring, device=torch.device(device), allow_tqdm=False)
        p.initialize_from_trained_model_folder(m["folder"], (0,))
        t_load = time.perf_counter() - t0
        for k, (scan, path) in enumerate(scans.items()):
            img = sitk.ReadImage(str(path))
            shape = [round(n * s / t) for n, s, t in zip(img.GetSize()[::-1], img.GetSpacing()[::-1], m["spacing_zyx"])]
            src = ModelAnatomy(
                m["folder"], folds=(0,), device=device, step_size=step, disable_tta=not mirroring, npp=0, nps=0
            )
            t0 = time.perf_counter()
            src.prepare({f"scan{k}": [str(path)]})
            t_prepare = time.perf_counter() - t0
            t0 = time.perf_counter()
            masks = src.load(f"scan{k}", WarningLog())
            t_masks = time.perf_counter() - t0
            rows.append(
                {
                    "model": name,
                    "scan": scan,
                    "size_xyz": list(img.GetSize()),
                    "spacing_xyz": [round(v, 3) for v in img.GetSpacing()],
                    "tiles": tiles(shape, m["patch_size_zyx"], step),
                    "model_load_s": round(t_load, 2),
                    "prepare_s": round(t_prepare, 2),
                    "predict_s": round(max(t_prepare - t_load, 0.0), 2),  # prepare minus the model load
                    "to_groups_s": round(t_masks, 2),
                    "label_map_size_xyz": list(masks.labels.GetSize()),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def load_text(load: list[float] | None) -> str:
    return "–" if not load else f"{', '.join(map(str, load[:3]))}; {', '.join(map(str, load[3:]))}"


def to_markdown(result: dict) -> str:
    """The anatomy-network section of bench_predict's report."""
    md = [
        "| model | patch (z y x) | stages, features | outputs | scan (size, spacing) | tiles | model load s | "
        "prepare s (load + predict) | predict s per scan | label map → groups s | "
        "load avg (1, 5, 15 min) before; after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m = result["models"][r["model"]]
        md.append(
            f"| {m['title']} | {m['patch_size_zyx']} | {m['n_stages']}, {m['features_per_stage'][0]}–"
            f"{m['features_per_stage'][-1]} | {m['n_outputs']} | {r['scan']} {tuple(r['size_xyz'])}, "
            f"{' × '.join(f'{v:g}' for v in r['spacing_xyz'])} mm | {r['tiles']} | {r['model_load_s']} | "
            f"{r['prepare_s']} | "
            f"{r['predict_s']} | {r['to_groups_s']} | {load_text(r.get('load_avg_before_after'))} |"
        )
    return "\n".join(md)
