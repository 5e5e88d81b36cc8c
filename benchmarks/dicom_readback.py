"""Independent read-back of the DICOM SEG / RTSTRUCT outputs (docs/predict.md, "DICOM outputs").

    python benchmarks/dicom_readback.py [--out docs/dicom_output_check]

Readers that share nothing with the writers (pydicom + numpy, an own even-odd scan-line fill; no
highdicom, no scikit-image, nothing of nnunet_ctarr): a SEG frame is placed in world coordinates from the SEG's own
plane position and orientation and mapped onto the source slice whose plane holds it; an RTSTRUCT
contour is matched to the slice whose plane holds its points, taken into that plane (mm along the
slice's row and column directions), and the slice's pixel centres inside an odd number of its
contours are the mask. The slice's referenced UID
must agree with the one geometry picks.

Series: the bundled real CT series (20 slices, 512 x 512, JPEG 2000) with its UIDs repaired in a
copy (it ships anonymised with empty Study/Series UIDs), the same series stored with its column
direction flipped (rows mirrored, so SimpleITK also reverses the slices), and the same pixels with a
15 degree gantry tilt. The script writes every TotalSegmentator label of the series (31) plus a ring
with a hole as SEG and RTSTRUCT and prints the read-back per series (the tests use the same readers
on 8 labels: tests/test_dicom_output.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
TS = ROOT / "examples" / "data" / "totalseg_example"
DICOM = (TS / "example_ct_dicom", TS / "example_ct_dicom_totalseg_v2.nii.gz")
RING = 200  # label value of the synthetic ring (a hole in every slice it is on)


def series_files(folder: Path) -> list[str]:
    """SimpleITK's slice order of the (only) series in ``folder``: the index grid's z axis."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))


# ----------------------------------------------------------------------------- series variants
def _save(datasets, folder: Path) -> Path:
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    for i, ds in enumerate(datasets):
        ds.SeriesInstanceUID = series_uid
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"IM{i:04d}.dcm", enforce_file_format=True)
    return folder


def _repaired(files) -> list:
    """The bundled slices with a Study UID and their SOP UIDs (from the file meta) set."""
    study = generate_uid()
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        out.append(ds)
    return out


def _flip_columns(ds0, raw_yx: np.ndarray):
    """Same pixels in the world, stored with the row order reversed: IOP column direction negated."""
    ds = copy.deepcopy(ds0)
    iop = np.array(ds.ImageOrientationPatient, float)
    ipp = np.array(ds.ImagePositionPatient, float)
    ds.ImagePositionPatient = list(ipp + (ds.Rows - 1) * float(ds.PixelSpacing[0]) * iop[3:])
    ds.ImageOrientationPatient = list(np.r_[iop[:3], -iop[3:]])
    ds.PixelData = np.ascontiguousarray(raw_yx[::-1]).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    return ds


def _tilt(ds0, deg: float = 15.0):
    """Gantry tilt: the column direction leaves the axial plane, the slices still step along z."""
    ds = copy.deepcopy(ds0)
    t = np.radians(deg)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(np.sin(t))]
    ds.GantryDetectorTilt = deg
    ds.SOPInstanceUID = generate_uid()
    return ds


def make_variants(root: Path) -> dict[str, Path]:
    """``original`` (UIDs repaired), ``flipped`` and ``tilted`` copies of the bundled series under ``root``."""
    files = series_files(DICOM[0])
    base = _repaired(files)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(files))  # decoded once; the flipped copy stores it raw
    b = base[0]
    raw = (hu - float(b.RescaleIntercept)) / float(b.RescaleSlope)
    raw = raw.astype(np.int16 if b.PixelRepresentation else np.uint16)
    return {
        "original": _save([copy.deepcopy(d) for d in base], root / "original"),
        "flipped": _save([_flip_columns(d, r) for d, r in zip(base, raw)], root / "flipped"),
        "tilted": _save([_tilt(d) for d in base], root / "tilted"),
    }


