"""Cohort throughput of nnUNetv2_ctarr_crop: single- vs multi-region runs, -np 2, --continue.

    python benchmarks/bench_cohort.py [--n 60] [--regions liver spleen kidneys pancreas stomach lungs]
                                      [--out docs/benchmark_cohort.json] [--work DIR] [--runs a b c d]

Writes ``n`` 3 mm scans into a temporary folder: the two bundled subjects (TotalSegmentator's
abdomen CT and the LIDC chest CT at 3 mm) with their TotalSegmentator maps as precomputed
anatomy, in the standard perturbations (field-of-view cuts, quarter turns, z flips, zoom, header
orientations) and then random ones (z window, zoom, turns, flips) until there are ``n``, the two
subjects alternating. Then runs the console command ``nnUNetv2_ctarr_crop`` as a subprocess
(start-up and imports included) over the whole folder:

* (a) once per region, ``-r R`` (six runs, six output folders);
* (b) once with every region, ``-r R1 .. R6`` (one registration per scan);
* (c) the same with ``-np 2``;
* (d) (b) again with ``--continue`` over (b)'s finished output folder.

Per run: wall seconds (total and per scan), CPU seconds (user + sys of the command and its
workers, from ``getrusage``), the peak resident memory of the command's process
and of each of its worker processes (``VmHWM`` of ``/proc/<pid>/status``, polled every 0.1 s
over the process tree), the load average before and after, and the report's status counts.
Checks: (b) and (c) give every case and region what (a) gives (crop mode, trust verdict, index
boxes, the crops' voxels and geometry), and (d) rewrites no file (every modification time
unchanged). Targets (issue #13): (c) <= 0.35 x (a) and <= 0.6 s per scan incl. start-up on 2
cores; (d) <= 10 % of the first run (b).

With ``--work DIR`` the scans, outputs and runs are kept in ``DIR`` (``runs.json``), so the runs
can be done in several calls (``--runs a``, or one region at a time ``--runs a_liver``, then
``--runs b c d``); the summary covers every run recorded there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ctarr.core.base.images import read_image
from nnunet_ctarr.evaluation.perturbations import random_perturbations, standard_perturbations

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = {
    "abdomen": ("totalseg_example/example_ct.nii.gz", "totalseg_example/example_ct_totalseg_v2.nii.gz"),
    "chest": ("chest_lidc/chest_ct_3mm.nii.gz", "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz"),
}
REGIONS = ["liver", "spleen", "kidneys", "pancreas", "stomach", "lungs"]
REPORTS = ("ctarr_report.json", "ctarr_report.csv", "ctarr_report.html")


def make_cases(data: Path, folder: Path, n: int) -> dict[str, str]:
    """``n`` scans and anatomy maps as ``images/<case>.nii.gz`` and ``anatomy/<case>.nii.gz``;
    returns case -> perturbation."""
    (folder / "images").mkdir(parents=True)
    (folder / "anatomy").mkdir()
    per_subject = {}
    for subj, (img_f, lab_f) in SUBJECTS.items():
        img, lab = read_image(data / img_f), read_image(data / lab_f)
        cases = standard_perturbations(img, lab)
        n_random = max(0, (n + 1) // 2 - len(cases))
        cases += random_perturbations(img, lab, n_random, seed=len(per_subject))
        per_subject[subj] = cases
    picked = [(s, p) for group in zip(*per_subject.values()) for s, p in zip(per_subject, group)][:n]
    out = {}
    for k, (subj, p) in enumerate(picked):
        case = f"{subj}_{k:03d}"
        sitk.WriteImage(p.image, str(folder / "images" / f"{case}.nii.gz"))
        sitk.WriteImage(p.labels, str(folder / "anatomy" / f"{case}.nii.gz"))
        out[case] = p.name
    return out


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    except OSError:
        pass
    return out


def _hwm_kb(pid: int) -> tuple[int, str] | None:
    """(peak RSS in kB, command line) of a process, None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]), cmd
    return None


