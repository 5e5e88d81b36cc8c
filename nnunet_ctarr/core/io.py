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

import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import CTARRError
from .geometry import Geometry
from .integrity import check_complete

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NNUNET_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


def strip_extension(name: str) -> str:
    """File name without a known image extension."""
    for ext in IMAGE_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_EXTENSIONS)


def case_id(path: str | Path) -> str:
    """Case identifier of an input: file name without extension and without nnU-Net's
    ``_0000`` channel suffix; the folder name for a DICOM folder."""
    path = Path(path)
    stem = path.name if path.is_dir() else strip_extension(path.name)
    return NNUNET_CHANNEL_SUFFIX.sub("", stem)


def dicom_series(folder: Path) -> list[str]:
    """Series instance UIDs found directly in ``folder`` (empty list if none)."""
    reader = sitk.ImageSeriesReader()
    try:
        return list(reader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return []


def is_dicom_dir(path: Path) -> bool:
    return path.is_dir() and len(dicom_series(path)) > 0


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


def _file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: Path, suffix: str, write) -> None:
    """``write(tmp_path)`` into a temporary file beside ``path``, give it the umask's mode, rename
    it into place. OS and ITK write errors become one :class:`CTARRError` naming the path."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[-1][:120]
        raise CTARRError(f"cannot write {path}: {detail}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def write_image(img: sitk.Image, path: str | Path, compress: bool = True) -> None:
    """Write atomically (a temporary file in the same folder is renamed into place), with the
    permissions of the user's umask."""
    path = Path(path)
    ext = next((e for e in IMAGE_EXTENSIONS if path.name.lower().endswith(e)), path.suffix)
    _atomic_write(path, ext, lambda tmp: sitk.WriteImage(img, tmp, compress))


def check_output_folder(path: str | Path) -> Path:
    """Create the output folder and check that files can be written there, before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CTARRError(f"output folder {path} is an existing file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ctarr_write_test_"):
            pass
    except OSError as e:
        raise CTARRError(f"cannot write to the output folder {path}: {e.strerror or e}") from None
    return path


def list_inputs(path: str | Path) -> list[Path]:
    """Expand an input argument into a list of cases.

    A file or a DICOM folder is one case; a folder of image files and/or DICOM sub-folders
    is a batch (sorted by name).
    """
    path = Path(path)
    if not path.exists():
        raise CTARRError(f"input not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if is_image_file(p))
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and is_dicom_dir(p))
    if files or subdirs:
        return files + subdirs
    if is_dicom_dir(path):
        return [path]
    raise CTARRError(f"{path} holds no images (.nii.gz, .nii, .nrrd, .mha, .mhd) and no DICOM series")


def match_case_file(where: Path, case: str, all_cases: list[str], what: str) -> Path:
    """The file or folder in ``where`` that belongs to ``case``.

    ``where`` may itself be the file. In a folder: exact name ``<case>`` (any image
    extension, nnU-Net ``_0000`` suffix allowed, or a sub-folder), else a unique
    ``<case>_*`` entry that is not claimed by a longer case id of the batch.
    """
    if not where.exists():
        raise CTARRError(f"{what} not found: {where}")
    if where.is_file() or (where.is_dir() and len(all_cases) == 1 and not _has_case_entries(where, case)):
        return where
    entries = [p for p in where.iterdir() if is_image_file(p) or p.is_dir()]
    exact = [p for p in entries if case_id(p) == case or (p.is_dir() and p.name == case)]
    if len(exact) == 1:
        return exact[0]
    longer = [c for c in all_cases if c != case and c.startswith(case + "_")]
    pref = [p for p in entries if strip_extension(p.name).startswith(case + "_")
            and not any(strip_extension(p.name) == c or strip_extension(p.name).startswith(c + "_") for c in longer)]
    if len(pref) == 1:
        return pref[0]
    if not exact and not pref:
        raise CTARRError(f"no {what} for case '{case}' in {where} (expected {case}{IMAGE_EXTENSIONS[0]} "
                         f"or a folder {case}/)")
    raise CTARRError(f"several {what} files match case '{case}' in {where}: {[p.name for p in exact + pref]}")


def _has_case_entries(folder: Path, case: str) -> bool:
    return any(strip_extension(p.name) == case or strip_extension(p.name).startswith(case + "_")
               for p in folder.iterdir())


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (numpy values and paths converted), with the umask's permissions."""
    def dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(_jsonable(data), f, indent=2)
            f.write("\n")
    _atomic_write(Path(path), ".json", dump)


def as_json(x):
    """``x`` as it reads back from a JSON file (tuples as lists, numpy values and paths converted)."""
    return json.loads(json.dumps(_jsonable(x)))


def write_json_if_changed(path: Path, data: dict) -> bool:
    """:func:`write_json` unless ``path`` already holds exactly ``data`` (its time stays); True if written."""
    try:
        if json.loads(Path(path).read_text()) == as_json(data):
            return False
    except (OSError, ValueError):
        pass
    write_json(path, data)
    return True


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically, with the umask's permissions."""
    _atomic_write(Path(path), Path(path).suffix or ".txt", lambda tmp: Path(tmp).write_text(text))


def write_csv(path: Path, rows: list[dict], fields) -> None:
    """Rows as CSV with the header ``fields`` (missing or None values empty), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(fields), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in fields})
    write_text(path, buf.getvalue())


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x
