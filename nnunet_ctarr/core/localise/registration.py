"""Mask-to-atlas registration (CTARR paper, section 3.2).

1. Landmarks: centre of mass per group; weight = volume in scan / volume in atlas, zero for
   groups that are unobserved, empty in the scan or empty in the atlas; normalised.
2. Orientation search over 4 quarter turns in xy x z flip (x/y flips optional), each with the
   closed-form weighted least-squares translation; the lowest weighted MSE wins. The search
   only runs when enough anatomy is visible, otherwise the header orientation is kept.
3. Gradient descent on a soft Dice loss over per-axis scale and translation (step 0.05,
   halved when the loss improves by less than 0.005, stopped at the 4th halving), run
   coarse-to-fine. The Dice is computed only where the scan has a field of view and the atlas
   has coverage, so partial scans are not pulled towards the atlas' full extent.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from ..anatomy.groups import GROUPS
from ..anatomy.volume import MaskVolume
from ..base.errors import LocalisationUntrusted
from ..base.transform import AtlasTransform, describe_orientation, orientation_matrix
from .settings import RegistrationSettings


@dataclass
class RegistrationResult:
    transform: AtlasTransform
    dice: float                       # mean soft Dice over the scan's groups after refinement
    dice_per_group: dict[str, float]
    weights: dict[str, float]
    orientation_searched: bool
    orientation_candidates: list[dict]
    orientation_margin: float         # second-best / best weighted MSE (>= 1; large = clear)
    n_iterations: int
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: a non-header orientation fitted best but not clearly enough; the header one was kept
    orientation_ambiguous: bool = False

    def to_dict(self) -> dict:
        return {
            "transform": self.transform.to_dict(),
            "registration_dice": round(self.dice, 4),
            "dice_per_group": {k: round(v, 4) for k, v in self.dice_per_group.items()},
            "landmark_weights": {k: round(v, 4) for k, v in self.weights.items() if v > 0},
            "orientation_searched": self.orientation_searched,
            "orientation_ambiguous": self.orientation_ambiguous,
            "orientation_margin": round(self.orientation_margin, 3) if np.isfinite(self.orientation_margin) else None,
            "orientation_candidates": self.orientation_candidates,
            "n_iterations": self.n_iterations,
        }


def landmark_weights(moving: MaskVolume, fixed: MaskVolume) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised landmark weights and the boolean mask of usable groups.

    The paper's weight is volume in scan / volume in atlas. We use ``min(r, 1/r)``: identical
    for the usual r <= 1 (group partly outside the scan), and it also down-weights groups that
    are *partial in the fixed volume* (partial-coverage atlas, pairwise registration while
    building an atlas), whose centres of mass are just as unreliable."""
    vm, vf = moving.volumes_mm3(), fixed.volumes_mm3()
    usable = moving.observed & fixed.observed & (vm > 0) & (vf > 0)
    r = np.where(usable, vm / np.maximum(vf, 1e-9), 0.0)
    ratio = np.where(usable, np.minimum(r, 1.0 / np.maximum(r, 1e-9)), 0.0)
    return ratio, usable


def _too_sparse(moving: MaskVolume, fixed: MaskVolume, usable: np.ndarray, need: int) -> str:
    """The message for too few usable groups, naming the groups the atlas does not contain."""
    present = moving.volumes_mm3() > 0
    lacking = [GROUPS[i] for i in np.nonzero(present & ~(fixed.observed & (fixed.volumes_mm3() > 0)))[0]]
    used = [GROUPS[i] for i in np.nonzero(usable)[0]]
    msg = f"anatomy too sparse to register: {len(used)} usable group(s) ({', '.join(used) or 'none'})"
    if lacking:
        msg += f"; the scan also shows {', '.join(lacking)}, which the atlas (covering {fixed.group_span()}) lacks"
    return msg + f"; at least {need} groups the atlas has are needed"


def _candidates(s: RegistrationSettings) -> list[tuple[int, tuple[bool, bool, bool]]]:
    ks = range(4) if s.allow_xy_rotation else [0]
    fx = (False, True) if s.allow_x_flip else (False,)
    fy = (False, True) if s.allow_y_flip else (False,)
    fz = (False, True) if s.allow_z_flip else (False,)
    return [(k, (a, b, c)) for k, a, b, c in itertools.product(ks, fx, fy, fz)]


def search_orientation(x: np.ndarray, y: np.ndarray, w: np.ndarray,
                       candidates: list[tuple[int, tuple[bool, bool, bool]]]) -> list[dict]:
    """Weighted least-squares translation + weighted MSE for every orientation candidate,
    sorted best first. ``x``: scan landmarks (world), ``y``: atlas landmarks, ``w``: weights."""
    out = []
    for k, flip in candidates:
        xr = x @ orientation_matrix(k, flip).T
        t = (w[:, None] * (y - xr)).sum(0)
        mse = float((w * ((xr + t - y) ** 2).sum(1)).sum())
        out.append({"k_rot": k, "flip": flip, "translation": t, "wmse": mse})
    return sorted(out, key=lambda c: c["wmse"])


