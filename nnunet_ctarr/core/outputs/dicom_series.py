"""The source DICOM series of a DICOM SEG / RTSTRUCT: headers, per-slice geometry, checks.

Contract shared by the DICOM writers (:mod:`.dicom`, :mod:`.dicom_rtstruct`): ``files`` are the
slice files in SimpleITK's order (:func:`core.base.cases.dicom_series_files`) and a label map
``label_zyx`` is ``sitk.GetArrayFromImage`` of a label image on that series' SimpleITK grid, so
``label_zyx[k, r, c]`` is pixel (row ``r``, column ``c``) of ``files[k]``. SimpleITK never
reorders rows or columns inside a slice; it only sorts the slices along their normal. Every
written position therefore comes from the slice's own ImagePositionPatient and
ImageOrientationPatient: no flip, transpose or rot90, whatever the orientation, and a
gantry-tilted series is written where its pixels are.

pydicom is imported inside the functions: importing this module stays light.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..base.errors import CTARRError
from ..base.geometry import Geometry

logger = logging.getLogger("nnunet_ctarr")

#: UIDs a SEG / RTSTRUCT needs from every source slice to reference it
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID", "SOPClassUID")
#: a series whose slice steps leave the slice normal by more than this is gantry-tilted
TILT_TOLERANCE_DEG = 0.5


def _text(ds, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def read_headers(files: Sequence[str | os.PathLike]) -> list:
    """pydicom headers of ``files`` (no pixel data). SOP Class/Instance UIDs left empty in the
    dataset by an anonymiser are taken from the file meta header (Part 10's identity of the stored
    instance); any other missing UID is a :class:`CTARRError`: a SEG or RTSTRUCT references its
    source by these UIDs, and invented ones would point at nothing in the PACS."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    headers = []
    for f in files:
        try:
            headers.append(pydicom.dcmread(os.fspath(f), stop_before_pixels=True))
        except (OSError, InvalidDicomError) as e:
            raise CTARRError(f"cannot read the DICOM header of {f}: {e}") from None
    _require_uids(headers, REQUIRED_UIDS[:3])
    filled = 0
    for h in headers:
        for kw in ("SOPClassUID", "SOPInstanceUID"):
            meta = getattr(h, "file_meta", None)
            if not _text(h, kw) and meta is not None and _text(meta, "MediaStorage" + kw):
                setattr(h, kw, _text(meta, "MediaStorage" + kw))
                filled += 1
    _require_uids(headers, REQUIRED_UIDS[3:])
    if filled:
        logger.warning(f"{filled} empty SOP Class/Instance UID(s) of the source slices taken from the file meta "
                       "headers")
    return headers


def _require_uids(headers: list, keywords) -> None:
    for kw in keywords:
        n_bad = sum(not _text(h, kw) for h in headers)
        if n_bad:
            raise CTARRError(f"{kw} is empty or missing in {n_bad} of {len(headers)} slice(s) (anonymised without "
                             "UIDs?); a DICOM SEG/RTSTRUCT references its source series by UID, so none can be written")


