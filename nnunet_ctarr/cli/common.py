"""Helpers shared by the command-line tools: one-line errors, case matching, sidecars."""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import CTARRError
from ..io import IMAGE_EXTENSIONS, case_id, is_image_file, strip_extension


def setup_logging(verbose: bool = False) -> None:
    logging.addLevelName(logging.WARNING, "warning")
    logging.addLevelName(logging.INFO, "info")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)


def run_cli(main: Callable[[], int]) -> None:
    """Run a CLI main; user errors become one line on stderr and exit code 1."""
    try:
        code = main()
    except CTARRError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(_jsonable(data), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


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


def versions(atlas_id: str, region_source: str = "") -> dict:
    import SimpleITK
    import torch
    return {"nnunet_ctarr": __version__, "atlas_id": atlas_id, "region_source": region_source,
            "torch": torch.__version__, "SimpleITK": SimpleITK.Version_VersionString()}