def _role(pid: int, root: int, cmd: str) -> str:
    if pid == root:
        return "parent"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    return "worker" if "multiprocessing" in cmd else "other"


def run_measured(cmd: list[str], interval: float = 0.1) -> dict:
    """Run ``cmd``; wall seconds, exit code, output tail and peak RSS (MB) per process of its tree."""
    peaks: dict[int, tuple[int, str]] = {}
    load_before = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            todo = [proc.pid]
            while todo:
                pid = todo.pop()
                got = _hwm_kb(pid)
                if got:
                    peaks[pid] = (max(got[0], peaks.get(pid, (0, ""))[0]), got[1] or peaks.get(pid, (0, ""))[1])
                todo += _children(pid)
            done.wait(interval)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    done.set()
    th.join()
    roles: dict[str, list[float]] = {}
    for pid, (kb, c) in sorted(peaks.items()):
        roles.setdefault(_role(pid, proc.pid, c), []).append(round(kb / 1024, 1))
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
        "returncode": proc.returncode,
        "peak_rss_mb": roles,
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "stdout_tail": stdout[-600:],
        "stderr_tail": "" if proc.returncode in (0, 1) else stderr[-3000:],
    }


def _file_key(path: Path) -> str:
    """Hash of the voxels and the geometry (file bytes may differ where the content does not)."""
    img = sitk.ReadImage(str(path))
    h = hashlib.sha1(sitk.GetArrayViewFromImage(img).tobytes())
    h.update(np.asarray([*img.GetOrigin(), *img.GetSpacing(), *img.GetDirection()]).tobytes())
    return h.hexdigest()


def outcomes(folder: Path, regions: list[str]) -> dict[str, dict]:
    """``case/region`` -> what decides a crop: the report's status and verdict, and where something
    was written the index boxes and the crops' content (a single-region run writes no sidecar for
    a region outside the field of view; a multi-region run lists it in the scan's sidecar)."""
    out = {}
    for row in json.loads((folder / "ctarr_report.json").read_text())["rows"]:
        if row["region"] in regions:
            status = "cropped" if row["status"] == "done before" else row["status"]
            out[f"{row['case']}/{row['region']}"] = {"status": status, "trusted": row["trusted"]}
    for side_f in sorted(folder.glob("*.ctarr.json")):
        side = json.loads(side_f.read_text())
        for name in regions:
            e = side["regions"].get(name)
            if e is None or e["mode"] == "outside":
                continue
            out[f"{side['case']}/{name}"].update(
                boxes=[(b["status"], b["index_start_xyz"], b["index_stop_xyz"]) for b in e.get("boxes", [])],
                outputs={o["image"]: _file_key(folder / o["image"]) for o in e.get("outputs", [])},
            )
    return out


def compare(ref: dict, got: dict) -> list[str]:
    """Keys where ``got`` differs from ``ref`` (missing on either side included)."""
    return sorted(k for k in set(ref) | set(got) if ref.get(k) != got.get(k))


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir()) if p.is_file()}


def report_counts(folder: Path) -> dict:
    f = folder / "ctarr_report.json"
    return {k: v for k, v in json.loads(f.read_text())["counts"].items() if v} if f.exists() else {}


def crop_cmd(tmp: Path, out: str, regions: list[str], *extra: str) -> list[str]:
    exe = str(Path(sys.executable).parent / "nnUNetv2_ctarr_crop")
    return [exe, "-i", str(tmp / "images"), "-anatomy_seg", str(tmp / "anatomy"), "-r", *regions, "-o",
            str(tmp / out), *extra]  # fmt: skip


def shown(cmd: list[str], tmp: Path) -> str:
    """The command as documented (``IMAGES``/``ANATOMY``/``OUT`` for the temporary paths)."""
    names = {str(tmp / "images"): "IMAGES", str(tmp / "anatomy"): "ANATOMY"}
    words = ["nnUNetv2_ctarr_crop"] + [names.get(w, w) for w in cmd[1:]]
    return " ".join("OUT" + w[len(str(tmp / "out")) :] if w.startswith(str(tmp / "out")) else w for w in words)


