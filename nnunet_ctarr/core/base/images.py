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

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .cases import dicom_series
from .errors import CTARRError
from .geometry import Geometry
from .integrity import check_complete
from .nifti import DEFAULT_LEVEL, save_image


def read_image(path: str | Path) -> sitk.Image:
    """Read a 3D image from a file (NIfTI, NRRD, MHA/MHD) or a DICOM folder.

    A DICOM folder with several series yields the series with the most slices.
    Raises :class:`CTARRError` with a one-line message on any problem.
    """
    path = Path(path)
    if not path.exists():
        raise CTARRError(f"input not found: {path}")
    try:
        if path.is_dir():
            series = dicom_series(path)
            if not series:
                raise CTARRError(f"{path} is a folder without a DICOM series")
            reader = sitk.ImageSeriesReader()
            files = max((reader.GetGDCMSeriesFileNames(str(path), s) for s in series), key=len)
            reader.SetFileNames(files)
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(path))
            check_complete(path, img)
    except CTARRError:
        raise
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln for ln in first if ln.strip()), "unreadable")
        raise CTARRError(f"cannot read {path}: not a readable image ({detail[:120]})") from None
    if img.GetDimension() != 3:
        raise CTARRError(f"{path}: expected a 3D image, got {img.GetDimension()}D")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CTARRError(f"{path}: expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components "
                         "per voxel")
    if min(img.GetSize()) < 2:
        raise CTARRError(f"{path}: image of size {img.GetSize()} is 2D (a single slice); CTARR needs a 3D volume")
    return img


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


def match_label_to_image(label: sitk.Image, image: sitk.Image, name: str = "label map") -> sitk.Image:
    """Return ``label`` on the grid of ``image``, matched in world coordinates.

    Identical grids are returned unchanged; grids that cover the same world extent (e.g. the
    same voxels stored with a flipped axis) are resampled with nearest neighbour, which is
    exact for them. Grids that do not cover the image raise :class:`CTARRError`.
    """
    lg, ig = Geometry.of(label), Geometry.of(image)
    if lg.same_grid(ig):
        return label
    _, cover = lg.overlap(ig)
    if cover < 0.9:
        raise CTARRError(f"{name} does not match the image in world space: it covers {100 * cover:.0f}% of the "
                         f"image (label {lg.describe()}, image {ig.describe()})")
    return sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def write_image(img: sitk.Image, path: str | Path, compress: bool = True, level: int = DEFAULT_LEVEL) -> None:
    """Write atomically (a temporary file in the same folder is renamed into place), with the
    permissions of the user's umask. NIfTI (``.nii.gz`` at ISA-L ``level`` 0-3, ``.nii``
    uncompressed) by :mod:`.nifti`, other formats by SimpleITK (``compress``: its own compression)."""
    save_image(img, path, level, compress)
