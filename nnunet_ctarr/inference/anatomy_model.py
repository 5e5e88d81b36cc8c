"""An nnU-Net model as the anatomy source: any model whose labels are CTARR groups or
TotalSegmentator structure names (TotalSegmentator's own model folders included). It is loaded
once per run and predicts all cases in one batch at its own resolution."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import SimpleITK as sitk

from ..core.anatomy.masks import AnatomyMasks
from ..core.anatomy.sources import AnatomySource, scheme_from_dataset_json
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.files import input_stamp
from ..core.base.images import read_image
from ..core.base.nnunet_format import n_channels


class ModelAnatomy(AnatomySource):
    """Any nnU-Net model folder whose labels are CTARR groups or TotalSegmentator structure
    names. Runs a plain ``nnUNetPredictor`` at the model's own resolution. ``name``: how the
    anatomy's source is labelled (default: the folder's name; with a name, e.g. the keyword
    ``totalsegmentator:3mm``, the label scheme names the dataset folder above the model folder)."""

    needs_files = True

    def __init__(self, model_folder: str | Path, folds=None, checkpoint: str = "checkpoint_final.pth",
                 device: str = "cpu", step_size: float = 0.5, disable_tta: bool = False,
                 npp: int = 2, nps: int = 2, verbose: bool = False, name: str | None = None):
        self.model_folder = Path(model_folder)
        self.name = name or self.model_folder.name
        if not (self.model_folder / "dataset.json").is_file() or not (self.model_folder / "plans.json").is_file():
            raise CTARRError(f"{self.model_folder} is not an nnU-Net model folder (dataset.json/plans.json missing)")
        self.dataset_json = json.loads((self.model_folder / "dataset.json").read_text())
        folder_name = self.model_folder.name if name is None else self.model_folder.parent.name
        self.scheme = scheme_from_dataset_json(self.dataset_json, folder_name)
        if not self.scheme.observed.any():
            raise CTARRError(f"anatomy model {self.model_folder}: none of its labels is a CTARR group or a "
                             "TotalSegmentator structure name")
        self.folds, self.checkpoint, self.device = folds, checkpoint, device
        self.step_size, self.disable_tta, self.npp, self.nps, self.verbose = step_size, disable_tta, npp, nps, verbose
        self._tmp = tempfile.TemporaryDirectory(prefix="ctarr_anatomy_")
        self.out = Path(self._tmp.name)

    def prepare(self, cases: dict[str, list[str]]) -> None:
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        predictor = nnUNetPredictor(tile_step_size=self.step_size, use_mirroring=not self.disable_tta,
                                    device=torch.device(self.device), verbose=self.verbose,
                                    allow_tqdm=not self.verbose)
        predictor.initialize_from_trained_model_folder(str(self.model_folder), self.folds, self.checkpoint)
        todo = {c: f for c, f in cases.items() if not self.label_file(c).exists()}
        if not todo:
            return
        lists = [self._model_inputs(c, files[:n_channels(self.dataset_json)]) for c, files in todo.items()]
        outs = [str(self.out / c) for c in todo]
        if (self.npp == 0 and self.nps == 0) or len(todo) == 1:   # one scan: no worker processes
            predictor.predict_from_files_sequential(lists, outs, False, True, None)
        else:
            predictor.predict_from_files(lists, outs, False, True, max(self.npp, 1), max(self.nps, 1))

    def stamp(self, case: str) -> dict:
        """The model folder (its files' total size and latest time), folds and checkpoint."""
        return {"model": str(self.model_folder), "folds": self.folds, "checkpoint": self.checkpoint,
                "stamp": input_stamp(self.model_folder)}

    def load(self, case: str, warnings: WarningLog) -> AnatomyMasks:
        p = self.label_file(case)
        if not p.exists():
            raise CTARRError(f"anatomy model produced no output for {case}")
        return AnatomyMasks.from_label_image(read_image(p), self.scheme, warnings, f"{self.name}:{case}")

    def label_file(self, case: str) -> Path:
        return self.out / f"{case}{self.file_ending}"

    @property
    def file_ending(self) -> str:
        return self.dataset_json.get("file_ending", ".nii.gz")

    def _model_inputs(self, case: str, files: list[str]) -> list[str]:
        """The case's channel files as the model reads them: a DICOM folder or another image
        format is written once as ``file_ending`` (the model's reader may not know it)."""
        out = []
        for k, f in enumerate(files):
            if Path(f).is_file() and f.lower().endswith(self.file_ending):
                out.append(f)
                continue
            dst = self.out / "inputs" / f"{case}_{k:04d}{self.file_ending}"
            dst.parent.mkdir(exist_ok=True)
            sitk.WriteImage(read_image(f), str(dst), True)
            out.append(str(dst))
        return out

    def __getstate__(self) -> dict:
        """Workers get the predicted maps' folder; the owner keeps the temporary folder alive."""
        return {k: v for k, v in self.__dict__.items() if k != "_tmp"}

