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
