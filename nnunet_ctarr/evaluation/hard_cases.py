"""Cases the trust rule must catch, built from a bundled scan whose truth is known.

* **Outside the atlas** (the atlas covers neck to pelvis): :func:`upper_slab` keeps the top of a
  scan (neck and lung apices of the chest CT); :func:`head_neck` puts a synthetic head (skull,
  brain, C1-C4, in HU and in TotalSegmentator v2 labels) on top of such a slab, as a head-neck CT
  with a plausible anatomy map would look.
* **Anatomy-map errors** a segmentation model makes (:func:`anatomy_errors`): a vertebra level off
  by one, a missed organ, a false-positive organ blob, left/right swapped, lost slices. Only the
  anatomy map is damaged; the image and the true labels stay as they are.

All work on canonical (LPS) images with TotalSegmentator v2 label ids; geometry is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.anatomy.groups import totalsegmentator_scheme
from ..core.base.images import canonical

_TS = {name: idx for idx, name in totalsegmentator_scheme(2).items()}


@dataclass
class HardCase:
    name: str
    image: sitk.Image
    anatomy: sitk.Image        # the anatomy map given to CTARR (maybe damaged)
    labels: sitk.Image         # the truth


def _like(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    out.CopyInformation(ref)
    return out


def upper_slab(image: sitk.Image, labels: sitk.Image, height_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """The top ``height_mm`` of a scan (canonical LPS: the last slices), geometry kept."""
    img, lab = canonical(image), canonical(labels)
    n = img.GetSize()[2]
    k = max(1, min(n, int(round(height_mm / img.GetSpacing()[2]))))
    return img[:, :, n - k:], lab[:, :, n - k:]


def head_neck(image: sitk.Image, labels: sitk.Image, neck_mm: float = 60.0, head_mm: float = 210.0
              ) -> tuple[sitk.Image, sitk.Image]:
    """A head-neck-like CT: the top ``neck_mm`` of a scan with a synthetic head of ``head_mm`` above
    it (skull shell, brain, vertebrae C1-C4 continuing the spine), HU and TotalSegmentator v2 labels."""
    img, lab = upper_slab(image, labels, neck_mm)
    a, la = sitk.GetArrayFromImage(img).astype(np.int16), sitk.GetArrayFromImage(lab).astype(np.int16)
    sz = img.GetSpacing()[2]
    k = int(round(head_mm / sz))
    head = np.full((k,) + a.shape[1:], -1000, np.int16)
    hl = np.zeros(head.shape, np.int16)
    zz, yy, xx = np.meshgrid(np.arange(k) * sz, *[np.arange(n) * s for n, s in zip(a.shape[1:],
                             img.GetSpacing()[1::-1])], indexing="ij")
    spine = np.argwhere(np.isin(la[-1], [_TS[f"vertebrae_C{i}"] for i in range(1, 8)]))
    cy, cx = (spine.mean(0) if len(spine) else np.array(a.shape[1:]) / 2) * np.array(img.GetSpacing()[1::-1])
    by, bx = cy - 40.0, cx                                  # brain centre: anterior of the spine
    r = np.sqrt(((xx - bx) / 70) ** 2 + ((yy - by) / 85) ** 2 + ((zz - 0.6 * head_mm) / 75) ** 2)
    neck = np.sqrt(((xx - cx) / 55) ** 2 + ((yy - cy + 20) / 55) ** 2) < 1
    head[neck & (zz < 0.45 * head_mm)] = 40
    head[r < 1.12], hl[(r < 1.12) & (r >= 1.0)] = 700, _TS["skull"]
    head[r < 1.0], hl[r < 1.0] = 35, _TS["brain"]
    for i, lvl in enumerate(range(4, 0, -1)):               # C4 (lowest) .. C1
        z0, z1 = i * 18.0, i * 18.0 + 15.0
        v = (np.hypot(xx - cx, yy - cy) < 13) & (zz >= z0) & (zz < z1)
        head[v], hl[v] = 400, _TS[f"vertebrae_C{lvl}"]
    arr, larr = np.concatenate([a, head]), np.concatenate([la, hl])
    out_i, out_l = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(larr.astype(np.uint8))
    for o in (out_i, out_l):
        o.SetOrigin(img.GetOrigin())
        o.SetSpacing(img.GetSpacing())
        o.SetDirection(img.GetDirection())
    return out_i, out_l


def _swap_left_right(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    for name, idx in _TS.items():
        if "_left" in name:
            other = _TS.get(name.replace("_left", "_right"))
            if other is not None:
                out[a == idx], out[a == other] = other, idx
    return out


def _shift_vertebrae(a: np.ndarray, step: int) -> np.ndarray:
    """Every vertebra named one level off (TotalSegmentator v2 ids 26 (S1) .. 50 (C1) run upwards)."""
    out = a.copy()
    lo, hi = _TS["vertebrae_S1"], _TS["vertebrae_C1"]
    v = (a >= lo) & (a <= hi)
    out[v] = np.clip(a[v].astype(int) + step, lo, hi)
    return out


def _blob(a: np.ndarray, ids: list[int], spacing_zyx: np.ndarray, radius_mm: float = 40.0) -> np.ndarray:
    """A false-positive sphere of ``ids[0]`` mirrored through the scan centre from where the organ is."""
    out = a.copy()
    where = np.argwhere(np.isin(a, ids))
    if not len(where):
        return out
    centre = (np.array(a.shape) - 1) - where.mean(0)
    grid = np.ogrid[tuple(slice(0, n) for n in a.shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing_zyx))
    out[(d2 < radius_mm ** 2) & (out == 0)] = ids[0]
    return out


def anatomy_errors(image: sitk.Image, labels: sitk.Image, prefix: str = "") -> list[HardCase]:
    """Model-like errors in a TotalSegmentator v2 anatomy map; the truth is the undamaged map."""
    img, lab = canonical(image), canonical(labels)
    a = sitk.GetArrayFromImage(lab)
    sp = np.array(lab.GetSpacing()[::-1])
    organs = {"liver": ["liver"], "heart": ["heart"], "spleen": ["spleen"], "kidneys": ["kidney_right", "kidney_left"],
              "lungs": [n for n in _TS if n.startswith("lung_")]}
    damaged = {"vertebrae_up_one": _shift_vertebrae(a, 1), "vertebrae_down_one": _shift_vertebrae(a, -1),
               "left_right_swap": _swap_left_right(a)}
    for organ, names in organs.items():
        ids = [_TS[n] for n in names]
        if np.isin(a, ids).any():
            damaged[f"missed_{organ}"] = np.where(np.isin(a, ids), 0, a)
            damaged[f"false_{organ}_blob"] = _blob(a, ids, sp)
    n = a.shape[0]
    for name, lo, hi in (("lost_middle_slices", 0.4, 0.6), ("lost_top_slices", 0.8, 1.0),
                         ("lost_bottom_slices", 0.0, 0.2)):
        d = a.copy()
        d[int(lo * n):int(hi * n)] = 0
        damaged[name] = d
    return [HardCase(prefix + name, img, _like(d.astype(a.dtype), lab), lab) for name, d in damaged.items()]
