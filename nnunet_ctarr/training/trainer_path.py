"""Where nnU-Net finds the CTARR trainers (``nnUNet_extTrainer``)."""
from __future__ import annotations

import os
from pathlib import Path


def ext_trainer_folder() -> Path:
    """The folder to put into ``nnUNet_extTrainer`` (a shim re-exporting ``nnunet_ctarr.trainers``)."""
    return Path(__file__).resolve().parent / "ext_trainers"


def ensure_ext_trainer_path() -> None:
    """Add the CTARR trainer folder to ``nnUNet_extTrainer`` of this process (our CLIs call this)."""
    folder = str(ext_trainer_folder())
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder not in current:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(current + [folder])
