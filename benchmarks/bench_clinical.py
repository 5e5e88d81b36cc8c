"""Clinical-resolution crop benchmark (issue #22): this checkout against a previous release, side by side.

    python benchmarks/bench_clinical.py [--old /tmp/old] [--repeats 3] [--work DIR]
                                        [--out docs/benchmark_clinical.json] [--cases chest_native trunk ...]

The previous release is a git worktree with its own venv, made like /work/wt/mkwt.sh makes one:

    git worktree add --detach /tmp/old 4f4e3fe && cd /tmp/old && python3 -m venv .venv
    echo <main venv site-packages> > .venv/lib/python3.11/site-packages/_main_venv.pth
    .venv/bin/pip install wheel && .venv/bin/pip install --no-deps --no-build-isolation -e .

Cases (written once into ``--work``; in-sample: both subjects built the atlas):

* ``chest_native``: the LIDC chest as stored, 512x512x133 at 0.70x0.70x2.5 mm, with its
  TotalSegmentator map (/work/shared/data/chest_lidc).
* ``chest_1mm``: the same chest resampled to 0.70x0.70x1.0 mm (512x512x333; CT linear, map nearest).
* ``abdomen_0p8``: the bundled abdomen (3 mm) resampled to 0.8x0.8x1.5 mm on a 512x512 in-plane grid
  (409.6 mm field of view centred on the scan; air outside), 224 slices.
* ``trunk``: 512x512x>=400 at 0.8x0.8x1.25 mm, built by stacking two scans on one grid: the chest
  (C5..L3, whole z range) on top of the abdomen's part below its L3 vertebra (L4 to the femur),
  each moved so its x/y centre is the grid's centre; CT linear, maps nearest. Two patients, so
  the anatomy is not one body, but every group sits where a trunk scan has it.
* ``chest_3mm``: the bundled 3 mm chest (the resolution of the cohort benchmark), for comparison.

Runs: the console command ``nnUNetv2_ctarr_crop -i <case> -anatomy_seg <map> -r R -o out`` as a
subprocess (start-up included), for ``-r all`` and single regions (``liver``, ``lungs``), new and old
interleaved, ``--repeats`` times each; the medians are reported. Per run: wall seconds, peak
resident memory (GNU ``time``'s %M: ``wait4`` of a child forked from this process reports at least
this process's size), the sidecar's per-stage seconds, the load average before the run.
Checks: every crop of the new run equals the old run's voxel for voxel with the same geometry.
Boxes only: ``-r all --boxes_only`` of this checkout, ``--repeats`` times (the old release has no such
mode): wall, peak memory, and the statuses and index boxes against the full run's sidecar.
Writes: per case, the crops of ``-r all`` written in-process with SimpleITK (sliced, as the old
release), with :func:`nnunet_ctarr.core.base.nifti.write_images` of the sliced crops at each ISA-L
level, and of :class:`~nnunet_ctarr.core.base.nifti.Crop` boxes (streamed, no slicing), 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ctarr.core.anatomy.groups import LabelScheme
from nnunet_ctarr.core.base.geometry import Geometry
from nnunet_ctarr.core.base.images import read_image
from nnunet_ctarr.core.base.nifti import LEVELS, Crop, write_images

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CTARR_SHARED_DATA", "/work/shared/data"))
CHEST = (DATA / "chest_lidc" / "chest_ct.nii.gz", DATA / "chest_lidc" / "chest_ct_totalseg_v2.nii.gz")
ABDOMEN = (
    ROOT / "examples/data/totalseg_example/example_ct.nii.gz",
    ROOT / "examples/data/totalseg_example/example_ct_totalseg_v2.nii.gz",
)
CASES = ("chest_native", "chest_1mm", "abdomen_0p8", "trunk", "chest_3mm")
REGION_RUNS = (("all",), ("liver",), ("lungs",))


# ----------------------------------------------------------------------------- cases
def _resample(img: sitk.Image, ref: sitk.Image, label: bool, shift=(0.0, 0.0, 0.0)) -> sitk.Image:
    """``img`` on ``ref``'s grid (world point p of ref reads img at p + shift)."""
    tf = sitk.TranslationTransform(3, [float(v) for v in shift])
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(img, ref, tf, interp, 0 if label else -1024, img.GetPixelID())


