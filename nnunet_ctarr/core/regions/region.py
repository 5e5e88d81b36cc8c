"""Anatomical regions: one or more boxes in atlas mm, stored as JSON in ``region_defs/``.

A region file::

    {"name": "kidneys", "boxes_mm": [[[x0, y0, z0], [x1, y1, z1]], ...],
     "margin_mm": 10.0, "atlas_id": "...", "provenance": {...}}

``boxes_mm`` are the tight boxes; ``margin_mm`` is added on every side when the region is
used (plus any extra margin the user asks for).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..base.errors import CTARRError, WarningLog
from ..base.user_data import set_region, set_regions


@dataclass
class Region:
    name: str
    boxes_mm: np.ndarray                 # (K, 2, 3): per box (min corner, max corner), xyz atlas mm
    margin_mm: float = 10.0
    atlas_id: str = ""
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes_mm = np.asarray(self.boxes_mm, dtype=float).reshape(-1, 2, 3)
        if len(self.boxes_mm) == 0:
            raise CTARRError(f"region '{self.name}' has no boxes")
        if np.any(self.boxes_mm[:, 1] <= self.boxes_mm[:, 0]):
            raise CTARRError(f"region '{self.name}': every box needs min < max on all axes")

    def boxes_with_margin(self, extra_mm: float = 0.0) -> np.ndarray:
        m = self.margin_mm + extra_mm
        out = self.boxes_mm.copy()
        out[:, 0] -= m
        out[:, 1] += m
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "boxes_mm": np.round(self.boxes_mm, 2).tolist(), "margin_mm": self.margin_mm,
                "atlas_id": self.atlas_id, "provenance": self.provenance}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> Region:
        """The inverse of :meth:`to_dict` (raises KeyError/TypeError/ValueError on a bad dict)."""
        return cls(d["name"], np.array(d["boxes_mm"]), float(d.get("margin_mm", 10.0)),
                   d.get("atlas_id", ""), d.get("provenance", {}))

    @classmethod
    def from_file(cls, path: str | Path) -> Region:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CTARRError(f"cannot read region file {path}: {e}") from None


def check_region_atlas(region: Region, atlas_id: str, warnings: WarningLog) -> None:
    """Warn when a region's boxes were defined on another atlas than the one in use."""
    if region.atlas_id and atlas_id != region.atlas_id:
        warnings.warn(f"region '{region.name}' was defined on atlas {region.atlas_id}, using atlas {atlas_id} "
                      "(pass the atlas it was learned on with -atlas)")


def atlas_named_by(names: list[str], atlas: str | None) -> str | None:
    """The ``-atlas`` a command uses: the one given; else, when every region is named ``SET:REGION``
    of one imported set, that set's atlas (its boxes are in that atlas's frame); else the default."""
    sets = {n.partition(":")[0] for n in names if ":" in n and not Path(n).exists()}
    if atlas is None and len(sets) == 1 and all(":" in n for n in names):
        return sets.pop()
    return atlas


def builtin_regions() -> dict[str, Path]:
    """Region name -> JSON file shipped in ``region_defs/``."""
    folder = resources.files("nnunet_ctarr.region_defs")
    out = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            out[entry.name[:-5]] = Path(str(entry))
    return dict(sorted(out.items()))


def load_region(name_or_path: str) -> Region:
    """A built-in region by name, a region JSON file by path, or ``SET:REGION`` of an imported set."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return Region.from_file(p)
    if ":" in name_or_path and not p.exists():
        return Region.from_file(set_region(name_or_path))
    regions = builtin_regions()
    if name_or_path in regions:
        return Region.from_file(regions[name_or_path])
    raise CTARRError(f"unknown region '{name_or_path}'; available: {', '.join(regions) or 'none'} "
                     "(or pass a region .json file, or SET:REGION of an imported atlas set)")


def load_regions(names: list[str]) -> list[Region]:
    """The regions of a ``-r`` list (``all``: every built-in one; ``SET:all``: every region of an
    imported set); a name given twice counts once."""
    expanded = []
    for n in list(builtin_regions()) if names == ["all"] else names:
        expanded += [f"{n[:-4]}:{r}" for r in set_regions(n[:-4])] if n.endswith(":all") else [n]
    names = list(dict.fromkeys(expanded))
    regions = [load_region(n) for n in names]
    dup = {r.name for r in regions if sum(q.name == r.name for q in regions) > 1}
    if dup:
        raise CTARRError(f"two regions share the name {', '.join(sorted(dup))}: their outputs would collide")
    return regions


def boxes_from_heatmap(heat: np.ndarray, origin: np.ndarray, spacing: np.ndarray,
                       threshold: float) -> np.ndarray:
    """Paper 3.4: threshold the heatmap, one box per connected component, merge overlapping
    boxes until none overlap. Returns (K, 2, 3) boxes in mm (voxel edges), sorted by x."""
    from scipy import ndimage  # here: scipy.ndimage is 0.2-0.4 s of every command's start-up

    mask = heat > threshold
    lab, n = ndimage.label(mask)
    boxes = []
    for sl in ndimage.find_objects(lab):
        if sl is None:
            continue
        lo_zyx = np.array([s.start for s in sl])
        hi_zyx = np.array([s.stop for s in sl])
        lo = origin + (lo_zyx[::-1] - 0.5) * spacing
        hi = origin + (hi_zyx[::-1] - 0.5) * spacing
        boxes.append([lo, hi])
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if np.all(np.maximum(a[0], b[0]) < np.minimum(a[1], b[1])):
                    boxes[i] = [np.minimum(a[0], b[0]), np.maximum(a[1], b[1])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    boxes.sort(key=lambda b: b[0][0])
    return np.array(boxes, dtype=float).reshape(-1, 2, 3)
