"""Full-size outputs of CTARR predictions: merging crops, empty cases, writing with exact geometry."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import save_pickle

from ..core.base.geometry import Geometry
from .plans import CasePlan


def merge_box_probabilities(full_shape_zyx, boxes: list[tuple[np.ndarray, list, list]], n_classes: int,
                            keep_probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Merge per-box probabilities (C, z, y, x) into the full image.

    Each voxel takes the probabilities of the box whose most likely foreground class is most
    probable there; outside all boxes the background probability is 1. Returns (index of the
    winning box, -1 outside all boxes; merged probabilities or None)."""
    conf = np.full(full_shape_zyx, -1.0, np.float32)
    probs = None
    if keep_probabilities:
        probs = np.zeros((n_classes,) + tuple(full_shape_zyx), np.float32)
        probs[0] = 1.0
    winner = np.full(full_shape_zyx, -1, np.int16)
    for k, (p, start, stop) in enumerate(boxes):
        sl = Geometry.slices_zyx(start, stop)
        c = p[1:].max(0) if p.shape[0] > 1 else p[0]
        better = c > conf[sl]
        conf[sl] = np.where(better, c, conf[sl])
        winner[sl] = np.where(better, k, winner[sl])
        if probs is not None:
            probs[(slice(None),) + sl] = np.where(better[None], p, probs[(slice(None),) + sl])
    return winner, probs


def label_dtype(seg: np.ndarray):
    return np.uint8 if seg.max(initial=0) < 255 else np.uint16


def merge_crops(label_manager, plan: CasePlan, crop_probabilities: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation and probabilities of a case from the probabilities of each of its crops."""
    boxes = [(p, c.start_xyz, c.stop_xyz) for p, c in zip(crop_probabilities, plan.crops)]
    _, probs = merge_box_probabilities(plan.geometry.shape_zyx, boxes, label_manager.num_segmentation_heads, True)
    seg = label_manager.convert_probabilities_to_segmentation(probs)
    seg = seg.cpu().numpy() if hasattr(seg, "cpu") else np.asarray(seg)
    return seg.astype(label_dtype(seg)), probs


def empty_outputs(n_heads: int, shape_zyx) -> tuple[np.ndarray, np.ndarray]:
    """All-background segmentation and probabilities (background 1) of a full image."""
    probs = np.zeros((n_heads,) + tuple(shape_zyx), np.float16)
    probs[0] = 1
    return np.zeros(tuple(shape_zyx), np.uint8), probs


def write_segmentation(seg_zyx: np.ndarray, plan: CasePlan, path: str) -> None:
    sitk.WriteImage(plan.geometry.image(seg_zyx.astype(label_dtype(seg_zyx))), path, True)


def write_probabilities(probs: np.ndarray, plan: CasePlan, out: str) -> None:
    """``out.npz`` + ``out.pkl`` as nnU-Net writes them (full size, the input's geometry)."""
    g = plan.geometry
    np.savez_compressed(out + ".npz", probabilities=probs)
    save_pickle({"sitk_stuff": g.sitk_stuff(), "spacing": list(g.spacing_xyz)[::-1],
                 "shape_before_cropping": g.shape_zyx,
                 "ctarr": {"mode": plan.mode, "crops": [c.to_dict() for c in plan.crops]}}, out + ".pkl")


def write_outputs(seg: np.ndarray, probs: np.ndarray | None, plan: CasePlan, out: str, ending: str) -> None:
    """Segmentation ``out<ending>`` and, if ``probs`` is given, the probabilities."""
    write_segmentation(seg, plan, out + ending)
    if probs is not None:
        write_probabilities(probs, plan, out)
