"""Damaged inputs are errors, never silent zeros or NaNs.

SimpleITK reads a NIfTI file (``.nii`` or ``.nii.gz``) that was cut short without complaint and
fills the missing voxels with zeros (checked with SimpleITK 2.5: half a file reads as an image
whose upper half is 0); NRRD and MetaImage raise on short data. :func:`check_complete` compares
the bytes a NIfTI file holds with what its header promises: for ``.nii`` the file size, for
``.nii.gz`` the gzip trailer's length field, confirmed by decompressing the stream when it
disagrees (a stream cut mid-way has no valid trailer). :func:`check_finite` refuses NaN and
infinite voxels, or replaces them by the image minimum when the user allows it; SimpleITK's NIfTI
reader silently reads NaN as 0, so float NIfTI files are checked through nibabel as well.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import CTARRError


def _nifti_data_end(header: bytes, img: sitk.Image) -> int | None:
    """Offset of the end of the voxel data a NIfTI-1/2 header promises (None: not NIfTI)."""
    if len(header) >= 348 and struct.unpack("<i", header[:4])[0] == 348:
        vox_offset = max(int(struct.unpack("<f", header[108:112])[0]), 352)
    elif len(header) >= 540 and struct.unpack("<i", header[:4])[0] == 540:
        vox_offset = max(int(struct.unpack("<q", header[168:176])[0]), 544)
    else:
        return None
    n_bytes = int(np.prod(img.GetSize())) * img.GetNumberOfComponentsPerPixel() * \
        sitk.GetArrayViewFromImage(img).dtype.itemsize
    return vox_offset + n_bytes


def _gzip_length(path: Path) -> int:
    """Decompressed length of a gzip file; raises on a cut or corrupt stream."""
    n = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n += len(chunk)
    return n


def check_complete(path: Path, img: sitk.Image) -> None:
    """Raise :class:`CTARRError` when a NIfTI file holds fewer voxel bytes than its header says."""
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                end = _nifti_data_end(f.read(544), img)
            if end is None:
                return
            with open(path, "rb") as f:
                f.seek(-4, 2)
                isize = struct.unpack("<I", f.read(4))[0]        # length mod 2**32 (single-member gzip)
            have = end if isize == end % 2 ** 32 else _gzip_length(path)
        else:
            with open(path, "rb") as f:
                end = _nifti_data_end(f.read(544), img)
            if end is None:
                return
            have = path.stat().st_size
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise CTARRError(f"cannot read {path}: the file is damaged or incomplete ({str(e)[:100]})") from None
    if have < end:
        raise CTARRError(f"cannot read {path}: the file is incomplete ({have} of {end} bytes; was it cut off "
                         "while copying?)")


def _nonfinite_mask(img: sitk.Image, path: Path | None) -> np.ndarray | None:
    """(z, y, x) mask of NaN/Inf voxels, or None if there are none. SimpleITK's NIfTI reader turns
    NaN into 0 (checked with SimpleITK 2.5), so float NIfTI files are also read through nibabel."""
    arr = sitk.GetArrayViewFromImage(img)
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    bad = ~np.isfinite(arr)
    name = path.name.lower() if path is not None else ""
    if not bad.any() and (name.endswith(".nii") or name.endswith(".nii.gz")):
        import nibabel
        raw = np.asanyarray(nibabel.load(str(path)).dataobj)
        if np.issubdtype(raw.dtype, np.floating) and raw.ndim == 3:
            bad = ~np.isfinite(raw.T)
    return bad if bad.any() else None


def check_finite(img: sitk.Image, name: str, allow: bool = False, path: Path | None = None) -> tuple[sitk.Image, int]:
    """Refuse NaN/Inf voxels (one line naming how many), or with ``allow`` replace them by the
    minimum of the finite voxels; returns (image, number replaced). ``path``: the file ``img``
    was read from (needed to see NaN in NIfTI files)."""
    bad = _nonfinite_mask(img, Path(path) if path is not None else None)
    if bad is None:
        return img, 0
    n = int(bad.sum())
    if not allow:
        raise CTARRError(f"{name} has {n} NaN or infinite voxel(s) ({100 * n / bad.size:.2f}%); fix the file or "
                         "pass --allow_nonfinite to replace them by the image minimum")
    arr = sitk.GetArrayViewFromImage(img)
    fixed = np.where(bad, float(arr[~bad].min()) if n < bad.size else 0.0, arr).astype(arr.dtype)
    out = sitk.GetImageFromArray(fixed)
    out.CopyInformation(img)
    return out, n
