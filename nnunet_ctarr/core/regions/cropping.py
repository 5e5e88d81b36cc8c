"""Region boxes -> voxel ranges of the image as stored -> crops and exact paste-back.

Boxes are mapped from atlas mm to world mm with the registration transform, then to the
image's *own* index space (whatever its orientation on disk), so crops need no
interpolation and keep the source's direction and spacing; their origin is the world
position of their first voxel, so they overlay the source exactly in any viewer. A voxel is
included when it overlaps the box.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..base.errors import CTARRError
from ..base.geometry import Geometry, as_geometry
from ..base.transform import AtlasTransform


@dataclass
class BoxPlan:
    index: int
    atlas_mm: np.ndarray            # (2, 3) min/max xyz atlas mm (with margins)
    world_mm: np.ndarray            # (2, 3) min/max xyz world mm (LPS)
    start_xyz: np.ndarray           # (3,) half-open index range of the crop, clipped to the image
    stop_xyz: np.ndarray
    full_start_xyz: np.ndarray      # unclipped range (may lie outside the image)
    full_stop_xyz: np.ndarray
    status: str                     # "inside" | "partial" | "outside"
    fraction_inside: float          # share of the full box's voxels inside the image

    @property
    def size_xyz(self) -> np.ndarray:
        return self.stop_xyz - self.start_xyz

    def to_dict(self) -> dict:
        return {
            "box": self.index,
            "status": self.status,
            "fraction_of_box_inside_image": round(self.fraction_inside, 4),
            "index_start_xyz": self.start_xyz.tolist(),
            "index_stop_xyz": self.stop_xyz.tolist(),
            "size_xyz": self.size_xyz.tolist(),
            "unclipped_index_start_xyz": self.full_start_xyz.tolist(),
            "unclipped_index_stop_xyz": self.full_stop_xyz.tolist(),
            "world_min_mm_lps": np.round(self.world_mm[0], 3).tolist(),
            "world_max_mm_lps": np.round(self.world_mm[1], 3).tolist(),
            "atlas_min_mm": np.round(self.atlas_mm[0], 3).tolist(),
            "atlas_max_mm": np.round(self.atlas_mm[1], 3).tolist(),
        }


@dataclass
class CropPlan:
    image_size_xyz: np.ndarray
    boxes: list[BoxPlan] = field(default_factory=list)

    @property
    def usable(self) -> list[BoxPlan]:
        return [b for b in self.boxes if b.status != "outside"]

    def voxel_fraction(self) -> float:
        """Share of the image's voxels inside the union of the crops (from the boxes' corners: no mask)."""
        return union_voxels([(b.start_xyz, b.stop_xyz) for b in self.usable]) / float(np.prod(self.image_size_xyz))

    def union_mask_zyx(self) -> np.ndarray:
        return index_union_mask(self.image_size_xyz, [(b.start_xyz, b.stop_xyz) for b in self.usable])


def index_union_mask(size_xyz, ranges) -> np.ndarray:
    """(z, y, x) mask of the union of half-open index ranges ``(start_xyz, stop_xyz)``."""
    m = np.zeros(tuple(int(v) for v in size_xyz[::-1]), bool)
    for start, stop in ranges:
        m[Geometry.slices_zyx(start, stop)] = True
    return m


def union_voxels(ranges) -> int:
    """Voxels in the union of half-open index boxes ``(start_xyz, stop_xyz)``, by coordinate
    compression over the boxes' own corners (a few boxes: a grid of a few cells, never a mask)."""
    ranges = [(np.asarray(a, int), np.asarray(b, int)) for a, b in ranges if np.all(np.asarray(b) > np.asarray(a))]
    if not ranges:
        return 0
    edges = [np.unique([v for a, b in ranges for v in (a[ax], b[ax])]) for ax in range(3)]
    covered = np.zeros([len(e) - 1 for e in edges], bool)
    for a, b in ranges:
        covered[tuple(slice(np.searchsorted(e, a[ax]), np.searchsorted(e, b[ax])) for ax, e in enumerate(edges))] = True
    sizes = np.einsum("i,j,k->ijk", *[np.diff(e) for e in edges])
    return int(sizes[covered].sum())


def crop_scores(fg: np.ndarray, keep: np.ndarray) -> dict:
    """The paper's Table 2 numbers for a foreground mask and the union of the crops (both
    [z, y, x]): preserved foreground (%), crop share of the scan, foreground share before/after (%)."""
    n_fg, n_keep = int(fg.sum()), int(keep.sum())
    kept = int((fg & keep).sum())
    return {"fg_voxels": n_fg, "fg_kept": kept, "preserved_percent": 100.0 * kept / n_fg if n_fg else None,
            "crop_voxel_fraction": n_keep / fg.size, "fg_share_before": 100.0 * n_fg / fg.size,
            "fg_share_after": 100.0 * kept / max(n_keep, 1)}


