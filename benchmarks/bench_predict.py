"""Stock nnUNetv2 prediction vs nnUNetv2_predict_ctarr on real CTs at clinical-like resolution.

    python benchmarks/bench_predict.py [--data ../shared/data] [--device cpu] [--spacing X Y Z] [--stock_once]
                                       [--gpu_memory_gb GB] [--no_exact] [--cases chest abdomen]
                                       [--anatomy_nets] [--anatomy_scans bundled inputs]
                                       [--out docs/benchmark_predict]
    python benchmarks/bench_predict.py --anatomy_only [--anatomy_scans bundled inputs] --out docs/benchmark_predict
    python benchmarks/bench_predict.py --render docs/benchmark_predict   # re-render the table from the JSON

As in the CTARR paper's speed experiment: a randomly initialised nnU-Net 3d_fullres model,
planned by nnU-Net for a CT dataset (real architecture, real sliding window), built on the
fly. Cases: the LIDC chest CT at 1.5 x 1.5 x 2.5 mm (or ``--spacing``; finer than 1.5 mm it is
resampled from the native 0.70 x 0.70 x 2.5 mm scan) and the TotalSegmentator abdomen CT
resampled to the same spacing, with their TotalSegmentator maps as precomputed anatomy.
For each case and region, stock and CTARR runs alternate in one process (model loaded once,
``predict_from_files_sequential`` = ``-npp 0 -nps 0``, TTA off; wall time of the call, i.e. read,
CTARR localisation, preprocessing, sliding window, export). CTARR runs with its default crops
(region boxes merged and grown to the model's sliding-window tiles, see nnunet_ctarr/inference/tiling.py)
and, for comparison, with the exact region boxes (``--no_exact`` skips that run).
Reported per run: wall seconds, voxel ratios full/region and full/crop, speedup, sliding-window
tiles full/crop (nnU-Net's count, from the sidecar), CTARR overhead (localisation seconds from
the sidecar) and its share of the stock time, and two checks: background outside the crops,
and equality inside with stock nnU-Net run on the cropped image.

The CTARR overhead above reads a precomputed anatomy map. ``--anatomy_nets`` also times the
anatomy step done by a network (``-anatomy_model``; ``benchmarks/anatomy_nets.py``: a random-weight
CTARR 3 mm anatomy model and TotalSegmentator's 3 mm ``total`` model, run by ``ModelAnatomy`` with
tile step 0.5 and mirroring off) on the bundled 3 mm CTs of the same two subjects, and with
``--anatomy_scans inputs`` on the prediction inputs themselves (resampled to 3 mm and the label map
exported back to the input grid, as ``-anatomy_model`` does); the table then gets one more
overhead column per network (localisation + that network's prediction per scan, model load
excluded). ``--anatomy_only`` times only the networks and adds them to an earlier run's OUT.json
(rows of other scans measured before are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "chest": ("chest_lidc/chest_ct_1p5mm.nii.gz", "chest_lidc/chest_ct_1p5mm_totalseg_v2.nii.gz", ["heart", "liver"]),
    # with --spacing finer than 1.5 mm the chest comes from the native LIDC scan (0.70 x 0.70 x 2.5 mm)
    "abdomen": (
        "totalseg_example/example_ct.nii.gz",
        "totalseg_example/example_ct_totalseg_v2.nii.gz",
        ["kidneys", "liver"],
    ),
}
SPACING = (1.5, 1.5, 2.5)


def resample(img: sitk.Image, spacing, interp) -> sitk.Image:
    size = [int(round(s * sp / t)) for s, sp, t in zip(img.GetSize(), img.GetSpacing(), spacing)]
    return sitk.Resample(
        img,
        size,
        sitk.Transform(),
        interp,
        img.GetOrigin(),
        spacing,
        img.GetDirection(),
        -1024 if interp != sitk.sitkNearestNeighbor else 0,
        img.GetPixelID(),
    )


def stock_on_crop(model: Path, img_path: Path, side: dict, device: str) -> list[np.ndarray]:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    p = nnUNetPredictor(use_mirroring=False, device=torch.device(device), allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(model), (0,))
    img = sitk.ReadImage(str(img_path))
    out = []
    for b in side["crops"]:
        s, e = b["index_start_xyz"], b["index_stop_xyz"]
        crop = img[s[0] : e[0], s[1] : e[1], s[2] : e[2]]
        props = {
            "spacing": list(crop.GetSpacing())[::-1],
            "sitk_stuff": {"spacing": crop.GetSpacing(), "origin": crop.GetOrigin(), "direction": crop.GetDirection()},
        }
        out.append(p.predict_single_npy_array(sitk.GetArrayFromImage(crop)[None].astype(np.float32), props))
    return out


def prepare_cases(data: Path, spacing, tmp: Path) -> dict:
    """name -> (folder with img/ anat/ target.nii.gz, regions, size) at ``spacing``."""
    cases = {}
    for name, (img_f, lab_f, regions) in CASES.items():
        if name == "chest" and min(spacing) < 1.5:
            img_f, lab_f = "chest_lidc/chest_ct.nii.gz", "chest_lidc/chest_ct_totalseg_v2.nii.gz"
        img, lab = sitk.ReadImage(str(data / img_f)), sitk.ReadImage(str(data / lab_f))
        if not np.allclose(img.GetSpacing(), spacing):
            img, lab = resample(img, spacing, sitk.sitkLinear), resample(lab, spacing, sitk.sitkNearestNeighbor)
        d = tmp / name
        (d / "img").mkdir(parents=True), (d / "anat").mkdir()
        sitk.WriteImage(img, str(d / "img" / f"{name}_0000.nii.gz"))
        sitk.WriteImage(lab, str(d / "anat" / f"{name}.nii.gz"))
        a = sitk.GetArrayFromImage(lab)
        tgt = sitk.GetImageFromArray(np.where(a == 5, 1, np.where(np.isin(a, [2, 3]), 2, 0)).astype(np.uint8))
        tgt.CopyInformation(lab)
        sitk.WriteImage(tgt, str(d / "target.nii.gz"))
        cases[name] = (d, regions, img.GetSize())
    return cases


def run_anatomy_nets(args, cases: dict, tmp: Path) -> dict:
    """The anatomy networks on the bundled 3 mm CTs and/or the prediction inputs
    (``--anatomy_scans``): ``{"models", "rows", "flags"}``, see benchmarks/anatomy_nets.py."""
    import torch
    from anatomy_nets import build_models, time_models

    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count())
    bundled = ROOT / "examples" / "data"
    scans = {}
    if "bundled" in args.anatomy_scans:
        scans["abdomen 3 mm"] = bundled / "totalseg_example" / "example_ct.nii.gz"
        scans["chest 3 mm"] = bundled / "chest_lidc" / "chest_ct_3mm.nii.gz"
    if "inputs" in args.anatomy_scans:
        scans.update({f"{c} input": cases[c][0] / "img" / f"{c}_0000.nii.gz" for c in args.cases})
    models = build_models(tmp / "anatomy_models")
    load_before = os.getloadavg()
    rows = time_models(models, scans, args.device)
    flags = f"{args.device}, {os.cpu_count()} threads, tile step 0.5, mirroring off, one scan per prepare"
    load = [round(v, 2) for v in (*load_before, *os.getloadavg())]
    for r in rows:
        r["load_avg_before_after"] = load
    return {"models": models, "rows": rows, "flags": flags}


def anatomy_net_seconds(result: dict, case: str, model: str) -> float | None:
    """A network's prediction seconds for a bench case: on the prediction input where measured,
    else on the bundled 3 mm CT of the same subject."""
    rows = {r["scan"]: r for r in result.get("anatomy_networks", {}).get("rows", []) if r["model"] == model}
    r = rows.get(f"{case} input") or rows.get(f"{case} 3 mm")
    return None if r is None else r["predict_s"]


def write_result(result: dict, out: str | None) -> None:
    md = to_markdown(result)
    print(md)
    if out:
        Path(out + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(out + ".md").write_text(md + "\n")


def to_markdown(result: dict) -> str:
    anat = result.get("anatomy_networks")
    nets = list(anat["models"]) if anat else []
    md = []
    if result["rows"]:
        m = result["model"]
        md += [
            f"Device: {result['device']} ({result['machine']}); "
            f"input spacing {result.get('input_spacing_mm', list(SPACING))} mm; "
            f"model: nnU-Net 3d_fullres planned for the data, patch "
            f"{m['patch_size']}, spacing {m['spacing']}, features {m['features_per_stage']}, random weights; "
            f"{result['flags']}.",
            "",
            "| case (size) | region: boxes → crops | stock s | CTARR s | exact boxes s | voxel ratio region / crop | "
            "speedup | speedup / region voxel ratio | speedup / crop voxel ratio | tiles full / crop | "
            "speedup / tile ratio | CTARR overhead s (share of stock) | "
            + "".join(f"overhead with the {n} anatomy net s (share) | " for n in nets)
            + "outside bg | inside = stock on crop |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(nets) + "---|---|",
        ]
    for r in result["rows"]:
        exact = "–" if r.get("ctarr_exact_boxes_s") is None else r["ctarr_exact_boxes_s"]
        with_net = ""
        for n in nets:
            t = anatomy_net_seconds(result, r["case"], n)
            total = None if t is None else r["ctarr_overhead_s"] + t
            with_net += "– | " if total is None else f"{total:.1f} ({100 * total / r['stock_s']:.0f}%) | "
        md.append(
            f"| {r['case']} {tuple(r['size_xyz'])} | {r['region']}: {r['region_boxes']} → {r['crops']} | "
            f"{r['stock_s']} | {r['ctarr_s']} | {exact} | {r['region_voxel_ratio']} / {r['voxel_ratio']} | "
            f"{r['speedup']} | {100 * r['speedup'] / r['region_voxel_ratio']:.0f}% | "
            f"{100 * r['speedup_of_limit']:.0f}% | "
            f"{r['patches_full']} / {r['patches_crop']} | {100 * r['speedup_of_patch_limit']:.0f}% | "
            f"{r['ctarr_overhead_s']:.2f} ({100 * r['overhead_share_of_stock']:.1f}%) | {with_net}"
            f"{r['outside_background']} | {r['inside_equals_stock_on_crop']} |"
        )
    if anat:
        from anatomy_nets import to_markdown as anatomy_markdown

        md += ["", f"Anatomy networks ({anat['flags']}):", "", anatomy_markdown(anat)]
    return "\n".join(md).strip("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpu_memory_gb", type=float, default=None, help="planner memory target (default nnU-Net's 8)")
    ap.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=list(SPACING),
        metavar=("X", "Y", "Z"),
        help="resample both scans to this spacing in mm (default 1.5 1.5 2.5; "
        "0.703125 0.703125 2.5 = the native LIDC chest)",
    )
    ap.add_argument(
        "--cases",
        nargs="+",
        choices=list(CASES),
        default=list(CASES),
        help="which scans to run (default: all; the model is always planned for all)",
    )
    ap.add_argument(
        "--stock_once", action="store_true", help="run stock nnU-Net once per case instead of once per case and region"
    )
    ap.add_argument(
        "--no_exact",
        action="store_true",
        help="skip the comparison run that crops exactly the region boxes (no tile fitting)",
    )
    ap.add_argument("--anatomy_nets", action="store_true", help="also time the anatomy networks (see above)")
    ap.add_argument(
        "--anatomy_only",
        action="store_true",
        help="only time the anatomy networks; added to OUT.json of an earlier run where there is one",
    )
    ap.add_argument(
        "--anatomy_scans",
        nargs="+",
        choices=["bundled", "inputs"],
        default=["bundled"],
        help="what the anatomy networks predict: the bundled 3 mm CTs (default) and/or the prediction inputs "
        "(resampled to 3 mm and the label map back to the input grid, as -anatomy_model does)",
    )
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    ap.add_argument(
        "--render",
        metavar="OUT",
        default=None,
        help="only rewrite OUT.md from an earlier run's OUT.json (no prediction)",
    )
    args = ap.parse_args()
    if args.render:
        Path(args.render + ".md").write_text(to_markdown(json.loads(Path(args.render + ".json").read_text())) + "\n")
        return
    spacing = tuple(args.spacing)
    tmp = Path(tempfile.mkdtemp(prefix="ctarr_bench_predict_"))
    try:
        cases = prepare_cases(Path(args.data), spacing, tmp)
        anatomy = run_anatomy_nets(args, cases, tmp) if args.anatomy_nets or args.anatomy_only else None
        if args.anatomy_only:
            out = Path(args.out + ".json") if args.out else None
            result = json.loads(out.read_text()) if out and out.exists() else {"rows": []}
            old = result.get("anatomy_networks", {"rows": []})
            new = {(r["model"], r["scan"]) for r in anatomy["rows"]}
            anatomy["rows"] = [r for r in old["rows"] if (r["model"], r["scan"]) not in new] + anatomy["rows"]
            result["anatomy_networks"] = anatomy
            write_result(result, args.out)
            return
        sys.path.insert(0, str(ROOT))
        from model_factory import make_random_model

        model = make_random_model(
            tmp / "model",
            [cases[c][0] / "img" / f"{c}_0000.nii.gz" for c in cases],
            [cases[c][0] / "target.nii.gz" for c in cases],
            {"background": 0, "liver": 1, "kidney": 2},
            tiny=False,
            gpu_memory_gb=args.gpu_memory_gb or None,
        )
        plans = json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        from nnunet_ctarr.core.anatomy.sources import PrecomputedAnatomy
        from nnunet_ctarr.core.regions.region import load_region
        from nnunet_ctarr.inference.predictor import nnUNetPredictorCTARR

        device = torch.device(args.device)
        if args.device == "cpu":
            torch.set_num_threads(os.cpu_count())
        stock = nnUNetPredictor(use_mirroring=False, device=device, allow_tqdm=False)
        stock.initialize_from_trained_model_folder(str(model), (0,))
        ctarr = nnUNetPredictorCTARR(use_mirroring=False, device=device, allow_tqdm=False)
        ctarr.initialize_from_trained_model_folder(str(model), (0,))
        rows = []
        for name, (d, regions, size) in cases.items():
            if name not in args.cases:
                continue
            for k, region in enumerate(regions):
                stock_out, ctarr_out = d / f"stock_{region}", d / f"ctarr_{region}"
                stock_out.mkdir(), ctarr_out.mkdir()
                if k == 0 or not args.stock_once:
                    t0 = time.perf_counter()
                    stock.predict_from_files_sequential(str(d / "img"), str(stock_out))
                    t_stock = time.perf_counter() - t0
                t_exact = None
                if not args.no_exact:  # the same region without fitting crops to the tiles
                    exact_out = d / f"exact_{region}"
                    exact_out.mkdir()
                    ctarr.ctarr_setup(load_region(region), PrecomputedAnatomy(d / "anat"), fit_tiles=False)
                    t0 = time.perf_counter()
                    ctarr.predict_from_files_sequential(str(d / "img"), str(exact_out))
                    t_exact = time.perf_counter() - t0
                ctarr.ctarr_setup(load_region(region), PrecomputedAnatomy(d / "anat"), sidecar_folder=str(ctarr_out))
                t0 = time.perf_counter()
                ctarr.predict_from_files_sequential(str(d / "img"), str(ctarr_out))
                t_ctarr = time.perf_counter() - t0
                side = json.loads((ctarr_out / f"{name}.ctarr.json").read_text())
                seg = sitk.GetArrayFromImage(sitk.ReadImage(str(ctarr_out / f"{name}.nii.gz")))
                inside = np.zeros(seg.shape, bool)
                equal = True
                crops = side["crops"]
                cover = np.zeros(seg.shape, np.uint8)
                for b in crops:
                    s, e = b["index_start_xyz"], b["index_stop_xyz"]
                    cover[s[2] : e[2], s[1] : e[1], s[0] : e[0]] += 1
                for b, stock_crop in zip(
                    crops, stock_on_crop(model, d / "img" / f"{name}_0000.nii.gz", side, args.device)
                ):
                    s, e = b["index_start_xyz"], b["index_stop_xyz"]
                    sl = (slice(s[2], e[2]), slice(s[1], e[1]), slice(s[0], e[0]))
                    alone = cover[sl] == 1  # overlaps of two crops: highest probability wins
                    equal &= bool(np.array_equal(seg[sl][alone], stock_crop[alone]))
                    inside[sl] = True
                ratio = 1.0 / side["voxel_fraction"]
                p_full, p_crop = side["tiles_full_image"], sum(b["tiles"] for b in crops)
                rows.append(
                    {
                        "case": name,
                        "size_xyz": list(size),
                        "region": region,
                        "region_boxes": len([b for b in side["boxes"] if b["status"] != "outside"]),
                        "crops": len(crops),
                        "crop_sizes_xyz": [b["size_xyz"] for b in crops],
                        "patches_full": p_full,
                        "patches_crop": p_crop,
                        "speedup_of_patch_limit": round(t_stock / t_ctarr / (p_full / p_crop), 3),
                        "stock_s": round(t_stock, 2),
                        "ctarr_s": round(t_ctarr, 2),
                        "ctarr_exact_boxes_s": None if t_exact is None else round(t_exact, 2),
                        "region_voxel_ratio": round(1.0 / side["region_voxel_fraction"], 2),
                        "voxel_ratio": round(ratio, 2),
                        "speedup": round(t_stock / t_ctarr, 2),
                        "speedup_of_limit": round(t_stock / t_ctarr / ratio, 3),
                        "ctarr_overhead_s": side["seconds_ctarr"],
                        "overhead_share_of_stock": round(side["seconds_ctarr"] / t_stock, 4),
                        "outside_background": bool(np.all(seg[~inside] == 0)),
                        "inside_equals_stock_on_crop": equal,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        result = {
            "device": args.device,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "model": {
                "patch_size": plans["patch_size"],
                "spacing": plans["spacing"],
                "features_per_stage": plans["architecture"]["arch_kwargs"]["features_per_stage"],
                "n_stages": plans["architecture"]["arch_kwargs"]["n_stages"],
            },
            "input_spacing_mm": list(spacing),
            "flags": "TTA off, step 0.5, sequential (-npp 0 -nps 0), fold 0, model loaded once; times = "
            "predict_from_files_sequential per case" + ("; stock run once per case" if args.stock_once else ""),
            "rows": rows,
        }
        if anatomy:
            result["anatomy_networks"] = anatomy
        write_result(result, args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
