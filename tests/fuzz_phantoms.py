"""Small synthetic CT-like volumes in any geometry, written in every input form the package reads
(NIfTI, scaled NIfTI, NRRD, MHA, DICOM series with or without gantry tilt). Used by
test_fuzz_inputs.py; nothing here asserts."""

from __future__ import annotations

import locale
import os
from pathlib import Path

import nibabel
import numpy as np
import SimpleITK as sitk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def rotation(deg_x: float = 0.0, deg_y: float = 0.0, deg_z: float = 0.0) -> np.ndarray:
    """A 3x3 rotation (applied z, then y, then x)."""
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _parts(size_xyz) -> dict[str, np.ndarray]:
    """(z, y, x) masks of the phantom's parts, in coordinates -1..1 along each index axis."""
    nx, ny, nz = size_xyz
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in (nz, ny, nx)), indexing="ij")
    return {
        "body": (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1,
        "lung_left": ((x - 0.4) / 0.25) ** 2 + (y / 0.3) ** 2 + (z / 0.8) ** 2 < 1,
        "lung_right": ((x + 0.4) / 0.25) ** 2 + (y / 0.3) ** 2 + (z / 0.8) ** 2 < 1,
        "heart": (x / 0.15) ** 2 + ((y + 0.25) / 0.15) ** 2 + (z / 0.4) ** 2 < 1,
        "spine": (x / 0.12) ** 2 + ((y - 0.4) / 0.12) ** 2 < 1,
    }


def _on_grid(arr_zyx: np.ndarray, spacing_xyz, direction, origin_xyz) -> sitk.Image:
    img = sitk.GetImageFromArray(arr_zyx)
    img.SetSpacing([float(v) for v in spacing_xyz])
    img.SetOrigin([float(v) for v in origin_xyz])
    img.SetDirection([float(v) for v in np.asarray(direction, float).ravel()])
    return img


def phantom(size_xyz, spacing_xyz, direction=IDENTITY, origin_xyz=(0.0, 0.0, 0.0), dtype=np.int16) -> sitk.Image:
    """A CT-like volume in HU: air -1000, a body ellipse 0 HU filling ~80 % of the field of view,
    two lung-like blobs -850 HU, a heart-like blob 40 HU, a spine-like rod +700 HU posterior along
    the index z axis (positions relative to the grid, so any spacing draws the same picture; index
    x is the patient's left for an identity direction, index y posterior)."""
    parts = _parts(size_xyz)
    arr = np.full(parts["body"].shape, -1000.0)
    for name, hu in (("body", 0.0), ("lung_left", -850.0), ("lung_right", -850.0), ("heart", 40.0), ("spine", 700.0)):
        arr[parts[name]] = hu
    return _on_grid(arr.astype(dtype), spacing_xyz, direction, origin_xyz)


def phantom_labels(img: sitk.Image) -> sitk.Image:
    """The 19-group CTARR map (uint8) of :func:`phantom` ``img``, on its grid."""
    from nnunet_ctarr.core.anatomy.groups import GROUPS

    parts = _parts(img.GetSize())
    arr = np.zeros(parts["body"].shape, np.uint8)
    for name, group in (
        ("lung_left", "lung_left"),
        ("lung_right", "lung_right"),
        ("heart", "heart"),
        ("spine", "vertebrae_T"),
    ):
        arr[parts[name]] = GROUPS.index(group) + 1
    return _on_grid(arr, img.GetSpacing(), img.GetDirection(), img.GetOrigin())


def write_nibabel(
    img: sitk.Image,
    path: Path,
    stored=None,
    slope: float = 1.0,
    inter: float = 0.0,
    extra_dims: tuple[int, ...] = (),
    affine: np.ndarray | None = None,
) -> Path:
    """``img`` as a NIfTI written by nibabel: stored as ``stored`` with ``scl_slope``/``scl_inter``
    (voxel = stored * slope + inter), extra trailing axes (e.g. ``(1,)`` for a 4-D file with one
    volume), or a given (possibly sheared) RAS affine."""
    arr = sitk.GetArrayFromImage(img).T  # (x, y, z)
    if extra_dims:
        arr = np.broadcast_to(arr.reshape(arr.shape + (1,) * len(extra_dims)), arr.shape + tuple(extra_dims))
    if affine is None:
        m = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
        affine = np.eye(4)
        affine[:3, :3], affine[:3, 3] = LPS_TO_RAS @ m, LPS_TO_RAS @ np.array(img.GetOrigin())
    stored = stored or arr.dtype
    raw = (arr - inter) / slope
    if np.issubdtype(np.dtype(stored), np.integer):  # saturate, as a scanner's export would
        raw = np.clip(np.round(raw), np.iinfo(stored).min, np.iinfo(stored).max)
    raw = raw.astype(stored)
    nii = nibabel.Nifti1Image(raw, affine, dtype=np.dtype(stored))
    nii.header.set_slope_inter(slope, inter)
    nibabel.save(nii, str(path))
    return path


def write_dicom_series(img: sitk.Image, folder: Path, tilt_deg: float = 0.0, drop_slice: int | None = None) -> list:
    """``img`` (int16) as a DICOM series, one file per slice, positions from its geometry; with
    ``tilt_deg`` the slice planes are tilted about the x axis by that angle while the slice
    positions still step along the index z axis (a gantry-tilted acquisition). Returns the world
    position of every written slice's first voxel."""
    os.makedirs(folder, exist_ok=True)
    d = np.array(img.GetDirection()).reshape(3, 3)
    row, col = d[:, 0], d[:, 1]
    if tilt_deg:
        t = np.radians(tilt_deg)
        col = np.cos(t) * d[:, 1] + np.sin(t) * d[:, 2]
    saved = locale.setlocale(locale.LC_ALL, None)  # GDCM's writer sets the C locale (ASCII text)
    try:
        return _write_slices(img, folder, row, col, tilt_deg, drop_slice)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(img: sitk.Image, folder: Path, row, col, tilt_deg: float, drop_slice: int | None) -> list:
    uid = f"1.2.826.0.1.3680043.2.1125.{abs(hash((str(folder), tilt_deg))) % 10**12}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    positions = []
    for k in range(img.GetSize()[2]):
        if k == drop_slice:
            continue
        pos = np.array(img.TransformIndexToPhysicalPoint((0, 0, k)))
        positions.append(pos)
        s = img[:, :, k : k + 1]
        tags = {
            "0008|0060": "CT",
            "0020|000e": uid,
            "0020|000d": uid + ".1",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{uid}.2.{k}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*row, *col)),
            "0028|0030": f"{img.GetSpacing()[1]:.6f}\\{img.GetSpacing()[0]:.6f}",
            "0018|0050": f"{img.GetSpacing()[2]:.6f}",
            "0018|1120": f"{tilt_deg:.1f}",
        }
        for tag, value in tags.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(s)
    return positions


def world_centroid(img: sitk.Image, lo: float, hi: float) -> np.ndarray:
    """World position (mm) of the centre of the voxels with lo <= value < hi."""
    idx_zyx = np.argwhere((sitk.GetArrayViewFromImage(img) >= lo) & (sitk.GetArrayViewFromImage(img) < hi))
    idx = idx_zyx[:, ::-1].astype(float)
    m = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    return (idx @ m.T).mean(0) + np.array(img.GetOrigin())
