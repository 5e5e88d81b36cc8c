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

import errno
import gzip
import itertools
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from isal import isal_zlib

from .cases import IMAGE_EXTENSIONS
from .errors import CTARRError
from .files import atomic_write
from .integrity import nifti_bytes

#: ISA-L's levels: 0 (fastest) to 3 (smallest); measured in docs/benchmarks.md
LEVELS = (0, 1, 2, 3)
DEFAULT_LEVEL = 2
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: bytes handed to the compressor at a time (bounds the memory of a large image's compressed copy)
_CHUNK = 1 << 23


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@dataclass(frozen=True)
class Crop:
    """The half-open index box ``[start_xyz, stop_xyz)`` of ``image``, to be written as the image
    ``image[x0:x1, y0:y1, z0:z1]`` would be, without that copy: its voxels are streamed from the
    image's buffer slab by slab (11 crops of the 512x512x133 chest: 0.04 s instead of 0.34 s)."""
    image: sitk.Image
    start_xyz: tuple[int, ...]
    stop_xyz: tuple[int, ...]

    def __post_init__(self) -> None:
        size = self.image.GetSize()
        if not (len(self.start_xyz) == len(self.stop_xyz) == len(size) and all(
                0 <= a < b <= n for a, b, n in zip(self.start_xyz, self.stop_xyz, size))):
            raise CTARRError(f"crop box {list(self.start_xyz)}..{list(self.stop_xyz)} does not lie inside the "
                             f"image of size {list(size)}")

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(int(b - a) for a, b in zip(self.start_xyz, self.stop_xyz))

    def image_crop(self) -> sitk.Image:
        """The crop as SimpleITK slices it (a copy)."""
        return self.image[tuple(slice(int(a), int(b)) for a, b in zip(self.start_xyz, self.stop_xyz))]


@dataclass(frozen=True)
class _Voxels:
    """What a NIfTI write needs, taken in the caller's thread: SimpleITK's ``GetArrayViewFromImage``
    makes the image's buffer unique first, and a slice taken meanwhile in another thread (which
    holds a reference) made it copy the buffer under a view still in use."""
    owner: sitk.Image          # the image the voxels belong to (kept alive with the view)
    header: sitk.Image         # pixel type, geometry and metadata of the file
    size: tuple[int, ...]
    voxels: np.ndarray         # (z, y, x) view

    @classmethod
    def of(cls, source: sitk.Image | Crop) -> _Voxels:
        if isinstance(source, Crop):
            corner = source.image[tuple(slice(int(a), int(a) + 1) for a in source.start_xyz)]
            box = tuple(slice(int(a), int(b)) for a, b in zip(source.start_xyz[::-1], source.stop_xyz[::-1]))
            return cls(source.image, corner, source.size, sitk.GetArrayViewFromImage(source.image)[box])
        return cls(source, source, source.GetSize(), sitk.GetArrayViewFromImage(source))


def _sitk_write(img: sitk.Image, tmp: str, compress: bool) -> None:
    """SimpleITK's own write, read back by the header: its NIfTI writer reports a full disk only on
    the console and leaves a cut file."""
    sitk.WriteImage(img, tmp, compress)
    try:
        sizes = nifti_bytes(Path(tmp))
    except (OSError, EOFError, zlib.error):
        sizes = (0, 1)
    if sizes is not None and sizes[0] < sizes[1]:
        raise OSError(errno.EIO, "the file came out incomplete (is the disk full?)")


def _fast_path(img: sitk.Image) -> bool:
    """Scalar images within NIfTI-1's dimensions: their voxel buffer is the file's data block as it is."""
    return (img.GetNumberOfComponentsPerPixel() == 1 and max(img.GetSize()) <= 32767
            and img.GetPixelID() not in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64))


def sitk_header(img: sitk.Image, scratch: str | Path, size: tuple[int, ...] | None = None) -> bytes:
    """The bytes SimpleITK writes before the voxels of an image with ``img``'s pixel type, geometry
    and metadata and ``size`` (default ``img``'s): header, extension flag, any extensions. SimpleITK
    writes a 2x2x2 such image to ``scratch`` (a ``.nii`` or ``.nii.gz`` path that the caller owns and
    overwrites); then the ``dim`` field (byte 40) is set to ``size``, nothing else differs."""
    size = img.GetSize() if size is None else size
    small = sitk.Image([2] * img.GetDimension(), img.GetPixelID())
    small.SetSpacing(img.GetSpacing())
    small.SetOrigin(img.GetOrigin())
    small.SetDirection(img.GetDirection())
    for key in img.GetMetaDataKeys():
        small.SetMetaData(key, img.GetMetaData(key))
    sitk.WriteImage(small, str(scratch), False)
    opener = gzip.open if str(scratch).lower().endswith(".gz") else open
    try:
        with opener(scratch, "rb") as f:
            head = bytearray(f.read())
        endian = "<" if struct.unpack_from("<i", head, 0)[0] == 348 else ">"
        offset = int(struct.unpack_from(f"{endian}f", head, 108)[0])
    except (EOFError, zlib.error, struct.error):
        head, offset = bytearray(), 352
    if len(head) < max(offset, 352):           # SimpleITK reports a full disk only on the console
        raise OSError(errno.EIO, "the file came out incomplete (is the disk full?)")
    struct.pack_into(f"{endian}{len(size)}h", head, 42, *size)
    return bytes(head[:offset])


