"""TotalSegmentator dataset -> 19-group nnU-Net dataset: subjects, splits, one subject's conversion."""
from __future__ import annotations

import csv
from pathlib import Path

import SimpleITK as sitk

from ..core.anatomy.masks import load_mask_folder
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.images import write_image

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