def _grid(size, spacing, origin) -> sitk.Image:
    ref = sitk.Image([int(v) for v in size], sitk.sitkUInt8)
    ref.SetSpacing([float(v) for v in spacing])
    ref.SetOrigin([float(v) for v in origin])
    return ref


def _centre(img: sitk.Image) -> np.ndarray:
    return np.array(img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()]))


def _z_range(lab: sitk.Image, name: str) -> tuple[float, float]:
    """World z extent (min, max of voxel centres) of a TotalSegmentator v2 structure."""
    ident = {v: k for k, v in LabelScheme.named("ts_v2").names.items()}[name]
    z = np.nonzero((sitk.GetArrayViewFromImage(lab) == ident).any((1, 2)))[0]
    pts = [lab.TransformIndexToPhysicalPoint([0, 0, int(k)])[2] for k in (z[0], z[-1])]
    return min(pts), max(pts)


def make_case(name: str, folder: Path) -> Path:
    """Writes ``<folder>/<name>/{image,anatomy}/<name>.nii.gz``; returns the case folder."""
    out = folder / name
    if (out / "anatomy" / f"{name}.nii.gz").exists():
        return out
    (out / "image").mkdir(parents=True, exist_ok=True)
    (out / "anatomy").mkdir(exist_ok=True)
    if name in ("chest_native", "chest_3mm"):
        img, lab = (
            CHEST
            if name == "chest_native"
            else (
                ROOT / "examples/data/chest_lidc/chest_ct_3mm.nii.gz",
                ROOT / "examples/data/chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz",
            )
        )
        shutil.copy(img, out / "image" / f"{name}.nii.gz")
        shutil.copy(lab, out / "anatomy" / f"{name}.nii.gz")
        return out
    if name in ("chest_1mm", "abdomen_0p8"):
        img, lab = (read_image(p) for p in (CHEST if name == "chest_1mm" else ABDOMEN))
        if name == "chest_1mm":
            size = (512, 512, int(round(img.GetSize()[2] * img.GetSpacing()[2] / 1.0)))
            ref = _grid(size, (img.GetSpacing()[0], img.GetSpacing()[1], 1.0), (0, 0, 0))
            ref.SetDirection(img.GetDirection())
            ref.SetOrigin(img.GetOrigin())
        else:
            spacing = (0.8, 0.8, 1.5)
            size = (512, 512, int(round(img.GetSize()[2] * img.GetSpacing()[2] / 1.5)))
            ref = _grid(size, spacing, _centre(img) - 0.5 * (np.array(size) - 1) * spacing)
        sitk.WriteImage(sitk.Cast(_resample(img, ref, False), sitk.sitkInt16), str(out / "image" / f"{name}.nii.gz"))
        sitk.WriteImage(_resample(lab, ref, True), str(out / "anatomy" / f"{name}.nii.gz"))
        return out
    _trunk(out)
    return out