def run_a(tmp: Path, regions: list[str], runs: dict) -> None:
    for r in regions:
        cmd = crop_cmd(tmp, f"out_a_{r}", [r])
        runs[f"(a) {r}"] = {"command": shown(cmd, tmp), **run_measured(cmd), "report_counts": report_counts(
            tmp / f"out_a_{r}")}  # fmt: skip
        print(f"(a) {r}: {runs[f'(a) {r}']['wall_s']} s", flush=True)


def run_bc(tmp: Path, regions: list[str], runs: dict, which: str) -> None:
    key, out, extra = {"b": ("(b)", "out_b", ()), "c": ("(c)", "out_c", ("-np", "2"))}[which]
    if (tmp / out).exists():
        shutil.rmtree(tmp / out)
    cmd = crop_cmd(tmp, out, regions, *extra)
    runs[key] = {"command": shown(cmd, tmp), **run_measured(cmd), "report_counts": report_counts(tmp / out)}
    print(f"{key}: {runs[key]['wall_s']} s", flush=True)


def run_d(tmp: Path, regions: list[str], runs: dict) -> None:
    before = mtimes(tmp / "out_b")
    cmd = crop_cmd(tmp, "out_b", regions, "--continue")
    runs["(d)"] = {"command": shown(cmd, tmp), **run_measured(cmd), "report_counts": report_counts(tmp / "out_b")}
    after = mtimes(tmp / "out_b")
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    runs["(d)"]["files_checked"] = len(before)
    runs["(d)"]["rewritten"] = changed
    print(f"(d): {runs['(d)']['wall_s']} s, rewritten: {changed}", flush=True)


def summarise(tmp: Path, n: int, regions: list[str], runs: dict) -> dict:
    """Targets and checks from the runs done so far (their output folders in ``tmp``)."""
    a_keys = [f"(a) {r}" for r in regions]
    wall = {k: runs[k]["wall_s"] for k in ("(b)", "(c)", "(d)") if k in runs}
    targets, checks = {}, {}
    if all(k in runs for k in a_keys):
        wall["(a)"] = round(sum(runs[k]["wall_s"] for k in a_keys), 2)
        single = {}
        for r in regions:
            single.update(outcomes(tmp / f"out_a_{r}", [r]))
        checks["case-region pairs compared"] = len(single)
        for k, out in (("(b)", "out_b"), ("(c)", "out_c")):
            if k in runs:
                checks[f"{k} differs from (a) in"] = compare(single, outcomes(tmp / out, regions)) or "none"
    if "(c)" in wall and "(a)" in wall:
        targets["(c) wall / (a) wall <= 0.35"] = (
            round(wall["(c)"] / wall["(a)"], 3),
            wall["(c)"] / wall["(a)"] <= 0.35,
        )
    if "(c)" in wall:
        targets["(c) s per scan incl. start-up <= 0.6"] = (round(wall["(c)"] / n, 3), wall["(c)"] / n <= 0.6)
    if "(d)" in wall and "(b)" in wall:
        targets["(d) wall / (b) wall <= 0.10"] = (round(wall["(d)"] / wall["(b)"], 3), wall["(d)"] / wall["(b)"] <= 0.1)
        d = runs["(d)"]
        checks["(d) files in (b)'s folder"] = d["files_checked"]
        checks["(d) rewrote crops or sidecars"] = [f for f in d["rewritten"] if f not in REPORTS] or "none"
        checks["(d) rewrote the batch report"] = [f for f in d["rewritten"] if f in REPORTS] or "none"
    for k in ("(b)", "(c)"):
        if k in wall and "(a)" in wall:
            checks[f"{k} wall / (a) wall"] = round(wall[k] / wall["(a)"], 3)
    return {"wall_s": wall, "targets": targets, "checks": checks}


