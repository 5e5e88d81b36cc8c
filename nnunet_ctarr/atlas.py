"""The CTARR atlas: averaged masks of the 19 groups on a 3 mm grid, and its builder.

**Atlas frame.** Axes are the LPS patient axes (+x left, +y posterior, +z superior), units mm.
The frame is the average anatomy of the build scans (group-wise mean of the pairwise
transforms, paper 3.2); it is shifted so that the centre of voxel ``[0, 0, 0]`` of the atlas
grid is at (0, 0, 0) mm. Region boxes (``region_defs/*.json``) are given in this frame.

**File.** ``.npz`` with ``prob`` (19, Z, Y, X) uint8 (probability x 255), ``coverage``
(Z, Y, X) uint8 (share of build scans covering the voxel x 255), ``origin``, ``spacing``,
``observed`` (19,) and ``meta`` (JSON: atlas id, provenance, per-group coverage).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .anatomy import GROUPS, N_GROUPS
from .errors import CTARRError
from .grid import MaskVolume
from .registration import RegistrationSettings, register
from .transform import AtlasTransform
from .warp import AtlasGrid, warp_to_atlas

DEFAULT_ATLAS = "atlas_ctarr_starter.npz"


@dataclass
class Atlas(MaskVolume):
    meta: dict = field(default_factory=dict)

    @property
    def atlas_id(self) -> str:
        return self.meta.get("atlas_id", "unknown")

    @property
    def grid(self) -> AtlasGrid:
        return AtlasGrid(self.origin, self.spacing, self.shape_zyx)

    def save(self, path: str | Path) -> None:
        prob8 = np.round(np.clip(self.prob, 0, 1) * 255).astype(np.uint8)
        cov8 = np.round(np.clip(self.coverage, 0, 1) * 255).astype(np.uint8)
        meta = dict(self.meta)
        meta["atlas_id"] = hashlib.sha1(prob8.tobytes() + cov8.tobytes()).hexdigest()[:12]
        self.meta = meta
        np.savez_compressed(path, prob=prob8, coverage=cov8, origin=self.origin, spacing=self.spacing,
                            observed=self.observed, meta=json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Atlas":
        """Load an atlas file; ``None`` loads the atlas shipped with the package."""
        try:
            if path is None:
                ref = resources.files("nnunet_ctarr").joinpath(f"resources/{DEFAULT_ATLAS}")
                with resources.as_file(ref) as p:
                    data = dict(np.load(p))
            else:
                data = dict(np.load(path))
        except (OSError, ValueError, KeyError) as e:
            raise CTARRError(f"cannot load atlas {path or DEFAULT_ATLAS}: {e}") from None
        return cls(origin=data["origin"].astype(float), spacing=data["spacing"].astype(float),
                   observed=data["observed"].astype(bool),
                   prob=data["prob"].astype(np.float32) / 255.0,
                   coverage=data["coverage"].astype(np.float32) / 255.0,
                   meta=json.loads(str(data["meta"])))


def _mean_transform(tfs: list[AtlasTransform]) -> AtlasTransform:
    return AtlasTransform(0, (False, False, False), np.mean([t.scale for t in tfs], 0),
                          np.mean([t.translation for t in tfs], 0))


def _average(volumes: list[MaskVolume], tfs: list[AtlasTransform], spacing: float,
             device: str) -> tuple[np.ndarray, np.ndarray, AtlasGrid]:
    """Voxel-wise average of the warped masks over the scans that cover each voxel."""
    boxes = [tf.box_to_atlas(*v.extent()) for v, tf in zip(volumes, tfs)]
    lo = np.min([b[0] for b in boxes], 0)
    hi = np.max([b[1] for b in boxes], 0)
    grid = AtlasGrid.covering(lo, hi, spacing)
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
                settings: RegistrationSettings | None = None, progress: bool = True) -> Atlas:
    """Build an atlas from scan anatomies (paper 3.2), with partial fields of view.

    1. register every scan to every other one (header orientation kept);
    2. average each scan's transforms (including the identity to itself, which makes the
       average a group-wise mean frame also for very few scans);
    3. provisional atlas = voxel-wise mean over the scans covering each voxel;
    4. register every scan to the provisional atlas; final atlas = mean again.
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
    prob, cov, grid = _average(volumes, tfs, spacing, s.device)
    provisional = MaskVolume(grid.origin, grid.spacing, np.array([v.observed for v in volumes]).any(0),
                             prob=prob, coverage=(cov > 0).astype(np.float32))
    final_tfs, dices = [], []
    for v in tqdm(volumes, desc="registration to provisional atlas", disable=not progress):
        res = register(v, provisional, s, orientation=fixed_or)
        final_tfs.append(res.transform)
        dices.append(res.dice)
    prob, cov, grid = _average(volumes, final_tfs, spacing, s.device)
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
    return Atlas(origin=np.zeros(3), spacing=grid.spacing.copy(), observed=observed & (prob.reshape(N_GROUPS, -1).max(1) > 0),
                 prob=prob, coverage=cov, meta=meta)
