"""The Dice refinement of the registration (paper 3.2, step 3): per-axis scale and translation
by gradient descent on a soft Dice between the scan masks and the atlas pulled onto the scan.

NumPy only, with the gradient written out (reverse mode through three matrix products per group):
no torch import and no autograd bookkeeping for a problem of six parameters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..anatomy.volume import MaskVolume
from ..base.errors import LocalisationUntrusted

if TYPE_CHECKING:
    from .settings import RegistrationSettings


def _hat(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(len(k), n) linear-interpolation weights for continuous indices ``k`` (zero outside) and
    their derivative with respect to ``k``."""
    d = (k[:, None] - np.arange(n)[None, :]).astype(np.float32)
    w = np.maximum(1 - np.abs(d), 0)
    return w, -np.sign(d) * (w > 0)


def _support(a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lo, size) in xyz of the bounding box of ``a > 0`` (zyx array), or None when empty."""
    nz = [np.nonzero(a.any(axis=ax))[0] for ax in ((1, 2), (0, 2), (0, 1))]   # z, y, x
    if any(len(v) == 0 for v in nz):
        return None
    lo = np.array([v[0] for v in nz[::-1]])
    return lo, np.array([v[-1] + 1 for v in nz[::-1]]) - lo


@dataclass
class _Pulled:
    """One group pulled onto the scan voxels its atlas box reaches (kept for the gradient)."""
    box: np.ndarray            # atlas box, atlas (z, y, x)
    ranges: list[slice]        # scan voxel range per atlas axis (x, y, z)
    w: list[np.ndarray]        # per atlas axis (x, y, z): (scan, box) weights and their derivatives
    dw: list[np.ndarray]
    p1: np.ndarray             # box pulled along x, then y
    p2: np.ndarray
    covered: np.ndarray        # coverage and coverage^2 x scan mask on the reached voxels
    target: np.ndarray
    inter: float
    mass: float


class DiceProblem:
    """Soft Dice between the scan masks and the atlas sampled at the transformed scan voxels.

    The atlas is pulled onto the scan grid (the transform is affine, so the Jacobian cancels
    in the Dice ratio) and only voxels where the atlas has coverage count. Because the
    transform is axis-aligned, trilinear sampling is three small matrix products (exactly
    trilinear). Each group is pulled only from the bounding box of its atlas probability onto
    the scan voxels that box reaches (the rest of the sample is exactly zero): ~20x less
    arithmetic than pulling every group over the whole crop. Scan arrays are held in atlas axis
    order (the axes of the oriented scan). Parameters are the per-axis ``scale`` and a translation
    ``tau`` in units of the scan's largest half extent (1 and 0 at the landmark solution), so the
    paper's step size 0.05 is scale-free and equal on all axes."""

    def __init__(self, moving: MaskVolume, fixed: MaskVolume, M: np.ndarray, t0: np.ndarray,
                 groups: np.ndarray, level: int, padding: float = 0.15):
        m_size_full = np.array(moving.shape_zyx[::-1])
        m_mid_full = moving.origin + 0.5 * (m_size_full - 1) * moving.spacing
        self.M = M.astype(float)
        self.c_q = self.M @ m_mid_full                                    # FOV centre, oriented
        # translation unit: the FOV's largest half extent, the same on every axis. (Per-axis half
        # extents made z steps ~36x smaller than xy steps for a 20-slice slab and left the atlas
        # crop ~5 mm of room in z: slabs stayed near the landmark guess, up to 44 mm off in the
        # SSBR-protocol evaluation, docs/prealign_evaluation.md.)
        self.h_q = np.full(3, float(np.max(0.5 * m_size_full * moving.spacing)))
        self.a_c = self.c_q + t0
        mprob, _, m_origin, m_spacing = moving.pooled(level)
        fprob, fcov, f_origin, f_spacing = fixed.pooled(level)
        # atlas crop around the initial field of view (+ padding for the search)
        f_size = np.array(fprob.shape[1:][::-1])
        lo = np.floor((self.a_c - (1 + padding) * self.h_q - f_origin) / f_spacing).astype(int)
        hi = np.ceil((self.a_c + (1 + padding) * self.h_q - f_origin) / f_spacing).astype(int) + 1
        lo, hi = np.clip(lo, 0, f_size), np.clip(hi, 0, f_size)
        if np.any(hi - lo < 2):
            raise LocalisationUntrusted("the scan's anatomy falls outside the atlas after landmark alignment "
                                        f"(the atlas covers {fixed.group_span()}); registration impossible")
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        self.cov = np.ascontiguousarray(fcov[sl], dtype=np.float32)                     # (Z, Y, X)
        self.boxes = [self._box(fprob[g][sl]) for g in groups]
        self.a_origin = f_origin + lo * f_spacing
        self.a_spacing = f_spacing
        self.perm = [int(np.nonzero(self.M[i])[0][0]) for i in range(3)]   # atlas axis i <- scan axis perm[i]
        self.sign = np.array([float(self.M[i, self.perm[i]]) for i in range(3)])
        n_m = np.array(mprob.shape[1:][::-1])
        self.scan_coords = [m_origin[self.perm[i]] + m_spacing[self.perm[i]] * np.arange(n_m[self.perm[i]])
                            for i in range(3)]                              # per atlas axis
        # scan masks with their axes in atlas order (z, y, x of the oriented scan)
        axes = [2 - self.perm[2], 2 - self.perm[1], 2 - self.perm[0]]
        self.S = np.ascontiguousarray(mprob[groups].transpose(0, *(1 + a for a in axes)), dtype=np.float32)

    @staticmethod
    def _box(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        sup = _support(prob)
        if sup is None:
            return None
        (bx, by, bz), (nx, ny, nz) = sup
        return np.ascontiguousarray(prob[bz:bz + nz, by:by + ny, bx:bx + nx], dtype=np.float32), sup[0], sup[1]

    def atlas_indices(self, scale: np.ndarray, tau: np.ndarray) -> list[np.ndarray]:
        """Per atlas axis (x, y, z): the continuous atlas-crop index of every scan voxel on that axis."""
        t = self.a_c + self.h_q * tau - scale * self.c_q
        return [(scale[i] * self.sign[i] * self.scan_coords[i] + t[i] - self.a_origin[i]) / self.a_spacing[i]
                for i in range(3)]

    def _coverage(self, w: list[np.ndarray]) -> np.ndarray:
        """The atlas coverage (clipped to [0, 1]) at every scan voxel, atlas axis order."""
        c = w[1] @ (self.cov @ w[0].T)
        return np.clip((w[2] @ c.reshape(c.shape[0], -1)).reshape(len(w[2]), *c.shape[1:]), 0, 1)

    def _pull(self, box, k: list[np.ndarray], hats: list[tuple[np.ndarray, np.ndarray]], covered: np.ndarray,
              mask: np.ndarray) -> _Pulled | None:
        """A group's atlas box pulled onto the scan voxels it reaches; None when it reaches none.
        ``hats``: per atlas axis the weights (and derivatives) of every scan voxel on the whole crop."""
        vol, lo, size = box
        ranges, w, dw = [], [], []
        for i in range(3):
            j = np.nonzero((k[i] > lo[i] - 1) & (k[i] < lo[i] + size[i]))[0]
            if len(j) == 0:
                return None
            ranges.append(slice(int(j[0]), int(j[-1]) + 1))
            cols = slice(int(lo[i]), int(lo[i] + size[i]))
            w.append(hats[i][0][ranges[-1], cols])
            dw.append(hats[i][1][ranges[-1], cols])
        p1 = vol @ w[0].T                                             # (Z, Y, x)
        p2 = w[1] @ p1                                                # (Z, y, x)
        a = (w[2] @ p2.reshape(len(vol), -1)).reshape(len(w[2]), *p2.shape[1:])
        sl = (ranges[2], ranges[1], ranges[0])
        cov = covered[sl]
        target = cov * cov * mask[sl]
        return _Pulled(vol, ranges, w, dw, p1, p2, cov, target, float((a * target).sum()), float((a * cov).sum()))

    def _backward(self, p: _Pulled, e: np.ndarray, grads: list[np.ndarray]) -> None:
        """Adds d<pulled, e>/dk of one group to ``grads`` (per atlas axis, over all scan voxels)."""
        nz = len(e)
        gz = e.reshape(nz, -1) @ p.p2.reshape(len(p.box), -1).T          # (z, Z)
        e2 = (p.w[2].T @ e.reshape(nz, -1)).reshape(p.p2.shape)          # (Z, y, x)
        gy = np.tensordot(e2, p.p1, axes=([0, 2], [0, 2]))                # (y, Y)
        e1 = p.w[1].T @ e2                                               # (Z, Y, x)
        gx = e1.reshape(-1, e1.shape[2]).T @ p.box.reshape(-1, p.box.shape[2])   # (x, X)
        for i, g in enumerate((gx, gy, gz)):
            grads[i][p.ranges[i]] += (g * p.dw[i]).sum(1)

    def loss_and_grad(self, scale: np.ndarray, tau: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(1 - mean soft Dice, per-group Dice, d loss / d scale, d loss / d tau)."""
        k = self.atlas_indices(scale, tau)
        hats = [_hat(k[i], self.cov.shape[2 - i]) for i in range(3)]
        covered = self._coverage([h[0] for h in hats])
        s_mass = (self.S.reshape(len(self.S), -1) @ covered.ravel()).astype(float)
        pulled = [None if b is None else self._pull(b, k, hats, covered, self.S[g]) for g, b in enumerate(self.boxes)]
        inter = np.array([0.0 if p is None else p.inter for p in pulled])
        den = np.array([0.0 if p is None else p.mass for p in pulled]) + s_mass
        clamped = den <= 1e-5
        den = np.maximum(den, 1e-5)
        dice = 2 * inter / den
        n = len(dice)
        d_inter, d_mass = -2 / (n * den), np.where(clamped, 0.0, 2 * inter / (n * den ** 2))
        grads = [np.zeros(len(c)) for c in self.scan_coords]
        for g, p in enumerate(pulled):
            if p is not None:
                self._backward(p, (d_inter[g] * p.target + d_mass[g] * p.covered).astype(np.float32), grads)
        dk_dscale = [(self.sign[i] * self.scan_coords[i] - self.c_q[i]) / self.a_spacing[i] for i in range(3)]
        g_scale = np.array([grads[i] @ dk_dscale[i] for i in range(3)])
        g_tau = np.array([grads[i].sum() * self.h_q[i] / self.a_spacing[i] for i in range(3)])
        return float(1 - dice.mean()), dice, g_scale, g_tau

    def to_transform(self, scale: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return scale, self.a_c + self.h_q * tau - scale * self.c_q


class _Adam:
    """torch.optim.Adam's update (betas 0.9, 0.999, eps 1e-8) for one parameter vector."""

    def __init__(self) -> None:
        self.m = self.v = 0.0
        self.t = 0

    def step(self, g: np.ndarray, lr: float) -> np.ndarray:
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        denom = np.sqrt(self.v) / np.sqrt(1 - 0.999 ** self.t) + 1e-8
        return lr / (1 - 0.9 ** self.t) * self.m / denom


def refine(problem: DiceProblem, scale0: np.ndarray, tau0: np.ndarray, s: RegistrationSettings):
    """Gradient descent with the paper's schedule: step ``lr`` (0.05), halved when the loss
    improves by less than ``min_improvement`` (0.005) between two iterations, stopped at the
    4th halving. ``optimizer="adam"`` takes per-parameter normalised steps instead (measured
    alternative, docs/registration.md). The best parameters seen are returned."""
    scale, tau = np.array(scale0, float), np.array(tau0, float)
    adam = (_Adam(), _Adam()) if s.optimizer == "adam" else None
    lr, prev, reductions, it = s.lr, None, 0, 0
    best = (float("inf"), scale, tau, None)
    while it < s.max_iter_per_level:
        cur, dice, g_scale, g_tau = problem.loss_and_grad(scale, tau)
        if cur < best[0]:
            best = (cur, scale.copy(), tau.copy(), dice)
        if prev is not None and prev - cur < s.min_improvement:
            reductions += 1
            if reductions >= s.n_lr_reductions:
                break
            lr *= s.lr_factor
        if adam is None:
            scale, tau = scale - lr * g_scale, tau - lr * g_tau
        else:
            scale, tau = scale - adam[0].step(g_scale, lr), tau - adam[1].step(g_tau, lr)
        scale = np.clip(scale, s.min_scale, s.max_scale)
        prev = cur
        it += 1
    return best[1], best[2], best[3], it
