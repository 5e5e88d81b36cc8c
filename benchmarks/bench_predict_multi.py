"""One shared registration (nnUNetv2_predict_ctarr_multi) vs one nnUNetPredictorCTARR run per model.

    python benchmarks/bench_predict_multi.py [--repeats 3] [--out docs/benchmark_predict_multi]

Two tiny randomly initialised nnU-Net models (liver; left/right kidney) built on the fly from the
bundled abdomen and chest CTs (as in docs/predict_multi.md), the bundled abdomen CT with its
TotalSegmentator map as precomputed anatomy, TTA off, models loaded beforehand. Per repetition:
``MultiModelPredictor.predict_case`` (1 registration) and the two single-model predictors'
``predict_single_npy_array`` (1 registration each). Reports the minimum wall and process-CPU
seconds over the repetitions, and checks that each model's votes inside the merged map equal its
own single-model prediction wherever it won.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "examples" / "data"
ABDOMEN = (DATA / "totalseg_example" / "example_ct.nii.gz", DATA / "totalseg_example" / "example_ct_totalseg_v2.nii.gz")
CHEST = (DATA / "chest_lidc" / "chest_ct_3mm.nii.gz", DATA / "chest_lidc" / "chest_ct_3mm_totalseg_v2.nii.gz")
MODELS = {
    "liver": ({5: 1}, {"background": 0, "liver": 1}),
    "kidneys": ({3: 1, 2: 2}, {"background": 0, "kidney_left": 1, "kidney_right": 2}),
}


def build_models(tmp: Path) -> dict[str, Path]:
    from model_factory import make_random_model

    out = {}
    for seed, (name, (mapping, labels)) in enumerate(MODELS.items(), start=1):
        targets = []
        for subject, lab_f in (("abd", ABDOMEN[1]), ("chest", CHEST[1])):
            lab = sitk.ReadImage(str(lab_f))
            a = sitk.GetArrayFromImage(lab)
            t = np.zeros(a.shape, np.uint8)
            for k, v in mapping.items():
                t[a == k] = v
            img = sitk.GetImageFromArray(t)
            img.CopyInformation(lab)
            targets.append(tmp / f"{subject}_{name}.nii.gz")
            sitk.WriteImage(img, str(targets[-1]))
        out[name] = make_random_model(tmp / name, [ABDOMEN[0], CHEST[0]], targets, labels, seed=seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args()
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnunet_ctarr.core.anatomy.sources import PrecomputedAnatomy
    from nnunet_ctarr.core.regions.region import load_region
    from nnunet_ctarr.inference.multi_predictor import MultiModelPredictor
    from nnunet_ctarr.inference.multi_spec import load_spec
    from nnunet_ctarr.inference.predictor import nnUNetPredictorCTARR

    with tempfile.TemporaryDirectory(prefix="ctarr_bench_multi_") as t:
        tmp = Path(t)
        models = build_models(tmp)
        (tmp / "anat").mkdir()
        sitk.WriteImage(sitk.ReadImage(str(ABDOMEN[1])), str(tmp / "anat" / "abd.nii.gz"))
        spec_f = tmp / "spec.json"
        spec_f.write_text(
            json.dumps(
                {
                    "labels": {"background": 0, "liver": 1, "kidney_left": 2, "kidney_right": 3},
                    "models": [
                        {"folder": str(models["liver"]), "region": "liver"},
                        {"folder": str(models["kidneys"]), "region": "kidneys"},
                    ],
                }
            )
        )
        anatomy = PrecomputedAnatomy(tmp / "anat")
        cpu = torch.device("cpu")
        multi = MultiModelPredictor(load_spec(spec_f), anatomy, device=cpu, use_mirroring=False)
        singles = []
        for name in ("liver", "kidneys"):
            p = nnUNetPredictorCTARR(use_mirroring=False, device=cpu, allow_tqdm=False)
            p.initialize_from_trained_model_folder(str(models[name]), None)
            p.ctarr_setup(load_region(name), anatomy)
            singles.append(p)
        data, props = SimpleITKIO().read_images([str(ABDOMEN[0])])
        anatomy.prepare({"abd": [str(ABDOMEN[0])]})
        times: dict[str, list[tuple[float, float]]] = {"multi": [], "single": []}
        for _ in range(args.repeats):
            w, c = time.perf_counter(), time.process_time()
            merged, report = multi.predict_case("abd", data, props)
            times["multi"].append((time.perf_counter() - w, time.process_time() - c))
            w, c = time.perf_counter(), time.process_time()
            segs = [p.predict_single_npy_array(data, props, case="abd", anatomy=anatomy) for p in singles]
            times["single"].append((time.perf_counter() - w, time.process_time() - c))
        # each model's single prediction, mapped to output labels, wherever that model won the merge
        liver_ok = bool(np.all(segs[0][merged == 1] == 1))
        kid = np.where(segs[1] == 1, 2, np.where(segs[1] == 2, 3, 0))
        won_kid = np.isin(merged, [2, 3])
        result = {
            "registrations": {"multi": report["localisation"]["registrations"], "single": len(singles)},
            "multi_wall_s": round(min(t[0] for t in times["multi"]), 2),
            "multi_cpu_s": round(min(t[1] for t in times["multi"]), 2),
            "single_wall_s": round(min(t[0] for t in times["single"]), 2),
            "single_cpu_s": round(min(t[1] for t in times["single"]), 2),
            "kidney_votes_equal_single": bool(np.array_equal(merged[won_kid], kid[won_kid])),
            "liver_votes_equal_single": liver_ok,
            "repeats": args.repeats,
            "registration_s": report["localisation"]["seconds"],
        }
    md = "\n".join(
        [
            "Bundled abdomen CT (3 mm), 2 tiny random-weight models, TTA off, "
            f"CPU ({torch.get_num_threads()} threads), "
            f"minimum of {args.repeats} repetitions:",
            "",
            "| | registrations | wall s per case | CPU s per case |",
            "|---|---|---|---|",
            "| `MultiModelPredictor.predict_case` (2 models) | 1 | "
            f"{result['multi_wall_s']} | {result['multi_cpu_s']} |",
            "| two `nnUNetPredictorCTARR` runs (liver, kidneys) | 2 | "
            f"{result['single_wall_s']} | {result['single_cpu_s']} |",
        ]
    )
    print(json.dumps(result))
    print(md)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(args.out + ".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
