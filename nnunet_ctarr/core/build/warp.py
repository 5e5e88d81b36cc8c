"""Resample scan-space volumes into atlas space (atlas building, region learning, QC).

Pull sampling: every atlas voxel centre ``a`` is mapped to the scan (``p = T^-1(a)``) and the
scan volume is read there with trilinear interpolation (torch ``grid_sample``). A second
output says whether ``a`` fell inside the scan's field of view.
"""
from __future__ import annotations

import numpy as np

from ..base.geometry import Geometry
from ..base.transform import AtlasTransform


def warp_to_atlas(arr_czyx: np.ndarray, origin: np.ndarray, spacing: np.ndarray,
                  tf: AtlasTransform, grid: Geometry, mode: str = "bilinear",
                  device: str = "cpu", chunk_channels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Warp a (C, z, y, x) scan-space array on an LPS grid (``origin``/``spacing``, world mm)
    into ``grid`` (atlas mm). Returns (warped (C, Z, Y, X) float32, inside-FOV (Z, Y, X) bool).
    """
    import torch  # imported when a warp runs, not at start-up (``-h`` of the commands)
    import torch.nn.functional as F

    n_m = np.array(arr_czyx.shape[1:][::-1])                     # xyz
    m_mid = origin + 0.5 * (n_m - 1) * spacing
    h_m = 0.5 * np.maximum(n_m - 1, 1) * spacing
    n_a = np.array(grid.shape_zyx[::-1])
    a_mid = grid.origin + 0.5 * (n_a - 1) * grid.spacing
    h_a = 0.5 * np.maximum(n_a - 1, 1) * grid.spacing
    # atlas normalised g -> a = a_mid + h_a g -> p = T^-1(a) -> u = (p - m_mid) / h_m
    A, b = tf.affine()
    Ainv = np.linalg.inv(A)
    lin = np.diag(1 / h_m) @ Ainv @ np.diag(h_a)
    off = (Ainv @ (a_mid - b) - m_mid) / h_m
    theta = torch.tensor(np.concatenate([lin, off[:, None]], 1)[None], dtype=torch.float32, device=device)
    grid_t = F.affine_grid(theta, [1, 1] + list(grid.shape_zyx), align_corners=True)
    # inside = the atlas voxel maps into the scan's voxel-edge extent
    half_vox = (0.5 / np.maximum(n_m - 1, 1)) * 2
    lim = torch.tensor(1 + half_vox, dtype=torch.float32, device=device)
    inside = (grid_t[0].abs() <= lim).all(-1).cpu().numpy()
    out = np.zeros((arr_czyx.shape[0],) + tuple(grid.shape_zyx), np.float32)
    for c0 in range(0, arr_czyx.shape[0], chunk_channels):
        chunk = np.require(arr_czyx[c0:c0 + chunk_channels], np.float32, ["C", "W"])
        src = torch.from_numpy(chunk).to(device)[None]
        res = F.grid_sample(src, grid_t, mode=mode, padding_mode="border", align_corners=True)[0]
        out[c0:c0 + chunk_channels] = res.cpu().numpy()
    out *= inside[None]
    return out, inside
