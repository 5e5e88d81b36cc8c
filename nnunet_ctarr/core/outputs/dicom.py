"""DICOM SEG and RTSTRUCT outputs of a label map predicted on a DICOM CT series.

:func:`write_dicom` writes a label map (z, y, x) on the series' SimpleITK grid (the contract is in
:mod:`.dicom_series`) as a BINARY DICOM SEG (highdicom) or an RTSTRUCT (:mod:`.dicom_rtstruct`,
pydicom + scikit-image contours along the pixel edges). Both reference the source study, series,
frame of reference and every slice by UID; segment/ROI numbers are 1..N over the labels in
ascending value order (the same for every case), named by the labels, coloured by a fixed palette
indexed by label value. highdicom and pydicom are imported inside the functions (the ``[dicom]``
extra); importing this module stays light.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.errors import CTARRError
from ..base.files import atomic_write
from .dicom_series import Algorithm, DicomSeries, Segment

#: the values of ``-output_type``: file name suffix of each DICOM kind (``nifti`` writes none)
DICOM_KINDS = {"dicom_seg": "_seg.dcm", "dicom_rtstruct": "_rtstruct.dcm"}

#: 20 well-separated RGB colours; label value v gets PALETTE[(v - 1) % 20], in every case
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


@dataclass
class DicomResult:
    """What :func:`write_dicom` wrote."""
    path: Path
    kind: str
    segments: list[Segment]
    empty: list[str] = field(default_factory=list)    # labels without any voxel (described, no pixels)
    tilt_deg: float = 0.0


def segment_table(labels: Mapping[int, str]) -> list[Segment]:
    """``{value: name}`` (background 0 excluded) -> segments numbered 1..N by ascending value."""
    items = sorted((int(v), str(n)) for v, n in labels.items() if int(v) != 0)
    if not items:
        raise CTARRError("no foreground labels to write (a DICOM SEG/RTSTRUCT needs at least one)")
    if any(v < 0 for v, _ in items):
        raise CTARRError(f"label values must be positive; got {[v for v, _ in items if v < 0]}")
    names = [n for _, n in items]
    if len(set(names)) != len(names):
        raise CTARRError(f"label names must be unique; got {names}")
    return [Segment(i, v, n, PALETTE[(v - 1) % len(PALETTE)]) for i, (v, n) in enumerate(items, start=1)]


def write_dicom(kind: str, label_zyx: np.ndarray, series: DicomSeries | Sequence[str | os.PathLike],
                labels: Mapping[int, str], out_path: str | os.PathLike, algorithm: Algorithm) -> DicomResult:
    """Write ``label_zyx`` (on the SimpleITK grid of the series, in the order of its files) as
    ``kind`` (``dicom_seg`` or ``dicom_rtstruct``) to ``out_path``; ``series`` is a read
    :class:`DicomSeries` or its files. Every label of ``labels`` is described, labels without voxels
    included (so numbers match across cases); voxel values not in ``labels`` are written as
    background. One :class:`CTARRError` for every bad input."""
    if kind not in DICOM_KINDS:
        raise CTARRError(f"unknown DICOM output type {kind!r}; choose one of {', '.join(DICOM_KINDS)}")
    require_dicom_packages()
    series = series if isinstance(series, DicomSeries) else DicomSeries.read(series)
    series.check_label_map(label_zyx)
    segments = segment_table(labels)
    present = set(np.unique(label_zyx).tolist())
    empty = [s.name for s in segments if s.value not in present]
    if kind == "dicom_seg":
        ds = seg_dataset(label_zyx, series, segments, algorithm)
    else:
        from .dicom_rtstruct import rtstruct_dataset
        ds = rtstruct_dataset(label_zyx, series, segments, algorithm)
    path = Path(out_path)
    atomic_write(path, ".dcm", lambda tmp: ds.save_as(tmp, enforce_file_format=True))
    return DicomResult(path, kind, segments, empty, series.tilt_deg)


def require_dicom_packages() -> None:
    """highdicom (and with it pydicom) installed, else one line saying how to install them."""
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError as e:
        raise CTARRError(f"DICOM outputs need highdicom and pydicom ({e.msg}): "
                         "pip install 'nnunet-ctarr[dicom]'") from None


def _property_type(name: str):
    """SNOMED CT code of a structure name from pydicom's code dictionary (``liver`` -> Liver,
    ``kidney_left`` -> Kidney with the laterality modifier Left); (AnatomicalStructure, None) else."""
    from pydicom.sr.codedict import codes
    words = [w.capitalize() for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    code = getattr(codes.SCT, "".join(words), None) if words not in (["Left"], ["Right"]) else None
    if code is not None:
        return code, None
    side = next((w for w in words if w in ("Left", "Right")), None)
    code = getattr(codes.SCT, "".join(w for w in words if w != side), None) if side and len(words) > 1 else None
    return (code, getattr(codes.SCT, side)) if code is not None else (codes.SCT.AnatomicalStructure, None)


def _segment_description(s: Segment, algo):
    import highdicom as hd
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.sr.codedict import codes
    ptype, side = _property_type(s.name)
    desc = hd.seg.SegmentDescription(
        segment_number=s.number, segment_label=s.name[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure, segmented_property_type=ptype,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
        display_color=hd.color.CIELabColor.from_rgb(*s.rgb))
    if side is not None:
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = DicomSequence(
            [hd.sr.CodedConcept.from_code(side)])
    return desc


def seg_dataset(label_zyx: np.ndarray, series: DicomSeries, segments: list[Segment], algorithm: Algorithm):
    """A BINARY DICOM SEG (highdicom): frame k of the label map is paired with slice k of the
    series (highdicom takes each frame's position from its own source slice); empty frames are
    left out. Frames are not stored in slice order: readers place them by reference/position."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    lut = np.zeros(max(int(label_zyx.max()), max(s.value for s in segments)) + 1, np.uint16)
    for s in segments:
        lut[s.value] = s.number
    seg_arr = lut[np.maximum(label_zyx, 0)].astype(np.uint8 if len(segments) < 256 else np.uint16)
    planes = None
    if not seg_arr.any():   # nothing to omit: one empty frame per segment, on slice 0, instead of all slices
        seg_arr = seg_arr[:1]
        planes = [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, series.ipp[0].tolist())]
    algo = hd.AlgorithmIdentificationSequence(name=algorithm.name, version=algorithm.version or "0",
                                              family=codes.DCM.ArtificialIntelligence,
                                              source=algorithm.model or None)
    return hd.seg.Segmentation(
        source_images=series.headers, pixel_array=seg_arr,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, plane_positions=planes,
        segment_descriptions=[_segment_description(s, algo) for s in segments],
        series_instance_uid=hd.UID(), series_number=901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=algorithm.name, manufacturer_model_name=(algorithm.model or algorithm.name)[:64],
        software_versions=algorithm.version or "0", device_serial_number="0",
        content_description="automatic segmentation", content_label="SEGMENTATION",
        series_description=f"{algorithm.description} segmentation"[:64], omit_empty_frames=planes is None)
