"""Multi-channel anatomy volumes on axis-aligned grids (scan masks and the atlas).

A :class:`MaskVolume` holds the 19 groups on a grid whose axes are the LPS world axes
(direction = identity); ``origin`` is the centre of voxel ``[0, 0, 0]`` in mm, arrays are
``[z, y, x]`` (``[channel, z, y, x]`` for probabilities). A scan's anatomy is stored as a
compact group label map (``labels``), the atlas as probabilities (``prob``); both give
volumes, centres of mass and average-pooled probability pyramids for registration.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..base.geometry import Geometry
from .grid import WORKING_SPACING_MM, sample_nearest
from .groups import GROUPS, N_GROUPS
from .masks import AnatomyMasks


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Means over f^3 blocks of the last three axes (sizes divisible by ``f``), float32: strided
    sums, one axis at a time (~3x faster than a mean over a 7-D reshape)."""
    a = a.astype(np.float32, copy=False)
    for axis in (-1, -2, -3):
        tail = (slice(None),) * (-1 - axis)
        acc = a[(Ellipsis, slice(0, None, f)) + tail].copy()
        for i in range(1, f):
            acc += a[(Ellipsis, slice(i, None, f)) + tail]
        a = acc
    return a / np.float32(f ** 3)


@dataclass
class MaskVolume:
    origin: np.ndarray                  # (3,) xyz mm of voxel [0,0,0] centre
    spacing: np.ndarray                 # (3,) xyz mm
    observed: np.ndarray                # (19,) bool: the source can express this group
    labels: np.ndarray | None = None    # (Z, Y, X) uint8 group ids (scan anatomy)
    prob: np.ndarray | None = None      # (19, Z, Y, X) float32 (atlas)
    coverage: np.ndarray | None = None  # (Z, Y, X) float32 in [0, 1]; None = everywhere
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple((self.labels if self.labels is not None else self.prob[0]).shape)

    def prob_values(self, index: tuple = ()) -> np.ndarray:
        """``prob[index]`` as float32 (the atlas converts only what is indexed); do not write to it."""
        return self.prob[index]

    @property
    def voxel_volume(self) -> float:
        return float(np.prod(self.spacing))

    @property
    def geometry(self) -> Geometry:
        """The (axis-aligned) grid of the volume."""
        return Geometry.aligned(self.origin, self.spacing, self.shape_zyx)

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) mm of the voxel edges, xyz."""
        return self.geometry.bounds()

    def volumes_mm3(self) -> np.ndarray:
        if "vol" not in self._cache:
            if self.labels is not None:
                n = np.bincount(self.labels.ravel(), minlength=N_GROUPS + 1)[1:N_GROUPS + 1]
            else:
                n = self._prob_moments()[0]
            self._cache["vol"] = n.astype(np.float64) * self.voxel_volume
        return self._cache["vol"]

    def centres_of_mass(self) -> np.ndarray:
        """(19, 3) xyz mm; NaN for empty groups."""
        if "com" in self._cache:
            return self._cache["com"]
        com = np.full((N_GROUPS, 3), np.nan)
        if self.labels is not None:
            lab = self.labels.astype(np.intp)
            mass = np.bincount(lab.ravel(), minlength=N_GROUPS + 1).astype(np.float64)
            for ax_xyz in range(3):
                axis = 2 - ax_xyz
                n = lab.shape[axis]
                shape = [1, 1, 1]
                shape[axis] = n
                # voxels per (slice along the axis, group): exact counts, one bincount
                per = np.bincount((lab + (N_GROUPS + 1) * np.arange(n).reshape(shape)).ravel(),
                                  minlength=n * (N_GROUPS + 1)).reshape(n, N_GROUPS + 1)
                c = self.origin[ax_xyz] + self.spacing[ax_xyz] * np.arange(n)
                with np.errstate(invalid="ignore", divide="ignore"):
                    com[:, ax_xyz] = ((c @ per) / mass)[1:N_GROUPS + 1]
            com[mass[1:N_GROUPS + 1] == 0] = np.nan
        else:
            mass, first = self._prob_moments()
            ok = mass > 0
            com[ok] = first[ok] / mass[ok, None]
        self._cache["com"] = com
        return com

    def _prob_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per group: the probability mass (19,) and its first moments in mm (19, 3), from two sums
        (over x and over y, :meth:`_axis_sums`), float64 from there on. Their nonzero rows give every
        group's bounding box (:meth:`_supports`)."""
        if "moments" not in self._cache:
            nz, ny, nx = self.shape_zyx
            c = [self.origin[a] + self.spacing[a] * np.arange(n) for a, n in enumerate((nx, ny, nz))]
            zy, zx = self._axis_sums()
            mass = zy.sum((1, 2))
            first = np.stack([zx.sum(1) @ c[0], zy.sum(1) @ c[1], zy.sum(2) @ c[2]], 1)
            self._cache["moments"] = (mass, first)
            self._cache["nonzero_zyx"] = (zy.any(2), zy.any(1), zx.any(1))
        return self._cache["moments"]

    def _axis_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities of every group summed over x (19, Z, Y) and over y (19, Z, X), float64."""
        return self.prob.sum(axis=3).astype(np.float64), self.prob.sum(axis=2).astype(np.float64)

    def _supports(self) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per group: the (z, y, x) index box [lo, hi) of its nonzero probabilities (None: empty)."""
        if "supports" not in self._cache:
            self._prob_moments()
            boxes = []
            for k in range(N_GROUPS):
                hit = [np.nonzero(v[k])[0] for v in self._cache["nonzero_zyx"]]
                boxes.append(None if any(len(h) == 0 for h in hit) else
                             (np.array([h[0] for h in hit]), np.array([h[-1] + 1 for h in hit])))
            self._cache["supports"] = boxes
        return self._cache["supports"]

    def support(self, groups: list[int]) -> tuple[slice, slice, slice] | None:
        """The (z, y, x) index box holding every nonzero probability of ``groups`` (None: all empty)."""
        boxes = [b for b in (self._supports()[g] for g in groups) if b is not None]
        if not boxes:
            return None
        lo, hi = np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def _pooled_prob(self, f: int, nb: np.ndarray) -> np.ndarray:
        """Block means of the probabilities by ``f`` (``nb`` blocks, ragged edge dropped), each group
        only over the blocks that touch its nonzero box (the others are exactly 0): the values of one
        :func:`_block_mean` over the whole volume, with ~1/20 of the work on the atlas."""
        out = np.zeros((N_GROUPS,) + tuple(int(v) for v in nb), np.float32)
        for g, box in enumerate(self._supports()):
            if box is None:
                continue
            lo, hi = box[0] // f, np.minimum(-(-box[1] // f), nb)
            if np.any(hi <= lo):
                continue
            blocks = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
            voxels = tuple(slice(int(a) * f, int(b) * f) for a, b in zip(lo, hi))
            out[(g,) + blocks] = _block_mean(self.prob_values((g,) + voxels), f)
        return out

    def group_span(self) -> str:
        """The groups present, top to bottom by centre of mass: ``vertebrae_C to urinary_bladder``."""
        com = self.centres_of_mass()
        have = [i for i in range(N_GROUPS) if self.observed[i] and np.isfinite(com[i, 2])]
        order = sorted(have, key=lambda i: -com[i, 2])
        return f"{GROUPS[order[0]]} to {GROUPS[order[-1]]}" if order else "no groups"

    def pooled(self, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Average-pooled (prob (19,z,y,x), coverage (z,y,x), origin, spacing) by factor ``f``.

        A ragged edge (size not divisible by ``f``) is dropped. For label maps the
        probabilities are the per-block group fractions (one ``bincount``)."""
        key = ("pool", f)
        if key in self._cache:
            return self._cache[key]
        zyx = np.array(self.shape_zyx)
        if np.any(zyx < f):
            f = 1
        if f > 2 and f % 2 == 0:                 # from the 2x pooling: the same blocks, one pass less
            self._cache[key] = self._pooled_from(self.pooled(2), f // 2)
            return self._cache[key]
        n = (zyx // f) * f
        nb = n // f
        if self.labels is not None:               # one bincount of (label, block), label-major: no transpose
            m = int(nb.prod())
            lab = self.labels[:n[0], :n[1], :n[2]].reshape(nb[0], f, nb[1], f, nb[2], f).transpose(1, 3, 5, 0, 2, 4)
            cnt = np.bincount((lab.astype(np.intp) * m + np.arange(m).reshape(tuple(nb))).ravel(),
                              minlength=(N_GROUPS + 1) * m)[m:(N_GROUPS + 1) * m]
            prob = cnt.astype(np.float32).reshape((N_GROUPS,) + tuple(nb))
            prob /= np.float32(f ** 3)
        else:
            prob = self._pooled_prob(f, nb)
        if self.coverage is None:
            cov = np.ones(tuple(nb), np.float32)
        else:
            cov = _block_mean(self.coverage[:n[0], :n[1], :n[2]], f)
        out = (prob, cov, self.origin + 0.5 * (f - 1) * self.spacing, self.spacing * f)
        self._cache[key] = out
        return out

    @staticmethod
    def _pooled_from(base: tuple, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A pooled volume pooled again by ``g`` (ragged edge dropped)."""
        prob, cov, origin, spacing = base
        m = (np.array(cov.shape) // g) * g
        return (_block_mean(prob[:, :m[0], :m[1], :m[2]], g), _block_mean(cov[:m[0], :m[1], :m[2]], g),
                origin + 0.5 * (g - 1) * spacing, spacing * g)

    def label_image(self) -> sitk.Image:
        """Group label image (0 = background) with the volume's geometry."""
        if self.labels is not None:
            lab = self.labels
        else:
            lab = np.where(self.prob.max(0) >= 0.5, self.prob.argmax(0) + 1, 0).astype(np.uint8)
        return self.geometry.image(lab)


def anatomy_to_volume(anat: AnatomyMasks, spacing: float = WORKING_SPACING_MM) -> MaskVolume:
    """The group label map picked nearest-neighbour onto the LPS working grid (:mod:`.grid`); a
    source's label ids are mapped to groups after the picking, on the small grid."""
    grid, ids = sample_nearest(anat.label_map, spacing)
    labels = anat.groups_of(ids)
    return MaskVolume(grid.origin, grid.spacing, anat.observed.copy(), labels=np.ascontiguousarray(labels))
