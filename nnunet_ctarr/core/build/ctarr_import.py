"""Import the original CTARR's atlas and region boxes (github.com/ThomasBudd/ctarr, Apache-2.0).

Upstream conventions (each with its source line in docs/ctarr_import.md): ``seg_atlas.npy`` is
(19, Z, X, Y) on a 0..255 scale (read as ``/255``), 3 mm voxels, the mm frame centred on the
volume (faces at +-shape*3/2); ``<region>.npy`` are (n, 2, 3) [lower, upper] voxel-face mm in the
same frame and axis order; 10 mm are added on every side when a box is loaded.

**Axis mapping.** Upstream's array axes (z, x, y) are the axes of its reoriented scans:
NIfTI k, j, i, each reversed. For axially stored build scans they are superior-inferior,
anterior-posterior and left-right, so this package's atlas axes are x <- upstream y (axis 2),
y <- upstream x (axis 1), z <- upstream z (axis 0). Whether each runs forwards or backwards
depends on how the build scans were stored (a left-right mirrored checkout differs only there),
so the *sign* of each axis is read from the atlas' own anatomy: left-named groups vs right-named
ones, vertebrae vs sternum, neck and chest vs pelvis. The boxes of the same checkout get the same
signs; a box file whose left-right side contradicts the atlas is refused.

**Frame.** Upstream's origin (the grid centre) is kept: voxel centres run from -(n-1)*1.5 to
+(n-1)*1.5 mm, so an upstream mm coordinate keeps its value up to the axis sign.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from ..anatomy.atlas import Atlas
from ..anatomy.groups import GROUPS, N_GROUPS
from ..base.errors import CTARRError
from ..regions.region import Region

UPSTREAM = "https://github.com/ThomasBudd/ctarr"
SPACING_MM = 3.0            # ctarr/model/parameters.py TARGET_SPACING
LOAD_MARGIN_MM = 10.0       # ctarr/__init__.py additional_margin=10, added in load_bounding_box
ATLAS_NPY = "seg_atlas.npy"
STORAGE = Path("ctarr") / "file_storage"
#: package axis x, y, z <- upstream array axis (0 = "z", 1 = "x", 2 = "y")
UPSTREAM_AXIS = (2, 1, 0)
AXIS_NAMES = ('"y" (array axis 2)', '"x" (array axis 1)', '"z" (array axis 0)')
#: per package axis: what +axis means, groups towards +, groups towards -
CONTRASTS = (
    ("patient left", ("ribs_left", "hip_left", "lung_left", "kidney_left", "spleen"),
     ("ribs_right", "hip_right", "lung_right", "kidney_right", "liver")),
    ("posterior", ("vertebrae_T",), ("sternum", "heart")),
    ("superior", ("skull", "brain", "vertebrae_C", "lung_left", "lung_right", "heart"),
     ("sacrum", "hip_left", "hip_right", "urinary_bladder")),
)
#: upstream region -> atlas groups it encloses (the left-right consistency check of atlas and boxes)
REGION_GROUPS = {"brain": ("brain",), "heart": ("heart",), "liver": ("liver",), "spleen": ("spleen",),
                 "kidneys": ("kidney_left", "kidney_right"), "lungs": ("lung_left", "lung_right"),
                 "urinary_bladder": ("urinary_bladder",),
                 "spine": ("vertebrae_C", "vertebrae_T", "vertebrae_L", "sacrum")}


@dataclass
class CtarrCheckout:
    """The files of a ctarr checkout, as stored."""
    root: Path
    storage: Path
    commit: str | None
    atlas_raw: np.ndarray                                   # (19, Z, X, Y), 0..255
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, 2, 3) (z, x, y) mm, no margin
    sha256: dict[str, str] = field(default_factory=dict)   # file name -> content hash

    def rel(self, name: str) -> str:
        try:
            return str((self.storage / name).relative_to(self.root))
        except ValueError:
            return str(self.storage / name)


@dataclass(frozen=True)
class AxisMap:
    """Package axis a (x, y, z) = ``sign_xyz[a]`` x upstream axis ``UPSTREAM_AXIS[a]`` (mm from the
    grid centre); ``separation_mm``: the anatomical evidence for each sign."""
    sign_xyz: tuple[int, int, int]
    separation_mm: tuple[float, float, float]

    def prob_zyx(self, raw: np.ndarray) -> np.ndarray:
        """(19, z, x, y) upstream -> (19, Z, Y, X) package: same axis order, flipped where sign < 0."""
        flip = tuple(1 + UPSTREAM_AXIS[a] for a in range(3) if self.sign_xyz[a] < 0)
        return np.flip(raw, flip) if flip else raw

    def boxes_xyz(self, boxes_zxy: np.ndarray) -> np.ndarray:
        b = boxes_zxy[:, :, list(UPSTREAM_AXIS)] * np.array(self.sign_xyz, float)
        return np.stack([b.min(1), b.max(1)], 1)

    def describe(self) -> list[str]:
        return [f"{'xyz'[a]} ({CONTRASTS[a][0]}) = {'+' if self.sign_xyz[a] > 0 else '-'}upstream {AXIS_NAMES[a]}"
                for a in range(3)]


@dataclass
class ImportedSet:
    atlas: Atlas
    regions: list[Region]
    axis_map: AxisMap
    checkout: CtarrCheckout


def _storage(path: Path) -> Path:
    if not path.is_dir():
        raise CTARRError(f"ctarr checkout not found: {path} is not a folder")
    for s in (path / STORAGE, path / "file_storage", path):
        if (s / ATLAS_NPY).is_file():
            return s
    raise CTARRError(f"{path} is not a ctarr checkout: no {STORAGE / ATLAS_NPY} (git clone {UPSTREAM})")


def _git_commit(root: Path) -> str | None:
    """The checked-out commit when ``root`` has its own ``.git`` (None otherwise or without git)."""
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def _load_npy(path: Path, what: str) -> tuple[np.ndarray, str]:
    try:
        raw = path.read_bytes()
        if raw.startswith(b"version https://git-lfs"):
            raise CTARRError(f"{path} is a Git LFS pointer, not the data: run 'git lfs pull' in the checkout")
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise CTARRError(f"cannot read {what} {path}: {why}") from None
    if arr.dtype.kind not in "uif" or not np.all(np.isfinite(arr)):
        raise CTARRError(f"{path} is not a ctarr {what}: dtype {arr.dtype} or non-finite values")
    return arr, hashlib.sha256(raw).hexdigest()


def read_checkout(path: str | Path) -> CtarrCheckout:
    """Read ``seg_atlas.npy`` and every box file of a ctarr checkout (the repository root, its
    ``ctarr`` package folder or ``file_storage``); one-line error when it is not one."""
    path = Path(path).expanduser().resolve()
    storage = _storage(path)
    root = {path / STORAGE: path, path / "file_storage": path.parent}.get(storage, storage.parent.parent)
    atlas, sha = _load_npy(storage / ATLAS_NPY, "atlas")
    if atlas.ndim != 4 or atlas.shape[0] != N_GROUPS or min(atlas.shape[1:]) < 2 or \
            atlas.min() < 0 or not 1 < atlas.max() <= 255:
        raise CTARRError(f"{storage / ATLAS_NPY} is not a ctarr atlas: shape {atlas.shape}, values "
                         f"{atlas.min()}..{atlas.max()} (expected ({N_GROUPS}, Z, X, Y) on a 0..255 scale)")
    co = CtarrCheckout(root, storage, _git_commit(root), atlas, sha256={ATLAS_NPY: sha})
    # upstream lists every .npy but the atlas as a box file (ctarr/__init__.py print_available_bounding_boxes)
    for f in sorted(storage.glob("*.npy")):
        if f.name == ATLAS_NPY:
            continue
        b, co.sha256[f.name] = _load_npy(f, "box file")
        if b.ndim != 3 or b.shape[1:] != (2, 3) or len(b) == 0 or np.any(b[:, 1] <= b[:, 0]):
            raise CTARRError(f"{f} is not a ctarr box file: shape {b.shape} (expected (n, 2, 3) "
                             "[lower, upper] mm with lower < upper)")
        co.boxes[f.stem] = b.astype(np.float64)
    return co


def group_centres(raw: np.ndarray) -> np.ndarray:
    """(19, 3) centres of mass in upstream mm (axis order z, x, y; grid centre = 0); NaN if empty."""
    com = np.full((N_GROUPS, 3), np.nan)
    for u in range(3):
        marg = raw.sum(axis=tuple(1 + v for v in range(3) if v != u), dtype=np.float64)
        n = raw.shape[1 + u]
        mass = marg.sum(1)
        ok = mass > 0
        com[ok, u] = marg[ok] @ ((np.arange(n) + 0.5 - n / 2) * SPACING_MM) / mass[ok]
    return com


def detect_axes(raw: np.ndarray, where: str = ATLAS_NPY) -> AxisMap:
    """The sign of every package axis, read from the atlas' anatomy (see the module docstring);
    one-line error when the anatomy is missing or does not lie along the expected upstream axis."""
    com = group_centres(raw)
    signs, seps = [], []
    for a, (meaning, plus, minus) in enumerate(CONTRASTS):
        p = [com[GROUPS.index(g)] for g in plus if not np.isnan(com[GROUPS.index(g), 0])]
        m = [com[GROUPS.index(g)] for g in minus if not np.isnan(com[GROUPS.index(g), 0])]
        if not p or not m:
            raise CTARRError(f"{where}: cannot tell which way is {meaning}: the atlas has no data for "
                             f"{', '.join(plus if not p else minus)}")
        d = np.mean(p, 0) - np.mean(m, 0)
        u = UPSTREAM_AXIS[a]
        other = max(abs(d[v]) for v in range(3) if v != u)
        if abs(d[u]) < 20 or abs(d[u]) < 2 * other:
            raise CTARRError(f"{where}: the {meaning} direction does not lie along upstream axis {AXIS_NAMES[a]} "
                             f"(separation {np.round(d, 1).tolist()} mm along (z, x, y)); not a CTARR atlas "
                             "of axially stored scans")
        signs.append(1 if d[u] > 0 else -1)
        seps.append(round(float(d[u]), 1))
    return AxisMap(tuple(signs), tuple(seps))


def mass_in_boxes(atlas: Atlas, boxes_xyz: np.ndarray, groups: tuple[str, ...]) -> float:
    """Share of the atlas mass of ``groups`` whose voxel centres lie in the union of the boxes."""
    prob = atlas.prob[[GROUPS.index(g) for g in groups]].sum(0)
    total = float(prob.sum())
    if total <= 0:
        return float("nan")
    centres = [atlas.origin[i] + atlas.spacing[i] * np.arange(prob.shape[2 - i]) for i in range(3)]
    inside = np.zeros(prob.shape, bool)
    for lo, hi in boxes_xyz:
        x, y, z = [(c >= lo[i]) & (c <= hi[i]) for i, c in enumerate(centres)]
        inside |= z[:, None, None] & y[None, :, None] & x[None, None, :]
    return float(prob[inside].sum()) / total


def convert_region(co: CtarrCheckout, name: str, amap: AxisMap, atlas: Atlas) -> Region:
    """One box file as a Region (margin = upstream's load-time 10 mm); refuses a box file whose
    left-right side contradicts the atlas (atlas and boxes from different checkouts)."""
    boxes = amap.boxes_xyz(co.boxes[name])
    prov = {"method": "imported from the original CTARR", "repository": UPSTREAM, "license": "Apache-2.0",
            "file": co.rel(f"{name}.npy"), "commit": co.commit, "sha256": co.sha256[f"{name}.npy"],
            "upstream_boxes_zxy_mm": co.boxes[name].tolist(), "axis_map": amap.describe(),
            "margin": f"upstream adds {LOAD_MARGIN_MM:g} mm on every side when loading a box"}
    if name in REGION_GROUPS:
        margin = np.array([-LOAD_MARGIN_MM, LOAD_MARGIN_MM])[None, :, None]
        mirror = boxes.copy()
        mirror[:, :, 0] = -boxes[:, ::-1, 0]     # x -> -x about the grid centre
        share, share_m = (mass_in_boxes(atlas, b + margin, REGION_GROUPS[name]) for b in (boxes, mirror))
        if share == share:  # not NaN: the atlas has data for these groups
            prov["atlas_mass_in_box"] = {"groups": list(REGION_GROUPS[name]), "share": round(share, 3),
                                         "share_mirrored_left_right": round(share_m, 3)}
            if share_m > share + 0.25:
                raise CTARRError(f"{co.rel(name + '.npy')} and {co.rel(ATLAS_NPY)} disagree left-right: the boxes "
                                 f"hold {share:.0%} of the atlas {'+'.join(REGION_GROUPS[name])}, {share_m:.0%} "
                                 "when mirrored; atlas and boxes must come from one ctarr checkout")
    return Region(name, boxes, LOAD_MARGIN_MM, "", prov)


def convert(co: CtarrCheckout) -> ImportedSet:
    """The checkout as this package's Atlas and Regions (their atlas_id is set when written:
    ``core.build.atlas_set.write_set``)."""
    amap = detect_axes(co.atlas_raw, co.rel(ATLAS_NPY))
    raw = co.atlas_raw
    prob8 = amap.prob_zyx(raw if raw.dtype == np.uint8 else np.rint(raw.astype(np.float64)).astype(np.uint8))
    n_xyz = np.array(prob8.shape[1:][::-1], float)
    observed = prob8.reshape(N_GROUPS, -1).max(1) > 0
    meta = {"format": "nnunet-ctarr atlas v1",
            "frame": "LPS axes (+x left, +y posterior, +z superior), mm; the grid centre at (0,0,0) (upstream's frame)",
            "groups": list(GROUPS), "sources": [UPSTREAM], "created": date.today().isoformat(),
            "groups_without_data": [g for g, o in zip(GROUPS, observed) if not o],
            "group_max_probability": {g: round(float(prob8[i].max()) / 255, 3) for i, g in enumerate(GROUPS)},
            "provenance": {"method": "imported from the original CTARR", "repository": UPSTREAM,
                           "license": "Apache-2.0", "file": co.rel(ATLAS_NPY), "commit": co.commit,
                           "sha256": co.sha256[ATLAS_NPY], "upstream_shape_czxy": list(co.atlas_raw.shape),
                           "upstream_dtype": str(co.atlas_raw.dtype), "axis_map": amap.describe(),
                           "anatomical_separation_mm": list(amap.separation_mm)}}
    prob = prob8.astype(np.float32)
    prob /= 255.0
    atlas = Atlas(origin=-(n_xyz - 1) * SPACING_MM / 2, spacing=np.full(3, SPACING_MM), observed=observed,
                  prob=prob, coverage=np.ones(prob8.shape[1:], np.float32), meta=meta)
    regions = [convert_region(co, name, amap, atlas) for name in co.boxes]
    return ImportedSet(atlas, regions, amap, co)


def notice(imported: ImportedSet) -> str:
    """Attribution kept beside the converted files (the upstream files are Apache-2.0)."""
    co = imported.checkout
    return (f"Converted by nnunet-ctarr (nnUNetv2_ctarr_import_ctarr) from {UPSTREAM} (Apache License 2.0), "
            f"commit {co.commit or 'unknown'}, files (sha256):\n{json.dumps(co.sha256, indent=1)}\n")
