"""One case end to end in memory: image (+ channels, labels) and its anatomy -> located -> one
decision per region -> the crops as SimpleITK images. Nothing is written (:mod:`.outputs.case_writer`
writes a :class:`CaseCrops`; ``nnunet_ctarr.api.crop`` returns one).

Crops are cut from the image as stored (no interpolation) and overlay it exactly; every channel
and the label map are cut with the same index boxes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import SimpleITK as sitk

from .anatomy.atlas import Atlas
from .anatomy.masks import AnatomyMasks
from .base.errors import CTARRError, WarningLog
from .base.geometry import Geometry, as_geometry
from .base.nifti import Crop
from .localise.decision import Located, Policy, RegionDecision, Status, decide, locate_case
from .localise.settings import RegistrationSettings
from .regions.cropping import BoxPlan, crop_image, crop_scores
from .regions.region import Region


@dataclass(frozen=True)
class Piece:
    """One output of a region: box ``box`` (None: the whole image) cut from every channel (empty
    when only the boxes were asked for) and from the label map; with ``CutOptions.lazy`` an
    unpadded box is a :class:`Crop` (the box of the image, written without a copy)."""
    box: BoxPlan | None
    channels: tuple[sitk.Image | Crop, ...] = ()
    labels: sitk.Image | Crop | None = None


@dataclass(frozen=True)
class RegionCrops:
    """A region's decision and what it gives: the pieces to write, the share of the voxels kept and
    of the label foreground inside the crops."""
    decision: RegionDecision
    pieces: tuple[Piece, ...] = ()
    voxel_fraction_kept: float = 0.0
    label_voxels_preserved_percent: float | None = None

    @property
    def status(self) -> Status:
        return self.decision.status


@dataclass(frozen=True)
class CaseCrops:
    """One case in memory: its channels (channel 0 located; only their grids when nothing is cut and
    the voxels were not needed), labels, localisation and regions."""
    case: str
    channels: tuple[sitk.Image | Geometry, ...]
    labels: sitk.Image | None
    anatomy: AnatomyMasks
    located: Located
    regions: tuple[RegionCrops, ...]
    warnings: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def image(self) -> sitk.Image | Geometry:
        return self.channels[0]

    @property
    def geometry(self) -> Geometry:
        """The grid of channel 0."""
        return as_geometry(self.channels[0])

    def region(self, name: str) -> RegionCrops:
        """The region of that name (one-line error when the case was not cropped for it)."""
        for r in self.regions:
            if r.decision.region.name == name:
                return r
        names = ", ".join(r.decision.region.name for r in self.regions)
        raise CTARRError(f"{self.case}: no region '{name}' (regions: {names})")


@dataclass(frozen=True)
class CutOptions:
    """How pieces are cut: ``boxes_only`` cuts nothing (boxes and decisions only); ``pad`` extends
    a box the image cuts with ``fill_value`` (default: the image minimum); ``lazy``: an unpadded
    box stays a :class:`Crop` of the image for a writer (no copy), else it is a SimpleITK image."""
    boxes_only: bool = False
    pad: bool = False
    fill_value: float | None = None
    lazy: bool = False

    def cut(self, img: sitk.Image, box: BoxPlan, fill: float) -> sitk.Image | Crop:
        if self.lazy and not (self.pad and box.status == "partial"):
            return Crop(img, tuple(int(v) for v in box.start_xyz), tuple(int(v) for v in box.stop_xyz))
        return crop_image(img, box, self.pad, fill)


def crop_case(case: str, channels: list[sitk.Image | Geometry], anatomy: AnatomyMasks, regions: list[Region],
              atlas: Atlas, policy: Policy | None = None, cut: CutOptions | None = None,
              labels: sitk.Image | None = None, settings: RegistrationSettings | None = None,
              warnings: WarningLog | None = None) -> CaseCrops:
    """Locate the case once and decide and cut every region (module docstring)."""
    policy, cut = policy or Policy(), cut or CutOptions()
    if not channels:
        raise CTARRError(f"{case}: no image")
    warnings = warnings if warnings is not None else WarningLog(case=case)
    _check_channels(case, channels, labels)
    located = locate_case(channels[0], anatomy, atlas, settings, warnings)
    t = time.perf_counter()
    decisions = decide(located, regions, atlas, channels[0], policy, case)
    out = tuple(_cut(d, channels, labels, cut) for d in decisions)
    seconds = {"registration": located.seconds, "decide_and_cut": time.perf_counter() - t}
    return CaseCrops(case, tuple(channels), labels, anatomy, located, out, tuple(warnings), seconds)


def _check_channels(case: str, channels: list[sitk.Image | Geometry], labels: sitk.Image | None) -> None:
    """Every channel and the label map on the grid of channel 0 (nnU-Net requires it)."""
    ref = as_geometry(channels[0])
    for k, img in enumerate(channels[1:], 1):
        if not ref.same_grid(as_geometry(img)):
            raise CTARRError(f"{case}: channel {k} is not on the grid of channel 0 ({as_geometry(img).describe()} vs "
                             f"{ref.describe()})")
    if labels is not None and not ref.same_grid(Geometry.of(labels)):
        raise CTARRError(f"{case}: the label map is not on the image's grid")


def _cut(d: RegionDecision, channels: list[sitk.Image | Geometry], labels: sitk.Image | None,
         cut: CutOptions) -> RegionCrops:
    """The pieces of one decision: its boxes, the whole image, or nothing."""
    preserved = None
    if d.status is Status.WHOLE:
        piece = Piece(None, () if cut.boxes_only else tuple(channels), None if cut.boxes_only else labels)
        return RegionCrops(d, (piece,), 1.0, 100.0 if labels is not None else None)
    if not d.boxes:
        return RegionCrops(d, (), 0.0, 0.0 if labels is not None else None)
    fills = [0.0] * len(channels)
    if cut.pad and not cut.boxes_only:         # each channel padded with its own minimum unless a value is given
        fills = [cut.fill_value if cut.fill_value is not None else float(sitk.GetArrayViewFromImage(c).min())
                 for c in channels]
    pieces = tuple(Piece(b, () if cut.boxes_only else tuple(cut.cut(c, b, f) for c, f in zip(channels, fills)),
                         None if cut.boxes_only or labels is None else cut.cut(labels, b, 0))
                   for b in d.boxes)
    if labels is not None:
        preserved = crop_scores(sitk.GetArrayViewFromImage(labels) > 0, d.plan.union_mask_zyx())["preserved_percent"]
        preserved = 100.0 if preserved is None else float(preserved)
    return RegionCrops(d, pieces, round(d.plan.voxel_fraction(), 5), preserved)
