"""Full-size outputs of CTARR predictions: crops pasted back, empty cases, the sidecar, writing
with the input's exact geometry."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import save_pickle

from ..core.base.files import input_stamp, write_json
from ..core.base.images import write_image
from ..core.outputs.case_writer import versions
from ..core.outputs.records import CaseRecord, OutputFile
from ..core.regions.cropping import paste_pieces
from .plans import CasePlan, CTARRSettings


def label_dtype(max_label: int):
    """The smallest unsigned type for labels up to ``max_label`` (every writer of label maps uses it)."""
    return np.uint8 if max_label <= 255 else np.uint16


def foreground_confidence(p: np.ndarray) -> np.ndarray:
    """A crop's confidence per voxel (C, z, y, x) -> (z, y, x): its most probable foreground class."""
    return p[1:].max(0) if p.shape[0] > 1 else p[0]


def merge_crops(label_manager, plan: CasePlan, crop_probabilities: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation and probabilities of a case from its crops' probabilities: pasted back with
    ``core.regions.cropping.paste_pieces`` (the crops' inverse); where crops overlap, the crop most
    confident of a foreground class wins; background probability 1 outside every crop."""
    probs = np.zeros((label_manager.num_segmentation_heads,) + tuple(plan.geometry.shape_zyx), np.float32)
    probs[0] = 1.0
    pieces = [(p, np.array(c.start_xyz), np.array(c.stop_xyz)) for p, c in zip(crop_probabilities, plan.crops)]
    paste_pieces(probs, pieces, foreground_confidence)
    seg = label_manager.convert_probabilities_to_segmentation(probs)
    seg = seg.cpu().numpy() if hasattr(seg, "cpu") else np.asarray(seg)
    return seg.astype(label_dtype(int(seg.max(initial=0)))), probs


def empty_outputs(n_heads: int, shape_zyx) -> tuple[np.ndarray, np.ndarray]:
    """All-background segmentation and probabilities (background 1) of a full image; float32 as
    every other case's probabilities (compressed, the constant array costs next to nothing)."""
    probs = np.zeros((n_heads,) + tuple(shape_zyx), np.float32)
    probs[0] = 1
    return np.zeros(tuple(shape_zyx), np.uint8), probs


def write_segmentation(seg_zyx: np.ndarray, plan: CasePlan, path: str) -> None:
    write_image(plan.geometry.image(seg_zyx.astype(label_dtype(int(seg_zyx.max(initial=0))))), path)


def write_probabilities(probs: np.ndarray, plan: CasePlan, out: str) -> None:
    """``out.npz`` + ``out.pkl`` as nnU-Net writes them (full size, the input's geometry)."""
    g = plan.geometry
    np.savez_compressed(out + ".npz", probabilities=probs)
    save_pickle({"sitk_stuff": g.sitk_stuff(), "spacing": list(g.spacing_xyz)[::-1],
                 "shape_before_cropping": g.shape_zyx,
                 "ctarr": {"status": plan.status.value, "crops": [c.to_dict() for c in plan.crops]}}, out + ".pkl")


def write_outputs(seg: np.ndarray, probs: np.ndarray | None, plan: CasePlan, out: str, ending: str) -> None:
    """Segmentation ``out<ending>`` and, if ``probs`` is given, the probabilities."""
    write_segmentation(seg, plan, out + ending)
    if probs is not None:
        write_probabilities(probs, plan, out)


def write_plan_sidecar(folder: Path, plan: CasePlan, files: list[str], settings: CTARRSettings,
                       output: str | None = None) -> CaseRecord:
    """``<case>.ctarr.json`` of a predicted case: the sidecar schema of the crop command, its
    region's record with the crops nnU-Net ran on and the segmentation written (``output``)."""
    region = plan.record
    if output and region is not None:
        region = replace(region, outputs=(OutputFile((Path(output).name,)),))
    record = CaseRecord(
        case=plan.case, command="predict", input=[str(f) for f in files],
        input_stamp=[input_stamp(Path(f)) for f in files if Path(f).exists()],
        settings={"on_untrusted": settings.policy.on_untrusted, "margin_mm": settings.policy.margin_mm,
                  "fit_tiles": settings.fit_tiles, "atlas_id": settings.atlas.atlas_id},
        versions=versions(settings.atlas.atlas_id), image=plan.geometry.to_dict() if plan.geometry else None,
        registration=plan.registration, regions={region.name: region},
        seconds={"ctarr": region.seconds} if region.seconds is not None else {},
        error=plan.error if plan.status.value == "failed" else None)
    write_json(folder / f"{plan.case}.ctarr.json", record.to_json())
    return record
