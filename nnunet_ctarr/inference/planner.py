"""The CTARR side of the predictor: its settings, its anatomy source, and the plans it made.

:class:`CasePlanner` plans cases from a file, from nnU-Net's npy arrays or from a geometry
(:func:`.plans.plan_case`: anatomy -> registration -> the one decision -> crops fitted to the
model's tiles), keeps every plan by case and writes the sidecars. The predictor
(:mod:`.predictor`) only runs nnU-Net on what the plans say and writes the outputs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.anatomy.sources import AnatomySource, InMemoryAnatomy
from ..core.base.errors import CTARRError, WarningLog
from ..core.base.geometry import Geometry
from ..core.base.images import read_geometry, read_image
from ..core.localise.decision import Located, locate_case
from .export import write_plan_sidecar
from .plans import CasePlan, CTARRSettings, failed_plan, plan_case
from .tiling import TileGeometry

logger = logging.getLogger("nnunet_ctarr")


class CasePlanner:
    """Plans cases for one region and model (``tiles(geometry)``: the model's sliding-window tiles)."""

    def __init__(self, settings: CTARRSettings, anatomy: AnatomySource, tiles: Callable[[Geometry], TileGeometry]):
        self.settings, self.anatomy, self.tiles = settings, anatomy, tiles
        self.plans: dict[str, CasePlan] = {}

    def plan(self, case: str, geometry: Geometry, anatomy: AnatomySource | None = None, image=None,
             locate: Callable[[WarningLog], Located] | None = None) -> CasePlan:
        """Plan one case. ``locate(warnings) -> Located`` replaces the anatomy load + registration (the
        multi-model predictor shares one); a user error gives a ``failed`` plan, never a fallback."""
        source, s = anatomy or self.anatomy, self.settings

        def load_and_locate(warnings: WarningLog) -> Located:
            return locate_case(geometry, source.load(case, warnings), s.atlas, s.registration, warnings)
        try:
            return plan_case(case, geometry, s, self.tiles(geometry), locate or load_and_locate, image)
        except CTARRError as e:
            logger.error(f"{case}: {e}")
            return failed_plan(case, geometry, e, s.region.name)

    def plan_file(self, first_file: str, case: str) -> CasePlan:
        """Plan a case given by its first channel file (read whole only for a QC picture)."""
        try:
            image = read_image(first_file) if self.settings.qc_folder else None
            # the stored grid (nnU-Net predicts on it, sheared or not); a cut file is refused (nnU-Net's reader
            # would zero-fill it); one the header cannot vouch for (4-D, vector, thin) is read: refused in one line
            geometry = read_geometry(first_file, keep_shear=True)
            if geometry is None:
                geometry = Geometry.of(image if image is not None else read_image(first_file))
        except CTARRError as e:
            logger.error(f"{case}: {e}")
            return failed_plan(case, None, e, self.settings.region.name)
        return self.plan(case, geometry, image=image)

    def plan_npy(self, img: np.ndarray, props: dict, anatomy, case: str) -> CasePlan:
        """Plan an array of nnU-Net's npy entry points (``anatomy``: a label image, path or source)."""
        if "sitk_stuff" not in props:
            raise CTARRError("image properties need 'sitk_stuff' (origin/spacing/direction) for CTARR")
        geometry = Geometry.from_sitk_stuff(props["sitk_stuff"], img.shape[1:])
        source = anatomy if isinstance(anatomy, AnatomySource) else InMemoryAnatomy(anatomy, case)
        return self.plan(case, geometry, anatomy=source)

    def record(self, plan: CasePlan, files: list[str] | None = None, output: str | None = None) -> None:
        """Keep the plan (by case) and write its sidecar when asked for (``output``: the segmentation
        file written for the case, if any)."""
        self.plans[plan.case] = plan
        if self.settings.sidecar_folder:
            write_plan_sidecar(Path(self.settings.sidecar_folder), plan, files or [], self.settings, output)
