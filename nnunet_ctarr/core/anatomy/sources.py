"""Where a scan's anatomy comes from: the :class:`AnatomySource` interface, the sources without
nnU-Net (precomputed label maps or mask folders, an anatomy given in memory) and the one registry
of ``-anatomy_model`` keywords (:data:`ANATOMY_KEYWORDS`).

Label *names* are mapped to the 19 CTARR groups, so TotalSegmentator v1/v2 maps, its mask folders
and 19-group maps all work. The other sources subclass :class:`AnatomySource` too: the HU anatomy
(:mod:`.hu_anatomy`) and nnU-Net models (``inference.anatomy_model.ModelAnatomy``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import SimpleITK as sitk

from ..base.cases import match_case_file
from ..base.errors import CTARRError, WarningLog
from ..base.files import input_stamp
from ..base.nnunet_format import foreground_labels
from . import totalseg_weights
from .grid import WORKING_SPACING_MM
from .groups import LabelScheme
from .label_maps import detect_scheme
from .masks import AnatomyMasks, load_anatomy


class AnatomySource(ABC):
    """Where each case's anatomy comes from (``needs_files``: ``prepare`` reads the cases' input
    files, as a model does). ``prepare`` is called once per run with every case's
    input files (a model predicts them all there); ``load`` gives one case's anatomy (a user error
    raises :class:`CTARRError`); ``stamp`` is what ``--continue`` records of it (the matched file
    with its size and time, the model and its checkpoint, ...). ``reads_voxels``: the anatomy is
    made from the image's voxels in this process (:meth:`from_image`), so a boxes-only run must
    read them; otherwise the image's grid is all it needs."""

    needs_files: bool = False
    reads_voxels: bool = False

    @abstractmethod
    def prepare(self, cases: dict[str, list[str]]) -> None:
        """Called once per run: case id -> its input files (channel 0 first)."""

    @abstractmethod
    def load(self, case: str, warnings: WarningLog) -> AnatomyMasks:
        """The anatomy of one prepared case."""

    def stamp(self, case: str) -> dict:
        """What ``--continue`` compares of the case's anatomy."""
        return {"source": type(self).__name__}

    def from_image(self, image: sitk.Image, warnings: WarningLog, case: str = "") -> AnatomyMasks | None:
        """The anatomy made from an image already in memory, or None when this source reads files
        (the default; the HU anatomy computes it from the image)."""
        return None


#: ``-anatomy_model`` keywords besides a model folder -> what they are (argparse help, docs, checks)
ANATOMY_KEYWORDS: dict[str, str] = {
    "hu": "the CT's own HU values (no network; the default when no anatomy option is given)",
    **{k: f"{m.title}, from TotalSegmentator's weights folder" for k, m in totalseg_weights.MODELS.items()},
}


def anatomy_keyword(name: str | None) -> str | None:
    """The registry keyword ``name`` spells (case-insensitive), or None when it is none (a folder)."""
    key = (name or "").strip().lower()
    return key if key in ANATOMY_KEYWORDS else None


class PrecomputedAnatomy(AnatomySource):
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


class InMemoryAnatomy(AnatomySource):
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
