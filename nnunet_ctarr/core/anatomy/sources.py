"""Where a scan's anatomy comes from, without nnU-Net: precomputed label maps or given in memory.

An anatomy source has ``prepare(cases)`` (case -> input files, called once per run) and
``load(case, warnings) -> AnatomyMasks``. Label *names* are mapped to the 19 CTARR groups, so
TotalSegmentator v1/v2 maps, its mask folders and 19-group maps all work. The nnU-Net model
source (``inference.anatomy_model.ModelAnatomy``) has the same two methods.
"""
from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..base.cases import match_case_file
from ..base.errors import CTARRError, WarningLog
from ..base.files import input_stamp
from ..base.nnunet_format import foreground_labels
from .grid import WORKING_SPACING_MM
from .groups import LabelScheme
from .label_maps import detect_scheme
from .masks import AnatomyMasks, load_anatomy


def anatomy_stamp(source, case: str) -> dict | None:
    """What ``--continue`` records of a case's anatomy (the matched file and its size and time, the
    model and its checkpoints, ...), or None for a source without a stamp."""
    stamp = getattr(source, "stamp", None)
    return stamp(case) if stamp is not None else None


class PrecomputedAnatomy:
    """Label maps / mask folders: a single path, or a folder matched by case id."""

    def __init__(self, path: str | Path, fmt: str = "auto"):
        self.path = Path(path)
        self.fmt = fmt
        if not self.path.exists():
            raise CTARRError(f"anatomy segmentation not found: {self.path}")

    def prepare(self, cases: dict[str, list[str]]) -> None:
        self.cases = list(cases)

    def load(self, case: str, warnings: WarningLog) -> AnatomyMasks:
        """The case's anatomy for the registration (a mask folder is built on the working grid)."""
        path = match_case_file(self.path, case, self.cases, "anatomy segmentation")
        return load_anatomy(path, self.fmt, warnings, WORKING_SPACING_MM)

    def stamp(self, case: str) -> dict:
        """The case's anatomy file (or mask folder) with its size and modification time."""
        try:
            path = match_case_file(self.path, case, self.cases, "anatomy segmentation")
        except CTARRError:
            return {"path": None}
        return {"path": str(path), "format": self.fmt, "stamp": input_stamp(path)}


def scheme_from_dataset_json(dataset_json: dict, name: str) -> LabelScheme:
    """Label scheme from an nnU-Net ``dataset.json`` (``labels``: name -> id)."""
    labels = foreground_labels(dataset_json, f"anatomy model {name}")
    return LabelScheme(f"nnU-Net model {name}", {v: k for k, v in labels.items()})


class InMemoryAnatomy:
    """Anatomy given directly (a label image, an ``AnatomyMasks`` or a path), for one case."""

    def __init__(self, anatomy, case: str):
        if anatomy is None:
            raise CTARRError(f"{case}: pass anatomy=... (label image or file) for the npy entry points")
        self.anatomy, self.case = anatomy, case

    def prepare(self, cases: dict[str, list[str]]) -> None:
        """Nothing to prepare."""

    def load(self, case: str, warnings: WarningLog) -> AnatomyMasks:
        if isinstance(self.anatomy, AnatomyMasks):
            return self.anatomy
        if isinstance(self.anatomy, sitk.Image):
            scheme = detect_scheme(self.anatomy, None, warnings)
            return AnatomyMasks.from_label_image(self.anatomy, scheme, warnings, case)
        return load_anatomy(self.anatomy, "auto", warnings)