@dataclass
class DicomSeries:
    """A single-frame series as the writers need it: the files, their headers and the geometry of
    every slice (patient mm, LPS). ``row_cos`` is the direction of increasing column index,
    ``col_cos`` that of increasing row index (DICOM's ImageOrientationPatient order)."""
    files: list[str]
    headers: list
    rows: int
    cols: int
    ipp: np.ndarray                      # (n, 3) ImagePositionPatient of every slice
    row_cos: np.ndarray
    col_cos: np.ndarray
    spacing_rc: tuple[float, float]      # PixelSpacing: (between rows, between columns)
    tilt_deg: float                      # angle between the slice step and the normal (gantry tilt)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cos, self.col_cos)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return len(self.files), self.rows, self.cols

    @classmethod
    def read(cls, files: Sequence[str | os.PathLike]) -> DicomSeries:
        """Read and check the headers of one series (one :class:`CTARRError` per problem)."""
        if not files:
            raise CTARRError("no DICOM files given")
        headers = read_headers(files)
        _check_one_series(headers)
        iop = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
        if not np.allclose(iop, iop[0], atol=1e-4):
            raise CTARRError("ImageOrientationPatient differs between the slices (a mixed or reformatted series)")
        ps = np.array([[float(v) for v in h.PixelSpacing] for h in headers])
        if not np.allclose(ps, ps[0], rtol=1e-5):
            raise CTARRError("PixelSpacing differs between the slices")
        row_cos, col_cos = (v / np.linalg.norm(v) for v in (iop[0, :3], iop[0, 3:]))
        if abs(float(row_cos @ col_cos)) > 1e-3:
            raise CTARRError("ImageOrientationPatient: the row and column directions are not orthogonal")
        ipp = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
        pos = ipp @ np.cross(row_cos, col_cos)
        if len(pos) > 1 and np.min(np.abs(np.diff(np.sort(pos)))) < 1e-3:
            raise CTARRError("two slices of the series share one position (duplicate files or several acquisitions)")
        series = cls([os.fspath(f) for f in files], headers, int(headers[0].Rows), int(headers[0].Columns), ipp,
                     row_cos, col_cos, (float(ps[0, 0]), float(ps[0, 1])), _tilt_deg(ipp, np.cross(row_cos, col_cos)))
        if series.tilt_deg > TILT_TOLERANCE_DEG:
            logger.warning(f"gantry-tilted series ({series.tilt_deg:.1f} deg): the DICOM objects place every slice at "
                           "its own position; SimpleITK's grid (NIfTI outputs, world-space steps) ignores the tilt")
        return series

    def pixel_to_world(self, k: int, rc: np.ndarray) -> np.ndarray:
        """(n, 2) continuous (row, column) pixel coordinates on slice ``k`` -> (n, 3) patient mm."""
        rc = np.asarray(rc, float)
        return (self.ipp[k][None, :] + rc[:, 1:2] * self.spacing_rc[1] * self.row_cos[None, :]
                + rc[:, 0:1] * self.spacing_rc[0] * self.col_cos[None, :])

    def check_label_map(self, label_zyx: np.ndarray) -> None:
        """A label map must be an integer (z, y, x) array of exactly this series' shape."""
        if label_zyx.ndim != 3 or tuple(label_zyx.shape) != self.shape_zyx:
            raise CTARRError(f"label map of shape {tuple(label_zyx.shape)} does not match the DICOM series "
                             f"({self.shape_zyx[0]} slices x {self.rows} rows x {self.cols} columns): it must be "
                             "(z, y, x) on the SimpleITK grid of exactly these files")
        if not np.issubdtype(label_zyx.dtype, np.integer):
            raise CTARRError(f"label map must hold integers; got {label_zyx.dtype}")

    def check_grid(self, grid: Geometry, name: str) -> None:
        """``grid`` (a prediction's SimpleITK geometry) must be this series' SimpleITK grid with its
        z axis in the order of :attr:`files`: same size, first slice at ``ipp[0]``, in-plane axes
        along the rows and columns, slices ordered along the grid's z axis."""
        d = np.asarray(grid.direction).reshape(3, 3)
        ok = (tuple(grid.size_xyz) == (self.cols, self.rows, len(self.files))
              and np.allclose(grid.origin_xyz, self.ipp[0], atol=0.01)
              and np.allclose(d[:, 0], self.row_cos, atol=1e-3) and np.allclose(d[:, 1], self.col_cos, atol=1e-3)
              and np.allclose(grid.spacing_xyz[:2], self.spacing_rc[::-1], rtol=1e-4)
              and (len(self.files) < 2 or bool(np.all(np.diff(self.ipp @ d[:, 2]) > 0))))
        if not ok:
            raise CTARRError(f"{name} is not on the grid of its DICOM series (size {grid.size_xyz}, origin "
                             f"{np.round(grid.origin_xyz, 2).tolist()}; series: {self.cols}x{self.rows}x"
                             f"{len(self.files)}, first slice at {np.round(self.ipp[0], 2).tolist()})")


def _check_one_series(headers: list) -> None:
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        n_bad = sum(kw not in h for h in headers)
        if n_bad:
            raise CTARRError(f"{kw} is missing in {n_bad} of {len(headers)} slice(s)")
    for kw in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        values = {_text(h, kw) for h in headers}
        if len(values) != 1:
            raise CTARRError(f"the files belong to {len(values)} different {kw}s; give one series")
    if len({(int(h.Rows), int(h.Columns)) for h in headers}) != 1:
        raise CTARRError("the slices have different Rows/Columns")
    if any(int(h.get("NumberOfFrames", 1) or 1) != 1 for h in headers):
        raise CTARRError("multi-frame source images are not supported (one frame per file is)")
    if len({_text(h, "SOPInstanceUID") for h in headers}) != len(headers):
        raise CTARRError("two files of the series share one SOPInstanceUID")


def _tilt_deg(ipp: np.ndarray, normal: np.ndarray) -> float:
    """Largest angle between a slice-to-slice step and the slice normal (0 for one slice)."""
    if len(ipp) < 2:
        return 0.0
    steps = np.diff(ipp, axis=0)
    cos = np.abs(steps @ normal) / np.maximum(np.linalg.norm(steps, axis=1), 1e-9)
    return float(np.degrees(np.arccos(np.clip(cos.min(), 0.0, 1.0))))


@dataclass(frozen=True)
class Segment:
    """One label of the label map as a SEG segment / RTSTRUCT ROI."""
    number: int                          # segment / ROI number, 1..N
    value: int                           # voxel value in the label map
    name: str
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Algorithm:
    """Who made the segmentation (SEG AlgorithmIdentification, RTSTRUCT generation description)."""
    name: str = "nnunet-ctarr"
    version: str = ""
    model: str = ""                      # e.g. the nnU-Net model folder's dataset name

    @property
    def description(self) -> str:
        return " ".join(x for x in (self.name, self.version, self.model) if x)
