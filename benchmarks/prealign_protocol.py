"""Evaluation protocol for two-scan prealignment (SSBR seed, Meine & Hering) and a FASTA-like
translation grid-search baseline. Used by ``benchmarks/eval_prealign.py`` and
``tests/test_prealign_protocol.py``; see docs/prealign_evaluation.md for the protocol.

Same-subject pairs: both scans derive from one real CT, so the true correspondence is known
exactly. Every copy keeps ``to_orig`` = (A, c) with ``p_original = A @ p_copy + c`` (world mm of
the copy -> world mm of the canonical original scan, i.e. body mm).

* moving = a random axial sub-volume of the original (the seed's rule, scaled to short scans);
* fixed  = another "acquisition": a random z window (80-100 %) and xy crop (0-10 % per side), a
  shift of the table coordinates (header origin), and depending on the pair kind a zoom
  (spacing x f, f in [0.85, 1.15]) and/or an array rotation by xy quarter turns / z flip with the
  header left alone (the perturbation helpers of :mod:`nnunet_ctarr.evaluation.perturbations`).

Anatomy of every copy = the TotalSegmentator labels cut / zoomed / rotated identically.

Error of a pair: for the centre of every axial slice of MOVING, the predicted point in FIXED and
the true point in FIXED are both mapped back to the original scan; the z error is
``|z_pred - z_true|`` in original (body) mm. The pair's z error is the mean over the slices
(it includes scale errors and a wrongly flipped z); the error at the moving scan's centre and
the maximum over its slices are kept too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import fft as sfft

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import LabelScheme
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks
from nnunet_ctarr.core.base.errors import WarningLog
from nnunet_ctarr.core.base.geometry import Geometry
from nnunet_ctarr.core.base.images import canonical, read_image
from nnunet_ctarr.core.localise.localisation import locate
from nnunet_ctarr.core.localise.prealign import moving_to_fixed, slice_centres
from nnunet_ctarr.core.localise.settings import RegistrationSettings
from nnunet_ctarr.evaluation.perturbations import array_op, cut_box, zoomed

SUBJECTS = {
    "abdomen": ("totalseg_example/example_ct.nii.gz", "totalseg_example/example_ct_totalseg_v2.nii.gz"),
    "chest": ("chest_lidc/chest_ct_3mm.nii.gz", "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz"),
}
#: pair kinds, cycled per subject: half are translation-only (fair to the grid search)
KINDS = ("translation", "zoom", "translation", "rot_flip", "translation", "zoom_rot_flip")
#: the seed: start slice uniform in [first, end-100th] for scans of >= 300 slices, i.e. at least
#: the last third of the scan stays available; we keep that third for shorter scans
TAIL_FRACTION = 1.0 / 3.0
MIN_SLICES = 20
FAIL_MM = 30.0
#: TotalSegmentator v2 ids used as cross-subject landmarks (centres of mass)
LANDMARKS = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    5: "liver",
    29: "vertebrae_L3",
    30: "vertebrae_L2",
    31: "vertebrae_L1",
    32: "vertebrae_T12",
    33: "vertebrae_T11",
}


# --------------------------------------------------------------------------- copies with truth
@dataclass
class Copy:
    """A scan (CT + TotalSegmentator labels) derived from an original with known geometry."""

    name: str
    image: sitk.Image
    labels: sitk.Image
    A: np.ndarray  # p_original = A @ p_copy + c
    c: np.ndarray
    info: dict = field(default_factory=dict)

    def to_orig(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p, float) @ self.A.T + self.c


@dataclass
class Subject:
    name: str
    image: sitk.Image  # canonical (LPS) CT
    labels: sitk.Image  # canonical TotalSegmentator v2 labels


def load_subject(data: Path, name: str) -> Subject:
    img_f, lab_f = SUBJECTS[name]
    return Subject(name, canonical(read_image(Path(data) / img_f)), canonical(read_image(Path(data) / lab_f)))


def _index_to_world(img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(L, o) with world = L @ index + o."""
    D = np.array(img.GetDirection()).reshape(3, 3)
    return D @ np.diag(img.GetSpacing()), np.array(img.GetOrigin())


