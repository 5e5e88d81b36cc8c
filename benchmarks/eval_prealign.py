"""Two-scan prealignment: the SSBR seed's protocol, CTARR vs a FASTA-like grid search.

    python benchmarks/eval_prealign.py [--n 60] [--n_cross 8] [--seed 0] \
        [--out docs/prealign_evaluation.md] [--json docs/prealign_evaluation.json]

Same-subject pairs on the two bundled real CTs (moving = random sub-volume, fixed = a cropped /
shifted / zoomed / reoriented copy with exactly known truth) and cross-subject pairs (chest vs
abdomen, vertebral landmark reference). Protocol and metric: benchmarks/prealign_protocol.py and
docs/prealign_evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from prealign_protocol import (
    FAIL_MM,
    KINDS,
    MIN_SLICES,
    TAIL_FRACTION,
    GridSettings,
    cross_subject_pairs,
    ctarr_locate,
    ctarr_prealign,
    evaluate_pair,
    grid_search,
    landmark_errors,
    landmark_floor,
    landmarks,
    load_subject,
    pair_fields,
    same_subject_pairs,
    summarise,
)

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import LabelScheme
from nnunet_ctarr.core.base.errors import CTARRError

ROOT = Path(__file__).resolve().parents[1]
METHODS = (("ctarr", "CTARR (atlas transforms composed)"), ("grid", "FASTA-like grid search (translation, SSD)"))
SETS = (
    ("same_all", "same subject, all pairs"),
    ("same_translation", "same subject, translation-only pairs"),
    ("same_zoom", "same subject, zoom only"),
    ("same_rot_flip", "same subject, 90° rotation / z flip (± zoom)"),
    ("cross", "cross subject (vertebral landmarks)"),
)


def _set_of(row: dict) -> list[str]:
    if row["kind"] == "cross_subject":
        return ["cross"]
    k = {"translation": "same_translation", "zoom": "same_zoom"}.get(row["kind"], "same_rot_flip")
    return ["same_all", k]


def run(data: Path, n: int, n_cross: int, seed: int, grid: GridSettings, log=print) -> list[dict]:
    torch.set_num_threads(2)
    atlas = Atlas.load()
    scheme = LabelScheme.named("ts_v2")
    subjects = {s: load_subject(data, s) for s in ("abdomen", "chest")}
    rows = []
    # same subject: n split over the two subjects
    n_abd = (n + 1) // 2
    for si, (name, n_s) in enumerate((("abdomen", n_abd), ("chest", n - n_abd))):
        for pair in same_subject_pairs(subjects[name], n_s, seed + si):
            try:
                row = evaluate_pair(pair, atlas, scheme, grid=grid)
            except CTARRError as e:  # reported as a failure of CTARR, never dropped
                row = {
                    **pair_fields(pair),
                    "ctarr": {"z_err_mm": float("inf"), "error": str(e), "seconds": 0.0},
                    "grid": _grid_only(pair, grid),
                }
            rows.append(row)
            log(
                f"{len(rows):3d} {pair.name}: CTARR {row['ctarr']['z_err_mm']:.1f} mm, "
                f"grid {row['grid']['z_err_mm']:.1f} mm"
            )
    # cross subject: sub-volumes of one subject against the whole other one; the fixed scan is
    # registered once (cached), as a prealignment service would
    for mov, fix in (("abdomen", "chest"), ("chest", "abdomen")):
        lm_m, lm_f = landmarks(subjects[mov]), landmarks(subjects[fix])
        fixed_loc = None
        for pair, names in cross_subject_pairs(subjects[mov], subjects[fix], n_cross, seed + 10):
            if fixed_loc is None:
                fixed_loc = ctarr_locate(pair.fixed, atlas, scheme)
            ct = ctarr_prealign(pair.moving, pair.fixed, atlas, scheme, fixed_loc=fixed_loc)
            g = grid_search(pair.moving.image, pair.fixed.image, grid)
            row = {
                "subject": pair.subject,
                "kind": "cross_subject",
                "pair": f"{pair.subject}: moving {pair.moving.name}",
                "moving": pair.moving.info,
                "landmarks_inside": names,
                "landmark_floor_mm": round(landmark_floor(lm_m, lm_f, names), 2),
                "ctarr": {
                    **_r(landmark_errors(lm_m, lm_f, names, ct["A"], ct["b"])),
                    "seconds_moving_only": round(ct["seconds_moving_only"], 3),
                    "seconds": round(ct["seconds_moving_only"], 3),
                },
                "grid": {
                    **_r(landmark_errors(lm_m, lm_f, names, np.eye(3), g["t"])),
                    "seconds": round(g["seconds"], 3),
                },
            }
            rows.append(row)
            log(
                f"{len(rows):3d} {row['pair']}: CTARR {row['ctarr']['z_err_mm']:.1f} mm, "
                f"grid {row['grid']['z_err_mm']:.1f} mm"
            )
    return rows


def _grid_only(pair, grid):
    from prealign_protocol import z_errors

    g = grid_search(pair.moving.image, pair.fixed.image, grid)
    return {**_r(z_errors(pair, np.eye(3), g["t"])), "seconds": round(g["seconds"], 3)}


def _err(d: dict) -> float:
    """A method's z error of a row; a registration that raised (stored as null) counts as infinite."""
    v = d.get("z_err_mm")
    return float("inf") if v is None else float(v)


