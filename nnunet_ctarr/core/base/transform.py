"""The CTARR scan -> atlas transform.

``atlas_mm = scale * (M @ world_mm) + translation`` where ``world_mm`` is an LPS world point of
the scan and ``M = R_k @ F`` is a signed permutation: ``F`` flips the chosen world axes and
``R_k`` turns the xy plane by ``k`` quarter turns (from +x towards +y). Because ``M`` only
permutes and flips axes and ``scale`` is per axis, axis-aligned boxes stay axis-aligned in
both directions, so mapped boxes can be cropped without interpolation.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np


def orientation_matrix(k_rot: int, flip: tuple[bool, bool, bool]) -> np.ndarray:
    """``R_k @ F`` as a 3x3 integer matrix."""
    f = np.diag([-1 if b else 1 for b in flip])
    r = np.eye(3, dtype=int)
    quarter = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    for _ in range(k_rot % 4):
        r = quarter @ r
    return (r @ f).astype(int)


def describe_orientation(k_rot: int, flip: tuple[bool, bool, bool]) -> str:
    parts = []
    if k_rot % 4:
        parts.append(f"{90 * (k_rot % 4)} deg xy rotation")
    for ax, b in zip("xyz", flip):
        if b:
            parts.append(f"{ax} flip")
    return ", ".join(parts) if parts else "as in header"


def orientation_from_matrix(M) -> tuple[int, tuple[bool, bool, bool]] | None:
    """A (k_rot, flip) whose orientation matrix equals the signed permutation ``M`` (fewest flips
    first: a 180 deg turn rather than x+y flips), or None."""
    M = np.rint(np.asarray(M, dtype=float)).astype(int)
    candidates = sorted(((k, flip) for k in range(4) for flip in itertools.product((False, True), repeat=3)),
                        key=lambda c: (sum(c[1]), c[0]))
    return next((c for c in candidates if np.array_equal(orientation_matrix(*c).astype(int), M)), None)


@dataclass
class AtlasTransform:
    """Orientation (k_rot, flip) + per-axis scale + translation, scan world mm -> atlas mm."""
    k_rot: int = 0
    flip: tuple[bool, bool, bool] = (False, False, False)
    scale: np.ndarray = field(default_factory=lambda: np.ones(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.k_rot = int(self.k_rot) % 4
        self.flip = tuple(bool(b) for b in self.flip)
        self.scale = np.asarray(self.scale, dtype=float).reshape(3)
        self.translation = np.asarray(self.translation, dtype=float).reshape(3)

    @property
    def M(self) -> np.ndarray:
        return orientation_matrix(self.k_rot, self.flip)

    @property
    def matrix(self) -> np.ndarray:
        """Linear part ``diag(scale) @ M`` (world -> atlas)."""
        return np.diag(self.scale) @ self.M

    def to_atlas(self, pts_world: np.ndarray) -> np.ndarray:
        """Map points (N, 3) or (3,) from scan world mm to atlas mm."""
        p = np.asarray(pts_world, float)
        return p @ self.matrix.T + self.translation

    def to_world(self, pts_atlas: np.ndarray) -> np.ndarray:
        """Map points (N, 3) or (3,) from atlas mm to scan world mm."""
        p = np.asarray(pts_atlas, float)
        return ((p - self.translation) / self.scale) @ self.M  # M is orthogonal: M^-1 = M^T

    def box_to_world(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Atlas box (min, max corner) -> world box (min, max corner)."""
        c = self.to_world(np.stack([lo, hi]))
        return c.min(0), c.max(0)

    def box_to_atlas(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.to_atlas(np.stack([lo, hi]))
        return c.min(0), c.max(0)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, b) with ``atlas = A @ world + b``."""
        return self.matrix, self.translation.copy()

    @property
    def orientation_text(self) -> str:
        return describe_orientation(self.k_rot, self.flip)

    def to_dict(self) -> dict:
        return {
            "k_rot": self.k_rot,
            "rotation_deg_xy": 90 * self.k_rot,
            "flip_xyz": list(self.flip),
            "orientation": self.orientation_text,
            "scale_xyz": [round(float(v), 6) for v in self.scale],
            "translation_mm_xyz": [round(float(v), 4) for v in self.translation],
            "formula": "atlas_mm = scale * (M @ world_mm_LPS) + translation, M = R_k(xy quarter turns) @ diag(flips)",
            "M": self.M.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> AtlasTransform:
        return cls(d["k_rot"], tuple(d["flip_xyz"]), np.array(d["scale_xyz"]), np.array(d["translation_mm_xyz"]))