def _choose_orientation(cands: list[dict], searched: bool, n_big: int, s: RegistrationSettings,
                        warnings: list[str]) -> tuple[dict, bool]:
    """The best landmark fit, unless the header orientation fits almost as well (then the header
    one is kept and the result is marked ambiguous) or the search was gated off."""
    header = next(c for c in cands if c["k_rot"] == 0 and not any(c["flip"]))
    if not searched:
        warnings.append(f"orientation search skipped: only {n_big} group(s) with >= "
                        f"{100 * s.gate_fraction:.0f}% of their atlas volume (need > {s.gate_min_groups}); "
                        "kept the header orientation")
        return header, False
    chosen = cands[0]
    if chosen is not header and header["wmse"] <= s.header_preference * chosen["wmse"]:
        warnings.append(f"orientation ambiguous: {describe_orientation(chosen['k_rot'], chosen['flip'])} fits the "
                        f"landmarks only {header['wmse'] / max(chosen['wmse'], 1e-9):.2f}x better than the header "
                        "orientation; kept the header orientation")
        return header, True
    return chosen, False


def _refine(moving: MaskVolume, fixed: MaskVolume, M: np.ndarray, t0: np.ndarray, groups: np.ndarray,
            s: RegistrationSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The Dice refinement, coarse to fine: (scale, translation, per-group Dice, iterations).
    Its matrix products are small: one BLAS thread each (threads fighting over two busy cores made
    it 5-10x slower, e.g. under ``-np 2`` or next to other jobs)."""
    from .refinement import DiceProblem, refine

    scale, tau = np.ones(3), np.zeros(3)
    n_it = 0
    dice = np.zeros(len(groups))
    problem = None
    with threadpool_limits(1, user_api="blas"):
        for level in s.levels:
            problem = DiceProblem(moving, fixed, M, t0, groups, level)
            scale, tau, dice, it = refine(problem, scale, tau, s)
            n_it += it
    scale, trans = problem.to_transform(scale, tau)
    return scale, trans, dice, n_it


def register(moving: MaskVolume, fixed: MaskVolume, settings: RegistrationSettings | None = None,
             orientation: tuple[int, tuple[bool, bool, bool]] | None = None) -> RegistrationResult:
    """Register scan masks (world mm) to the atlas (atlas mm).

    ``orientation`` forces (k_rot, flip) and skips the search.
    """
    s = settings or RegistrationSettings()
    t_start = time.perf_counter()
    warnings: list[str] = []
    ratio, usable = landmark_weights(moving, fixed)
    if usable.sum() < s.min_groups:
        raise LocalisationUntrusted(_too_sparse(moving, fixed, usable, s.min_groups))
    w = ratio / ratio.sum()
    x = moving.centres_of_mass()
    y = fixed.centres_of_mass()
    idx = np.nonzero(usable)[0]
    cands = search_orientation(x[idx], y[idx], w[idx], _candidates(s))
    # gate (paper code: > 3 groups with >= 25% of their atlas volume). Our weights are
    # min(r, 1/r) and the default fraction is 10%, so zoomed-out or cut scans still search;
    # ambiguity is handled in _choose_orientation by preferring the header orientation.
    n_big = int((ratio[usable] >= s.gate_fraction).sum())
    searched = orientation is None and n_big > s.gate_min_groups
    if orientation is not None:
        chosen, ambiguous = search_orientation(x[idx], y[idx], w[idx], [orientation])[0], False
    else:
        chosen, ambiguous = _choose_orientation(cands, searched, n_big, s, warnings)
    margin = (cands[1]["wmse"] / max(cands[0]["wmse"], 1e-9)) if len(cands) > 1 else float("inf")
    M = orientation_matrix(chosen["k_rot"], chosen["flip"])
    t0 = chosen["translation"]
    t_landmarks = time.perf_counter()

    groups = np.nonzero(usable)[0]
    scale, trans, dice, n_it = _refine(moving, fixed, M, t0, groups, s)
    t_end = time.perf_counter()
    tf = AtlasTransform(chosen["k_rot"], chosen["flip"], scale, trans)
    return RegistrationResult(
        transform=tf,
        dice=float(np.mean(dice)) if len(dice) else 0.0,
        dice_per_group={GROUPS[g]: float(d) for g, d in zip(groups, dice)},
        weights={GROUPS[i]: float(w[i]) for i in range(len(GROUPS))},
        orientation_searched=searched,
        orientation_candidates=[{"k_rot": c["k_rot"], "flip_xyz": list(c["flip"]), "wmse": round(c["wmse"], 2)}
                                for c in cands[:4]],
        orientation_margin=margin,
        n_iterations=n_it,
        seconds={"landmarks": t_landmarks - t_start, "refinement": t_end - t_landmarks},
        warnings=warnings,
        orientation_ambiguous=ambiguous,
    )
