"""nnUNetv2_ctarr_convert_totalsegmentator: TotalSegmentator dataset -> 19-group nnU-Net dataset.

Reads ``TS_ROOT/sXXXX/ct.nii.gz`` and ``TS_ROOT/sXXXX/segmentations/<structure>.nii.gz``
(v2 or v1 structure names) and writes ``DatasetID_CTARRAnatomy`` into ``nnUNet_raw`` with the
19 CTARR groups as labels (label names = group names). The train/val/test split of
``meta.csv`` is honoured (test subjects go to ``imagesTs``/``labelsTs``). Resumable: subjects
whose outputs exist are skipped.
"""
from __future__ import annotations

import json
import os
import sys
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from ..core.anatomy.groups import GROUPS
from ..core.base.errors import CTARRError
from ..training.totalsegmentator import DATASET_NAME, convert_subject, find_subjects, read_splits
from .common import parse, run_cli
from .options import Parser, add_verbose_arg


def build_parser() -> Parser:
    ap = Parser(prog="nnUNetv2_ctarr_convert_totalsegmentator", description=__doc__)
    ap.add_argument("-i", dest="root", required=True, help="TotalSegmentator dataset root")
    ap.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id, e.g. 500")
    ap.add_argument("-o", dest="raw", default=None, help="nnUNet_raw folder (default: $nnUNet_raw)")
    ap.add_argument("--subset", nargs="+", default=None, help="subject ids, or one number N = the first N subjects")
    ap.add_argument("-np", dest="processes", type=int, default=4, help="parallel workers")
    add_verbose_arg(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise CTARRError("set nnUNet_raw or pass -o NNUNET_RAW_FOLDER")
    root = Path(args.root)
    subjects = find_subjects(root, args.subset)
    splits = read_splits(root)
    out = Path(raw) / f"Dataset{args.dataset_id:03d}_{DATASET_NAME}"
    others = [d for d in Path(raw).glob(f"Dataset{args.dataset_id:03d}_*") if d.name != out.name] \
        if Path(raw).is_dir() else []
    if others:
        raise CTARRError(f"dataset id {args.dataset_id} is taken by {others[0].name}")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in subjects:
        test = splits.get(s.name) == "test"
        split = "Ts" if test else "Tr"
        jobs.append((str(s), str(out / f"images{split}"), str(out / f"labels{split}")))
    results = []
    if args.processes > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(min(args.processes, len(jobs))) as pool:
            done = pool.imap_unordered(convert_subject, jobs)
            for r in tqdm(done, total=len(jobs), desc="converting", file=sys.stderr):
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
