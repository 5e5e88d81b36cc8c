"""The HU masks of a CT on a fixed working grid (``-anatomy_model hu``, step 1): body, lungs, bone.

The CT is brought to an LPS-aligned grid of :data:`SPACING` mm (coarser for very large scans, at
most :data:`MAX_VOXELS` voxels) by block averaging and one linear resampling, so the work does not
grow with the input's resolution. On that grid:

* *body*: the largest component above -300 HU;
* *outside air*: per axial slice, the air (below -400 HU) connected to the edge of the image or of
  the reconstructed field (values below -1100 HU, e.g. -2048 or -3024) where that edge is pure air
  (below -950 HU): a lung cut by a small field of view (a heart-centred reconstruction) meets the
  edge with lung tissue and stays inside;
* *lungs*: the other air, in 3-D components of at least 8 ml of which fewer than 40 % of the voxels
  are gas (below -900 HU; lung tissue averages about -850 HU, so even 100 HU of noise leaves about
  30 % of its voxels below); bowel gas and the air of the airways are almost pure;
* *bone*: above 150 HU in the body, closed, with its holes (marrow) filled slice by slice, minus
  contrast-filled blood and enhancing organs: the thick parts (fully dense 2 x 2 x 2 blocks, opened
  by a block) that form a blob above :data:`MAX_BONE_BLOB_ML` (heart and aorta of a CT
  angiography) or are homogeneous (median absolute deviation below :data:`MIN_BONE_MAD_HU`: spleen,
  kidneys), dilated by two voxels, with the fragments of their rim (dense components that lie
  mostly next to them).

scipy.ndimage does the morphology; no per-voxel loops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..base.geometry import Geometry

HU_BODY, HU_AIR, HU_BONE, HU_GAS, HU_PURE_AIR = -300.0, -400.0, 150.0, -900.0, -950.0
#: values below this lie outside the reconstructed field of view (scanners store -2048, -3024, ...)
HU_OUTSIDE_FOV = -1100.0
#: an air component with more than this share of gas voxels is gas, not lung
MAX_GAS_SHARE = 0.4
#: smallest lung component kept (ml)
MIN_LUNG_ML = 8.0
#: the working grid's spacing (mm) and its largest size (a 3 mm grid of 480 x 480 x 780 mm)
SPACING, MAX_VOXELS = 3.0, 6_000_000
#: thick dense blobs above this volume (ml) or more homogeneous than this (median absolute
#: deviation, HU) are enhanced blood or organs, not bone
MAX_BONE_BLOB_ML, MIN_BONE_MAD_HU = 120.0, 30.0
#: largest hole of a bone's cross-section filled as marrow (cm²; a lumbar vertebral body is ~15)
MAX_MARROW_CM2 = 25.0
_SLICE = np.zeros((3, 3, 3), bool)
_SLICE[1] = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class HUMasks:
    """Body, lungs and bone on the aligned working grid (``[z, y, x]`` bool arrays)."""
    geometry: Geometry
    body: np.ndarray
    lungs: np.ndarray
    bone: np.ndarray

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.geometry.spacing)) / 1000.0


def working_grid(geo: Geometry) -> Geometry:
    """The LPS-aligned grid the HU anatomy works on: :data:`SPACING` mm over the scan's world box,
    coarser where that would exceed :data:`MAX_VOXELS` (the work is bounded whatever the input)."""
    lo, hi = geo.bounds()
    spacing = max(SPACING, float(np.cbrt(np.prod(np.maximum(hi - lo, SPACING)) / MAX_VOXELS)))
    return geo.resampling_grid(spacing)


def hu_on_grid(image: sitk.Image) -> tuple[np.ndarray, Geometry]:
    """The CT on :func:`working_grid` (float32 HU, -2048 outside the image). Finer axes are
    block-averaged first (``BinShrink`` by the whole number of input voxels per working voxel: a box
    filter, one pass in C++), then resampled linearly."""
    geo = Geometry.of(image)
    grid = working_grid(geo)
    shrink = [int(min(max(1, grid.spacing[0] / s + 1e-6), n)) for s, n in zip(geo.spacing_xyz, geo.size_xyz)]
    img = image
    if max(shrink) > 1:
        if img.GetPixelID() not in (sitk.sitkInt16, sitk.sitkInt32, sitk.sitkFloat32, sitk.sitkFloat64):
            img = sitk.Cast(img, sitk.sitkFloat32)
        img = sitk.BinShrink(img, shrink)
    img = sitk.Cast(img, sitk.sitkFloat32)
    out = sitk.Resample(img, grid.to_reference(sitk.sitkFloat32), sitk.Transform(), sitk.sitkLinear, -2048.0)
    return sitk.GetArrayFromImage(out), grid


def _dilate(mask: np.ndarray, iterations: int = 1, axes: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """Dilation by the 6-neighbour cross (4-neighbour in-plane with ``axes=(1, 2)``): shifted ORs,
    several times faster than ``ndi.binary_dilation`` on these grids."""
    out = mask.copy()
    for _ in range(iterations):
        src = out.copy()
        for ax in axes:
            lo, hi = [slice(None)] * 3, [slice(None)] * 3
            lo[ax], hi[ax] = slice(0, -1), slice(1, None)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
    return out


def _close(mask: np.ndarray) -> np.ndarray:
    """Closing by the 6-neighbour cross (the image edge does not erode)."""
    return ~_dilate(~_dilate(mask))


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    size = np.bincount(lab.ravel())
    size[0] = 0
    return lab == size.argmax()


def _holes(mask: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """The holes of every axial slice (components of the background that do not reach the slice's
    edge), those of at most ``max_pixels`` pixels when given: one labelling, no iterated dilation."""
    lab, n = ndi.label(~mask, _SLICE)
    keep = np.ones(n + 1, bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        keep[edge] = False
    if max_pixels is not None:
        keep &= np.bincount(lab.ravel(), minlength=n + 1) <= max_pixels
    keep[0] = False
    return keep[lab]


def _outside_air(arr: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Per slice, the air components that meet the image's or the field of view's edge mostly with
    pure air (see the module docstring)."""
    air = (arr < HU_AIR) & fov
    lab, n = ndi.label(air, _SLICE)
    edge = np.zeros(arr.shape, bool)
    edge[:, [0, -1], :] = edge[:, :, [0, -1]] = True
    if not fov.all():
        edge |= _dilate(~fov, axes=(1, 2))
    edge &= air
    n_edge = np.bincount(lab[edge], minlength=n + 1)
    n_pure = np.bincount(lab[edge & (arr < HU_PURE_AIR)], minlength=n + 1)
    out = (n_edge > 0) & (n_pure >= 0.5 * n_edge)
    out[0] = False
    return out[lab]


