"""Organ-wise prediction with several nnU-Net models, one localisation per case.

As in Navarro et al. (organ-wise segmentation on localised ROIs, then aggregation): every model
predicts only inside its own CTARR region; all models share one anatomy load and one atlas
registration per case; their full-size predictions are merged into one label map.

Merge rule: at each voxel every model votes for the class its own segmentation gives there
(nnU-Net's argmax, exactly what ``nnUNetv2_predict_ctarr`` would write for that model alone),
mapped to an output label; background and unmapped classes do not vote. The voxel takes the
output label of the vote with the highest probability (the model's probability of the class it
voted for); ties go to the model listed first; no vote means background. So one model's
background never erases another model's foreground, and overlaps go to the most probable.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core.anatomy.atlas import Atlas
from ..core.base.errors import CTARRError, WarningLog, itk_message
from ..core.base.files import write_json
from ..core.base.geometry import Geometry
from ..core.base.images import write_image
from ..core.base.integrity import check_complete
from ..core.localise.decision import Located, locate_case
from ..core.localise.settings import RegistrationSettings
from ..core.regions.cropping import MaxMerge
from .export import label_dtype
from .multi_spec import MultiSpec
from .predictor import nnUNetPredictorCTARR


def _read(files: list[str]):
    """A case's channels as nnU-Net's SimpleITKIO reads them; a damaged or unreadable file is one
    :class:`CTARRError` for that case (nnU-Net's reader would zero-fill a cut file)."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    for f in files:
        check_complete(Path(f))
    try:
        return SimpleITKIO().read_images(files)
    except (RuntimeError, OSError, ValueError) as e:
        raise CTARRError(f"cannot read {', '.join(Path(f).name for f in files)}: {itk_message(e)}") from None


class ModelVotes:
    """Accumulates the models' votes (see module docstring) into one label map, through the one
    max-confidence merge (``core.regions.cropping.MaxMerge``)."""

    def __init__(self, shape_zyx: tuple[int, ...], n_models: int):
        self.merge = MaxMerge(shape_zyx)
        self.labels = np.zeros(shape_zyx, np.uint16)
        self.votes = np.zeros(shape_zyx, np.uint8)
        self.n_models = n_models

    def add(self, k: int, votes: np.ndarray, confidence: np.ndarray) -> None:
        """Model ``k``: ``votes`` = output value per voxel (0 = no vote), ``confidence`` = its
        probability of the voted class."""
        fg = votes > 0
        better = self.merge.add(k, np.where(fg, confidence, -np.inf).astype(np.float32))
        self.labels[better] = votes[better]
        self.votes += fg

    def stats(self) -> tuple[int, list[dict]]:
        """(overlap voxels, per model: voxels won and won in overlaps)."""
        overlap = self.votes >= 2
        winner = self.merge.winner
        w_over = winner[overlap]
        per = [{"voxels_won": int((winner == k).sum()), "voxels_won_in_overlap": int((w_over == k).sum())}
               for k in range(self.n_models)]
        return int(overlap.sum()), per


def model_votes(seg: np.ndarray, probs: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A model's full-size segmentation + probabilities -> (output value per voxel, probability
    of the predicted class)."""
    seg = np.asarray(seg)
    conf = np.take_along_axis(np.asarray(probs), seg[None].astype(np.intp), 0)[0].astype(np.float32)
    return lut[seg], conf


class MultiModelPredictor:
    """Loads every model of a spec once and predicts cases (see module docstring)."""

    def __init__(self, spec: MultiSpec, anatomy_source, atlas: Atlas | None = None, device=None,
                 on_untrusted: str = "whole", step_size: float = 0.5, use_mirroring: bool = True,
                 perform_everything_on_device: bool = True, verbose: bool = False, allow_tqdm: bool = False,
                 crops: str | None = None):
        """``crops``: "fitted" or "exact" for every model (default: each model's own setting)."""
        import torch
        self.spec, self.anatomy, self.atlas = spec, anatomy_source, atlas or Atlas.load()
        self.failed: dict[str, str] = {}
        self.predictors: list[nnUNetPredictorCTARR] = []
        for m in spec.models:
            p = nnUNetPredictorCTARR(tile_step_size=step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                     perform_everything_on_device=perform_everything_on_device,
                                     device=device or torch.device("cpu"), verbose=verbose,
                                     verbose_preprocessing=verbose, allow_tqdm=allow_tqdm)
            p.initialize_from_trained_model_folder(str(m.folder), m.folds, m.checkpoint)
            p.ctarr_setup(m.region, anatomy_source, self.atlas, m.margin_mm, on_untrusted,
                          fit_tiles=(crops or m.crops) == "fitted")
            self.predictors.append(p)

    def localise(self, case: str, geometry: Geometry) -> tuple[Located, dict]:
        """One anatomy load + one registration for the case, shared by all models (each then decides
        as it would alone). A user error (missing or unreadable anatomy) raises :class:`CTARRError`."""
        t0 = time.perf_counter()
        warnings = WarningLog(case=case)
        located = locate_case(geometry, self.anatomy.load(case, warnings), self.atlas, RegistrationSettings(), warnings)
        loc = located.localisation
        info: dict = {"registrations": 1, "registration": loc.registration.to_dict() if loc else None,
                      "refused": located.refused.text() if located.refused else None,
                      "seconds": round(time.perf_counter() - t0, 4), "warnings": list(warnings)}
        return located, info

    def predict_case(self, case: str, data: np.ndarray, props: dict) -> tuple[np.ndarray, dict]:
        """``data`` (c, z, y, x) and ``props`` as read by nnU-Net's SimpleITKIO. Returns the merged
        label map (z, y, x) and the case report; raises :class:`CTARRError` for a user error."""
        t0 = time.perf_counter()
        geometry = Geometry.from_sitk_stuff(props["sitk_stuff"], data.shape[1:])
        shared, info = self.localise(case, geometry)
        report: dict = {"case": case, "labels": self.spec.labels, "localisation": info}
        merge = ModelVotes(data.shape[1:], len(self.predictors))
        models = []
        for k, (m, p) in enumerate(zip(self.spec.models, self.predictors)):
            t1 = time.perf_counter()
            plan = p.ctarr_plan(case, geometry, locate_case=lambda warnings: shared)
            entry = {"name": m.name, "folder": str(m.folder), "region": m.region.name, "margin_mm": m.margin_mm,
                     "status": plan.status.value, "record": plan.record.to_json() if plan.record else None,
                     "labels": {str(c): v for c, v in m.label_map.items()}, "voxels_voted": 0}
            if plan.predicts != "nothing":
                seg, probs = p.ctarr_predict_planned([data], [None], [props], [None], [plan], True)[0]
                votes, conf = model_votes(seg, probs, m.lut(probs.shape[0]))
                del seg, probs
                merge.add(k, votes, conf)
                entry["voxels_voted"] = int((votes > 0).sum())
            p.ctarr_plans.pop(case, None)
            models.append({**entry, "seconds": round(time.perf_counter() - t1, 4)})
        overlap, per = merge.stats()
        for entry, s in zip(models, per):
            entry.update(s)
        report.update(models=models, overlap_voxels=overlap, seconds_total=round(time.perf_counter() - t0, 4))
        labels = merge.labels.astype(label_dtype(max(self.spec.labels.values())))
        return labels, report

    def predict_files(self, lists: dict[str, list[str]], output_folder: str | Path, overwrite: bool = True) -> dict:
        """``lists``: case -> input files (channels). Writes ``<case><ending>`` (input geometry)
        and ``<case>.ctarr_multi.json`` per case, plus ``dataset.json`` (the output labels). A case
        with a user error is recorded in :attr:`failed` and the others go on."""
        out = Path(output_folder)
        out.mkdir(parents=True, exist_ok=True)
        ending = self.spec.file_ending
        write_json(out / "dataset.json", {"labels": self.spec.labels, "file_ending": ending,
                                          "description": "nnUNetv2_predict_ctarr_multi merged output"})
        todo = {c: f for c, f in lists.items()
                if overwrite or not (out / f"{c}{ending}").is_file() or not (out / f"{c}.ctarr_multi.json").is_file()}
        self.anatomy.prepare(todo)
        reports = {}
        for case, files in todo.items():
            try:
                data, props = _read(files)
                seg, report = self.predict_case(case, data, props)
            except CTARRError as e:
                self.failed[case] = str(e)
                continue
            report["input"] = [str(f) for f in files]
            write_image(Geometry.from_sitk_stuff(props["sitk_stuff"], seg.shape).image(seg), out / f"{case}{ending}")
            write_json(out / f"{case}.ctarr_multi.json", report)
            reports[case] = report
        return reports
