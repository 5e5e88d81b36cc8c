"""One case end to end: image + anatomy -> atlas transform -> crop plan for a region."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..anatomy.atlas import Atlas
from ..anatomy.groups import GROUPS
from ..anatomy.masks import AnatomyMasks
from ..anatomy.volume import MaskVolume, anatomy_to_volume
from ..base.errors import LocalisationUntrusted, WarningLog
from ..base.geometry import Geometry, as_geometry
from ..regions.cropping import CropPlan, plan_crops
from ..regions.region import Region
from .registration import RegistrationResult, register
from .settings import RegistrationSettings


@dataclass
class Localisation:
    """Where a scan sits relative to the atlas."""
    registration: RegistrationResult
    anatomy_volume: MaskVolume
    warnings: WarningLog = field(default_factory=WarningLog)
    seconds: dict[str, float] = field(default_factory=dict)
    #: what made the anatomy ("map" or "hu": the trust rule's thresholds depend on it)
    anatomy_kind: str = "map"
    #: results derived from this localisation alone (e.g. the scan-level trust verdict per atlas)
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def transform(self):
        return self.registration.transform


def check_anatomy_matches_image(anatomy: AnatomyMasks, image: Geometry | sitk.Image) -> None:
    """The anatomy must cover the image in world space (grids may differ; an anatomy of a larger
    scan, e.g. of the full scan a CT was cropped from, is fine: the transform is in world mm)."""
    anat, img = anatomy.geometry, as_geometry(image)
    _, frac_img = anat.overlap(img)
    if frac_img < 0.9:
        raise LocalisationUntrusted(
            f"anatomy segmentation does not cover the image in world space (it covers {100 * frac_img:.0f}% of the "
            f"image's extent, 90% needed); image {img.describe()}, anatomy {anat.describe()}")


def locate(image: Geometry | sitk.Image | None, anatomy: AnatomyMasks, atlas: Atlas,
           settings: RegistrationSettings | None = None, warnings: WarningLog | None = None) -> Localisation:
    """Register a scan's anatomy to the atlas (paper 3.2); whether the result may place a crop is
    :func:`nnunet_ctarr.core.localise.decision.decide`'s (through :mod:`.trust`)."""
    warnings = warnings if warnings is not None else WarningLog()
    t0 = time.perf_counter()
    if image is not None:
        check_anatomy_matches_image(anatomy, image)
    vol = anatomy_to_volume(anatomy)
    t1 = time.perf_counter()
    res = register(vol, atlas, settings, orientation=anatomy.orientation)
    for w in res.warnings:
        warnings.warn(w)
    return Localisation(res, vol, warnings, {"anatomy_to_grid": t1 - t0, **res.seconds}, anatomy.kind)


def plan_region(image: Geometry | sitk.Image, loc: Localisation, region: Region, extra_margin_mm: float = 0.0,
                z_only: bool = False, warnings: WarningLog | None = None) -> CropPlan:
    """Map a region into the image and warn about boxes that are cut by the field of view."""
    warnings = warnings if warnings is not None else loc.warnings
    plan = plan_crops(image, loc.transform, region.boxes_with_margin(extra_margin_mm), z_only=z_only)
    for b in plan.boxes:
        if b.status == "partial":
            warnings.note(f"region '{region.name}' box {b.index}: only {100 * b.fraction_inside:.0f}% of the box "
                          "lies inside the image; cropped to the intersection")
        elif b.status == "outside":
            warnings.note(f"region '{region.name}' box {b.index} lies entirely outside the image")
    return plan


def groups_present(vol: MaskVolume) -> list[str]:
    return [GROUPS[i] for i in np.nonzero(vol.volumes_mm3() > 0)[0]]