def _lungs(inner_air: np.ndarray, arr: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Components of the inner air that hold lung tissue (module docstring)."""
    lab, n = ndi.label(inner_air)
    if n == 0:
        return inner_air
    gas = arr < HU_GAS
    size = np.bincount(lab.ravel(), minlength=n + 1)
    n_gas = np.bincount(lab.ravel(), weights=gas.ravel(), minlength=n + 1)
    keep = (size * voxel_ml >= MIN_LUNG_ML) & (n_gas < MAX_GAS_SHARE * np.maximum(size, 1))
    keep[0] = False
    return keep[lab]


def _pool_all(mask: np.ndarray) -> np.ndarray:
    """Blocks of 2 x 2 x 2 voxels that are all set (the ragged edge dropped)."""
    z, y, x = (np.array(mask.shape) // 2) * 2
    return mask[:z, :y, :x].reshape(z // 2, 2, y // 2, 2, x // 2, 2).all((1, 3, 5))


def _enhanced_blobs(dense: np.ndarray, arr: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Thick dense blobs that are blood or organs, not bone (module docstring). The thick parts are
    the fully dense 2 x 2 x 2 blocks opened by one voxel (on the 6 mm grid: cheap)."""
    if min(dense.shape) < 2:
        return np.zeros_like(dense)
    thick = ndi.binary_opening(_pool_all(dense))
    lab, n = ndi.label(thick)
    blob = np.zeros(n + 1, bool)
    for c, sl in enumerate(ndi.find_objects(lab), start=1):
        inside = (lab[sl] == c).repeat(2, 0).repeat(2, 1).repeat(2, 2)
        full = tuple(slice(2 * s.start, 2 * s.stop) for s in sl)
        vals = arr[full][inside]
        mad = np.median(np.abs(vals - np.median(vals)))
        blob[c] = len(vals) * voxel_ml > MAX_BONE_BLOB_ML or mad < MIN_BONE_MAD_HU
    out = np.zeros_like(dense)
    if blob.any():
        up = blob[lab].repeat(2, 0).repeat(2, 1).repeat(2, 2)
        out[:up.shape[0], :up.shape[1], :up.shape[2]] = up
        near = _dilate(out, 2)
        rest, n = ndi.label(dense & ~near)
        size = np.bincount(rest.ravel(), minlength=n + 1)
        touching = np.bincount(rest[_dilate(near) & (rest > 0)], minlength=n + 1)
        rim = touching > 0.3 * size                 # fragments of the blob's rim, not bones next to it
        rim[0] = False
        out = (near | rim[rest]) & dense
    return out


def _body_box(body: np.ndarray) -> tuple[slice, ...]:
    """The body's bounding box and one voxel around it (all of the grid when there is no body)."""
    if not body.any():
        return tuple(slice(0, n) for n in body.shape)
    sl = ndi.find_objects(body.astype(np.uint8))[0]
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, body.shape))


def hu_masks(image: sitk.Image) -> HUMasks:
    """Body, lungs and bone of a CT by HU thresholds on the working grid (module docstring); the
    work after finding the body is done in the body's bounding box."""
    full, geo = hu_on_grid(image)
    body_full = _largest(full > HU_BODY)
    box = _body_box(body_full)
    arr, body = full[box], body_full[box]
    fov = arr > HU_OUTSIDE_FOV
    arr = np.maximum(arr, -1024.0)
    voxel_ml = float(np.prod(geo.spacing)) / 1000.0
    lungs = _lungs((arr < HU_AIR) & fov & ~_outside_air(arr, fov), arr, voxel_ml)
    dense = (arr > HU_BONE) & body
    blobs = _enhanced_blobs(dense, arr, voxel_ml)
    dense = _close(dense & ~blobs) & body
    bone = (dense | _holes(dense, int(MAX_MARROW_CM2 * 100 / geo.spacing[0] ** 2))) & ~lungs & ~blobs
    out = []
    for m in (body | lungs, lungs, bone):
        o = np.zeros(full.shape, bool)
        o[box] = m
        out.append(o)
    return HUMasks(geo, *out)
