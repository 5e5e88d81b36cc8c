"""User-facing errors and warning collection."""
from __future__ import annotations

import logging

logger = logging.getLogger("nnunet_ctarr")


class CTARRError(Exception):
    """An error caused by user input. CLIs print its message as one line, no traceback."""


class LocalisationUntrusted(CTARRError):
    """The anatomy cannot be trusted to place a region: too few usable groups, registration Dice
    below the threshold, an ambiguous orientation, anatomy and image that do not overlap. The only
    error a writer may answer with a safe fallback (the full volume); every other
    :class:`CTARRError` is a user error for that case."""


class WarningLog(list):
    """A list of warning strings that also forwards each entry to the logger."""

    def warn(self, msg: str) -> None:
        logger.warning(msg)
        self.append(msg)
