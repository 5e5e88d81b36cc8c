"""The HU masks of a CT at 3 mm (``-anatomy_model hu``, step 1): body, lungs, bone.

The body is the largest component above -300 HU (at 6 mm), its inside the body with holes filled
slice by slice; the lungs are air below -400 HU inside the body in components that hold lung
tissue (fewer than 40 % of their voxels below -900 HU, which tells them from bowel gas and outside
air); the bone is above 150 HU inside the body, closed, with its holes (marrow) filled at 6 mm.
scipy.ndimage does the morphology; no per-voxel loops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..base.geometry import Geometry
from ..base.images import canonical

HU_BODY, HU_AIR, HU_BONE, HU_GAS = -300.0, -400.0, 150.0, -900.0
#: an air component with more than this share of voxels below HU_GAS is gas, not lung
MAX_GAS_SHARE = 0.4
#: smallest lung component kept (ml)
MIN_LUNG_ML = 8.0
SPACING = 3.0

@dataclass(frozen=True)
class HUMasks:
    """Body, lungs and bone on an aligned 3 mm grid (``[z, y, x]`` bool arrays)."""
    geometry: Geometry
    body: np.ndarray
    lungs: np.ndarray
    bone: np.ndarray


def hu_on_grid(image: sitk.Image) -> tuple[np.ndarray, Geometry]:
    """The CT in HU on an aligned (LPS) 3 mm grid; finer scans are smoothed before resampling."""
    img = sitk.Cast(canonical(image), sitk.sitkFloat32)
    geo = Geometry.of(img)
    if np.allclose(geo.matrix, np.eye(3), atol=1e-6) and np.allclose(geo.spacing, SPACING, atol=1e-3):
        return sitk.GetArrayFromImage(img), geo
    sigma = [max(0.0, 0.5 * (SPACING - s)) for s in geo.spacing_xyz]
    if max(sigma) > 0:
        img = sitk.SmoothingRecursiveGaussian(img, sigma)
    grid = geo.resampling_grid(SPACING)
    out = sitk.Resample(img, grid.to_reference(sitk.sitkFloat32), sitk.Transform(), sitk.sitkLinear, -1024.0)
    return sitk.GetArrayFromImage(out), grid


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    size = np.bincount(lab.ravel())
    size[0] = 0
    return lab == size.argmax()


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Holes filled in every axial slice (the z faces padded so they seed nothing)."""
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndi.generate_binary_structure(2, 1)
    return ndi.binary_fill_holes(np.pad(mask, ((1, 1), (0, 0), (0, 0)), constant_values=True), plane)[1:-1]


def _pool2(a: np.ndarray, how: str = "any") -> np.ndarray:
    """Any- (masks) or mean-pooling (HU) by 2 per axis: 6 mm blocks; a ragged edge is padded."""
    z, y, x = (-np.array(a.shape)) % 2
    m = np.pad(a, ((0, z), (0, y), (0, x)), mode="edge")
    blocks = m.reshape(m.shape[0] // 2, 2, m.shape[1] // 2, 2, m.shape[2] // 2, 2)
    return blocks.any((1, 3, 5)) if how == "any" else blocks.mean((1, 3, 5))


def _up2(mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling by 2 back to ``shape``."""
    return mask.repeat(2, 0).repeat(2, 1).repeat(2, 2)[:shape[0], :shape[1], :shape[2]]


def hu_masks(image: sitk.Image) -> HUMasks:
    """Body, lungs and bone of a CT by HU thresholds at 3 mm (the body outline, its inside and the
    holes of bones, i.e. marrow, at 6 mm)."""
    arr, geo = hu_on_grid(image)
    arr = np.maximum(arr, -1024.0)
    shape = arr.shape
    body6 = _largest(_pool2(arr, "mean") > HU_BODY)
    body, inside = _up2(body6, shape), _up2(_fill_slices(body6), shape)
    lab, n = ndi.label((arr < HU_AIR) & inside)
    size = np.bincount(lab.ravel(), minlength=n + 1)
    gas = np.bincount(lab.ravel(), weights=(arr < HU_GAS).ravel(), minlength=n + 1)
    keep = (size * SPACING ** 3 / 1000.0 >= MIN_LUNG_ML) & (gas < MAX_GAS_SHARE * np.maximum(size, 1))
    keep[0] = False
    lungs = keep[lab]
    bone = ndi.binary_closing((arr > HU_BONE) & inside)
    coarse = _pool2(bone)
    bone |= _up2(_fill_slices(coarse) & ~coarse, shape) & ~lungs & inside
    return HUMasks(geo, body, lungs, bone & ~lungs)
