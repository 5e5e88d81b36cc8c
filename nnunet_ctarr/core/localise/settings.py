"""The registration's settings (landmarks, orientation search, Dice refinement)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RegistrationSettings:
    allow_xy_rotation: bool = True
    allow_z_flip: bool = True
    allow_x_flip: bool = False
    allow_y_flip: bool = False
    #: orientation search needs more than this many groups with at least ``gate_fraction``
    #: of their atlas volume (scaled by the landmark scale estimate)
    gate_min_groups: int = 3
    gate_fraction: float = 0.10
    #: a non-header orientation must fit the landmarks this many times better than the header
    header_preference: float = 1.5
    #: minimum number of usable landmarks to register at all
    min_groups: int = 2
    #: "paper" (plain gradient steps, default) or "adam" (per-parameter normalised steps;
    #: use lr=0.02, min_improvement=0.002); see docs/registration.md for the comparison
    optimizer: str = "paper"
    lr: float = 0.05
    lr_factor: float = 0.5
    min_improvement: float = 0.005
    n_lr_reductions: int = 4
    max_iter_per_level: int = 60
    #: pyramid of pooling factors for the Dice refinement (1 = 3 mm atlas spacing)
    levels: tuple[int, ...] = (4, 2)
    min_scale: float = 0.5
    max_scale: float = 2.0