def _trunk(out: Path) -> None:
    """The chest on top of the abdomen below its L3, on one LPS 512x512 grid at 0.8 x 0.8 x 1.25 mm."""
    spacing = np.array([0.8, 0.8, 1.25])
    chest = [read_image(p) for p in CHEST]
    abdomen = [read_image(p) for p in ABDOMEN]
    c_lo, c_hi = Geometry.of(chest[0]).bounds()
    a_lo, _ = Geometry.of(abdomen[0]).bounds()
    a_top = _z_range(abdomen[1], "vertebrae_L3")[0] - 0.5 * abdomen[1].GetSpacing()[2]
    slabs = [
        (abdomen, a_lo[2], int((a_top - a_lo[2]) // spacing[2])),
        (chest, c_lo[2], int((c_hi[2] - c_lo[2]) // spacing[2])),
    ]
    origin = np.array([-255.5 * spacing[0], -255.5 * spacing[1], 0.0])
    parts, start = [], 0
    for (img, lab), z_lo, n in slabs:
        ref = _grid((512, 512, n), spacing, origin + [0, 0, start * spacing[2]])
        c = _centre(img)
        shift = (c[0], c[1], z_lo + 0.5 * spacing[2] - start * spacing[2])  # trunk point + shift = scan point
        parts.append((sitk.Cast(_resample(img, ref, False, shift), sitk.sitkInt16), _resample(lab, ref, True, shift)))
        start += n
    for k, sub in enumerate(("image", "anatomy")):
        res = sitk.GetImageFromArray(np.concatenate([sitk.GetArrayViewFromImage(p[k]) for p in parts], 0))
        res.SetSpacing(spacing.tolist())
        res.SetOrigin(origin.tolist())
        sitk.WriteImage(res, str(out / sub / "trunk.nii.gz"))
    assert start >= 400, start


# ----------------------------------------------------------------------------- runs
def run_crop(exe: Path, case: Path, regions: tuple[str, ...], out: Path, extra: tuple[str, ...] = ()) -> dict:
    """One console run: wall seconds, peak memory, the sidecar's seconds, the load before."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(exe), "-i", str(case / "image"), "-anatomy_seg", str(case / "anatomy"), "-r", *regions, "-o", str(out),
           *extra]
    load = os.getloadavg()
    peak_file = out.parent / f"{out.name}.peak_kb"
    timer = ["/usr/bin/time", "-f", "%M", "-o", str(peak_file)] if Path("/usr/bin/time").exists() else []
    t = time.perf_counter()
    proc = subprocess.Popen([*timer, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    # a child forked from this (large) process keeps its RSS high-water mark across exec, so wait4's
    # ru_maxrss is at least this process's size; GNU time forks the command from a small process
    peak_kb = int(peak_file.read_text().split()[-1]) if timer else usage.ru_maxrss
    sidecar = next(out.glob("*.ctarr.json"), None)
    if sidecar is None:
        raise RuntimeError(f"{' '.join(cmd)} wrote no sidecar: {err[-500:]}")
    side = json.loads(sidecar.read_text())
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "load_avg_1min": round(load[0], 2),
        "exit": proc.returncode,
        "stages_s": side["seconds"],
        "region_s": {k: v.get("seconds") for k, v in side["regions"].items()},
    }


def boxes_only_runs(exe: Path, case: Path, out: Path, full: Path, repeats: int) -> dict:
    """``-r all --boxes_only`` (this checkout only; the old release has no such mode): median wall and
    peak memory, and whether its sidecar holds the statuses and index boxes of the full run's and
    it wrote nothing else."""
    runs = [run_crop(exe, case, ("all",), out, ("--boxes_only",)) for _ in range(repeats)]

    def boxes(folder: Path) -> dict:
        side = json.loads(next(folder.glob("*.ctarr.json")).read_text())["regions"]
        return {k: (v["status"], [(b["index_start_xyz"], b["index_stop_xyz"]) for b in v["boxes"]])
                for k, v in side.items()}

    return {**_median(runs), "walls_s": [r["wall_s"] for r in runs], "same_boxes": boxes(out) == boxes(full),
            "no_image_written": not any(p.name.endswith((".nii", ".nii.gz", ".png")) for p in out.iterdir())}


def same_crops(a: Path, b: Path) -> list[str]:
    """Differences between two output folders' crops (voxels, pixel type, geometry of the files both
    hold, and the files only one holds)."""
    na, nb = ({p.name for p in f.glob("*.nii.gz")} for f in (a, b))
    diffs = [f"only in {f.name}: {n}" for f, n in ((a, sorted(na - nb)), (b, sorted(nb - na))) if n]
    for n in sorted(na & nb):
        x, y = sitk.ReadImage(str(a / n)), sitk.ReadImage(str(b / n))
        same = (
            x.GetPixelID() == y.GetPixelID()
            and x.GetSize() == y.GetSize()
            and x.GetOrigin() == y.GetOrigin()
            and x.GetSpacing() == y.GetSpacing()
            and x.GetDirection() == y.GetDirection()
            and np.array_equal(sitk.GetArrayViewFromImage(x), sitk.GetArrayViewFromImage(y))
        )
        if not same:
            diffs.append(n)
    return diffs


def _crop_boxes(image: sitk.Image, out: Path) -> list[tuple[tuple, tuple]]:
    """The index boxes of the images one ``-r all`` output folder holds (the whole image for a region
    written whole)."""
    side = json.loads(next(out.glob("*.ctarr.json")).read_text())
    boxes = []
    for entry in side["regions"].values():
        for o in entry["outputs"]:
            if o.get("box") is None:
                boxes.append(((0, 0, 0), tuple(image.GetSize())))
            else:
                b = entry["boxes"][o["box"]]
                boxes.append((tuple(b["index_start_xyz"]), tuple(b["index_stop_xyz"])))
    return boxes


def write_timings(case: Path, out: Path) -> dict:
    """The crops of one ``-r all`` output written in-process: SimpleITK (slice + write, as the old
    release), write_images of the sliced crops (ISA-L levels, 1 and 2 threads), and of Crop boxes
    streamed from the image (no slicing)."""
    image = read_image(next((case / "image").iterdir()))
    boxes = _crop_boxes(image, out)
    itemsize = sitk.GetArrayViewFromImage(image).itemsize
    raw_mb = sum(np.prod(np.subtract(b, a)) for a, b in boxes) * itemsize / 1e6
    res = {"n_crops": len(boxes), "raw_mb": round(float(raw_mb), 1)}
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp = Path(tmp)

        def timed(key: str, write, prefix: str) -> None:
            t = time.perf_counter()
            write()
            mb = sum(p.stat().st_size for p in tmp.glob(f"{prefix}*")) / 1e6
            res[key] = {"s": round(time.perf_counter() - t, 3), "mb": round(mb, 1)}

        def sliced():
            return [image[tuple(slice(a, b) for a, b in zip(lo, hi))] for lo, hi in boxes]

        def isal(prefix, level, threads, crops):
            return lambda: write_images(
                [(c, tmp / f"{prefix}{i}.nii.gz") for i, c in enumerate(crops())], level, threads
            )

        timed("simpleitk", lambda: [sitk.WriteImage(c, str(tmp / f"s{i}.nii.gz")) for i, c in enumerate(sliced())], "s")
        for level in LEVELS:
            timed(f"isal_l{level}_t1", isal(f"i{level}_", level, 1, sliced), f"i{level}_")
        timed("isal_l2_t2", isal("j", 2, 2, sliced), "j")
        boxed = lambda: [Crop(image, lo, hi) for lo, hi in boxes]
        timed("crop_l2_t1", isal("k", 2, 1, boxed), "k")
        timed("crop_l2_t2", isal("m", 2, 2, boxed), "m")
        timed("crop_nii_t2", lambda: write_images([(c, tmp / f"u{i}.nii") for i, c in enumerate(boxed())], 2, 2), "u")
    return res


def _median(runs: list[dict]) -> dict:
    keys = {k for r in runs for k in r["stages_s"]}
    return {
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "load_avg_1min": [r["load_avg_1min"] for r in runs],
        "stages_s": {k: round(statistics.median(r["stages_s"].get(k, 0.0) for r in runs), 4) for k in sorted(keys)},
    }


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def render(result: dict) -> str:
    """Markdown tables of a result (docs/benchmarks.md)."""
    stages = (
        "read_image",
        "read_anatomy_labels",
        "registration",
        "registration_anatomy_to_grid",
        "registration_landmarks",
        "registration_refinement",
        "decide_and_cut",
    )
    lines = [
        f"old = {result['old']}, new = {result['new']}; medians of {result['repeats']} runs each, "
        "old and new interleaved; load = 1-min load average before each new run",
        "",
        "| case | size (spacing mm) | -r | wall old | wall new | new/old | peak MB old / new | crops identical "
        "| load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in result["cases"].items():
        for regions, r in c["runs"].items():
            sp = "x".join(f"{v:g}" for v in c["spacing_xyz"])
            lines.append(
                f"| {name} | {'x'.join(map(str, c['size_xyz']))} ({sp}) | {regions} | {r['old']['wall_s']:.2f} "
                f"| {r['new']['wall_s']:.2f} | {r['ratio_wall']:.2f} | {r['old']['peak_rss_mb']:.0f} / "
                f"{r['new']['peak_rss_mb']:.0f} | {'yes' if r['crops_identical'] else 'NO'} "
                f"| {', '.join(f'{v:.1f}' for v in r['new']['load_avg_1min'])} |"
            )
    lines += [
        "",
        "Per-stage seconds (sidecar, median), `-r all`, old -> new:",
        "",
        "| case | " + " | ".join(s.replace("registration_", "reg. ") for s in stages) + " |",
        "|---|" + "---|" * len(stages),
    ]
    for name, c in result["cases"].items():
        r = c["runs"]["all"]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{_fmt(r['old']['stages_s'].get(s))} -> {_fmt(r['new']['stages_s'].get(s))}" for s in stages)
            + " |"
        )
    lines += [
        "",
        "`-r all --boxes_only` (this checkout; median wall with start-up, every run, peak MB, the statuses and "
        "index boxes of the full run, no image written):",
        "",
        "| case | wall s | runs s | peak MB | same boxes | no image written |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in result["cases"].items():
        b = c.get("boxes_only")
        if b:
            lines.append(f"| {name} | {b['wall_s']:.2f} | {', '.join(f'{v:.2f}' for v in b['walls_s'])} "
                         f"| {b['peak_rss_mb']:.0f} | {'yes' if b['same_boxes'] else 'NO'} "
                         f"| {'yes' if b['no_image_written'] else 'NO'} |")
    lines += [
        "",
        "Writing the crops of `-r all` in-process (seconds / MB on disk; sliced: `image[box]` copies first, "
        "Crop: streamed from the image):",
        "",
        "| case | crops (raw MB) | SimpleITK | ISA-L 0 | 1 | 2 | 3 | 2, 2 threads | Crop, 2 | Crop, 2, 2 threads "
        "| Crop .nii, 2 threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = (
        "simpleitk",
        "isal_l0_t1",
        "isal_l1_t1",
        "isal_l2_t1",
        "isal_l3_t1",
        "isal_l2_t2",
        "crop_l2_t1",
        "crop_l2_t2",
        "crop_nii_t2",
    )
    for name, c in result["cases"].items():
        w = c["writes"]
        cells = " | ".join(f"{w[k]['s']:.2f} / {w[k]['mb']:.0f}" for k in keys)
        lines.append(f"| {name} | {w['n_crops']} ({w['raw_mb']:.0f}) | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="/tmp/old", help="worktree of the previous release (with .venv)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=None, help="folder for cases and outputs (default: a temporary one)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmark_clinical.json"))
    ap.add_argument("--markdown", action="store_true", help="print the tables of --out and stop")
    args = ap.parse_args()
    if args.markdown:
        print(render(json.loads(Path(args.out).read_text())))
        return
    exes = {
        "new": Path(sys.executable).parent / "nnUNetv2_ctarr_crop",
        "old": Path(args.old) / ".venv" / "bin" / "nnUNetv2_ctarr_crop",
    }
    old_commit = subprocess.run(
        ["git", "-C", args.old, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    new_commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    work = Path(args.work or tempfile.mkdtemp(prefix="ctarr_clinical_"))
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "old": old_commit,
        "new": new_commit,
        "repeats": args.repeats,
        "cases": {},
    }
    for name in args.cases:
        case = make_case(name, work / "cases")
        img = sitk.ImageFileReader()
        img.SetFileName(str(next((case / "image").iterdir())))
        img.ReadImageInformation()
        entry = {"size_xyz": list(img.GetSize()), "spacing_xyz": [round(v, 4) for v in img.GetSpacing()], "runs": {}}
        for regions in REGION_RUNS:
            runs = {"new": [], "old": []}
            for _ in range(args.repeats):
                for which in ("old", "new"):
                    runs[which].append(run_crop(exes[which], case, regions, work / "out" / name / which))
            diffs = same_crops(work / "out" / name / "new", work / "out" / name / "old")
            med = {w: _median(r) for w, r in runs.items()}
            entry["runs"][" ".join(regions)] = {
                **med,
                "ratio_wall": round(med["new"]["wall_s"] / med["old"]["wall_s"], 3),
                "crops_identical": not diffs,
                "differing": diffs,
                "all": runs,
            }
            print(
                f"{name:13s} -r {' '.join(regions):6s} old {med['old']['wall_s']:.2f}s new {med['new']['wall_s']:.2f}s "
                f"({med['new']['wall_s'] / med['old']['wall_s']:.2f}x) identical={not diffs} "
                f"load={runs['new'][-1]['load_avg_1min']}",
                flush=True,
            )
            if regions == ("all",):
                entry["writes"] = write_timings(case, work / "out" / name / "new")
                entry["boxes_only"] = boxes_only_runs(exes["new"], case, work / "out" / name / "boxes",
                                                      work / "out" / name / "new", args.repeats)
                print(f"{name:13s} -r all --boxes_only {entry['boxes_only']['wall_s']:.2f}s "
                      f"same boxes={entry['boxes_only']['same_boxes']}", flush=True)
        result["cases"][name] = entry
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")  # after each case: kept if stopped
    print(render(result))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
