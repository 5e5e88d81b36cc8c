"""Acquisition variety from one labelled CT (for the out-of-sample evaluation of the anatomy sources).

Where :mod:`.perturbations` changes how a scan is *stored* (turns, flips, zoom, header orientation),
this module changes how it was *acquired*: slice thickness and pixel size (a thicker slice is the
average of the thinner ones it covers, then sampled; a finer grid is interpolated), the field of
view (a heart-centred reconstruction, the lungs only, the upper abdomen, the pelvis), noise, the
contrast phase (an arterial angiography, or no contrast agent) and the voxel type. Each copy keeps its
world geometry, and its truth is the TotalSegmentator v2 label map on the copy's grid (nearest
neighbour), so organ voxels kept by a crop are counted exactly as on the original.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..core.anatomy.groups import totalsegmentator_scheme
from ..core.base.geometry import Geometry
from ..core.base.images import canonical
from .perturbations import Perturbed, array_op, cut_box, linear_map

_TS = {name: idx for idx, name in totalsegmentator_scheme(2).items()}
LUNG = [i for n, i in _TS.items() if n.startswith("lung_")]
_BLOOD = ("heart", "aorta", "pulmonary_vein", "atrial_appendage_left", "brachiocephalic_trunk",
          "subclavian_artery_left", "subclavian_artery_right", "common_carotid_artery_left",
          "common_carotid_artery_right", "iliac_artery_left", "iliac_artery_right", "superior_vena_cava",
          "inferior_vena_cava", "portal_vein_and_splenic_vein", "brachiocephalic_vein_left",
          "brachiocephalic_vein_right")
#: median HU of blood and enhancing organs per contrast phase ("arterial": a CT angiography of the
#: heart and aorta; "native": no contrast agent)
PHASE_HU = {"arterial": {**dict.fromkeys(_BLOOD, 380.0), "kidney_left": 180.0, "kidney_right": 180.0,
                         "spleen": 130.0, "liver": 80.0},
            "native": {**dict.fromkeys(_BLOOD, 40.0), "kidney_left": 30.0, "kidney_right": 30.0,
                       "spleen": 45.0, "liver": 55.0}}


def _array(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def _like(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    out.CopyInformation(ref)
    return out


def resampled(image: sitk.Image, labels: sitk.Image, spacing_xyz) -> tuple[sitk.Image, sitk.Image]:
    """The scan acquired at another voxel size over the same world box (canonical storage). An axis
    made coarser is first averaged over the new voxel's width (thicker slices average the tissue they
    cover; a box filter), every axis is then sampled linearly; labels nearest. int16 HU."""
    img, lab = canonical(image), canonical(labels)
    sp = np.array(img.GetSpacing())
    new = np.asarray(spacing_xyz, float)
    arr = _array(img).astype(np.float32)
    for ax_xyz in range(3):
        width = new[ax_xyz] / sp[ax_xyz]
        if width > 1.01:
            arr = ndi.uniform_filter1d(arr, max(1, int(round(width))), axis=2 - ax_xyz, mode="nearest")
    smooth = _like(arr, img)
    lo, hi = Geometry.of(img).bounds()
    size = np.maximum(np.floor((hi - lo) / new + 1e-6).astype(int), 1)
    origin = 0.5 * (lo + hi) - 0.5 * (size - 1) * new
    grid = Geometry(size, new, origin, img.GetDirection()).to_reference(sitk.sitkFloat32)
    out = sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, float(arr.min()), sitk.sitkFloat32)
    out_l = sitk.Resample(lab, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, lab.GetPixelID())
    return sitk.Cast(sitk.Round(out), sitk.sitkInt16), out_l


def structure_box_mm(labels: sitk.Image, ids: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """World (min, max) corners (xyz mm) of the voxels labelled with ``ids``, or None if there are none."""
    lab = canonical(labels)
    zyx = np.argwhere(np.isin(_array(lab), ids))
    if not len(zyx):
        return None
    g = Geometry.of(lab)
    pts = g.index_to_world(np.stack([zyx.min(0), zyx.max(0)])[:, ::-1].astype(float))
    return pts.min(0), pts.max(0)


def cut_mm(image: sitk.Image, labels: sitk.Image, lo_mm, hi_mm) -> tuple[sitk.Image, sitk.Image]:
    """The voxels of a world box (canonical storage, no interpolation, geometry kept)."""
    img, lab = canonical(image), canonical(labels)
    g = Geometry.of(img)
    start, stop = g.index_box(np.asarray(lo_mm, float), np.asarray(hi_mm, float))
    start = np.clip(start, 0, np.array(g.size_xyz) - 1)
    stop = np.clip(stop, start + 1, g.size_xyz)
    return cut_box(img, start, stop), cut_box(lab, start, stop)


def with_noise(image: sitk.Image, sigma_hu: float, seed: int = 0) -> sitk.Image:
    """Gaussian noise of ``sigma_hu`` per voxel (a low-dose scan), int16."""
    arr = _array(image).astype(np.float32)
    arr += np.random.default_rng(seed).normal(0.0, sigma_hu, arr.shape).astype(np.float32)
    return _like(np.clip(np.round(arr), -32768, 32767).astype(np.int16), image)


def with_contrast(image: sitk.Image, labels: sitk.Image, phase: str = "arterial") -> sitk.Image:
    """The scan in another contrast phase: each structure of :data:`PHASE_HU` shifted so that its
    median is the phase's (texture and noise kept)."""
    lab = _array(match_grid(labels, image))
    arr = _array(image).astype(np.float32)
    out = arr.copy()
    for name, target in PHASE_HU[phase].items():
        inside = lab == _TS[name]
        if inside.any():
            out[inside] += target - float(np.median(arr[inside]))
    return _like(np.clip(np.round(out), -32768, 32767).astype(np.int16), image)


