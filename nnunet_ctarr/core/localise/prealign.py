"""Two-scan prealignment and per-slice body-height scores from the atlas transforms.

Both scans are registered to the atlas; composing the two transforms gives the axis-aligned
transform (90-degree orientation, per-axis scale, translation) between them, also when the
scans overlap little or not at all (the atlas is the common reference, as the SSBR seed does
with its body-part scores). The body-height score of an axial slice is its atlas z in mm.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..base.geometry import Geometry
from ..base.transform import AtlasTransform


def moving_to_fixed(fixed: AtlasTransform, moving: AtlasTransform) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with ``p_fixed = A @ p_moving + b`` (world mm of each scan)."""
    Af, bf = fixed.affine()
    Am, bm = moving.affine()
    Af_inv = np.linalg.inv(Af)
    return Af_inv @ Am, Af_inv @ (bm - bf)


def itk_transform(fixed: AtlasTransform, moving: AtlasTransform) -> sitk.AffineTransform:
    """The ITK/SimpleITK transform for resampling MOVING onto FIXED.

    ITK transforms map *fixed* (output) points to *moving* (input) points, so this is the
    inverse of :func:`moving_to_fixed`: ``sitk.Resample(moving, fixed, tx)`` aligns the scans,
    and ANTs/elastix accept the written file as an initial transform."""
    A, b = moving_to_fixed(fixed, moving)
    A_inv = np.linalg.inv(A)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix([float(v) for v in A_inv.ravel()])
    tx.SetTranslation([float(v) for v in -A_inv @ b])
    return tx


def slice_centres(image: sitk.Image) -> tuple[int, np.ndarray]:
    """(index axis closest to world z, world points (N, 3) of the centre of every slice along it)."""
    geom = Geometry.of(image)
    axis = geom.head_feet_axis
    idx = np.tile((np.array(geom.size_xyz) - 1) / 2.0, (geom.size_xyz[axis], 1))
    idx[:, axis] = np.arange(geom.size_xyz[axis])
    return axis, geom.index_to_world(idx)


def body_height(image: sitk.Image, tf: AtlasTransform, atlas_z_range: tuple[float, float]) -> dict:
    """Atlas z (mm) of every axial slice (centre of the slice) and a normalised score
    (0 = lowest, 1 = highest atlas z of the atlas grid)."""
    axis, pts = slice_centres(image)
    atlas_z = tf.to_atlas(pts)[:, 2]
    lo, hi = atlas_z_range
    return {"slice_axis_xyz": axis, "world_z_mm": np.round(pts[:, 2], 3).tolist(),
            "atlas_z_mm": np.round(atlas_z, 3).tolist(),
            "score": np.round((atlas_z - lo) / (hi - lo), 5).tolist(),
            "score_definition": f"(atlas_z - {lo:g}) / ({hi:g} - {lo:g}); atlas z grows towards the head"}
