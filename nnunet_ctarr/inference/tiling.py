"""Fit region crops to nnU-Net's sliding-window tiles.

nnU-Net predicts in tiles of its patch size: a crop smaller than a patch is zero-padded up to
one, and along an axis ``n`` tiles cover ``patch * (1 + (n - 1) * step)`` voxels for the same
cost as any smaller size that needs ``n`` tiles. So, at no extra network cost, each crop is

1. merged with another crop of the same region when their common bounding box needs no more
   tiles than the two separately (kidneys in one patch instead of two), and
2. grown, around its centre and inside the image, to the largest size that still needs the
   same number of tiles along each axis, so that the network sees real image where it would
   otherwise see padding, and the organ is less likely to touch the crop border.

Tile counts use nnU-Net's own ``compute_steps_for_sliding_window`` on the size the crop has
after nnU-Net's resampling to the model's spacing. Turn fitting off to crop exactly the
region boxes (``nnUNetv2_predict_ctarr --crops exact``; the default for models trained on
crops, see docs/predict.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

Box = tuple[np.ndarray, np.ndarray]          # half-open (start_xyz, stop_xyz) index range


@dataclass(frozen=True)
class TileGeometry:
    """A model's tiling seen in the index axes (x, y, z) of one stored image."""
    patch_xyz: tuple[int, ...]               # patch size per image axis (1 = one slice per tile, 2d models)
    ratio_xyz: tuple[float, ...]             # image spacing / model spacing per image axis
    step: float

    @classmethod
    def from_nnunet(cls, configuration_manager, plans_manager, image_spacing_xyz, step: float) -> TileGeometry:
        """From a model's configuration (patch size and spacing in nnU-Net's transposed axes)."""
        tf = list(plans_manager.transpose_forward)
        patch_t = list(configuration_manager.patch_size)
        spacing_zyx = np.asarray(image_spacing_xyz, float)[::-1]
        target_t = list(configuration_manager.spacing)
        if len(patch_t) == 2:                  # 2d model: one slice per tile along transposed axis 0
            patch_t = [1] + patch_t
        if len(target_t) == 2:
            target_t = [spacing_zyx[tf[0]]] + target_t
        patch_zyx, ratio_zyx = [0] * 3, [0.0] * 3
        for j, a in enumerate(tf):
            patch_zyx[a] = int(patch_t[j])
            ratio_zyx[a] = float(spacing_zyx[a] / target_t[j])
        return cls(tuple(patch_zyx[::-1]), tuple(ratio_zyx[::-1]), float(step))

    def tiles_along(self, axis: int, size: int) -> int:
        """Tiles nnU-Net runs along one image axis for a crop of ``size`` voxels."""
        n = int(round(size * self.ratio_xyz[axis]))       # nnU-Net's compute_new_shape
        patch = self.patch_xyz[axis]
        if patch == 1:
            return max(n, 1)
        return len(compute_steps_for_sliding_window([max(n, patch)], [patch], self.step)[0])

    def tiles(self, size_xyz) -> int:
        return int(np.prod([self.tiles_along(a, int(s)) for a, s in enumerate(size_xyz)]))

    def largest_size(self, axis: int, size: int, limit: int) -> int:
        """Largest size <= ``limit`` that needs no more tiles along ``axis`` than ``size``."""
        n = self.tiles_along(axis, size)
        lo, hi = size, limit                  # tiles are non-decreasing in size: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.tiles_along(axis, mid) <= n:
                lo = mid
            else:
                hi = mid - 1
        return lo


def _union(a: Box, b: Box) -> Box:
    return np.minimum(a[0], b[0]), np.maximum(a[1], b[1])


def merge_boxes(boxes: list[Box], geom: TileGeometry) -> list[tuple[Box, list[int]]]:
    """Greedily merge boxes while a merged box needs no more tiles than its parts; returns
    (box, indices of the original boxes it covers)."""
    items = [((np.asarray(s), np.asarray(e)), [k]) for k, (s, e) in enumerate(boxes)]
    while len(items) > 1:
        best = None
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                u = _union(items[i][0], items[j][0])
                saving = (geom.tiles(items[i][0][1] - items[i][0][0]) + geom.tiles(items[j][0][1] - items[j][0][0])
                          - geom.tiles(u[1] - u[0]))
                if saving >= 0 and (best is None or saving > best[0]):
                    best = (saving, i, j, u)
        if best is None:
            break
        _, i, j, u = best
        merged = (u, sorted(items[i][1] + items[j][1]))
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [merged]
    return sorted(items, key=lambda it: it[1][0])


def grow_box(box: Box, image_size_xyz, geom: TileGeometry) -> Box:
    """Grow a box around its centre, inside the image, to the largest size with the same tiles."""
    start, stop = np.array(box[0], int), np.array(box[1], int)
    for a in range(3):
        size, limit = int(stop[a] - start[a]), int(image_size_xyz[a])
        new = geom.largest_size(a, size, limit)
        lo = min(max(int(start[a]) - (new - size) // 2, 0), limit - new)
        start[a], stop[a] = lo, lo + new
    return start, stop


def fit_boxes(boxes: list[Box], image_size_xyz, geom: TileGeometry) -> list[dict]:
    """Merge and grow a region's boxes for a model; one dict per crop to predict."""
    out = []
    for (s, e), parts in merge_boxes(boxes, geom):
        s2, e2 = grow_box((s, e), image_size_xyz, geom)
        out.append({"start_xyz": s2.tolist(), "stop_xyz": e2.tolist(), "region_boxes": parts,
                    "tiles": geom.tiles(e2 - s2)})
    return out
