"""The one decision: what every writer does with each region of a located case.

:func:`locate_case` registers a case (an anatomy refused before registration is a verdict, not an
error); :func:`decide` turns it, the regions and a :class:`Policy` into one
:class:`RegionDecision` per region, in one vocabulary (:class:`Status`) that every command uses:

* ``cropped``: the localisation is trusted and the region is in view; its boxes are cut.
* ``outside the field of view``: the localisation is trusted and says the region is not in this
  image (no box reaches into it, or too little of the atlas's organ maps into it): nothing of the
  region to cut.
* untrusted (:mod:`.trust`): what the policy's ``on_untrusted`` says: ``whole`` (the whole image
  stands in for the crop: nothing is lost), ``skip`` (nothing) or ``anyway`` (the crop, marked
  untrusted) -> ``untrusted: whole image`` / ``untrusted: skipped`` / ``untrusted: cropped anyway``.
* ``failed``: a user error for the case (unreadable input, ...): reported, never a fallback.

docs/trust.md has the table of what each command does in each case.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

import SimpleITK as sitk

from ..anatomy.atlas import Atlas
from ..anatomy.masks import AnatomyMasks
from ..base.errors import CTARRError, LocalisationUntrusted, WarningLog
from ..base.geometry import Geometry, as_geometry
from ..regions.cropping import BoxPlan, CropPlan
from ..regions.region import Region
from .localisation import Localisation, locate, plan_region
from .settings import RegistrationSettings
from .trust import Trust, assess


class Status(str, Enum):
    """How a case-region pair ends, in every command's words."""
    CROPPED = "cropped"
    WHOLE = "untrusted: whole image"
    SKIPPED = "untrusted: skipped"
    ANYWAY = "untrusted: cropped anyway"
    OUTSIDE = "outside the field of view"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: the values of ``--on_untrusted`` on every command, and the deprecated spellings they replace
ON_UNTRUSTED = ("whole", "skip", "anyway")
DEPRECATED_ON_UNTRUSTED = {"full": "whole", "crop": "anyway", "refuse": "skip", "mark": "anyway", "empty": "skip"}
_FALLBACK = {"whole": Status.WHOLE, "skip": Status.SKIPPED, "anyway": Status.ANYWAY}
#: what each fallback does, for log lines
FALLBACK_TEXT = {Status.WHOLE: "the whole image stands in for the crop", Status.SKIPPED: "nothing for this region",
                 Status.ANYWAY: "the crop anyway, marked untrusted"}


@dataclass(frozen=True)
class Policy:
    """What a command asks of the decision: the fallback for an untrusted localisation and how
    the boxes are mapped (extra margin on top of the region's own, head-feet only)."""
    on_untrusted: str = "whole"
    margin_mm: float = 0.0
    z_only: bool = False

    def __post_init__(self) -> None:
        if self.on_untrusted not in ON_UNTRUSTED:
            raise CTARRError(f"on_untrusted must be one of {', '.join(ON_UNTRUSTED)}, got {self.on_untrusted!r}")


@dataclass(frozen=True)
class Located:
    """A case on the atlas: its localisation, or the verdict that refused its anatomy before registration."""
    localisation: Localisation | None
    refused: Trust | None = None
    seconds: float = 0.0

    def scan_trust(self, atlas: Atlas) -> Trust:
        """The verdict on the localisation as a whole (no region)."""
        return self.refused if self.localisation is None else assess(self.localisation, atlas)


@dataclass(frozen=True)
class RegionDecision:
    """One region of one case: its status, the verdict behind it, its boxes in the image (``plan``;
    None without a localisation) and, when not cropped, why (one line)."""
    region: Region
    status: Status
    trust: Trust
    plan: CropPlan | None
    why: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def boxes(self) -> list[BoxPlan]:
        """The boxes to cut: the usable ones of a cropped (or cropped-anyway) region, else none."""
        return self.plan.usable if self.status in (Status.CROPPED, Status.ANYWAY) and self.plan else []

    @property
    def trusted(self) -> bool:
        return self.trust.trusted


def locate_case(image: Geometry | sitk.Image, anatomy: AnatomyMasks, atlas: Atlas,
                settings: RegistrationSettings | None = None, warnings: WarningLog | None = None) -> Located:
    """Register the case's anatomy; an anatomy refused before registration gives a refused :class:`Located`."""
    t = time.perf_counter()
    try:
        loc = locate(image, anatomy, atlas, settings, warnings)
    except LocalisationUntrusted as e:
        return Located(None, Trust.refused(e), time.perf_counter() - t)
    return Located(loc, None, time.perf_counter() - t)


def decide(located: Located, regions: list[Region], atlas: Atlas, image: Geometry | sitk.Image, policy: Policy,
           case: str = "") -> list[RegionDecision]:
    """One decision per region (module docstring); ``case``: how log lines name the case. Each
    decision keeps its own notes and warnings (boxes cut by the field of view, the fallback and why)."""
    return [decide_region(located, r, atlas, as_geometry(image), policy, case) for r in regions]


def decide_region(located: Located, region: Region, atlas: Atlas, image: Geometry, policy: Policy,
                  case: str = "") -> RegionDecision:
    """The decision for one region (see :func:`decide`)."""
    log = WarningLog(case=f"{case}/{region.name}" if case else region.name)
    loc = located.localisation
    if loc is None:
        return _untrusted(region, located.refused, None, policy, log)
    plan = plan_region(image, loc, region, policy.margin_mm, policy.z_only, log)
    trust = assess(loc, atlas, region, plan, image)
    if trust.trusted and trust.outside:
        log.note(trust.outside)
        return RegionDecision(region, Status.OUTSIDE, trust, plan, trust.outside, tuple(log))
    if not trust.trusted:
        return _untrusted(region, trust, plan, policy, log)
    return RegionDecision(region, Status.CROPPED, trust, plan, "", tuple(log))


def _untrusted(region: Region, trust: Trust, plan: CropPlan | None, policy: Policy, log: WarningLog) -> RegionDecision:
    status = _FALLBACK[policy.on_untrusted]
    why = f"localisation not trusted ({trust.text()})"
    if status is Status.ANYWAY and (plan is None or not plan.usable):
        status, why = Status.SKIPPED, why + "; no box inside the image to crop anyway"
    log.warn(f"{why}: {FALLBACK_TEXT[status]}")
    return RegionDecision(region, status, trust, plan, why, tuple(log))
