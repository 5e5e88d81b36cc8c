"""Perturbed copies of a scan whose ground truth is known (for tests and evaluation).

Array perturbations (90-degree xy rotations, z flips) change the voxel array of the
canonical (LPS) image and leave the header alone, as faulty converters do; header
perturbations (other storage orientations, zoom by spacing) keep or scale the world
geometry; field-of-view cuts take a sub-volume with correct geometry. For each copy,
:func:`linear_map` gives the matrix ``R`` with ``world_original = R @ world_perturbed + c``:
a correct registration of the copy has orientation matrix ``M_original @ sign(R)``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.base.images import canonical


@dataclass
class Perturbed:
    name: str
    image: sitk.Image
    labels: sitk.Image
    R: np.ndarray          # world_original = R @ world_perturbed + c (linear part)


def array_op(img: sitk.Image, op: Callable[[np.ndarray], np.ndarray]) -> sitk.Image:
    """Apply an array operation (flip, 90° turn) keeping the header: the anatomy moves in the world."""
    arr = op(sitk.GetArrayFromImage(img))
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    out.SetOrigin(img.GetOrigin())
    out.SetSpacing(img.GetSpacing())
    out.SetDirection(img.GetDirection())
    return out


def linear_map(original: sitk.Image, perturbed: sitk.Image,
               op: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """Fit ``R`` from where voxels of ``original`` end up in ``perturbed`` (``op`` = array op
    applied, or None for a header-only change where both describe the same world)."""
    if op is None:
        return np.eye(3)
    shape = sitk.GetArrayViewFromImage(original).shape
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    src = [op(a) for a in (xx, yy, zz)]                       # original index at each new voxel
    rng = np.random.default_rng(0)
    pick = tuple(rng.integers(0, n, 64) for n in src[0].shape)
    new_idx = np.stack([pick[2], pick[1], pick[0]], 1).astype(float)
    old_idx = np.stack([s[pick] for s in src], 1).astype(float)
    p_new = np.array([perturbed.TransformContinuousIndexToPhysicalPoint(tuple(v)) for v in new_idx])
    p_old = np.array([original.TransformContinuousIndexToPhysicalPoint(tuple(v)) for v in old_idx])
    X = np.hstack([p_new, np.ones((len(p_new), 1))])
    sol, *_ = np.linalg.lstsq(X, p_old, rcond=None)
    return sol[:3].T


def cut_box(img: sitk.Image, lo: np.ndarray, hi: np.ndarray) -> sitk.Image:
    """Index sub-box [lo, hi) of an image (no interpolation, world position kept)."""
    return img[int(lo[0]):int(hi[0]), int(lo[1]):int(hi[1]), int(lo[2]):int(hi[2])]


def zoomed(img: sitk.Image, spacing, f: float) -> sitk.Image:
    """A copy of ``img`` whose spacing is ``spacing * f`` (array unchanged: anatomy zoomed by f)."""
    out = sitk.Image(img)
    out.SetSpacing([s * f for s in spacing])
    return out


def standard_perturbations(image: sitk.Image, labels: sitk.Image) -> list[Perturbed]:
    """The suite used by the tests: FOV cuts, rotations/flips (array), zoom, orientations."""
    img_c, lab_c = canonical(image), canonical(labels)
    size = np.array(img_c.GetSize())
    out: list[Perturbed] = [Perturbed("original", image, labels, np.eye(3))]
    z = size[2]
    for name, zlo, zhi in (("fov_upper_60pct", 0.4, 1.0), ("fov_lower_60pct", 0.0, 0.6),
                           ("fov_middle_50pct", 0.25, 0.75)):
        lo = np.array([0, 0, int(zlo * z)])
        hi = np.array([size[0], size[1], int(zhi * z)])
        out.append(Perturbed(name, cut_box(img_c, lo, hi), cut_box(lab_c, lo, hi), np.eye(3)))
    lo = np.array([int(0.15 * size[0]), int(0.1 * size[1]), 0])
    hi = np.array([int(0.85 * size[0]), int(0.9 * size[1]), z])
    out.append(Perturbed("fov_xy_70pct", cut_box(img_c, lo, hi), cut_box(lab_c, lo, hi), np.eye(3)))
    ops = {
        "rot90_xy": lambda a: np.rot90(a, 1, axes=(1, 2)),
        "rot180_xy": lambda a: np.rot90(a, 2, axes=(1, 2)),
        "rot270_xy": lambda a: np.rot90(a, 3, axes=(1, 2)),
        "flip_z": lambda a: a[::-1],
        "rot90_xy_flip_z": lambda a: np.rot90(a, 1, axes=(1, 2))[::-1],
    }
    for name, op in ops.items():
        pi, pl = array_op(img_c, op), array_op(lab_c, op)
        out.append(Perturbed(name, pi, pl, linear_map(img_c, pi, op)))
    sp = img_c.GetSpacing()
    for f in (0.85, 1.15):
        out.append(Perturbed(f"zoom_{f:.2f}", zoomed(img_c, sp, f), zoomed(lab_c, sp, f), np.eye(3) / f))
    # combinations: a cut scan stored rotated and flipped; a zoomed scan rotated
    lo = np.array([0, 0, int(0.35 * z)])
    hi = np.array([size[0], size[1], z])
    cut_i, cut_l = cut_box(img_c, lo, hi), cut_box(lab_c, lo, hi)
    op = ops["rot90_xy_flip_z"]
    pi, pl = array_op(cut_i, op), array_op(cut_l, op)
    out.append(Perturbed("fov_upper_65pct_rot90_flip_z", pi, pl, linear_map(cut_i, pi, op)))
    zi, zl = zoomed(img_c, sp, 0.9), zoomed(lab_c, sp, 0.9)
    op = ops["rot270_xy"]
    pi, pl = array_op(zi, op), array_op(zl, op)
    out.append(Perturbed("zoom_0.90_rot270", pi, pl, linear_map(zi, pi, op) / 0.9))
    for code in ("RAS", "LPI", "PIR"):
        out.append(Perturbed(f"header_{code}", sitk.DICOMOrient(image, code), sitk.DICOMOrient(labels, code),
                             np.eye(3)))
    return out


def orientation_of(R: np.ndarray) -> np.ndarray:
    """Signed permutation closest to ``R`` (drops scaling)."""
    out = np.zeros((3, 3), int)
    for i in range(3):
        j = int(np.argmax(np.abs(R[i])))
        out[i, j] = int(np.sign(R[i, j]))
    return out


def random_perturbations(image: sitk.Image, labels: sitk.Image, n: int, seed: int = 0) -> list[Perturbed]:
    """Random combinations: z window of 30-100 % of the scan, zoom 0.85-1.15, a random number of
    xy quarter turns and a random z flip of the array (header left alone)."""
    img_c, lab_c = canonical(image), canonical(labels)
    size = np.array(img_c.GetSize())
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.uniform(0.3, 1.0) * size[2])
        start = int(rng.uniform(0, size[2] - length))
        lo, hi = np.array([0, 0, start]), np.array([size[0], size[1], start + length])
        f = float(rng.uniform(0.85, 1.15))
        ci = zoomed(cut_box(img_c, lo, hi), img_c.GetSpacing(), f)
        cl = zoomed(cut_box(lab_c, lo, hi), img_c.GetSpacing(), f)
        k, fz = int(rng.integers(0, 4)), bool(rng.integers(0, 2))

        def op(a, k=k, fz=fz):
            a = np.rot90(a, k, axes=(1, 2))
            return a[::-1] if fz else a
        pi, pl = array_op(ci, op), array_op(cl, op)
        name = f"random{i}_z{start}+{length}_zoom{f:.2f}_rot{90 * k}{'_flipz' if fz else ''}"
        out.append(Perturbed(name, pi, pl, linear_map(ci, pi, op) / f))
    return out