def plan_crops(image: Geometry | sitk.Image, tf: AtlasTransform, boxes_atlas_mm: np.ndarray,
               z_only: bool = False) -> CropPlan:
    """Map atlas boxes into the image's index space. ``z_only`` keeps the full extent of the
    two index axes that are not the patient's head-feet axis."""
    geom = as_geometry(image)
    size = np.array(geom.size_xyz)
    plan = CropPlan(size)
    for k, (lo_a, hi_a) in enumerate(boxes_atlas_mm):
        lo_w, hi_w = tf.box_to_world(lo_a, hi_a)
        start, stop = geom.index_box(lo_w, hi_w)
        if z_only:
            for ax in range(3):
                if ax != geom.head_feet_axis:
                    start[ax], stop[ax] = 0, size[ax]
        cs, ce = np.clip(start, 0, size), np.clip(stop, 0, size)
        full = np.prod((stop - start).astype(float))
        inside = np.prod(np.clip(ce - cs, 0, None).astype(float))
        frac = inside / full if full > 0 else 0.0
        status = "outside" if inside == 0 else ("inside" if frac >= 1.0 else "partial")
        plan.boxes.append(BoxPlan(k, np.stack([lo_a, hi_a]), np.stack([lo_w, hi_w]), cs, ce,
                                  start, stop, status, float(frac)))
    return plan


def crop_image(img: sitk.Image, box: BoxPlan, pad_to_full_box: bool = False,
               fill_value: float = 0) -> sitk.Image:
    """Crop without interpolation; the crop's origin is its first voxel's world position.
    ``pad_to_full_box`` extends the crop beyond the image with ``fill_value``."""
    if box.status == "outside":
        raise CTARRError("box lies outside the image")
    s, e = box.start_xyz, box.stop_xyz
    crop = img[int(s[0]):int(e[0]), int(s[1]):int(e[1]), int(s[2]):int(e[2])]
    if pad_to_full_box and box.status == "partial":
        lower = (s - box.full_start_xyz).clip(0)
        upper = (box.full_stop_xyz - e).clip(0)
        crop = sitk.ConstantPad(crop, [int(v) for v in lower], [int(v) for v in upper], float(fill_value))
    return crop


class MaxMerge:
    """Per voxel of a full grid, the candidate with the highest confidence so far (``winner``: its
    index, -1 where none). The one max-confidence merge: crops' probabilities pasted back
    (:func:`paste_pieces`), several models' votes (``inference.multi_predictor``)."""

    def __init__(self, shape_zyx):
        self.best = np.full(tuple(shape_zyx), -np.inf, np.float32)
        self.winner = np.full(tuple(shape_zyx), -1, np.int16)

    def add(self, k: int, confidence: np.ndarray, where: tuple[slice, ...] = ()) -> np.ndarray:
        """Candidate ``k`` with ``confidence`` on the part ``where`` (numpy slices; default: the whole
        grid); returns the mask (of that part) where it wins. Ties go to the earlier candidate."""
        better = confidence > self.best[where]
        self.best[where] = np.where(better, confidence, self.best[where])
        self.winner[where] = np.where(better, k, self.winner[where])
        return better


def paste_pieces(out: np.ndarray, pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 confidence=None) -> np.ndarray:
    """Paste ``(array, start_xyz, stop_xyz)`` pieces into ``out`` (``[..., z, y, x]``, channels first
    allowed; parts outside ``out`` dropped). Overlaps: the later piece wins, or with
    ``confidence(array) -> (z, y, x)`` the piece whose confidence is highest (:class:`MaxMerge`).
    The inverse of cutting the pieces with the same boxes: every crop path pastes through here."""
    size = np.array(out.shape[-3:][::-1])
    merge = MaxMerge(out.shape[-3:]) if confidence is not None else None
    for k, (arr, start, stop) in enumerate(pieces):
        start, stop = np.asarray(start, int), np.asarray(stop, int)
        s, e = np.clip(start, 0, size), np.clip(stop, 0, size)
        if np.any(e <= s):
            continue
        src = arr[(Ellipsis, *Geometry.slices_zyx(s - start, e - start))]
        dst = (Ellipsis, *Geometry.slices_zyx(s, e))
        if merge is None:
            out[dst] = src
        else:
            better = merge.add(k, confidence(src), Geometry.slices_zyx(s, e))
            out[dst] = np.where(better, src, out[dst])
    return out


def paste_back(crops: list[sitk.Image], reference: sitk.Image, fill_value: float = 0,
               merge: str = "last") -> sitk.Image:
    """Paste crops into an image with ``reference``'s grid, matching them by world position.

    Each crop must lie on the reference grid (same spacing and direction, integer voxel
    offset); parts outside the reference (padding) are dropped. ``merge="max"`` keeps the
    maximum where crops overlap (for probabilities); ``"last"`` lets later crops win.
    """
    if not crops:
        raise CTARRError("nothing to paste")
    ref = Geometry.of(reference)
    arr = np.full(ref.shape_zyx, fill_value, dtype=sitk.GetArrayViewFromImage(crops[0]).dtype)
    pieces = []
    for crop in crops:
        off = ref.offset_of(Geometry.of(crop))
        pieces.append((sitk.GetArrayViewFromImage(crop), off, off + np.array(crop.GetSize())))
    if merge == "max":
        pieces.insert(0, (arr.copy(), np.zeros(3, int), np.array(ref.size_xyz)))   # the fill competes too
    return ref.image(paste_pieces(arr, pieces, (lambda a: a.astype(np.float32)) if merge == "max" else None))
