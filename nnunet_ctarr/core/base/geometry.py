"""One geometry value object for every grid in the package.

:class:`Geometry` is SimpleITK's description of a voxel grid: ``size_xyz``, ``spacing_xyz``,
``origin_xyz`` (world position of the *centre* of voxel ``[0, 0, 0]``) and ``direction``
(row-major 3x3, columns = world direction of the index axes x, y, z). It describes scans as
stored (any direction), the LPS-aligned registration grids and the atlas grid (identity
direction, atlas mm), crops of them, and nnU-Net's ``sitk_stuff``.

Index order: ``_xyz`` tuples and index boxes are SimpleITK's (x, y, z); numpy arrays are
``[z, y, x]``; :meth:`Geometry.slices_zyx` is the one place that converts an index box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import CTARRError

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def as_geometry(x: Geometry | sitk.Image) -> Geometry:
    """A :class:`Geometry` as is, or the geometry of a SimpleITK image."""
    return x if isinstance(x, Geometry) else Geometry.of(x)


def _floats(v) -> tuple[float, ...]:
    return tuple(float(x) for x in v)


@dataclass(frozen=True)
class Geometry:
    """Size, spacing, origin and direction of a 3D voxel grid (see module docstring)."""
    size_xyz: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...] = IDENTITY

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_xyz", tuple(int(v) for v in self.size_xyz))
        object.__setattr__(self, "spacing_xyz", _floats(self.spacing_xyz))
        object.__setattr__(self, "origin_xyz", _floats(self.origin_xyz))
        object.__setattr__(self, "direction", _floats(np.asarray(self.direction, float).ravel()))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def of(cls, img: sitk.Image) -> Geometry:
        """The geometry of a SimpleITK image."""
        return cls(img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())

    @classmethod
    def from_sitk_stuff(cls, stuff: dict, shape_zyx) -> Geometry:
        """From nnU-Net SimpleITKIO's ``properties["sitk_stuff"]`` and the array's (z, y, x) shape."""
        return cls(tuple(shape_zyx)[::-1], stuff["spacing"], stuff["origin"], stuff["direction"])

    @classmethod
    def aligned(cls, origin_xyz, spacing_xyz, shape_zyx) -> Geometry:
        """An LPS-axis-aligned grid (identity direction)."""
        return cls(tuple(shape_zyx)[::-1], spacing_xyz, origin_xyz)

    @classmethod
    def covering(cls, lo, hi, spacing: float) -> Geometry:
        """Aligned grid of isotropic ``spacing`` whose first voxel edge is ``lo`` and which reaches ``hi``."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        size = np.maximum(np.ceil((hi - lo) / spacing - 1e-6).astype(int), 1)
        return cls(size, [spacing] * 3, lo + 0.5 * spacing)

    def resampling_grid(self, spacing: float) -> Geometry:
        """Aligned grid of isotropic ``spacing`` centred on this grid's world bounding box."""
        lo, hi = self.bounds()
        size = np.maximum(np.round((hi - lo) / spacing).astype(int), 1)
        return Geometry(size, [spacing] * 3, 0.5 * (lo + hi) - 0.5 * (size - 1) * spacing)

    # ------------------------------------------------------------------ views
    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return self.size_xyz[::-1]

    @property
    def origin(self) -> np.ndarray:
        return np.array(self.origin_xyz)

    @property
    def spacing(self) -> np.ndarray:
        return np.array(self.spacing_xyz)

    @property
    def matrix(self) -> np.ndarray:
        """Direction as a 3x3 array."""
        return np.array(self.direction).reshape(3, 3)

    @property
    def head_feet_axis(self) -> int:
        """The index axis (0 = x, 1 = y, 2 = z) closest to the world head-feet (z) axis."""
        return int(np.argmax(np.abs(self.matrix[2])))

    def sitk_stuff(self) -> dict:
        """nnU-Net SimpleITKIO's ``sitk_stuff`` for this grid."""
        return {"spacing": self.spacing_xyz, "origin": self.origin_xyz, "direction": self.direction}

    def to_dict(self) -> dict:
        return {"size_xyz": list(self.size_xyz), "spacing_xyz": list(self.spacing_xyz),
                "origin_xyz": list(self.origin_xyz), "direction": list(self.direction)}

    def to_reference(self, pixel_id: int = sitk.sitkUInt8) -> sitk.Image:
        """An empty image on this grid (for resampling and ``CopyInformation``)."""
        img = sitk.Image([int(v) for v in self.size_xyz], pixel_id)
        self.apply_to(img)
        return img

    def apply_to(self, img: sitk.Image) -> sitk.Image:
        """Set this geometry's origin, spacing and direction on ``img`` (same size); returns it."""
        if tuple(img.GetSize()) != self.size_xyz:
            raise CTARRError(f"image of size {img.GetSize()} cannot take the geometry of size {self.size_xyz}")
        img.SetOrigin(self.origin_xyz)
        img.SetSpacing(self.spacing_xyz)
        img.SetDirection(self.direction)
        return img

    def image(self, arr_zyx: np.ndarray) -> sitk.Image:
        """A SimpleITK image of the (z, y, x) array on this grid."""
        return self.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(arr_zyx)))

    # ------------------------------------------------------------------ index <-> world
    def index_to_world(self, idx_xyz) -> np.ndarray:
        """Continuous index (N, 3) or (3,) -> world mm."""
        idx = np.asarray(idx_xyz, float)
        return idx * self.spacing @ self.matrix.T + self.origin

    def world_to_index(self, pts) -> np.ndarray:
        """World mm (N, 3) or (3,) -> continuous index."""
        p = np.asarray(pts, float) - self.origin
        return p @ np.linalg.inv(self.matrix).T / self.spacing

    def corners(self) -> np.ndarray:
        """World coordinates (8, 3) of the outer voxel-edge corners."""
        s = np.array(self.size_xyz) - 0.5
        c = np.array([[x, y, z] for x in (-0.5, s[0]) for y in (-0.5, s[1]) for z in (-0.5, s[2])])
        return self.index_to_world(c)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (min, max) world corners of the voxel-edge extent."""
        c = self.corners()
        return c.min(0), c.max(0)

    def index_box(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Half-open index box (start_xyz, stop_xyz) of the voxels overlapping a world box (unclipped)."""
        c = self.world_to_index([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        start = np.floor(c.min(0) + 0.5 + 1e-6).astype(int)       # voxel i spans [i - 0.5, i + 0.5]
        stop = np.ceil(c.max(0) + 0.5 - 1e-6).astype(int)
        return start, np.maximum(stop, start)

    @staticmethod
    def slices_zyx(start_xyz, stop_xyz) -> tuple[slice, slice, slice]:
        """Numpy (z, y, x) slices of a half-open index box given in (x, y, z)."""
        return tuple(slice(int(a), int(b)) for a, b in zip(start_xyz[::-1], stop_xyz[::-1]))

    def sub_box(self, start_xyz, stop_xyz) -> Geometry:
        """The geometry of the index box (a crop: same spacing and direction, origin at its first voxel)."""
        start = np.asarray(start_xyz, int)
        return Geometry(np.asarray(stop_xyz, int) - start, self.spacing_xyz, self.index_to_world(start), self.direction)

    def offset_of(self, other: Geometry, tol: float = 1e-3) -> np.ndarray:
        """Integer index of ``other``'s first voxel on this grid; ``other`` must share the grid."""
        same = np.allclose(other.spacing, self.spacing, atol=1e-6) and np.allclose(other.matrix, self.matrix, atol=1e-6)
        if not same:
            raise CTARRError("crop does not share the reference image's spacing and direction")
        off = self.world_to_index(other.origin)
        if np.any(np.abs(off - np.round(off)) > tol):
            raise CTARRError("crop origin is not on the reference grid")
        return np.round(off).astype(int)

    # ------------------------------------------------------------------ comparisons
    def same_grid(self, other: Geometry, tol: float = 1e-3) -> bool:
        return (self.size_xyz == other.size_xyz and np.allclose(self.spacing, other.spacing, atol=tol)
                and np.allclose(self.origin, other.origin, atol=tol * 10)
                and np.allclose(self.matrix, other.matrix, atol=tol))

    def overlap(self, other: Geometry) -> tuple[float, float]:
        """Shares of this grid's and of ``other``'s world bounding box that the two have in common."""
        alo, ahi = self.bounds()
        blo, bhi = other.bounds()
        inter = float(np.prod(np.clip(np.minimum(ahi, bhi) - np.maximum(alo, blo), 0, None)))
        return inter / max(float(np.prod(ahi - alo)), 1e-9), inter / max(float(np.prod(bhi - blo)), 1e-9)

    def describe(self) -> str:
        """Size, spacing and origin in one short phrase (for messages)."""
        return (f"size {list(self.size_xyz)} spacing {np.round(self.spacing, 3).tolist()} "
                f"origin {np.round(self.origin, 1).tolist()}")
