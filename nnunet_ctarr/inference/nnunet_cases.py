"""How CTARR jobs become nnU-Net cases: image properties that carry the crop task (npy entry
points), and pseudo-cases linked to a case's files under a new name (one per crop, file entry points)."""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

from .plans import CropTask
from .preprocessing import TASK_KEY


def as_list(x, n: int | None = None) -> list:
    return x if isinstance(x, list) else [x] * (n or 1)


def with_task(props: dict, task: CropTask | None) -> dict:
    props = copy.deepcopy(props)
    if task is not None:
        props[TASK_KEY] = task
    return props


def pseudo_case(tmp: Path, name: str, files: list[str], prev: str | None, ending: str):
    """Links (or copies) of a case's channel files (and previous-stage segmentation) under a new case name."""
    links = []
    for c, f in enumerate(files):
        links.append(_link_or_copy(f, tmp / "in" / f"{name}_{c:04d}{ending}"))
    return links, (_link_or_copy(prev, tmp / "prev" / f"{name}{ending}") if prev else None)


def prev_stage_folder(prevs: list) -> str | None:
    """nnU-Net takes a folder of previous-stage segmentations; all entries share it."""
    prevs = [p for p in prevs if p]
    return os.path.dirname(prevs[0]) if prevs else None


def _link_or_copy(src: str, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(os.path.abspath(src), dst)
    except OSError:
        shutil.copyfile(src, dst)
    return str(dst)
