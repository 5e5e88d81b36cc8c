"""nnUNetv2_ctarr_convert_totalsegmentator: TotalSegmentator dataset -> 19-group nnU-Net dataset.

Reads ``TS_ROOT/sXXXX/ct.nii.gz`` and ``TS_ROOT/sXXXX/segmentations/<structure>.nii.gz``
(v2 or v1 structure names) and writes ``DatasetID_CTARRAnatomy`` into ``nnUNet_raw`` with the
19 CTARR groups as labels (label names = group names). The train/val/test split of
``meta.csv`` is honoured (test subjects go to ``imagesTs``/``labelsTs``). Resumable: subjects
whose outputs exist are skipped.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from multiprocessing import get_context
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from ..anatomy import GROUPS, load_mask_folder
from ..errors import CTARRError, WarningLog
from ..io import write_image
from .common import run_cli, setup_logging

DATASET_NAME = "CTARRAnatomy"


def read_splits(root: Path) -> dict[str, str]:
    """subject id -> split from ``meta.csv`` (``;`` or ``,`` separated; empty if absent)."""
    meta = root / "meta.csv"
    if not meta.is_file():
        return {}
    text = meta.read_text()
    dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=";,")
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows or "image_id" not in rows[0] or "split" not in rows[0]:
        raise CTARRError(f"{meta}: expected columns 'image_id' and 'split'")
    return {r["image_id"].strip(): r["split"].strip() for r in rows}


def find_subjects(root: Path, subset: list[str] | None) -> list[Path]:
    if not root.is_dir():
        raise CTARRError(f"TotalSegmentator root not found: {root}")
    subjects = sorted(d for d in root.iterdir() if d.is_dir() and (d / "segmentations").is_dir())
    if not subjects:
        raise CTARRError(f"{root} has no subject folders with a segmentations/ folder (expected sXXXX/ct.nii.gz "
                         "and sXXXX/segmentations/<structure>.nii.gz)")
    if subset:
        if len(subset) == 1 and subset[0].isdigit():
            subjects = subjects[:int(subset[0])]
        else:
            wanted = set(subset)
            missing = wanted - {s.name for s in subjects}
            if missing:
                raise CTARRError(f"--subset: subjects not found in {root}: {sorted(missing)[:10]}")
            subjects = [s for s in subjects if s.name in wanted]
    return subjects


def convert_subject(args: tuple[str, str, str]) -> tuple[str, str]:
    """Convert one subject; returns (subject, 'done' | 'skipped' | error message)."""
    subject, img_dir, lab_dir = args
    subject_dir = Path(subject)
    sid = subject_dir.name
    img_out = Path(img_dir) / f"{sid}_0000.nii.gz"
    lab_out = Path(lab_dir) / f"{sid}.nii.gz"
    if img_out.is_file() and lab_out.is_file():
        return sid, "skipped"
    try:
        ct = subject_dir / "ct.nii.gz"
        if not ct.is_file():
            raise CTARRError(f"{ct} missing")
        anat = load_mask_folder(subject_dir / "segmentations", WarningLog())
        img = sitk.ReadImage(str(ct))
        lab = anat.labels
        if lab.GetSize() != img.GetSize():
            raise CTARRError(f"masks have size {lab.GetSize()}, ct.nii.gz {img.GetSize()}")
        lab.CopyInformation(img)
        write_image(lab, lab_out)                 # atomic; a subject counts as done once both exist
        write_image(img, img_out)
        return sid, "done"
    except (CTARRError, RuntimeError, OSError) as e:
        return sid, f"error: {str(e).splitlines()[0][:200]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nnUNetv2_ctarr_convert_totalsegmentator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-i", dest="root", required=True, help="TotalSegmentator dataset root")
    ap.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id, e.g. 500")
    ap.add_argument("-o", dest="raw", default=None, help="nnUNet_raw folder (default: $nnUNet_raw)")
    ap.add_argument("--subset", nargs="+", default=None, help="subject ids, or one number N = the first N subjects")
    ap.add_argument("-np", dest="processes", type=int, default=4, help="parallel workers")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise CTARRError("set nnUNet_raw or pass -o NNUNET_RAW_FOLDER")
    root = Path(args.root)
    subjects = find_subjects(root, args.subset)
    splits = read_splits(root)
    out = Path(raw) / f"Dataset{args.dataset_id:03d}_{DATASET_NAME}"
    others = [d for d in Path(raw).glob(f"Dataset{args.dataset_id:03d}_*") if d.name != out.name] if Path(raw).is_dir() else []
    if others:
        raise CTARRError(f"dataset id {args.dataset_id} is taken by {others[0].name}")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in subjects:
        test = splits.get(s.name) == "test"
        jobs.append((str(s), str(out / ("imagesTs" if test else "imagesTr")), str(out / ("labelsTs" if test else "labelsTr"))))
    results = []
    if args.processes > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(min(args.processes, len(jobs))) as pool:
            for r in tqdm(pool.imap_unordered(convert_subject, jobs), total=len(jobs), desc="converting", file=sys.stderr):
                results.append(r)
    else:
        for j in tqdm(jobs, desc="converting", file=sys.stderr, disable=len(jobs) < 2):
            results.append(convert_subject(j))
    errors = [(s, m) for s, m in results if m.startswith("error")]
    for s, m in errors:
        print(f"{s}: {m}", file=sys.stderr)
    n_train = len(list((out / "labelsTr").glob("*.nii.gz")))
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{g: i + 1 for i, g in enumerate(GROUPS)}},
        "numTraining": n_train,
        "file_ending": ".nii.gz",
        "name": f"Dataset{args.dataset_id:03d}_{DATASET_NAME}",
        "description": "CTARR's 19 anatomy groups from TotalSegmentator labels (nnunet-ctarr)",
        "reference": "Wasserthal et al., TotalSegmentator (CC BY 4.0); Buddenkotte et al., CTARR",
        "ctarr": {"source": str(root), "split_from_meta_csv": bool(splits)},
    }
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
    done = sum(m == "done" for _, m in results)
    skipped = sum(m == "skipped" for _, m in results)
    print(f"{out}: {done} converted, {skipped} already there, {len(errors)} failed; {n_train} training cases, "
          f"{len(list((out / 'labelsTs').glob('*.nii.gz')))} test cases")
    return 1 if errors else 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