def _op_index_map(shape_zyx: tuple[int, ...], op: Callable | None) -> tuple[np.ndarray, np.ndarray]:
    """(P, q) with old_index_xyz = P @ new_index_xyz + q for an array op (flips/rot90 are affine)."""
    if op is None:
        return np.eye(3), np.zeros(3)
    idx = np.indices(shape_zyx, dtype=np.int32)  # (3, z, y, x): z, y, x indices
    moved = [op(idx[2]), op(idx[1]), op(idx[0])]  # old x, y, z at every new voxel
    nz, ny, nx = moved[0].shape
    pts = [(x, y, z) for x in (0, nx - 1) for y in (0, ny - 1) for z in (0, nz - 1)]
    new = np.array(pts, float)
    old = np.array([[m[z, y, x] for m in moved] for x, y, z in pts], float)
    X = np.hstack([new, np.ones((len(new), 1))])
    sol, *_ = np.linalg.lstsq(X, old, rcond=None)
    return sol[:3].T, sol[3]


def make_copy(
    subject: Subject,
    name: str,
    lo=None,
    hi=None,
    zoom: float = 1.0,
    k_rot: int = 0,
    flip_z: bool = False,
    shift_mm=(0.0, 0.0, 0.0),
) -> Copy:
    """Cut ``[lo, hi)`` (index xyz of the canonical original), zoom (spacing x ``zoom``: anatomy
    zoomed by ``zoom`` about the cut's origin), turn the array ``k_rot`` xy quarter turns and
    flip it in z (header left alone), then shift the header origin by ``shift_mm``."""
    img, lab = subject.image, subject.labels
    size = np.array(img.GetSize())
    lo = np.zeros(3, int) if lo is None else np.asarray(lo, int)
    hi = size if hi is None else np.asarray(hi, int)
    ci, cl = cut_box(img, lo, hi), cut_box(lab, lo, hi)  # same world as the original
    o_cut = np.array(ci.GetOrigin())
    if zoom != 1.0:
        ci, cl = zoomed(ci, ci.GetSpacing(), zoom), zoomed(cl, cl.GetSpacing(), zoom)
    op = None
    pi, pl = ci, cl
    if k_rot % 4 or flip_z:

        def op(a, k=k_rot % 4, fz=flip_z):
            a = np.rot90(a, k, axes=(1, 2))
            return a[::-1] if fz else a

        pi, pl = array_op(ci, op), array_op(cl, op)
    shape = sitk.GetArrayViewFromImage(ci).shape
    L_z, o_z = _index_to_world(ci)
    shift = np.asarray(shift_mm, float)
    pi, pl = sitk.Image(pi), sitk.Image(pl)
    for im in (pi, pl):
        im.SetOrigin(tuple(float(v) for v in np.array(im.GetOrigin()) + shift))
    # compose: copy world -> new index -> old index (array op) -> zoomed world -> original world
    L_new, o_new = _index_to_world(pi)
    P, q = _op_index_map(shape, op)
    L_new_inv = np.linalg.inv(L_new)
    A = L_z @ P @ L_new_inv
    c = L_z @ (q - P @ L_new_inv @ o_new) + o_z  # zoomed world
    A, c = A / zoom, o_cut + (c - o_cut) / zoom  # undo the zoom about o_cut
    info = {
        "z_window": [int(lo[2]), int(hi[2])],
        "xy_window": [[int(lo[0]), int(hi[0])], [int(lo[1]), int(hi[1])]],
        "zoom": round(float(zoom), 4),
        "k_rot": int(k_rot % 4),
        "flip_z": bool(flip_z),
        "origin_shift_mm": np.round(shift, 1).tolist(),
    }
    return Copy(name, pi, pl, A, c, info)


def sample_moving(subject: Subject, rng: np.random.Generator, min_slices: int = MIN_SLICES) -> Copy:
    """The seed's sub-volume: start slice uniform in [0, N - tail] (tail = N/3, the seed's 100 of
    >= 300 slices), length uniform in [min_slices, N - start]."""
    n = subject.image.GetSize()[2]
    tail = max(min_slices, int(np.ceil(TAIL_FRACTION * n)))
    start = int(rng.integers(0, n - tail + 1))
    length = int(rng.integers(min_slices, n - start + 1))
    size = np.array(subject.image.GetSize())
    return make_copy(subject, f"z{start}+{length}", [0, 0, start], [size[0], size[1], start + length])