def _slabs(arr: np.ndarray):
    """The voxel bytes in NIfTI order (x fastest), in slabs of about ``_CHUNK`` bytes."""
    step = max(1, _CHUNK // max(1, arr[:1].nbytes))
    for k in range(0, len(arr), step):
        yield memoryview(np.ascontiguousarray(arr[k:k + step])).cast("B")


def _write_nifti_file(v: _Voxels, tmp: str, compressed: bool, level: int) -> None:
    """The header SimpleITK writes, then the voxels (deflated into one gzip member when
    ``compressed``); ``tmp`` also holds SimpleITK's small header file first."""
    head = sitk_header(v.header, tmp, v.size)
    with open(tmp, "wb") as f:
        comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31) if compressed else None  # gzip, mtime 0
        for chunk in itertools.chain([head], _slabs(v.voxels)):
            f.write(comp.compress(chunk) if comp else chunk)
        if comp:
            f.write(comp.flush())


def _owner(source: sitk.Image | Crop | _Voxels) -> sitk.Image:
    return source.owner if isinstance(source, _Voxels) else source.image if isinstance(source, Crop) else source


def _whole(source: sitk.Image | Crop) -> sitk.Image:
    """The image to hand to SimpleITK's own writer."""
    return source.image_crop() if isinstance(source, Crop) else source


def write_nifti(source: sitk.Image | Crop, path: str | Path, level: int = DEFAULT_LEVEL) -> None:
    """Write an image or a :class:`Crop` of one to ``path`` (``.nii.gz``: gzip at ISA-L ``level``
    0-3; ``.nii``: uncompressed) atomically, with the umask's permissions; the file reads back in
    SimpleITK and nibabel with the voxels and geometry SimpleITK's own writer gives."""
    path = Path(path)
    if not is_nifti(path):
        raise CTARRError(f"cannot write {path}: not a NIfTI file name (.nii or .nii.gz)")
    if level not in LEVELS:
        raise CTARRError(f"compression level {level} is not one of {list(LEVELS)} (ISA-L levels)")
    compressed = path.name.lower().endswith(".gz")
    suffix = ".nii.gz" if compressed else ".nii"
    img = _owner(source)
    d = np.array(img.GetDirection(), float).reshape(img.GetDimension(), img.GetDimension())
    if not np.allclose(d.T @ d, np.eye(len(d)), atol=1e-4):
        raise CTARRError(f"cannot write {path}: NIfTI cannot store a sheared (non-orthogonal) grid; "
                         "write .nrrd or .mha")
    if not _fast_path(img):
        whole = _whole(source)
        atomic_write(path, suffix, lambda tmp: _sitk_write(whole, tmp, compressed))
        return
    v = source if isinstance(source, _Voxels) else _Voxels.of(source)
    atomic_write(path, suffix, lambda tmp: _write_nifti_file(v, tmp, compressed, level))


def save_image(source: sitk.Image | Crop, path: str | Path, level: int = DEFAULT_LEVEL, compress: bool = True) -> None:
    """Any image file, atomically with the umask's permissions: NIfTI by :func:`write_nifti`, other
    formats (``.nrrd``, ``.mha``, ...) by SimpleITK (``compress``: its own compression; a NIfTI file
    SimpleITK writes is read back by its header before the rename)."""
    path = Path(path)
    if is_nifti(path):
        write_nifti(source, path, level)
        return
    img = _whole(source)
    ext = next((e for e in IMAGE_EXTENSIONS if path.name.lower().endswith(e)), path.suffix)
    atomic_write(path, ext, lambda tmp: _sitk_write(img, tmp, compress))


def write_images(pairs: list[tuple[sitk.Image | Crop, Path]], level: int = DEFAULT_LEVEL, threads: int = 2) -> None:
    """Write several images or crops (e.g. the crops of one case) in ``threads`` threads (the deflate
    releases the GIL). Every write ends before the first error, if any, is raised; files already
    written stay (the caller removes them, as for one write)."""
    if threads <= 1 or len(pairs) <= 1:
        for src, path in pairs:
            save_image(src, path, level)
        return
    # the voxel views (and every crop's slice) are taken here, in one thread: see _Voxels
    jobs = [(_Voxels.of(src) if is_nifti(path) and _fast_path(_owner(src)) else
             src.image_crop() if isinstance(src, Crop) else src, path) for src, path in pairs]
    with ThreadPoolExecutor(min(threads, len(jobs))) as pool:
        futures = [pool.submit(save_image, src, path, level) for src, path in jobs]
    for fut in futures:
        fut.result()
