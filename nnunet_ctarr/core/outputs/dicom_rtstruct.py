"""RTSTRUCT of a label map on a DICOM series (pydicom + scikit-image; no rt-utils).

Per label and slice, contours are traced along the pixel edges (marching squares at level 0.5 on
the binary mask): every foreground pixel centre lies inside its contour, every background centre
outside, so filling the contours at the pixel centres (even-odd rule) gives the mask back exactly.
Holes are separate contours (the even-odd / XOR convention of treatment planning systems). Pixel
(row, column) positions become patient mm with the slice's *own* ImagePositionPatient and
ImageOrientationPatient (PixelSpacing = [between rows, between columns]), so flipped axes and
gantry tilt are written where the pixels are (contract: :mod:`.dicom_series`).
"""
from __future__ import annotations

import datetime

import numpy as np

from .dicom_series import Algorithm, DicomSeries, Segment

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: the Referenced SOP Class of RTReferencedStudySequence that treatment planning systems write
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                  "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def mask_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed rings (n, 2) of (row, column) pixel coordinates around the foreground of a 2-D mask
    (pixel-edge midpoints; foreground 4-connected), exactly collinear points removed."""
    from skimage.measure import find_contours
    out = []
    for ring in find_contours(np.pad(mask2d.astype(np.uint8), 1), 0.5):
        ring = ring[:-1] - 1.0                       # open the ring, undo the padding
        d_prev, d_next = ring - np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0) - ring
        ring = ring[np.abs(d_prev[:, 0] * d_next[:, 1] - d_prev[:, 1] * d_next[:, 0]) > 1e-9]
        if len(ring) >= 3:
            out.append(ring)
    return out


def _item(**kw):
    from pydicom.dataset import Dataset
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _image_ref(h):
    return _item(ReferencedSOPClassUID=h.SOPClassUID, ReferencedSOPInstanceUID=h.SOPInstanceUID)


def _base_dataset(series: DicomSeries, algorithm: Algorithm):
    """The RTSTRUCT without ROIs: patient and study of the source, a new series, the referenced
    frame of reference, study, series and every slice."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
    ref = series.headers[0]
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTSTRUCT_SOP_CLASS, generate_uid()
    meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = ref.get("SpecificCharacterSet", "ISO_IR 100")
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    for kw in _PATIENT_STUDY:
        setattr(ds, kw, ref.get(kw, ""))
    if "StudyDescription" in ref:
        ds.StudyDescription = ref.StudyDescription
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), 902
    ds.SeriesDescription = f"{algorithm.description} structures"[:64]
    ds.SeriesDate, ds.SeriesTime, ds.OperatorsName = date, time, ""
    ds.Manufacturer, ds.ManufacturerModelName = algorithm.name, (algorithm.model or algorithm.name)[:64]
    ds.SoftwareVersions = algorithm.version or "0"
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = "AUTO_SEG", date, time
    ds.ApprovalStatus = "UNAPPROVED"
    rt_series = _item(SeriesInstanceUID=ref.SeriesInstanceUID,
                      ContourImageSequence=Sequence([_image_ref(h) for h in series.headers]))
    rt_study = _item(ReferencedSOPClassUID=STUDY_COMPONENT_MANAGEMENT, ReferencedSOPInstanceUID=ref.StudyInstanceUID,
                     RTReferencedSeriesSequence=Sequence([rt_series]))
    ds.ReferencedFrameOfReferenceSequence = Sequence([_item(FrameOfReferenceUID=ref.FrameOfReferenceUID,
                                                            RTReferencedStudySequence=Sequence([rt_study]))])
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = Sequence(), Sequence(), Sequence()
    return ds


def _contours(mask_zyx: np.ndarray, series: DicomSeries) -> list:
    """ContourSequence items of one label: CLOSED_PLANAR rings in patient mm, each referencing
    the slice it lies on."""
    items = []
    for k in np.nonzero(mask_zyx.any(axis=(1, 2)))[0]:
        m = mask_zyx[k]
        rr, cc = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        r0, c0 = int(rr[0]), int(cc[0])              # bounding box of the slice's mask (speed)
        for ring in mask_contours(m[r0:rr[-1] + 1, c0:cc[-1] + 1]):
            xyz = series.pixel_to_world(int(k), ring + np.array([r0, c0], float))
            items.append(_item(ContourImageSequence=[_image_ref(series.headers[k])],
                               ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(xyz),
                               ContourNumber=len(items) + 1, ContourData=[f"{v:.4f}" for v in xyz.ravel()]))
    return items


def rtstruct_dataset(label_zyx: np.ndarray, series: DicomSeries, segments: list[Segment], algorithm: Algorithm):
    """The RTSTRUCT dataset: one ROI per segment (an ROI without voxels has no ContourSequence)."""
    from pydicom.sequence import Sequence
    ds = _base_dataset(series, algorithm)
    for s in segments:
        ds.StructureSetROISequence.append(_item(
            ROINumber=s.number, ReferencedFrameOfReferenceUID=series.headers[0].FrameOfReferenceUID,
            ROIName=s.name[:64], ROIGenerationAlgorithm="AUTOMATIC",
            ROIGenerationDescription=algorithm.description[:64]))
        roi = _item(ReferencedROINumber=s.number, ROIDisplayColor=list(s.rgb))
        contours = _contours(label_zyx == s.value, series)
        if contours:
            roi.ContourSequence = Sequence(contours)
        ds.ROIContourSequence.append(roi)
        ds.RTROIObservationsSequence.append(_item(ObservationNumber=s.number, ReferencedROINumber=s.number,
                                                  RTROIInterpretedType="ORGAN", ROIInterpreter=""))
    return ds
