"""User-facing errors and warning collection."""
from __future__ import annotations

import logging

logger = logging.getLogger("nnunet_ctarr")


class CTARRError(Exception):
    """An error caused by user input. CLIs print its message as one line, no traceback."""


class WarningLog(list):
    """A list of warning strings that also forwards each entry to the logger."""

    def warn(self, msg: str) -> None:
        logger.warning(msg)
        self.append(msg)
