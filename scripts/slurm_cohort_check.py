"""The Python half of scripts/slurm_cohort.sh: build the small cohort, and check that the merged
report of the SLURM array equals the single-process run.

    python scripts/slurm_cohort_check.py cohort WORK            # WORK/cohort (images), WORK/maps (TotalSegmentator)
    python scripts/slurm_cohort_check.py compare WORK N TASKS   # WORK/out (array, merged) vs WORK/single

The cohort (8 cases from examples/data): the abdomen CT, its DICOM series, its lower and upper
60 % (cut along z, geometry kept), the chest CT and its lower 60 %, the small abdomen CT and a copy.
``compare``: the rows of ``out/ctarr_report.json`` (merged) equal those of ``single`` in the same
order, apart from their seconds; the same crop files, equal byte for byte (else voxel for voxel
with the same grid: named); every array task ended with the exit code of its own part (0 when
its rows are clean, else 1: nnUNetv2_ctarr_crop's own rule). TASKS: ``k=STATE:EXIT`` per task.
Exit code 0 only when all of that holds.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ctarr.core.outputs.batch_report import CLEAN

REPO = Path(__file__).resolve().parents[1]
TS, CHEST = REPO / "examples/data/totalseg_example", REPO / "examples/data/chest_lidc"
SOURCES = {
    "abd": (TS / "example_ct.nii.gz", TS / "example_ct_totalseg_v2.nii.gz"),
    "chest": (CHEST / "chest_ct_3mm.nii.gz", CHEST / "chest_ct_3mm_totalseg_v2.nii.gz"),
    "sm": (TS / "example_ct_sm.nii.gz", TS / "example_ct_sm_totalseg_v2.nii.gz"),
}
CUTS = {"abd_lower": ("abd", 0.0, 0.6), "abd_upper": ("abd", 0.4, 1.0), "chest_lower": ("chest", 0.0, 0.6)}


def build_cohort(work: Path) -> None:
    imgs, maps = work / "cohort", work / "maps"
    for d in (imgs, maps):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for case, (img, lab) in {**SOURCES, "sm_copy": SOURCES["sm"]}.items():
        shutil.copy(img, imgs / f"{case}.nii.gz")
        shutil.copy(lab, maps / f"{case}.nii.gz")
    shutil.copytree(TS / "example_ct_dicom", imgs / "abd_dicom")
    shutil.copy(TS / "example_ct_dicom_totalseg_v2.nii.gz", maps / "abd_dicom.nii.gz")
    for case, (name, lo, hi) in CUTS.items():
        for src, dst in zip(SOURCES[name], (imgs, maps)):
            im = sitk.ReadImage(str(src))
            n = im.GetSize()[2]
            sitk.WriteImage(im[:, :, int(lo * n) : int(hi * n)], str(dst / f"{case}.nii.gz"))
    print(f"cohort: {len(list(imgs.iterdir()))} cases in {imgs} (maps in {maps})")


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(path.read_text())["rows"]]


def _same_image(a: Path, b: Path) -> bool:
    ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    grid = lambda im: (im.GetSize(), im.GetSpacing(), im.GetOrigin(), im.GetDirection(), im.GetPixelID())
    return grid(ia) == grid(ib) and np.array_equal(sitk.GetArrayViewFromImage(ia), sitk.GetArrayViewFromImage(ib))


def compare(work: Path, n_parts: int, tasks: dict[int, str]) -> list[str]:
    """What differs (empty: the array run equals the single run)."""
    out, single, bad = work / "out", work / "single", []
    for report in (out / "ctarr_report.json", single / "ctarr_report.json"):
        if not report.is_file():
            return [f"no {report}"]
    merged, one = _rows(out / "ctarr_report.json"), _rows(single / "ctarr_report.json")
    if merged != one:
        diff = [f"{a['case']}/{a['region']}" for a, b in zip(merged, one) if a != b]
        bad.append(f"report rows differ ({len(merged)} merged vs {len(one)} single; first differing: {diff[:3]})")
    files = lambda d: sorted(p.name for p in d.glob("*.nii.gz"))
    if files(out) != files(single):
        bad.append(
            f"crop files differ: only in array {sorted(set(files(out)) - set(files(single)))}, "
            f"only in single {sorted(set(files(single)) - set(files(out)))}"
        )
    same_bytes = [
        f for f in files(single) if (out / f).is_file() and (out / f).read_bytes() == (single / f).read_bytes()
    ]
    other = [f for f in files(single) if (out / f).is_file() and f not in same_bytes]
    bad += [f"crop {f} differs voxel for voxel or in its grid" for f in other if not _same_image(out / f, single / f)]
    for k in range(n_parts):
        part = out / f"ctarr_report.part{k}of{n_parts}.json"
        if not part.is_file():
            bad.append(f"array task {k} ({tasks.get(k, 'unseen')}) wrote no {part.name}")
            continue
        rows = json.loads(part.read_text())["rows"]
        want = "0" if all(r["status"] in CLEAN for r in rows) else "1"
        if tasks.get(k, "?:?").split(":")[1] != want:
            bad.append(f"array task {k} ended {tasks.get(k, 'unseen')}, expected exit code {want}")
    print(f"report rows: {len(merged)} merged, {len(one)} single process; equal apart from seconds: {merged == one}")
    print(
        f"crop files: {len(files(out))} from the array, {len(files(single))} single; identical byte for byte: "
        f"{len(same_bytes)}, voxel for voxel only: {len(other)}"
    )
    print("array tasks (state:exit): " + ", ".join(f"{k}={v}" for k, v in sorted(tasks.items())))
    return bad


def main(argv: list[str]) -> int:
    if argv[:1] == ["cohort"] and len(argv) == 2:
        build_cohort(Path(argv[1]))
        return 0
    if argv[:1] == ["compare"] and len(argv) >= 3:
        tasks = {int(k): v for k, v in (t.split("=", 1) for t in argv[3:])}
        bad = compare(Path(argv[1]), int(argv[2]), tasks)
        for line in bad:
            print(f"MISMATCH: {line}")
        return 1 if bad else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
