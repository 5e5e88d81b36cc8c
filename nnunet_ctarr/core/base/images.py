"""Reading and writing images with exact geometry.

Conventions used throughout the package:

* World coordinates are SimpleITK/DICOM physical coordinates in mm, **LPS**
  (+x = patient left, +y = posterior, +z = superior).
* The *canonical frame* is the voxel order that makes the direction matrix (closest to)
  the identity, i.e. ``sitk.DICOMOrient(img, "LPS")``. Registration works on canonical
  images; numpy arrays of canonical images are indexed ``[z, y, x]``.
* Index boxes are half-open and given in SimpleITK ``(x, y, z)`` order.
* Crops are always taken from the image *as stored* (no reorientation, no interpolation),
  so every written crop overlays its source exactly.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicom import read_dicom_folder
from .errors import CTARRError, WarningLog, itk_message
from .geometry import Geometry
from .integrity import check_complete
from .nifti import DEFAULT_LEVEL, save_image

MIN_SLICES = 3          # voxels along every axis below which an image is not a usable 3-D volume
MAX_SHEAR_DEG = 45      # a sheared grid beyond this is an error, not resampled (gantry tilts are <= 30°)


def read_image(path: str | Path, label: bool = False, warnings: WarningLog | None = None) -> sitk.Image:
    """Read a 3D image from a file (NIfTI, NRRD, MHA/MHD) or a DICOM folder, in world coordinates.

    A DICOM folder with several series yields the series with the most slices. A 4-D file whose
    extra axes are 1 long reads as 3-D. A sheared grid (a gantry-tilted DICOM series, a NIfTI sform
    or NRRD with non-orthogonal axes) is resampled onto an orthogonal grid, linear for images and
    nearest-neighbour for ``label`` maps, with a warning. Raises :class:`CTARRError` with a one-line
    message on any problem (unreadable, incomplete, 2-D, 4-D, vector, < 3 voxels along an axis,
    unevenly spaced DICOM slices, a singular direction).
    """
    path = Path(path)
    if not path.exists():
        raise CTARRError(f"input not found: {path}")
    try:
        if path.is_dir():
            img = read_dicom_folder(path)
        else:
            check_complete(path)
            img = _read_file(path)
    except CTARRError:
        raise
    except (RuntimeError, OSError, ValueError, EOFError, zlib.error) as e:
        raise CTARRError(f"cannot read {path}: not a readable image ({itk_message(e)})") from None
    img = _as_3d_scalar(img, path)
    return _orthogonal(img, path, label, warnings if warnings is not None else WarningLog())


def read_geometry(path: str | Path, keep_shear: bool = False) -> Geometry | None:
    """The grid :func:`read_image` would give an image file, from its header alone (the file's
    completeness is checked, its voxels are not read); None when only reading the voxels can tell
    (a DICOM folder, a 4-D file, a sheared grid that would be resampled, a header SimpleITK refuses).
    ``keep_shear``: a sheared grid as stored (the grid nnU-Net's reader predicts on)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        check_complete(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
    except CTARRError:
        raise
    except (RuntimeError, OSError, ValueError, EOFError, zlib.error):
        return None                                          # read_image gives the one-line error
    size = reader.GetSize()
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1 or min(size) < MIN_SLICES:
        return None
    _, _, corners, sheared = _grid_frame(size, reader.GetSpacing(), reader.GetDirection(), reader.GetOrigin(), path)
    if not keep_shear and np.abs(sheared - corners).max() > 0.05:
        return None
    return Geometry(size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def _read_file(path: Path) -> sitk.Image:
    """SimpleITK's reading of an image file; a NIfTI whose sform is sheared (which SimpleITK refuses)
    is read with nibabel instead."""
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        if "orthonormal" not in str(e) or not path.name.lower().endswith((".nii", ".nii.gz")):
            raise
    import nibabel
    try:
        nii = nibabel.load(str(path))
        arr = np.asanyarray(nii.dataobj)
    except Exception as e:                                  # nibabel's errors on a damaged file vary
        raise CTARRError(f"cannot read {path}: not a readable image ({str(e)[:120]})") from None
    if arr.dtype == np.float64 and nii.get_data_dtype() != np.float64:
        arr = arr.astype(np.float32)                         # scaled integers, as SimpleITK reads them
    arr = arr.reshape(arr.shape[:3]) if arr.ndim > 3 and all(d == 1 for d in arr.shape[3:]) else arr
    if arr.ndim != 3:
        raise CTARRError(f"{path}: expected a 3D image, got an array of shape {arr.shape}")
    m = np.diag([-1.0, -1.0, 1.0]) @ nii.affine[:3, :4]    # RAS -> LPS
    spacing = np.linalg.norm(m[:, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.T))
    img.SetSpacing(tuple(float(v) for v in spacing))
    img.SetOrigin(tuple(float(v) for v in m[:, 3]))
    img.SetDirection(tuple(float(v) for v in (m[:, :3] / spacing).ravel()))
    return img


def _as_3d_scalar(img: sitk.Image, path: Path) -> sitk.Image:
    """``img`` as a 3-D scalar volume (extra axes of length 1 dropped), or a one-line refusal."""
    size = img.GetSize()
    if img.GetDimension() > 3 and all(n == 1 for n in size[3:]):
        img = sitk.Extract(img, [*size[:3], *([0] * (len(size) - 3))], [0] * len(size))
    elif img.GetDimension() > 3:
        raise CTARRError(f"{path}: expected a 3D image, got a {img.GetDimension()}D image of size {list(size)} "
                         "(a time series or several channels?); give one 3-D volume")
    if img.GetDimension() != 3:
        raise CTARRError(f"{path}: expected a 3D image, got {img.GetDimension()}D of size {list(size)}")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CTARRError(f"{path}: expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components "
                         "per voxel (a colour or vector image); give a single-channel CT")
    small = [f"{n} voxel(s) along {ax}" for n, ax in zip(img.GetSize(), "xyz") if n < MIN_SLICES]
    if small:
        what = "a single slice, 2D" if min(img.GetSize()) == 1 else "too thin"
        raise CTARRError(f"{path}: image of size {img.GetSize()} is {what} (only {', '.join(small)}); "
                         f"CTARR needs a 3-D volume of at least {MIN_SLICES} voxels along each axis")
    return img


def _grid_frame(size, spacing, direction, origin, path: Path) -> tuple[np.ndarray, ...]:
    """The orthogonal frame of a grid (one-line refusal of an invalid or singular one): its rotation
    ``q``, its spacing, the corner indices, and where the corners fall in its index (equal: not sheared)."""
    spacing, direction, origin = (np.array(v, float) for v in (spacing, direction, origin))
    if not (np.isfinite(spacing).all() and np.isfinite(direction).all() and np.isfinite(origin).all()) \
            or spacing.min() <= 0:
        raise CTARRError(f"{path}: the header holds an invalid grid (spacing {spacing.tolist()}, origin "
                         f"{origin.tolist()}); fix the file's geometry")
    m = direction.reshape(3, 3) * spacing                   # index (x, y, z) -> world offset
    if abs(np.linalg.det(m / spacing)) < 1e-3:
        raise CTARRError(f"{path}: the direction matrix is singular ({np.round(direction, 3).tolist()}); fix the "
                         "file's geometry")
    q, r = np.linalg.qr(m)
    q, r = q * np.sign(np.diag(r)), r * np.sign(np.diag(r))[:, None]
    new_spacing = np.diag(r).copy()
    corners = np.array([[x, y, z] for x in (0, size[0] - 1) for y in (0, size[1] - 1) for z in (0, size[2] - 1)],
                       float)
    return q, new_spacing, corners, corners @ (r / new_spacing[:, None]).T


def _orthogonal(img: sitk.Image, path: Path, label: bool, warnings: WarningLog) -> sitk.Image:
    """``img`` on an orthogonal grid: as is when it is one (to 0.05 voxel over the whole image),
    else resampled onto the orthogonal grid that keeps its first axis and first plane and covers it."""
    spacing, origin = np.array(img.GetSpacing(), float), np.array(img.GetOrigin(), float)
    q, new_spacing, corners, sheared = _grid_frame(img.GetSize(), spacing, img.GetDirection(), origin, path)
    if np.abs(sheared - corners).max() <= 0.05:
        return img
    angle = max(np.degrees(np.arccos(np.clip(new_spacing[i] / spacing[i], -1, 1))) for i in range(3))
    if angle > MAX_SHEAR_DEG:
        raise CTARRError(f"{path}: the voxel axes are sheared by {angle:.0f}° (more than {MAX_SHEAR_DEG}°); "
                         "fix the file's geometry")
    lo, hi = np.floor(sheared.min(0) + 1e-6), np.ceil(sheared.max(0) - 1e-6)
    out_origin = origin + q @ (lo * new_spacing)
    fill = 0.0 if label else float(sitk.GetArrayViewFromImage(img).min())
    out = sitk.Resample(img, [int(v) for v in hi - lo + 1], sitk.Transform(),
                        sitk.sitkNearestNeighbor if label else sitk.sitkLinear, tuple(out_origin),
                        tuple(new_spacing), tuple(q.ravel()), fill, img.GetPixelID())
    warnings.warn(f"{path.name}: the voxel grid is sheared ({angle:.1f}° between an axis and the orthogonal frame, "
                  f"e.g. a gantry tilt); resampled onto an orthogonal grid "
                  f"({'nearest-neighbour' if label else 'linear'}, size {list(out.GetSize())})")
    return out


def check_ct_intensities(img: sitk.Image, name: str = "image") -> None:
    """Refuse images that are constant or do not look like CT in Hounsfield units."""
    arr = sitk.GetArrayViewFromImage(img)
    sub = arr[:: max(1, arr.shape[0] // 16), ::4, ::4]
    lo, hi = float(sub.min()), float(sub.max())
    if hi - lo < 1e-6:
        raise CTARRError(f"{name} is constant (all voxels {lo:g}); nothing to locate")
    p1, p99 = np.percentile(sub, [1, 99])
    if p1 > -300 or p99 < -200 or hi > 40000 or lo < -33000:
        raise CTARRError(
            f"{name} does not look like CT in Hounsfield units (1st/99th percentile {p1:.0f}/{p99:.0f}); "
            "rescale to HU (air about -1000) or pass --no_hu_check")


def canonical(img: sitk.Image) -> sitk.Image:
    """Reorder/flip voxel axes so the direction is (closest to) identity: LPS."""
    return sitk.DICOMOrient(img, "LPS")


def match_label_to_image(label: sitk.Image, image: sitk.Image, name: str = "label map",
                         warnings: WarningLog | None = None) -> sitk.Image:
    """Return ``label`` on the grid of ``image``, matched in world coordinates.

    Identical grids are returned unchanged; the same voxels stored in another axis order or sense
    are reordered exactly (nearest-neighbour resampling, exact for them); another grid that covers
    the image is resampled nearest-neighbour with a warning (thin structures may move by half a
    voxel). Grids that do not cover the image raise :class:`CTARRError`.
    """
    lg, ig = Geometry.of(label), Geometry.of(image)
    if lg.same_grid(ig):
        return label
    _, cover = lg.overlap(ig)
    if cover < 0.9:
        raise CTARRError(f"{name} does not match the image in world space: it covers {100 * cover:.0f}% of the "
                         f"image (label {lg.describe()}, image {ig.describe()})")
    if warnings is not None and not Geometry.of(canonical(label)).same_grid(Geometry.of(canonical(image))):
        warnings.warn(f"{name} is on another grid than the image ({lg.describe()}); resampled nearest-neighbour")
    return sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def write_image(img: sitk.Image, path: str | Path, compress: bool = True, level: int = DEFAULT_LEVEL) -> None:
    """Write atomically (a temporary file in the same folder is renamed into place), with the
    permissions of the user's umask: :func:`.nifti.save_image` (NIfTI deflated at ISA-L ``level`` 0-3,
    ``.nii`` uncompressed; other formats by SimpleITK, ``compress``: its own compression)."""
    save_image(img, path, level, compress)