def _r(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def summary(rows: list[dict]) -> dict:
    out = {}
    for key, _ in SETS:
        sel = [r for r in rows if key in _set_of(r)]
        out[key] = {m: summarise([_err(r[m]) for r in sel], [r[m]["seconds"] for r in sel]) for m, _ in METHODS}
        if key != "cross":
            out[key]["ctarr"]["s_per_pair_fixed_cached"] = (
                round(float(np.median([r["ctarr"].get("seconds_moving_only", 0.0) for r in sel])), 3) if sel else None
            )
    return out


PROTOCOL = """## Protocol

* **Data**: the two bundled real CTs (`examples/data`): abdomen–pelvis (`totalseg_example/example_ct`,
  122×101×112 at 3 mm) and chest C5–L3 (`chest_lidc/chest_ct_3mm`, 120×120×111 at 3 mm), each with
  its TotalSegmentator v2 labels. The anatomy of every copy is its labels cut / zoomed / turned
  identically (no segmentation model in the loop), as in the other benchmarks.
* **Same-subject pairs** (half per subject): *moving* = a sub-volume by the seed's rule, start slice
  uniform in [0, N − ⌈N/3⌉], length uniform in [20, N − start] slices. The seed's scans have
  ≥ 300 slices and its start limit "end − 100th slice" leaves at least the last third of the scan;
  ours have 111–112 slices, where 100 would leave only 12 start positions, so the third is kept
  (start ≤ slice 74). 20 slices are 60 mm here. *fixed* = another "acquisition" of the same body:
  a z window of 80–100 % of the scan at a random position, an xy crop of 0–10 % per side, a table
  shift (header origin; x, y ± 30 mm, z ± 200 mm), and by pair kind (cycled `translation, zoom,
  translation, rot_flip, translation, zoom_rot_flip`): a zoom f ∈ [0.85, 1.15] (spacing × f, array
  unchanged: the anatomy scaled by f) and/or a 90/180/270° xy rotation and/or z flip of the array
  with the header left alone. Helpers from `nnunet_ctarr/evaluation/perturbations.py`.
* **Truth**: every copy carries the exact affine from its world mm to the original scan's world mm
  (cut, zoom, array turn/flip and shift composed; checked voxel by voxel in
  `tests/test_prealign_protocol.py`).
* **Error**: for the centre of every axial slice of MOVING, the predicted and the true point in
  FIXED are both mapped back into the original scan (body mm); the pair's **z error is the mean
  over MOVING's slices of |z_pred − z_true|** (it includes scale errors and a wrong z flip, which an
  error at the centre alone would not show). Failure: > 30 mm. The JSON also has the error at
  MOVING's centre, the maximum over its slices and the 3D error at its centre.
* **CTARR**: anatomy from the labels, both scans registered to the atlas (`pipeline.locate`, default
  settings), transforms composed (`prealign.moving_to_fixed`). s/pair = anatomy + 2 registrations +
  composition (images in memory, no file reading); "fixed cached" = the moving scan's part only.
* **Grid search (FASTA-like)**: both CTs clamped to [−1000, 1500] HU, Gaussian-smoothed and
  resampled (linear) onto axis-aligned world grids at one isotropic spacing max(4 mm, largest
  extent / 128) (≤ 128 voxels per axis); the overlap-normalised SSD (mean squared HU difference over
  the overlapping voxels) at **every** integer-voxel translation with an overlap of at least 50 %
  of the smaller volume (a dense 4 mm grid over all x, y, z shifts, computed with FFT
  correlations; the seed's FASTA used 3 × 3 × 71 grid points), then a parabola per axis through
  the best grid point and its neighbours. Translation only: header reorientations are handled
  (the search runs in world coordinates), array rotations / flips and zoom are not — those pairs
  are included on purpose and reported separately.
* **Cross-subject pairs**: the whole scan and sub-volumes (the seed's rule, kept only if they hold a
  reference landmark) of one subject against the whole other subject, both directions. No exact
  truth: the reference is vertebral landmarks found in both scans — the centre of mass of a
  vertebra complete in both (L1) and the top / bottom slice of vertebrae whose end lies inside
  both scans (L1 top/bottom, L2 top, L3 top, T12 bottom, T11 bottom; x, y at the vertebra's
  centre of mass); error = mean |z_pred − z_ref| over those inside MOVING's z range. Organ
  landmarks (kidney tops, liver and spleen lower tips) are listed per pair but not used: between
  these two patients they disagree with the vertebrae by up to 60 mm. *best-shift floor* = mean
  |residual| of the best single z shift fitted to the reference landmarks themselves, i.e. the
  part of the reference that no translation can match.
* **Caveats**: the starter atlas was built from these same two subjects (docs/atlas.md); in
  same-subject pairs both scans go through the same atlas, so atlas bias largely cancels, but an
  independent atlas would be the fairer test. Same-subject copies have identical voxel values, so
  on translation-only pairs the SSD has an exact zero-cost solution — the best case for the grid
  search; a real second acquisition differs in contrast, breathing, noise and reconstruction.
"""


def _acceptance(summ: dict) -> str:
    """The issue's acceptance on the same-subject pairs, computed from the summary."""
    c, g = summ["same_all"]["ctarr"], summ["same_all"]["grid"]
    ok = lambda b: "**yes**" if b else "**NO**"
    return (
        f"Acceptance (same-subject pairs, this run): CTARR median z error ≤ 6 mm: {ok(c['median_mm'] <= 6)} "
        f"({c['median_mm']:.1f} mm); no failure > 30 mm: {ok(c['failures'] == 0)} ({c['failures']} of {c['n']}); "
        f"CTARR better than the grid search: median {c['median_mm']:.1f} vs {g['median_mm']:.1f} mm, "
        f"p90 {c['p90_mm']:.1f} vs {g['p90_mm']:.1f} mm, failures {c['failures']} vs {g['failures']}."
    )


def markdown(rows: list[dict], summ: dict, meta: dict) -> str:
    L = [
        "# Two-scan prealignment: SSBR-seed protocol, CTARR vs a FASTA-like grid search",
        "",
        f"Generated by `{meta['command']}` ({meta['seconds_total']:.0f} s in all on {meta['machine']}"
        + (
            f", 1-min load average {meta['load_average_start']:.1f} at the start"
            if "load_average_start" in meta
            else ""
        )
        + f"; seed {meta['seed']}). Protocol and definitions: below; discussion: "
        "[prealign.md](prealign.md#evaluation-ssbr-seed-protocol).",
        "",
        "| method | pair set | n | median z error (mm) | p90 (mm) | max (mm) | failures > 30 mm | s / pair (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in SETS:
        for m, mlabel in METHODS:
            s = summ[key][m]
            if not s.get("n"):
                continue
            sp = f"{s['s_per_pair']:.2f}"
            if m == "ctarr" and key != "cross":
                sp += f" ({summ[key]['ctarr']['s_per_pair_fixed_cached']:.2f} with the fixed registration cached)"
            elif m == "ctarr":
                sp += " (fixed registration cached)"
            L.append(
                f"| {mlabel} | {label} | {s['n']} | {s['median_mm']:.1f} | {s['p90_mm']:.1f} | {s['max_mm']:.1f} | "
                f"{s['failures']} | {sp} |"
            )
    L += ["", _acceptance(summ), "", PROTOCOL, "## Worst pairs", ""]
    for m, mlabel in METHODS:
        same = sorted((r for r in rows if r["kind"] != "cross_subject"), key=lambda r: -_err(r[m]))[:5]
        L.append(f"{mlabel}, same subject:")
        L.append("")
        for r in same:
            extra = (
                f"; orientation found moving: {r['ctarr'].get('moving_orientation')}, fixed: "
                f"{r['ctarr'].get('fixed_orientation')}"
                if m == "ctarr"
                else ""
            )
            L.append(
                f"* {_err(r[m]):.1f} mm (centre {r[m].get('z_err_centre_mm', float('nan')):.1f} mm) — "
                f"{r['pair']}, z overlap {r.get('overlap_fraction_z', float('nan')):.2f}{extra}"
            )
        L.append("")
    cross = [r for r in rows if r["kind"] == "cross_subject"]
    if cross:
        L += [
            "## Cross-subject pairs",
            "",
            (
                "| pair | landmarks inside (vertebral reference) | best-shift floor (mm) | CTARR (mm) | grid (mm) | "
                "CTARR per landmark (mm) |"
            ),
            "|---|---|---|---|---|---|",
        ]
        for r in cross:
            ref = [k for k in r["landmarks_inside"] if k.startswith("vertebrae")]
            per = ", ".join(f"{k.replace('vertebrae_', '')} {v:.0f}" for k, v in r["ctarr"]["per_landmark_mm"].items())
            L.append(
                f"| {r['pair']} | {len(ref)} | {r['landmark_floor_mm']:.1f} | {r['ctarr']['z_err_mm']:.1f} | "
                f"{r['grid']['z_err_mm']:.1f} | {per} |"
            )
        L.append("")
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--n", type=int, default=60, help="same-subject pairs (split over the two subjects)")
    ap.add_argument("--n_cross", type=int, default=8, help="cross-subject pairs per direction")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spacing", type=float, default=GridSettings.spacing_mm, help="grid search: voxel size (mm)")
    ap.add_argument(
        "--min_overlap",
        type=float,
        default=GridSettings.min_overlap,
        help="grid search: minimum overlap, fraction of the smaller volume",
    )
    ap.add_argument("--out", default=None, help="markdown report")
    ap.add_argument("--json", default=None)
    ap.add_argument("--from_json", default=None, help="only re-render the markdown from a JSON of an earlier run")
    args = ap.parse_args()
    if args.from_json:
        d = json.loads(Path(args.from_json).read_text())
        md = markdown(d["pairs"], d["summary"], d["meta"])
        print(md)
        if args.out:
            Path(args.out).write_text(md + "\n")
        return
    grid = GridSettings(spacing_mm=args.spacing, min_overlap=args.min_overlap)
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    rows = run(Path(args.data), args.n, args.n_cross, args.seed, grid)
    summ = summary(rows)
    cmd = (
        f"python benchmarks/eval_prealign.py --n {args.n} --n_cross {args.n_cross} --seed {args.seed}"
        + (f" --spacing {args.spacing:g}" if args.spacing != GridSettings.spacing_mm else "")
        + (f" --min_overlap {args.min_overlap:g}" if args.min_overlap != GridSettings.min_overlap else "")
        + (f" --out {args.out}" if args.out else "")
        + (f" --json {args.json}" if args.json else "")
    )
    meta = {
        "command": cmd,
        "seed": args.seed,
        "seconds_total": time.perf_counter() - t0,
        "load_average_start": load,
        "machine": f"{torch.get_num_threads()} CPU threads, {platform.machine()}",
        "protocol": {
            "kinds_cycle": list(KINDS),
            "tail_fraction": TAIL_FRACTION,
            "min_slices": MIN_SLICES,
            "fail_mm": FAIL_MM,
        },
        "grid_settings": vars(grid),
    }
    md = markdown(rows, summ, meta)
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")
    if args.json:
        clean = json.loads(
            json.dumps(
                {"meta": meta, "summary": summ, "pairs": rows},
                default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o),
            ).replace("Infinity", "null")
        )
        Path(args.json).write_text(json.dumps(clean, indent=1))


if __name__ == "__main__":
    main()