def match_grid(labels: sitk.Image, image: sitk.Image) -> sitk.Image:
    if Geometry.of(labels).same_grid(Geometry.of(image)):
        return labels
    return sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())


def _centre_box(centre, size_mm) -> tuple[np.ndarray, np.ndarray]:
    half = 0.5 * np.asarray(size_mm, float)
    return np.asarray(centre) - half, np.asarray(centre) + half


def fov_crops(image: sitk.Image, labels: sitk.Image) -> Iterator[tuple[str, sitk.Image, sitk.Image]]:
    """Partial fields of view defined by the anatomy: heart-centred reconstructions (180 and 250 mm
    in-plane, the heart +- 15 mm in z), the lungs only (their box + 10 mm), the upper abdomen (from
    5 cm above the liver's top to the kidneys' bottom) and the pelvis (below the kidneys)."""
    g = Geometry.of(canonical(image))
    lo, hi = g.bounds()
    heart = structure_box_mm(labels, [_TS["heart"]])
    if heart is not None:
        c = 0.5 * (heart[0] + heart[1])
        for fov in (180, 250):
            a, b = _centre_box(c, (fov, fov, 0))
            yield f"fov_cardiac_{fov}mm", *cut_mm(image, labels, np.r_[a[:2], heart[0][2] - 15],
                                                   np.r_[b[:2], heart[1][2] + 15])
    lungs = structure_box_mm(labels, LUNG)
    if lungs is not None and lungs[1][2] - lungs[0][2] > 150:
        yield "fov_lungs_only", *cut_mm(image, labels, lungs[0] - 10, lungs[1] + 10)
    liver = structure_box_mm(labels, [_TS["liver"]])
    kidneys = structure_box_mm(labels, [_TS["kidney_left"], _TS["kidney_right"]])
    if liver is not None and kidneys is not None:
        top = min(liver[1][2] + 50, hi[2])
        yield "fov_upper_abdomen", *cut_mm(image, labels, np.r_[lo[:2], kidneys[0][2] - 10], np.r_[hi[:2], top])
        if kidneys[0][2] - lo[2] > 120:
            yield "fov_pelvis", *cut_mm(image, labels, lo, np.r_[hi[:2], kidneys[0][2] - 10])


def acquisition_suite(image: sitk.Image, labels: sitk.Image, thick: bool = True) -> Iterator[Perturbed]:
    """The variety suite of one labelled scan (see the module docstring). ``thick``: also the voxel-size
    variants (slow on a native 512 x 512 scan: each one filters the whole volume)."""
    eye = np.eye(3)
    sp = np.array(canonical(image).GetSpacing())
    yield Perturbed("original", image, labels, eye)
    if thick:
        for name, s in (("slices_1mm", (sp[0], sp[1], 1.0)), ("slices_5mm", (sp[0], sp[1], 5.0)),
                        ("slices_7.5mm", (sp[0], sp[1], 7.5)), ("pixels_0.5mm", (0.5, 0.5, sp[2])),
                        ("pixels_1.5mm", (1.5, 1.5, sp[2])), ("0.98x0.98x6mm", (0.98, 0.98, 6.0)),
                        ("1.5x1.5x7.5mm", (1.5, 1.5, 7.5)), ("4x4x2.5mm", (4.0, 4.0, 2.5))):
            if np.allclose(s, sp, atol=0.01):
                continue
            yield Perturbed(name, *resampled(image, labels, s), eye)
    for name, img, lab in fov_crops(image, labels):
        yield Perturbed(name, img, lab, eye)
        if name == "fov_cardiac_180mm":
            yield Perturbed(name + "_arterial", with_contrast(img, lab, "arterial"), lab, eye)
    for sigma in (40, 100):
        yield Perturbed(f"noise_{sigma}hu", with_noise(image, sigma), labels, eye)
    for phase in PHASE_HU:
        yield Perturbed(f"contrast_{phase}", with_contrast(image, labels, phase), labels, eye)
    for code in ("RAS", "PIR"):
        yield Perturbed(f"stored_{code}", sitk.DICOMOrient(image, code), sitk.DICOMOrient(labels, code), eye)
    for name, pid in (("float32", sitk.sitkFloat32), ("int32", sitk.sitkInt32), ("float64", sitk.sitkFloat64)):
        yield Perturbed(f"dtype_{name}", sitk.Cast(image, pid), labels, eye)
    img_c, lab_c = canonical(image), canonical(labels)
    for name, op in (("array_rot180", lambda a: np.rot90(a, 2, axes=(1, 2))),
                     ("array_rot90_flip_z", lambda a: np.rot90(a, 1, axes=(1, 2))[::-1])):
        pi, pl = array_op(img_c, op), array_op(lab_c, op)
        yield Perturbed(name, pi, pl, linear_map(img_c, pi, op))
