"""DICOM series in world coordinates: every slice where its ImagePositionPatient puts it.

SimpleITK builds a series' grid from the first slice's position, the slice normal of
ImageOrientationPatient and the distance between two slices. For a gantry-tilted series (the slices
are stepped along the table, not along their normal) that grid is wrong by ``step * sin(tilt)`` per
slice (0.5 mm per 2 mm slice at 15°), and for a series with missing slices the grid is wrong beyond
the gap. :func:`read_dicom_folder` compares the grid with every slice's stored position: a tilted
series gets its true, sheared grid (the caller resamples it onto an orthogonal one, see
``images.read_image``); unevenly spaced slices are refused with one line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .cases import dicom_series_files
from .errors import CTARRError

POSITION = "0020|0032"          # ImagePositionPatient
UNEVEN_TOLERANCE = 0.1          # share of the mean slice step two neighbouring slices may deviate by


def read_dicom_folder(folder: Path) -> sitk.Image:
    """The series with the most slices in ``folder``, on the grid its slice positions define
    (a sheared grid for a gantry-tilted series). Raises RuntimeError as SimpleITK does."""
    files = dicom_series_files(folder)          # the one place that picks the series and its slice order
    if not files:
        raise CTARRError(f"{folder} is a folder without a DICOM series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    img = reader.Execute()
    positions = _slice_positions(reader, len(files))
    if positions is None or img.GetDimension() != 3 or img.GetSize()[2] != len(files) or len(files) < 2:
        return img                                  # no per-slice positions (or multi-frame files): as read
    return place_slices(img, positions, folder)


def _slice_positions(reader: sitk.ImageSeriesReader, n: int) -> np.ndarray | None:
    """(n, 3) ImagePositionPatient of each file read, or None when a file lacks it."""
    out = []
    for k in range(n):
        if not reader.HasMetaDataKey(k, POSITION):
            return None
        try:
            xyz = [float(v) for v in reader.GetMetaData(k, POSITION).strip().split("\\")]
        except ValueError:
            return None
        if len(xyz) != 3 or not np.all(np.isfinite(xyz)):
            return None
        out.append(xyz)
    return np.array(out)


def place_slices(img: sitk.Image, positions: np.ndarray, folder: Path) -> sitk.Image:
    """``img`` with the grid its slice ``positions`` (world mm, one per slice, in order) define:
    unchanged when SimpleITK's grid already puts every slice there (within 0.05 voxel); the
    sheared grid of a gantry tilt otherwise. Refuses slices that are not evenly spaced."""
    steps = np.diff(positions, axis=0)
    mean = (positions[-1] - positions[0]) / (len(positions) - 1)
    step = float(np.linalg.norm(mean))
    if step < 1e-6:
        raise CTARRError(f"{folder}: all {len(positions)} slices of the series lie at the same position; "
                         "CTARR needs a 3-D volume")
    lengths = np.linalg.norm(steps, axis=1)
    if np.abs(steps - mean).max() > UNEVEN_TOLERANCE * step + 0.01:
        raise CTARRError(f"{folder}: the slices are unevenly spaced ({lengths.min():.2f} to {lengths.max():.2f} mm "
                         "apart; missing or duplicate slices?); CTARR needs a regular grid (resample the series)")
    d = np.array(img.GetDirection()).reshape(3, 3)
    sp = np.array(img.GetSpacing())
    grid = np.array([img.TransformIndexToPhysicalPoint((0, 0, k)) for k in (0, len(positions) - 1)])
    miss = max(np.abs(grid[0] - positions[0]).max(), np.abs(grid[1] - positions[-1]).max())
    if miss <= 0.05 * sp.min():
        return img
    d[:, 2] = mean / step
    img.SetDirection(tuple(d.ravel()))
    img.SetSpacing((sp[0], sp[1], step))
    img.SetOrigin(tuple(positions[0]))
    return img
