"""The Dice refinement of the registration (paper 3.2, step 3): per-axis scale and translation
by gradient descent on a soft Dice between the scan masks and the atlas pulled onto the scan."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import LocalisationUntrusted
from .volume import MaskVolume

if TYPE_CHECKING:
    from .registration import RegistrationSettings


def _hat(k: torch.Tensor, n: int) -> torch.Tensor:
    """(len(k), n) linear-interpolation weights for continuous indices ``k`` (zero outside)."""
    i = torch.arange(n, dtype=k.dtype, device=k.device)
    return (1 - (k[:, None] - i[None, :]).abs()).clamp_min(0)


class DiceProblem:
    """Soft Dice between the scan masks and the atlas sampled at the transformed scan voxels.

    The atlas is pulled onto the scan grid (the transform is affine, so the Jacobian cancels
    in the Dice ratio) and only voxels where the atlas has coverage count. Because the
    transform is axis-aligned, trilinear sampling is three small matrix products (exactly
    trilinear, ~4x faster than ``grid_sample`` on CPU). Parameters are the per-axis ``scale``
    and a translation ``tau`` in units of the scan's largest half extent (1 and 0 at the landmark
    solution), so the paper's step size 0.05 is scale-free and equal on all axes."""

    def __init__(self, moving: MaskVolume, fixed: MaskVolume, M: np.ndarray, t0: np.ndarray,
                 groups: np.ndarray, level: int, device: str, padding: float = 0.15):
        dt = torch.float32
        self.device = device
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
        atlas = np.concatenate([fprob[(groups,) + sl], fcov[sl][None]], 0)
        self.A = torch.from_numpy(np.ascontiguousarray(atlas)).to(device, dt)     # (G+1, Z, Y, X)
        self.S = torch.from_numpy(np.ascontiguousarray(mprob[groups])).to(device, dt)  # (G, z, y, x)
        self.a_origin = f_origin + lo * f_spacing
        self.a_spacing = f_spacing
        self.perm = [int(np.nonzero(self.M[i])[0][0]) for i in range(3)]   # atlas axis i <- scan axis perm[i]
        self.sign = [float(self.M[i, self.perm[i]]) for i in range(3)]
        n_m = np.array(mprob.shape[1:][::-1])
        self.scan_coords = [torch.as_tensor(m_origin[j] + m_spacing[j] * np.arange(n_m[j]), dtype=dt, device=device)
                            for j in range(3)]
        # after sampling, tensor dims 1, 2, 3 hold scan axes perm[2], perm[1], perm[0]
        at_dim = [self.perm[2], self.perm[1], self.perm[0]]
        self.order = [0] + [1 + at_dim.index(j) for j in (2, 1, 0)]

    def sample(self, scale: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Atlas (+ coverage as last channel) at the scan voxels: (G+1, z, y, x)."""
        t = torch.as_tensor(self.a_c, dtype=scale.dtype) + torch.as_tensor(self.h_q, dtype=scale.dtype) * tau \
            - scale * torch.as_tensor(self.c_q, dtype=scale.dtype)
        x = self.A
        for i, dim in ((0, 3), (1, 2), (2, 1)):                    # atlas x, y, z
            p = self.scan_coords[self.perm[i]]
            k = (scale[i] * self.sign[i] * p + t[i] - float(self.a_origin[i])) / float(self.a_spacing[i])
            W = _hat(k, x.shape[dim])
            x = torch.movedim(torch.tensordot(x, W, dims=([dim], [1])), -1, dim)
        return x.permute(*self.order)

    def loss(self, scale: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        samp = self.sample(scale, tau)
        cov = samp[-1:].detach().clamp(0, 1)
        a = samp[:-1] * cov
        S = self.S * cov
        inter = (a * S).sum((1, 2, 3))
        dice = 2 * inter / (a.sum((1, 2, 3)) + S.sum((1, 2, 3))).clamp_min(1e-5)
        return 1 - dice.mean(), dice.detach()

    def to_transform(self, scale: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return scale, self.a_c + self.h_q * tau - scale * self.c_q


def refine(problem: DiceProblem, scale0: np.ndarray, tau0: np.ndarray, s: RegistrationSettings):
    """Gradient descent with the paper's schedule: step ``lr`` (0.05), halved when the loss
    improves by less than ``min_improvement`` (0.005) between two iterations, stopped at the
    4th halving. ``optimizer="adam"`` takes per-parameter normalised steps instead (measured
    alternative, docs/registration.md). The best parameters seen are returned."""
    dev = problem.device
    scale = torch.tensor(scale0, dtype=torch.float32, device=dev, requires_grad=True)
    tau = torch.tensor(tau0, dtype=torch.float32, device=dev, requires_grad=True)
    if s.optimizer == "adam":
        opt = torch.optim.Adam([scale, tau], lr=s.lr)
    else:
        opt = torch.optim.SGD([scale, tau], lr=s.lr)
    prev, reductions, it = None, 0, 0
    best = (float("inf"), scale0, tau0, None)
    while it < s.max_iter_per_level:
        opt.zero_grad()
        loss, dice = problem.loss(scale, tau)
        cur = float(loss.detach())
        if cur < best[0]:
            best = (cur, scale.detach().cpu().numpy().astype(float), tau.detach().cpu().numpy().astype(float), dice)
        if prev is not None and prev - cur < s.min_improvement:
            reductions += 1
            if reductions >= s.n_lr_reductions:
                break
            for group in opt.param_groups:
                group["lr"] *= s.lr_factor
        loss.backward()
        opt.step()
        with torch.no_grad():
            scale.clamp_(s.min_scale, s.max_scale)
        prev = cur
        it += 1
    return best[1], best[2], best[3].cpu().numpy(), it
