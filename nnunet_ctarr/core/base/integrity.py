"""Damaged inputs are errors, never silent zeros or NaNs.

SimpleITK reads a NIfTI file (``.nii`` or ``.nii.gz``) that was cut short without complaint and
fills the missing voxels with zeros (checked with SimpleITK 2.5: half a file reads as an image
whose upper half is 0); NRRD and MetaImage raise on short data. :func:`check_complete` compares
the bytes a NIfTI file holds with what its header promises: for ``.nii`` the file size, for
``.nii.gz`` the gzip trailer's length field, confirmed by decompressing the stream when it
disagrees (a stream cut mid-way has no valid trailer). The promised size comes from the header's
stored datatype, dimensions and ``vox_offset``, never from the pixel type SimpleITK returns (scaled
files read as float). The same check confirms written NIfTI files (SimpleITK's NIfTI writer does not
raise when the disk fills up). :func:`check_finite` refuses NaN and
infinite voxels, or replaces them by the image minimum when the user allows it; SimpleITK's NIfTI
reader silently reads NaN as 0, so float NIfTI files are checked through nibabel as well.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import CTARRError


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file's voxels lie, as its header states: the stored datatype (before any
    ``scl_slope``/``scl_inter`` scaling), the dimensions and the offset of the first voxel."""
    shape: tuple[int, ...]
    bitpix: int
    vox_offset: int

    @property
    def data_end(self) -> int:
        """Offset just past the last voxel byte."""
        return self.vox_offset + int(np.prod(self.shape, dtype=np.int64)) * self.bitpix // 8


def nifti_layout(header: bytes) -> NiftiLayout | None:
    """The voxel layout a NIfTI-1/NIfTI-2 single-file header (``n+1``/``n+2``) promises, either byte
    order; None for anything else (another format, a header/image pair, a header too short)."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            ndim, *dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = max(int(struct.unpack(order + "f", header[108:112])[0]), 352)
        elif len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            ndim, *dims = struct.unpack(order + "8q", header[16:80])
            offset = max(int(struct.unpack(order + "q", header[168:176])[0]), 544)
        else:
            continue
        if not 1 <= ndim <= 7 or bitpix <= 0:
            return None
        return NiftiLayout(tuple(max(int(d), 1) for d in dims[:ndim]), int(bitpix), offset)
    return None


def _gzip_length(path: Path) -> int:
    """Decompressed length of a gzip file; raises on a cut or corrupt stream."""
    n = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n += len(chunk)
    return n


def nifti_bytes(path: Path) -> tuple[int, int] | None:
    """(bytes held, bytes the header promises) of a NIfTI file; None when ``path`` is not a
    single-file NIfTI. For ``.nii.gz`` the held length is the gzip trailer's, confirmed by
    decompressing when it disagrees. Raises OSError, EOFError, zlib.error on a damaged stream."""
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return None
    gz = name.endswith(".gz")
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        layout = nifti_layout(f.read(544))
    if layout is None:
        return None
    end = layout.data_end
    if not gz:
        return path.stat().st_size, end
    with open(path, "rb") as f:
        f.seek(-4, 2)
        isize = struct.unpack("<I", f.read(4))[0]        # length mod 2**32 (single-member gzip)
    return (end if isize == end % 2 ** 32 else _gzip_length(path)), end


def check_complete(path: Path, img: sitk.Image | None = None) -> None:
    """Raise :class:`CTARRError` when a NIfTI file holds fewer voxel bytes than its header says.
    The size comes from the header's stored datatype and dimensions (``img`` is not used: a
    scaled file reads as float but is stored as integers)."""
    try:
        sizes = nifti_bytes(Path(path))
    except (OSError, EOFError, zlib.error) as e:
        raise CTARRError(f"cannot read {path}: the file is damaged or incomplete ({str(e)[:100]})") from None
    if sizes is not None and sizes[0] < sizes[1]:
        raise CTARRError(f"cannot read {path}: the file is incomplete ({sizes[0]} of {sizes[1]} bytes; was it cut "
                         "off while copying?)")


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
        stored = nibabel.load(str(path))
        if np.issubdtype(stored.get_data_dtype(), np.floating):    # scaled integers hold no NaN
            raw = np.asanyarray(stored.dataobj)
            raw = raw.reshape(raw.shape[:3]) if raw.ndim > 3 and all(d == 1 for d in raw.shape[3:]) else raw
            if raw.shape[::-1] == bad.shape:
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
