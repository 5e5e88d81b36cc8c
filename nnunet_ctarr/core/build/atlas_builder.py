"""Building a CTARR atlas from labelled scans (paper 3.2), with partial fields of view."""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from ..anatomy.atlas import Atlas
from ..anatomy.groups import GROUPS, N_GROUPS
from ..anatomy.volume import MaskVolume
from ..base.errors import CTARRError
from ..base.geometry import Geometry
from ..base.transform import AtlasTransform
from ..localise.registration import register
from ..localise.settings import RegistrationSettings
from .warp import warp_to_atlas


def _mean_transform(tfs: list[AtlasTransform]) -> AtlasTransform:
    return AtlasTransform(0, (False, False, False), np.mean([t.scale for t in tfs], 0),
                          np.mean([t.translation for t in tfs], 0))


def _average(volumes: list[MaskVolume], tfs: list[AtlasTransform], spacing: float,
             device: str) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Voxel-wise average of the warped masks over the scans that cover each voxel."""
    boxes = [tf.box_to_atlas(*v.extent()) for v, tf in zip(volumes, tfs)]
    lo = np.min([b[0] for b in boxes], 0)
    hi = np.max([b[1] for b in boxes], 0)
    grid = Geometry.covering(lo, hi, spacing)
    acc = np.zeros((N_GROUPS,) + grid.shape_zyx, np.float32)
    n_obs = np.zeros((N_GROUPS,) + grid.shape_zyx, np.float32)
    cov = np.zeros(grid.shape_zyx, np.float32)
    for v, tf in zip(volumes, tfs):
        prob, _, origin, sp = v.pooled(1)
        warped, inside = warp_to_atlas(prob, origin, sp, tf, grid, device=device)
        acc += warped
        cov += inside
        n_obs += inside[None] * v.observed[:, None, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.where(n_obs > 0, acc / np.maximum(n_obs, 1), 0).astype(np.float32)
    return prob, cov / len(volumes), grid


def build_atlas(volumes: list[MaskVolume], names: list[str], spacing: float = 3.0,
                settings: RegistrationSettings | None = None, progress: bool = True, device: str = "cpu") -> Atlas:
    """Build an atlas from scan anatomies (paper 3.2), with partial fields of view.

    1. register every scan to every other one (header orientation kept);
    2. average each scan's transforms (including the identity to itself, which makes the
       average a group-wise mean frame also for very few scans);
    3. provisional atlas = voxel-wise mean over the scans covering each voxel;
    4. register every scan to the provisional atlas; final atlas = mean again.

    ``device``: the torch device of the warps onto the atlas grid (the registration runs on the CPU).
    """
    if len(volumes) < 2:
        raise CTARRError("an atlas needs at least 2 labelled scans")
    s = settings or RegistrationSettings()
    fixed_or = (0, (False, False, False))
    n = len(volumes)
    t0 = time.perf_counter()
    pair_tfs: list[list[AtlasTransform]] = [[AtlasTransform()] for _ in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    for i, j in tqdm(pairs, desc="pairwise registration", disable=not progress):
        res = register(volumes[i], volumes[j], s, orientation=fixed_or)
        pair_tfs[i].append(res.transform)
    tfs = [_mean_transform(t) for t in pair_tfs]
    prob, cov, grid = _average(volumes, tfs, spacing, device)
    provisional = MaskVolume(grid.origin, grid.spacing, np.array([v.observed for v in volumes]).any(0),
                             prob=prob, coverage=(cov > 0).astype(np.float32))
    final_tfs, dices = [], []
    for v in tqdm(volumes, desc="registration to provisional atlas", disable=not progress):
        res = register(v, provisional, s, orientation=fixed_or)
        final_tfs.append(res.transform)
        dices.append(res.dice)
    prob, cov, grid = _average(volumes, final_tfs, spacing, device)
    # crop to where there is anatomy or coverage, then shift so voxel [0,0,0] is at 0 mm
    keep = (cov > 0) | (prob.max(0) > 0)
    zz, yy, xx = [np.nonzero(keep.any(axis=ax))[0] for ax in ((1, 2), (0, 2), (0, 1))]
    sl = (slice(zz[0], zz[-1] + 1), slice(yy[0], yy[-1] + 1), slice(xx[0], xx[-1] + 1))
    prob, cov = prob[(slice(None),) + sl], cov[sl]
    observed = np.array([v.observed for v in volumes]).any(0)
    meta = {
        "format": "nnunet-ctarr atlas v1",
        "frame": "LPS axes (+x left, +y posterior, +z superior), mm; voxel [0,0,0] centre at (0,0,0)",
        "groups": list(GROUPS),
        "n_scans": n,
        "sources": names,
        "created": time.strftime("%Y-%m-%d"),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "registration_dice_to_provisional": {nm: round(d, 3) for nm, d in zip(names, dices)},
        "group_max_probability": {g: round(float(prob[i].max()), 3) for i, g in enumerate(GROUPS)},
        "groups_without_data": [g for i, g in enumerate(GROUPS) if prob[i].max() == 0],
    }
    observed &= prob.reshape(N_GROUPS, -1).max(1) > 0
    return Atlas(origin=np.zeros(3), spacing=grid.spacing.copy(), observed=observed,
                 prob=prob, coverage=cov, meta=meta)
