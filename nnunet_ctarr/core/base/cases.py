"""Inputs and cases: image files and DICOM folders, case ids, matching a case's files in a folder."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
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
    """An image file by its name; hidden files (``.tmp_*`` of an interrupted atomic write, macOS
    ``._*``) are none."""
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_EXTENSIONS)


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


@dataclass(frozen=True)
class InputCase:
    """One case of a run: its id and its image(s) in channel order. A plain image file or a DICOM
    folder is a one-channel case; nnU-Net channel files ``<case>_0000.<ext>``, ``<case>_0001.<ext>``,
    ... of one folder are one case whose ``channels[0]`` is channel 0 (the anatomy's channel)."""
    case: str
    channels: tuple[Path, ...]

    @property
    def first(self) -> Path:
        """Channel 0: the image the anatomy is taken from and whose grid every channel shares."""
        return self.channels[0]


def channel_of(path: Path) -> int | None:
    """nnU-Net channel number of an image file named ``<case>_NNNN.<ext>``; None otherwise."""
    if path.is_dir():
        return None
    m = NNUNET_CHANNEL_SUFFIX.search(strip_extension(path.name))
    return int(m.group()[1:]) if m else None


def group_cases(inputs: Sequence[Path]) -> list[InputCase]:
    """Inputs grouped into cases by case id, in the order of each case's first input: nnU-Net
    channel files ``<case>_0000``, ``<case>_0001``, ... (numbered 0 to n-1) become one case,
    channel 0 first; anything else is one case per input. Two inputs that would write the same
    output name (``a.nii.gz`` and ``a.nrrd``, ``a.nii.gz`` and ``a_0000.nii.gz``, a file and a
    DICOM folder ``a/``, channels with a gap) raise one :class:`CTARRError` before any work."""
    groups: dict[str, list[Path]] = {}
    for p in inputs:
        groups.setdefault(case_id(p), []).append(Path(p))
    cases = []
    for case, paths in groups.items():
        channels = [channel_of(p) for p in paths]
        if len(paths) > 1 and (None in channels or sorted(channels) != list(range(len(paths)))):
            names = ", ".join(sorted(p.name for p in paths))
            raise CTARRError(f"inputs {names} would all write case '{case}' (the same output names); rename them, "
                             f"or name the channels of one case {case}_0000, {case}_0001, ... (numbered from 0000 "
                             "without gaps)")
        cases.append(InputCase(case, tuple(p for _, p in sorted(zip(channels, paths), key=lambda t: t[0] or 0))))
    return cases


def list_cases(path: str | Path) -> list[InputCase]:
    """:func:`list_inputs` grouped into cases (:func:`group_cases`)."""
    return group_cases(list_inputs(path))


def check_unique_case_ids(inputs: Sequence[Path]) -> None:
    """One :class:`CTARRError` before any work when two inputs of a one-channel-per-case run
    (:func:`list_inputs`) have the same case id and would overwrite each other's outputs."""
    for case in group_cases(inputs):
        if len(case.channels) > 1:
            names = ", ".join(p.name for p in case.channels)
            raise CTARRError(f"inputs {names} would all write case '{case.case}' (the same output names); "
                             "this command takes one image per case: rename them or give channel 0 only")


def match_case_file(where: Path, case: str, all_cases: list[str], what: str) -> Path:
    """The file or folder in ``where`` that belongs to ``case``.

    ``where`` may itself be the file. In a folder, first the exact case id: ``<case>.<ext>``
    (any image extension), ``<case>_0000.<ext>`` or a sub-folder ``<case>/``; else a unique
    ``<case>_*`` entry that is not claimed by a longer case id of the batch, nor (for a single
    case, or a batch that does not list the other cases) by the folder's own naming pattern: in a
    folder of ``A_totalseg.nii.gz``, ``A_sm_totalseg.nii.gz``, ``A_dicom_totalseg.nii.gz`` the
    entry of case ``A`` is ``A_totalseg.nii.gz``, in a single run as in a batch of all three.
    A folder without entries named after the case, given for a single case, is the case's own
    (a TotalSegmentator ``segmentations/`` mask folder).
    """
    if not where.exists():
        raise CTARRError(f"{what} not found: {where}")
    if where.is_file() or (where.is_dir() and len(all_cases) == 1 and not _has_case_entries(where, case)):
        return where
    entries = [p for p in where.iterdir() if is_image_file(p) or p.is_dir()]
    exact = [p for p in entries if (p.is_dir() and p.name == case)
             or (not p.is_dir() and strip_extension(p.name) in (case, case + "_0000"))]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise CTARRError(f"several {what} entries are named after case '{case}' in {where}: "
                         f"{sorted(p.name for p in exact)}; keep one")
    longer = [c for c in all_cases if c != case and c.startswith(case + "_")]
    pref = [p for p in entries if strip_extension(p.name).startswith(case + "_")
            and not any(strip_extension(p.name) == c or strip_extension(p.name).startswith(c + "_") for c in longer)]
    pref = _by_naming_pattern(pref, case)
    if len(pref) == 1:
        return pref[0]
    if not pref:
        raise CTARRError(f"no {what} for case '{case}' in {where} (expected {case}{IMAGE_EXTENSIONS[0]}, "
                         f"{case}_<anything>{IMAGE_EXTENSIONS[0]} or a folder {case}/)")
    raise CTARRError(f"several {what} files match case '{case}' in {where}: {sorted(p.name for p in pref)}; "
                     f"name the case's file {case}{IMAGE_EXTENSIONS[0]}")


def _by_naming_pattern(candidates: list[Path], case: str) -> list[Path]:
    """Of several ``<case>_<rest>`` entries, the one whose ``<rest>`` every other candidate ends
    with (``_<rest>``): the others then name longer case ids in the same pattern. Else all."""
    if len(candidates) < 2:
        return candidates
    rest = {p: strip_extension(p.name)[len(case) + 1:] for p in candidates}
    shortest = min(candidates, key=lambda p: len(rest[p]))
    others = [p for p in candidates if p is not shortest]
    if all(rest[p].endswith("_" + rest[shortest]) for p in others):
        return [shortest]
    return candidates


def _has_case_entries(folder: Path, case: str) -> bool:
    return any(strip_extension(p.name) == case or strip_extension(p.name).startswith(case + "_")
               for p in folder.iterdir())
