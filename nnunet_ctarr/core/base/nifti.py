"""Fast NIfTI writing: SimpleITK's own header, ISA-L's deflate, several images in threads.

SimpleITK's NIfTI writer compresses with zlib at its default level whatever level is asked for
(0.35 s for a 300x300x100 int16 crop); ISA-L (python-isal) deflates the same crop in 0.06-0.07 s
at 2-5 % more bytes, and releases the GIL, so the crops of one case compress in parallel threads.

Geometry is taken from SimpleITK, not recomputed: SimpleITK writes a 2x2x2 image with the image's
pixel type, spacing, origin, direction and metadata, and that header (qform/sform codes and
values, pixdim, units, ...) is kept with only its ``dim`` field set to the image's size (by
``struct``: importing nibabel for one field would cost 0.3 s of every command's start-up). The voxel buffer of a
scalar SimpleITK image is already in NIfTI order (x fastest, native byte order), so the file's
uncompressed bytes are exactly those SimpleITK writes (tests/test_nifti_write.py checks this over
pixel types and orientations). Vector and complex images are written by SimpleITK itself.
"""
from __future__ import annotations

import gzip
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from isal import isal_zlib

from .cases import IMAGE_EXTENSIONS
from .errors import CTARRError
from .files import atomic_write

#: ISA-L's levels: 0 (fastest) to 3 (smallest); measured in docs/benchmarks.md
LEVELS = (0, 1, 2, 3)
DEFAULT_LEVEL = 2
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: bytes handed to the compressor at a time (bounds the memory of a large image's compressed copy)
_CHUNK = 1 << 23


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _fast_path(img: sitk.Image) -> bool:
    """Scalar images within NIfTI-1's dimensions: their voxel buffer is the file's data block as it is."""
    return (img.GetNumberOfComponentsPerPixel() == 1 and max(img.GetSize()) <= 32767
            and img.GetPixelID() not in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64))


def sitk_header(img: sitk.Image, scratch: str | Path) -> bytes:
    """The bytes SimpleITK writes before the voxels of ``img`` (header, extension flag, any
    extensions), from a 2x2x2 image of the same pixel type, geometry and metadata written to
    ``scratch`` (a ``.nii`` or ``.nii.gz`` path that the caller owns and overwrites), with the
    dimensions set to the image's (the ``dim`` field, at byte 40; nothing else differs)."""
    small = sitk.Image([2] * img.GetDimension(), img.GetPixelID())
    small.SetSpacing(img.GetSpacing())
    small.SetOrigin(img.GetOrigin())
    small.SetDirection(img.GetDirection())
    for key in img.GetMetaDataKeys():
        small.SetMetaData(key, img.GetMetaData(key))
    sitk.WriteImage(small, str(scratch), False)
    opener = gzip.open if str(scratch).lower().endswith(".gz") else open
    with opener(scratch, "rb") as f:
        head = bytearray(f.read())
    endian = "<" if struct.unpack_from("<i", head, 0)[0] == 348 else ">"
    struct.pack_into(f"{endian}{img.GetDimension()}h", head, 42, *img.GetSize())
    return bytes(head[:int(struct.unpack_from(f"{endian}f", head, 108)[0])])


def _write_nifti_file(img: sitk.Image, tmp: str, compressed: bool, level: int) -> None:
    """The header SimpleITK writes, then the voxel buffer (deflated into one gzip member when
    ``compressed``); ``tmp`` also holds SimpleITK's small header file first."""
    head = sitk_header(img, tmp)
    data = memoryview(np.ascontiguousarray(sitk.GetArrayViewFromImage(img))).cast("B")
    with open(tmp, "wb") as f:
        if not compressed:
            f.write(head)
            f.write(data)
            return
        comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)      # wbits 31: gzip, mtime 0, no name
        f.write(comp.compress(head))
        for start in range(0, len(data), _CHUNK):
            f.write(comp.compress(data[start:start + _CHUNK]))
        f.write(comp.flush())


def write_nifti(img: sitk.Image, path: str | Path, level: int = DEFAULT_LEVEL) -> None:
    """Write ``img`` to ``path`` (``.nii.gz``: gzip at ISA-L ``level`` 0-3; ``.nii``: uncompressed)
    atomically, with the umask's permissions; the file reads back in SimpleITK and nibabel with the
    voxels and geometry SimpleITK's own writer gives."""
    path = Path(path)
    if not is_nifti(path):
        raise CTARRError(f"cannot write {path}: not a NIfTI file name (.nii or .nii.gz)")
    if level not in LEVELS:
        raise CTARRError(f"compression level {level} is not one of {list(LEVELS)} (ISA-L levels)")
    compressed = path.name.lower().endswith(".gz")
    suffix = ".nii.gz" if compressed else ".nii"
    if not _fast_path(img):
        atomic_write(path, suffix, lambda tmp: sitk.WriteImage(img, tmp, compressed))
        return
    atomic_write(path, suffix, lambda tmp: _write_nifti_file(img, tmp, compressed, level))


def save_image(img: sitk.Image, path: str | Path, level: int = DEFAULT_LEVEL, compress: bool = True) -> None:
    """Any image file, atomically with the umask's permissions: NIfTI by :func:`write_nifti`, other
    formats (``.nrrd``, ``.mha``, ...) by SimpleITK (``compress``: its own compression)."""
    path = Path(path)
    if is_nifti(path):
        write_nifti(img, path, level)
        return
    ext = next((e for e in IMAGE_EXTENSIONS if path.name.lower().endswith(e)), path.suffix)
    atomic_write(path, ext, lambda tmp: sitk.WriteImage(img, tmp, compress))


def write_images(pairs: list[tuple[sitk.Image, Path]], level: int = DEFAULT_LEVEL, threads: int = 2) -> None:
    """Write several images (e.g. the crops of one case) in ``threads`` threads (the deflate
    releases the GIL: ~1.9x on 2 cores). Every write ends before the first error, if any, is
    raised; files already written stay (the caller removes them, as for one write)."""
    if threads <= 1 or len(pairs) <= 1:
        for img, path in pairs:
            save_image(img, path, level)
        return
    with ThreadPoolExecutor(min(threads, len(pairs))) as pool:
        futures = [pool.submit(save_image, img, path, level) for img, path in pairs]
    for fut in futures:
        fut.result()
