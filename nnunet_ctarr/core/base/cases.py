"""Inputs and cases: image files and DICOM folders, case ids, matching a case's files in a folder."""
from __future__ import annotations

import re
from pathlib import Path

import SimpleITK as sitk

from .errors import CTARRError

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


def dicom_series_files(folder: Path) -> list[str]:
    """The files of the series that :func:`images.read_image` reads from ``folder`` (the series with
    the most slices), in SimpleITK's slice order: index ``k`` of the image's z axis is file ``k``.
    Empty list if the folder holds no series."""
    reader = sitk.ImageSeriesReader()
    return list(max((reader.GetGDCMSeriesFileNames(str(folder), s) for s in dicom_series(folder)), key=len,
                    default=()))


def is_dicom_dir(path: Path) -> bool:
    return path.is_dir() and len(dicom_series(path)) > 0


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