def sample_fixed(subject: Subject, rng: np.random.Generator, kind: str) -> Copy:
    """Another acquisition: z window 80-100 %, xy crop 0-10 % per side, table shift (z +-200 mm,
    xy +-30 mm), zoom 0.85-1.15 for *zoom* kinds, a non-trivial quarter turn / z flip for *rot_flip*."""
    size = np.array(subject.image.GetSize())
    zlen = int(np.rint(rng.uniform(0.8, 1.0) * size[2]))
    z0 = int(rng.integers(0, size[2] - zlen + 1))
    m = (rng.uniform(0, 0.1, 4) * np.array([size[0], size[0], size[1], size[1]])).astype(int)
    lo = np.array([m[0], m[2], z0])
    hi = np.array([size[0] - m[1], size[1] - m[3], z0 + zlen])
    zoom = float(rng.uniform(0.85, 1.15)) if "zoom" in kind else 1.0
    k, fz = 0, False
    if "rot_flip" in kind:
        k, fz = 0, False
        while k == 0 and not fz:
            k, fz = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    shift = np.array([rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-200, 200)])
    name = (
        f"{kind}_z{z0}+{zlen}"
        + (f"_zoom{zoom:.2f}" if zoom != 1 else "")
        + (f"_rot{90 * k}" if k else "")
        + ("_flipz" if fz else "")
    )
    return make_copy(subject, name, lo, hi, zoom, k, fz, shift)


@dataclass
class Pair:
    subject: str
    kind: str
    moving: Copy
    fixed: Copy

    @property
    def name(self) -> str:
        return f"{self.subject}/{self.kind}: moving {self.moving.name} -> fixed {self.fixed.name}"


def same_subject_pairs(subject: Subject, n: int, seed: int) -> list[Pair]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        mov = sample_moving(subject, rng)
        out.append(Pair(subject.name, kind, mov, sample_fixed(subject, rng, kind)))
    return out


# --------------------------------------------------------------------------- errors
def overlap_fraction(pair: Pair) -> float:
    """Share of the moving scan's z extent (original mm) that the fixed scan covers."""

    def zr(cp: Copy):
        lo, hi = Geometry.of(cp.image).bounds()
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        z = cp.to_orig(corners)[:, 2]
        return z.min(), z.max()

    m, f = zr(pair.moving), zr(pair.fixed)
    return float(max(0.0, min(m[1], f[1]) - max(m[0], f[0])) / (m[1] - m[0]))


def z_errors(pair: Pair, A: np.ndarray, b: np.ndarray) -> dict:
    """Errors of a predicted ``p_fixed = A @ p_moving + b`` in original (body) mm."""
    _, pts = slice_centres(pair.moving.image)
    true = pair.moving.to_orig(pts)
    pred = pair.fixed.to_orig(pts @ A.T + b)
    dz = np.abs(pred[:, 2] - true[:, 2])
    centre = np.array(
        pair.moving.image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in pair.moving.image.GetSize()])
    )
    pc, tc = pair.fixed.to_orig(A @ centre + b), pair.moving.to_orig(centre)
    return {
        "z_err_mm": float(dz.mean()),
        "z_err_centre_mm": float(abs(pc[2] - tc[2])),
        "z_err_max_slice_mm": float(dz.max()),
        "err3d_centre_mm": float(np.linalg.norm(pc - tc)),
    }


# --------------------------------------------------------------------------- CTARR
def ctarr_locate(cp: Copy, atlas: Atlas, scheme: LabelScheme, settings: RegistrationSettings | None = None):
    """Anatomy from the copy's labels + registration to the atlas (what the prealign CLI does
    after reading the files)."""
    anat = AnatomyMasks.from_label_image(cp.labels, scheme, WarningLog(), cp.name)
    return locate(cp.image, anat, atlas, settings, WarningLog())


