"""TotalSegmentator's ``total`` models as anatomy models: where their weights are, found as
TotalSegmentator finds them (pure path logic; neither TotalSegmentator nor nnU-Net is imported).

TotalSegmentator (``totalsegmentator/config.py``, ``get_weights_dir``) keeps every model in ONE
folder: ``$TOTALSEG_WEIGHTS_PATH`` if that variable is set, else ``$TOTALSEG_HOME_DIR/nnunet/results``
if that one is set, else ``~/.totalsegmentator/nnunet/results`` (``/tmp/.totalsegmentator`` when
the home folder is ``/``, as in some containers). A variable that is set wins even where the
model lies elsewhere: TotalSegmentator would not look further either, and its download command
writes to the same folder. Folder and trainer names are those of ``map_tasks_config.py``
(``total`` task: ``fast`` = 297 at 3 mm, ``fastest`` = 298 at 6 mm; plans ``nnUNetPlans``,
configuration ``3d_fullres``, fold 0).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import CTARRError

#: ``totalseg_download_weights -t total_fast`` fetches tasks 297 and 298 (3 mm and 6 mm)
DOWNLOAD_COMMAND = "totalseg_download_weights -t total_fast"
TRAINER_FOLDER = "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"


@dataclass(frozen=True)
class TotalSegModel:
    """One of TotalSegmentator's ``total`` models (folder names as TotalSegmentator writes them)."""
    keyword: str
    title: str
    dataset: str
    trainer_folder: str = TRAINER_FOLDER
    folds: tuple[int, ...] = (0,)


_3MM = TotalSegModel("totalsegmentator:3mm", "TotalSegmentator's 3 mm total model",
                     "Dataset297_TotalSegmentator_total_3mm_1559subj")
_6MM = TotalSegModel("totalsegmentator:6mm", "TotalSegmentator's 6 mm total model",
                     "Dataset298_TotalSegmentator_total_6mm_1559subj")
#: ``-anatomy_model`` keywords (case-insensitive) -> model
MODELS: dict[str, TotalSegModel] = {"totalsegmentator": _3MM, _3MM.keyword: _3MM, _6MM.keyword: _6MM}


def model_for(name: str) -> TotalSegModel | None:
    """The TotalSegmentator model a keyword names (None: not a keyword)."""
    return MODELS.get(name.strip().lower())


def weights_dir(environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """TotalSegmentator's weights folder and the rule that chose it (``get_weights_dir``:
    a variable counts as soon as it is set, as there)."""
    env = os.environ if environ is None else environ
    if "TOTALSEG_WEIGHTS_PATH" in env:
        return Path(env["TOTALSEG_WEIGHTS_PATH"]), "TOTALSEG_WEIGHTS_PATH"
    if "TOTALSEG_HOME_DIR" in env:
        return Path(env["TOTALSEG_HOME_DIR"]) / "nnunet" / "results", "TOTALSEG_HOME_DIR/nnunet/results"
    home = Path("/tmp") if str(Path.home()) == "/" else Path.home()
    return home / ".totalsegmentator" / "nnunet" / "results", \
        "~/.totalsegmentator/nnunet/results (TOTALSEG_WEIGHTS_PATH and TOTALSEG_HOME_DIR not set)"


def missing_files(folder: Path, folds, checkpoint: str) -> list[str]:
    """What a complete nnU-Net model folder has and ``folder`` lacks (relative names)."""
    need = ["dataset.json", "plans.json"] + [f"fold_{f}/{checkpoint}" for f in folds]
    return [n for n in need if not (folder / n).is_file()]


def resolve(name: str, folds=None, checkpoint: str = "checkpoint_final.pth",
            environ: Mapping[str, str] | None = None) -> tuple[Path, list, TotalSegModel]:
    """(model folder, folds, model) of a TotalSegmentator keyword; ``folds`` default: the
    model's own (fold 0). Missing or incomplete weights: a one-line :class:`CTARRError` naming
    the folder looked in and the command that downloads the weights."""
    model = model_for(name)
    if model is None:
        raise CTARRError(f"unknown TotalSegmentator model {name!r}; known: {', '.join(MODELS)}")
    folds = list(model.folds) if folds is None else list(folds)
    root, why = weights_dir(environ)
    dataset = root / model.dataset
    folder = dataset / model.trainer_folder
    if not folder.is_dir():
        raise CTARRError(f"{model.title} ({name}) not found: no {model.dataset}/{model.trainer_folder} in {root} "
                         f"(TotalSegmentator's weights folder, from {why}); download it with: {DOWNLOAD_COMMAND}")
    missing = missing_files(folder, folds, checkpoint)
    if missing:
        raise CTARRError(f"{model.title} ({name}) in {folder} is incomplete (missing {', '.join(missing)}); remove "
                         f"{dataset} (TotalSegmentator skips a folder that exists) and download it again with: "
                         f"{DOWNLOAD_COMMAND}")
    return folder, folds, model
