"""Helpers shared by the command-line tools: one-line errors, case matching, sidecars."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from .. import __version__
from ..errors import CTARRError
from ..io import write_json  # noqa: F401  (re-exported for the CLIs)


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




def versions(atlas_id: str, region_source: str = "") -> dict:
    import SimpleITK
    import torch
    return {"nnunet_ctarr": __version__, "atlas_id": atlas_id, "region_source": region_source,
            "torch": torch.__version__, "SimpleITK": SimpleITK.Version_VersionString()}