def ctarr_prealign(
    moving: Copy,
    fixed: Copy,
    atlas: Atlas,
    scheme: LabelScheme,
    settings: RegistrationSettings | None = None,
    fixed_loc=None,
) -> dict:
    """CTARR moving -> fixed; seconds = anatomy + registration of both (+ composition);
    ``seconds_moving_only`` = the same with the fixed registration cached."""
    t0 = time.perf_counter()
    f_loc = fixed_loc if fixed_loc is not None else ctarr_locate(fixed, atlas, scheme, settings)
    t1 = time.perf_counter()
    m_loc = ctarr_locate(moving, atlas, scheme, settings)
    A, b = moving_to_fixed(f_loc.transform, m_loc.transform)
    t2 = time.perf_counter()
    return {
        "A": A,
        "b": b,
        "seconds": t2 - t0,
        "seconds_moving_only": t2 - t1,
        "fixed_loc": f_loc,
        "moving_orientation": m_loc.transform.orientation_text,
        "fixed_orientation": f_loc.transform.orientation_text,
        "moving_dice": m_loc.registration.dice,
        "fixed_dice": f_loc.registration.dice,
        "warnings": list(m_loc.warnings) + list(f_loc.warnings),
    }


# --------------------------------------------------------------------------- FASTA-like baseline
@dataclass
class GridSettings:
    spacing_mm: float = 4.0  # isotropic; raised so that no axis exceeds max_size
    max_size: int = 128
    hu_range: tuple[float, float] = (-1000.0, 1500.0)
    min_overlap: float = 0.5  # of the smaller volume's voxels
    subvoxel: bool = True  # parabola through the best grid point and its neighbours


