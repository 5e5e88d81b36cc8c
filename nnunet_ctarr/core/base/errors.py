"""User-facing errors and warning collection."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("nnunet_ctarr")


class CTARRError(Exception):
    """An error caused by user input. CLIs print its message as one line, no traceback."""


class LocalisationUntrusted(CTARRError):
    """The anatomy cannot be trusted to place a region: too few usable groups, registration Dice
    below the threshold, an ambiguous orientation, anatomy and image that do not overlap. The only
    error a writer may answer with its fallback (``--on_untrusted``); every other
    :class:`CTARRError` is a user error for that case."""


class WarningLog(list):
    """A list of warning strings that also forwards each entry to the logger; with ``case`` the
    logged line starts with the case id (the stored entry does not: it lives in the case's sidecar)."""

    def __init__(self, items=(), case: str | None = None):
        super().__init__(items)
        self.case = case

    def warn(self, msg: str) -> None:
        logger.warning(f"{self.case}: {msg}" if self.case else msg)
        self.append(msg)

    def note(self, msg: str) -> None:
        """Per-case detail (a box cut by the field of view, ...): kept for the sidecar and the
        report, logged at info level (shown with ``--verbose``), not as a console warning."""
        logger.info(f"{self.case}: {msg}" if self.case else msg)
        self.append(msg)


@contextmanager
def quiet_warnings() -> Iterator[None]:
    """Warnings collected meanwhile (:class:`WarningLog`) are kept but not logged; errors still are.
    For batch steps whose warnings are reported later, or were reported already."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


_itk_logger = None


def route_itk_messages() -> None:
    """Send ITK's console warnings (GDCM's "No Series were found", NIfTI orientation notes, ...)
    to the ``nnunet_ctarr.itk`` logger at debug level (shown with ``--verbose``), one line each,
    instead of raw multi-line text on stderr. Real read errors still raise and are reported."""
    global _itk_logger
    import SimpleITK as sitk
    if _itk_logger is not None:
        return
    log = logging.getLogger("nnunet_ctarr.itk")

    class _ToLogging(sitk.LoggerBase):
        def _line(self, text: str) -> str:
            return " ".join(ln.strip() for ln in text.strip().splitlines()[1:] if ln.strip()) or text.strip()

        def DisplayText(self, text):                  # noqa: N802 (ITK's names)
            log.debug(self._line(text))

        DisplayErrorText = DisplayWarningText = DisplayGenericOutputText = DisplayDebugText = DisplayText

    _itk_logger = _ToLogging()
    _itk_logger.SetAsGlobalITKLogger()


_ITK_NOISE = re.compile(
    r"(Exception thrown in SimpleITK \w+:?|\S+\.(?:cxx|hxx|txx|cpp|h)\b(?::\d+)?:?|sitk::ERROR:|itk::ERROR:|ITK ERROR:"
    r"|itk::ExceptionObject \(0x[0-9a-fA-F]+\)|\w+ ?\(0x[0-9a-fA-F]+\):|Location: \"[^\"]*\"|File:|Line: \d+"
    r"|Description:)")


def itk_message(exc: BaseException, limit: int = 160) -> str:
    """The reason in an ITK/SimpleITK exception as one short line: without the C++ source paths,
    line numbers, object addresses and 'Exception thrown in ...' lead-in; cut with '...' at ``limit``."""
    text = " ".join(_ITK_NOISE.sub(" ", str(exc)).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