def label_map(folder: Path, values) -> np.ndarray:
    """TotalSegmentator's map (``values`` kept) plus the ring, resampled (nearest, in world) onto
    the series' SimpleITK grid; (z, y, x) as sitk.GetArrayFromImage gives it."""
    ts = sitk.ReadImage(str(DICOM[1]))
    t = sitk.GetArrayFromImage(ts)
    t = np.where(np.isin(t, list(values)), t, 0).astype(np.uint8)
    zz, yy, xx = np.ogrid[: t.shape[0], : t.shape[1], : t.shape[2]]
    t[(zz >= 3) & (zz < 9) & (np.hypot(yy - 90, xx - 90) // 6 == 2) & (t == 0)] = RING
    ring = sitk.GetImageFromArray(t)
    ring.CopyInformation(ts)
    img = sitk.ReadImage(series_files(folder))
    return sitk.GetArrayFromImage(sitk.Resample(ring, img, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


# ----------------------------------------------------------------------------- independent readers
def _geometry(folder: Path) -> dict:
    hs = [pydicom.dcmread(f, stop_before_pixels=True) for f in series_files(folder)]
    iop = np.array(hs[0].ImageOrientationPatient, float)
    return {
        "uids": [h.SOPInstanceUID for h in hs],
        "ipp": np.array([[float(v) for v in h.ImagePositionPatient] for h in hs]),
        "row": iop[:3],
        "col": iop[3:],
        "normal": np.cross(iop[:3], iop[3:]),
        "ps": np.array(hs[0].PixelSpacing, float),
        "shape": (len(hs), int(hs[0].Rows), int(hs[0].Columns)),
        "study": hs[0].StudyInstanceUID,
        "series": hs[0].SeriesInstanceUID,
        "for": hs[0].FrameOfReferenceUID,
    }


def _slice_of(points: np.ndarray, g: dict) -> int:
    """The slice whose plane holds the world points (< 0.01 mm)."""
    dist = np.abs((points[None] - g["ipp"][:, None]) @ g["normal"]).max(axis=1)
    k = int(np.argmin(dist))
    assert dist[k] < 0.01, f"points {dist[k]:.3f} mm off the nearest slice plane"
    return k


def read_seg(path: Path, folder: Path, labels: dict[int, str]) -> np.ndarray:
    """The SEG as a label map (values of ``labels``, matched by segment name) on the series' index
    grid, each frame placed in world coordinates."""
    g, ds = _geometry(folder), pydicom.dcmread(path)
    assert ds.StudyInstanceUID == g["study"] and ds.FrameOfReferenceUID == g["for"]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == g["series"]
    by_name = {n: v for v, n in labels.items()}
    value = {int(s.SegmentNumber): by_name[str(s.SegmentLabel)] for s in ds.SegmentSequence}
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    ps = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float)
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    corners = np.array([[0, 0], [0, ds.Columns - 1], [ds.Rows - 1, 0]])
    out = np.zeros(g["shape"], np.uint16)
    for frame, fg in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        ipp = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, float)
        rc = np.vstack([corners, np.argwhere(frame > 0)])
        world = ipp + rc[:, 1:2] * ps[1] * iop[:3] + rc[:, 0:1] * ps[0] * iop[3:]
        k = _slice_of(world[:3], g)  # the frame's plane is a slice's plane
        assert fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == g["uids"][k]
        d = world - g["ipp"][k]
        r, c = d @ g["col"] / g["ps"][0], d @ g["row"] / g["ps"][1]
        assert np.allclose(r, np.round(r), atol=1e-3) and np.allclose(c, np.round(c), atol=1e-3)
        segment = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out[k, np.round(r[3:]).astype(int), np.round(c[3:]).astype(int)] = value[segment]
    return out


def _fill_evenodd(poly_uv: np.ndarray, ps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixel centres (u = column x PixelSpacing[1], v = row x PixelSpacing[0], in mm) inside the
    polygon by the even-odd rule: a scan line through each row of centres, filled between pairs of
    edge crossings (half-open edges: a vertex on the line is counted once)."""
    u0, v0 = poly_uv[:, 0], poly_uv[:, 1]
    u1, v1 = np.roll(u0, -1), np.roll(v0, -1)
    mask = np.zeros(shape, bool)
    rows = np.arange(max(0, int(np.ceil(v0.min() / ps[0]))), min(shape[0] - 1, int(np.floor(v0.max() / ps[0]))) + 1)
    y = rows[:, None] * ps[0]
    crossing = ((v0 <= y) & (v1 > y)) | ((v1 <= y) & (v0 > y))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = u0 + (y - v0) * (u1 - u0) / (v1 - v0)
    for i, r in enumerate(rows):
        xs = np.sort(x[i][crossing[i]])
        for a, b in zip(xs[0::2], xs[1::2]):  # centres with a <= u < b
            mask[r, max(0, int(np.ceil(a / ps[1]))) : min(shape[1], int(np.ceil(b / ps[1])))] = True
    return mask


def read_rtstruct(path: Path, folder: Path) -> dict[str, np.ndarray]:
    """ROI name -> mask on the series' index grid: the pixel centres of the slice whose plane holds a
    contour (contour points taken into the slice's plane in mm) inside an odd number of that slice's
    contours (holes are contours too)."""
    g, ds = _geometry(folder), pydicom.dcmread(path)
    assert ds.StudyInstanceUID == g["study"]
    fr = ds.ReferencedFrameOfReferenceSequence[0]
    assert fr.FrameOfReferenceUID == g["for"]
    assert fr.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID == g["series"]
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    basis = np.stack([g["row"], g["col"]], axis=1)  # world offset from a slice's first pixel -> in-plane (u, v) mm
    masks = {}
    for roi in ds.ROIContourSequence:
        m = np.zeros(g["shape"], bool)
        for c in roi.get("ContourSequence", []):
            pts = np.array(c.get_item("ContourData").value.split(b"\\"), float).reshape(-1, 3)  # DS text
            k = _slice_of(pts, g)
            assert c.ContourImageSequence[0].ReferencedSOPInstanceUID == g["uids"][k]
            m[k] ^= _fill_evenodd((pts - g["ipp"][k]) @ basis, g["ps"], g["shape"][1:])
        masks[names[int(roi.ReferencedROINumber)]] = m
    return masks


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not (a.any() or b.any()) else float(2 * (a & b).sum() / (a.sum() + b.sum()))


# ----------------------------------------------------------------------------- the check
def check(root: Path) -> dict:
    """Write every TotalSegmentator label of the series + the ring as SEG and RTSTRUCT on each
    variant and read them back; returns per variant: voxel equality, Dice, sizes, seconds."""
    sys.path.insert(0, str(ROOT))
    from nnunet_ctarr.core.outputs.dicom import Algorithm, write_dicom

    names = json.loads((TS / "totalsegmentator_class_maps.json").read_text())["totalsegmentator_v2_total"]
    present = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(DICOM[1])))).tolist()
    labels = {int(v): names[str(v)] for v in present if v} | {RING: "ring"}
    out = {}
    variants = make_variants(root)
    for name, folder in variants.items():
        lab = label_map(variants["original"] if name == "tilted" else folder, labels)  # tilt: the same pixels
        rec = {"labels": len(labels)}
        for kind in ("dicom_seg", "dicom_rtstruct"):
            path = root / f"{name}_{kind}.dcm"
            t = time.perf_counter()
            res = write_dicom(kind, lab, series_files(folder), labels, path, Algorithm("nnunet-ctarr", "check"))
            rec[f"{kind}_write_s"] = round(time.perf_counter() - t, 2)
            rec[f"{kind}_MB"] = round(path.stat().st_size / 1e6, 2)
            rec["tilt_deg"] = round(res.tilt_deg, 1)
        rec["seg_frames"] = int(pydicom.dcmread(root / f"{name}_dicom_seg.dcm", stop_before_pixels=True).NumberOfFrames)
        rec["seg_voxels_differing"] = int((read_seg(root / f"{name}_dicom_seg.dcm", folder, labels) != lab).sum())
        masks = read_rtstruct(root / f"{name}_dicom_rtstruct.dcm", folder)
        scores = {n: dice(masks[n], lab == v) for v, n in labels.items()}
        rec["rtstruct_dice_min"] = round(min(scores.values()), 4)
        rec["rtstruct_voxels_differing"] = int(sum((masks[n] != (lab == v)).sum() for v, n in labels.items()))
        out[name] = rec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write OUT.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctarr_dicom_check_") as tmp:
        res = check(Path(tmp))
    for name, rec in res.items():
        print(name, json.dumps(rec))
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