def to_markdown(result: dict) -> str:
    n, runs = result["n_scans"], result["runs"]
    rows = [
        "| run | command | wall s | wall s per scan | CPU s (user+sys, all processes) | "
        "peak RSS MB: parent / each worker | load avg (1, 5, 15 min) before → 1 min after | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in runs.items():
        workers = r["peak_rss_mb"].get("worker", [])
        mem = f"{max(r['peak_rss_mb'].get('parent', [0]))}" + (f" / {', '.join(map(str, workers))}" if workers else "")
        counts = ", ".join(f"{k} {v}" for k, v in r.get("report_counts", {}).items())
        load = ", ".join(map(str, r["load_avg_before"]))
        rows.append(
            f"| {key} | `{r['command']}` | {r['wall_s']} | {r['wall_s'] / n:.3f} | {r['cpu_s']} | {mem} | "
            f"{load} → {r['load_avg_after'][0]} | {counts} |"
        )
    s = result["summary"]
    if "(a)" in s["wall_s"]:
        rows.append(f"| (a) total | the {len(result['regions'])} runs above | {s['wall_s']['(a)']} | "
                    f"{s['wall_s']['(a)'] / n:.3f} | | | | |")  # fmt: skip
    rows += [
        "",
        f"{n} scans, regions {' '.join(result['regions'])}.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    rows += [f"| {k} | {v} | {'yes' if met else 'NO'} |" for k, (v, met) in s["targets"].items()]
    rows += ["", "| check | result |", "|---|---|"]
    rows += [f"| {k} | {v} |" for k, v in s["checks"].items()]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--n", type=int, default=60, help="number of scans (default 60)")
    ap.add_argument("--regions", nargs="+", default=REGIONS)
    ap.add_argument(
        "--runs",
        nargs="+",
        default=list("abcd"),
        help="which runs: a b c d, or a_<region> for one single-region run (default: a b c d); with --work, "
        "runs of an earlier call are kept and summarised",
    )
    ap.add_argument("--out", default=None, help="write the result JSON here")
    ap.add_argument("--work", default=None,
                    help="work in this folder and keep it (scans, outputs, runs.json), so the runs can be done "
                         "in several calls; default: a temporary folder, removed at the end")  # fmt: skip
    args = ap.parse_args()
    bad = [w for w in args.runs if w not in set("abcd") and w not in {f"a_{r}" for r in args.regions}]
    if bad:
        ap.error(f"--runs: unknown {' '.join(bad)}")
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ctarr_bench_cohort_"))
    try:
        state_f = tmp / "runs.json"
        state = json.loads(state_f.read_text()) if state_f.exists() else {}
        if state.get("n_scans") != args.n or state.get("regions") != args.regions:
            shutil.rmtree(tmp, ignore_errors=True)
            state = {"n_scans": args.n, "regions": args.regions, "runs": {},
                     "case_perturbations": make_cases(Path(args.data), tmp, args.n)}  # fmt: skip
        runs = state["runs"]
        for which in args.runs:
            if which == "a" or which.startswith("a_"):
                run_a(tmp, args.regions if which == "a" else [which[2:]], runs)
            elif which in "bc":
                run_bc(tmp, args.regions, runs, which)
            else:
                run_d(tmp, args.regions, runs)
            state_f.write_text(json.dumps(state, indent=2) + "\n")
        order = [f"(a) {r}" for r in args.regions] + ["(b)", "(c)", "(d)"]
        state["runs"] = {k: runs[k] for k in order if k in runs}
        result = {
            "n_scans": len(state["case_perturbations"]),
            "regions": args.regions,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "runs": state["runs"],
            "summary": summarise(tmp, len(state["case_perturbations"]), args.regions, state["runs"]),
            "case_perturbations": state["case_perturbations"],
        }
        md = to_markdown(result)
        result["markdown"] = md
        print(md)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if not args.work:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