def _to_grid(img: sitk.Image, spacing: float, lo_hu: float, hi_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample onto an axis-aligned world grid (direction = identity) covering the image."""
    lo, hi = Geometry.of(img).bounds()
    n = np.maximum(1, np.floor((hi - lo) / spacing).astype(int))
    origin = lo + 0.5 * ((hi - lo) - (n - 1) * spacing)  # centred in the extent
    ref = sitk.Image([int(v) for v in n], sitk.sitkFloat32)
    ref.SetSpacing([spacing] * 3)
    ref.SetOrigin([float(v) for v in origin])
    src = sitk.Clamp(sitk.Cast(img, sitk.sitkFloat32), sitk.sitkFloat32, lo_hu, hi_hu)
    # smooth before downsampling (anti-aliasing), as a pyramid would
    sigma = [max(0.0, 0.5 * (spacing - s)) for s in img.GetSpacing()]
    if max(sigma) > 0:
        src = sitk.SmoothingRecursiveGaussian(src, sigma)
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, lo_hu, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).astype(np.float64), origin


def grid_search(moving: sitk.Image, fixed: sitk.Image, s: GridSettings | None = None) -> dict:
    """FASTA-like translation search: both CTs resampled to the same isotropic grid (<= 128 per
    axis), overlap-normalised SSD (mean squared HU difference over the overlapping voxels) at
    *every* translation on that grid with at least ``min_overlap`` overlap (a dense grid, via
    FFT correlations), sub-voxel parabola at the minimum. Returns ``t`` with
    ``p_fixed = p_moving + t`` (world mm)."""
    s = s or GridSettings()
    t0 = time.perf_counter()
    ext = max(float(np.max(np.subtract(*Geometry.of(im).bounds()[::-1]))) for im in (moving, fixed))
    sp = max(s.spacing_mm, ext / s.max_size)
    M, om = _to_grid(moving, sp, *s.hu_range)
    F, of = _to_grid(fixed, sp, *s.hu_range)
    nm, nf = np.array(M.shape), np.array(F.shape)
    fshape = [sfft.next_fast_len(int(v)) for v in nm + nf - 1]
    ones_m, ones_f = np.ones_like(M), np.ones_like(F)
    r = lambda a: sfft.rfftn(a, fshape, workers=2)
    Mh, M2h, Om = r(M), r(M * M), r(ones_m)
    Fh, F2h, Of = r(F), r(F * F), r(ones_f)
    corr = lambda a, b: sfft.irfftn(np.conj(a) * b, fshape, workers=2)
    # sum over j of moving(j) * fixed(j + d), d indexed modulo fshape
    cnt = corr(Om, Of)
    ssd = corr(Om, F2h) - 2 * corr(Mh, Fh) + corr(M2h, Of)
    # keep shifts d in [-(nm-1), nf-1] per axis
    d_axes = [np.arange(-(a - 1), b) for a, b in zip(nm, nf)]
    idx = np.ix_(*[np.mod(d, n) for d, n in zip(d_axes, fshape)])
    cnt, ssd = np.rint(cnt[idx]), ssd[idx]
    min_cnt = s.min_overlap * min(M.size, F.size)
    cost = np.where(cnt >= max(min_cnt, 1), ssd / np.maximum(cnt, 1), np.inf)
    best = np.array(np.unravel_index(int(np.argmin(cost)), cost.shape))
    frac = np.zeros(3)
    if s.subvoxel:
        for ax in range(3):
            if 0 < best[ax] < cost.shape[ax] - 1:
                lo_i, hi_i = best.copy(), best.copy()
                lo_i[ax] -= 1
                hi_i[ax] += 1
                c0, cm, cp = cost[tuple(best)], cost[tuple(lo_i)], cost[tuple(hi_i)]
                den = cm - 2 * c0 + cp
                if np.isfinite(cm) and np.isfinite(cp) and den > 0:
                    frac[ax] = float(np.clip(0.5 * (cm - cp) / den, -0.5, 0.5))
    d_zyx = np.array([d_axes[a][best[a]] for a in range(3)], float) + frac
    d_xyz = d_zyx[::-1]
    # moving voxel j (world om + sp j) lies on fixed voxel j + d (world of + sp (j + d))
    t = of + sp * d_xyz - om
    return {
        "t": t,
        "seconds": time.perf_counter() - t0,
        "spacing_mm": sp,
        "grid_moving_zyx": nm.tolist(),
        "grid_fixed_zyx": nf.tolist(),
        "n_translations": int(np.isfinite(cost).sum()),
        "best_cost": float(cost[tuple(best)]),
        "overlap_voxels": int(cnt[tuple(best)]),
    }


# --------------------------------------------------------------------------- one pair, both methods
def pair_fields(pair: Pair) -> dict:
    """The columns that name a pair in the result rows."""
    return {
        "subject": pair.subject,
        "kind": pair.kind,
        "pair": pair.name,
        "moving": pair.moving.info,
        "fixed": pair.fixed.info,
    }


def evaluate_pair(
    pair: Pair,
    atlas: Atlas,
    scheme: LabelScheme,
    settings: RegistrationSettings | None = None,
    grid: GridSettings | None = None,
    baseline: bool = True,
) -> dict:
    ct = ctarr_prealign(pair.moving, pair.fixed, atlas, scheme, settings)
    row = {
        **pair_fields(pair),
        "overlap_fraction_z": round(overlap_fraction(pair), 3),
        "ctarr": {
            **{k: round(v, 3) for k, v in z_errors(pair, ct["A"], ct["b"]).items()},
            "seconds": round(ct["seconds"], 3),
            "seconds_moving_only": round(ct["seconds_moving_only"], 3),
            "moving_orientation": ct["moving_orientation"],
            "fixed_orientation": ct["fixed_orientation"],
            "moving_dice": round(ct["moving_dice"], 3),
            "fixed_dice": round(ct["fixed_dice"], 3),
            "warnings": ct["warnings"],
        },
    }
    if baseline:
        g = grid_search(pair.moving.image, pair.fixed.image, grid)
        row["grid"] = {
            **{k: round(v, 3) for k, v in z_errors(pair, np.eye(3), g["t"]).items()},
            "seconds": round(g["seconds"], 3),
            "spacing_mm": round(g["spacing_mm"], 3),
            "n_translations": g["n_translations"],
            "overlap_voxels": g["overlap_voxels"],
        }
    return row


def summarise(errors: list[float], seconds: list[float], fail_mm: float = FAIL_MM) -> dict:
    e = np.asarray(errors, float)
    if e.size == 0:
        return {"n": 0}
    return {
        "n": int(e.size),
        "median_mm": round(float(np.median(e)), 2),
        "p90_mm": round(float(np.percentile(e, 90)), 2),
        "max_mm": round(float(e.max()), 2),
        "failures": int((e > fail_mm).sum()),
        "s_per_pair": round(float(np.median(seconds)), 3),
    }


# --------------------------------------------------------------------------- cross-subject pairs
def landmarks(subject: Subject) -> dict[str, np.ndarray]:
    """World landmarks (mm) from the :data:`LANDMARKS` structures: ``<name>_top`` / ``<name>_bottom``
    = the structure's highest / lowest slice (x, y at its centre of mass) when the structure does
    not touch the scan's top / bottom slice, and ``<name>`` = its centre of mass when it touches
    neither (a cut structure has a biased centre of mass, its uncut end is still exact)."""
    arr = sitk.GetArrayViewFromImage(subject.labels)
    out = {}
    for lid, name in LANDMARKS.items():
        zz, yy, xx = np.nonzero(arr == lid)
        if zz.size < 20:
            continue
        top_ok, bottom_ok = zz.max() < arr.shape[0] - 1, zz.min() > 0
        com = [float(xx.mean()), float(yy.mean()), float(zz.mean())]
        for key, ok, z in (
            (name, top_ok and bottom_ok, com[2]),
            (f"{name}_top", top_ok, float(zz.max())),
            (f"{name}_bottom", bottom_ok, float(zz.min())),
        ):
            if ok:
                out[key] = np.array(subject.labels.TransformContinuousIndexToPhysicalPoint([com[0], com[1], z]))
    return out


def is_reference_landmark(name: str) -> bool:
    """Cross-subject reference = vertebral landmarks (skeletal, the usual cranio-caudal level
    reference); organ landmarks (kidney tops, liver / spleen tips) vary between patients by
    several cm and are reported separately."""
    return name.startswith("vertebrae")


def cross_subject_pairs(moving: Subject, fixed: Subject, n: int, seed: int) -> list[tuple[Pair, list[str]]]:
    """The whole MOVING scan and sub-volumes of it (the seed's rule) against the whole of FIXED;
    only sub-volumes whose z range holds at least one reference landmark common to both scans
    are kept (only those have a reference). Returns (pair, all common landmark names inside)."""
    rng = np.random.default_rng(seed)
    lm_m, lm_f = landmarks(moving), landmarks(fixed)
    common = sorted(set(lm_m) & set(lm_f))
    fixed_cp = make_copy(fixed, "whole")
    out = []
    cand = [make_copy(moving, "whole")]
    tries = 0
    while len(out) < n and tries < 50 * max(n, 1):
        cp = cand.pop() if cand else sample_moving(moving, rng)
        tries += 1
        lo, hi = Geometry.of(cp.image).bounds()
        inside = [k for k in common if lo[2] <= lm_m[k][2] <= hi[2]]
        if any(is_reference_landmark(k) for k in inside):
            out.append((Pair(f"{moving.name}->{fixed.name}", "cross_subject", cp, fixed_cp), inside))
    return out


def landmark_errors(lm_m: dict, lm_f: dict, names: list[str], A: np.ndarray, b: np.ndarray) -> dict:
    """|z of (A @ landmark_moving + b) - z of landmark_fixed| (fixed world mm) per landmark; the
    pair's error is the mean over the reference (vertebral) landmarks."""
    errs = {k: float(abs((A @ lm_m[k] + b)[2] - lm_f[k][2])) for k in names}
    ref = [v for k, v in errs.items() if is_reference_landmark(k)]
    return {"z_err_mm": float(np.mean(ref)), "per_landmark_mm": {k: round(v, 2) for k, v in errs.items()}}


def landmark_floor(lm_m: dict, lm_f: dict, names: list[str]) -> float:
    """Mean |residual| of the best single z shift fitted to the reference landmarks themselves:
    the part of the reference that no translation can explain (different anatomy)."""
    ref = [k for k in names if is_reference_landmark(k)]
    d = np.array([lm_f[k][2] - lm_m[k][2] for k in ref])
    return float(np.mean(np.abs(d - np.median(d))))
