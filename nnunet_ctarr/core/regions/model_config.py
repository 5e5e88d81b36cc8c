"""The CTARR settings a region model carries with it (``ctarr.json``).

``nnUNetv2_ctarr_crop_dataset`` writes them twice into the new raw dataset: as ``ctarr.json``
and as the ``"ctarr"`` entry of its ``dataset.json``. nnU-Net copies ``dataset.json`` into
every model folder it trains (any trainer), so ``nnUNetv2_predict_ctarr`` finds the region of a
model folder without options; a ``ctarr.json`` placed in the model folder takes precedence.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..base.errors import CTARRError
from .region import Region, load_region

CONFIG_NAME = "ctarr.json"
#: how the region's boxes become crops: fitted to the model's sliding-window tiles, or exact
CROP_MODES = ("fitted", "exact")


def make_config(region: Region, margin_mm: float, **extra) -> dict:
    """``region``: the full definition (a learned region need not be installed anywhere)."""
    return {"region": region.to_dict(), "margin_mm": float(margin_mm), "atlas_id": region.atlas_id, **extra}


def read_model_config(model_folder: str | Path) -> dict:
    """``ctarr.json`` of a model folder, else its ``dataset.json["ctarr"]``, else ``{}``."""
    folder = Path(model_folder)
    for path, pick in ((folder / CONFIG_NAME, lambda d: d), (folder / "dataset.json", lambda d: d.get("ctarr", {}))):
        if path.is_file():
            try:
                cfg = pick(json.loads(path.read_text()))
            except (OSError, ValueError) as e:
                raise CTARRError(f"cannot read {path}: {e}") from None
            if cfg:
                return cfg
    return {}


def config_region(cfg: dict, override: str | None = None) -> Region | None:
    """The region to use: ``override`` (name or JSON path) if given, else the config's."""
    spec = override or cfg.get("region_file") or cfg.get("region")
    if not spec:
        return None
    if isinstance(spec, dict):
        try:
            return Region.from_dict(spec)
        except (KeyError, TypeError, ValueError) as e:
            raise CTARRError(f"invalid region in the model's CTARR settings: {e}") from None
    return load_region(str(spec))


def config_crops(cfg: dict, override: str | None = None) -> str:
    """``"fitted"`` or ``"exact"``: ``override`` if given, else the config's ``"crops"``, else fitted.
    Models trained on crops (``nnUNetv2_ctarr_crop_dataset``) carry ``"crops": "exact"``."""
    mode = override or cfg.get("crops", "fitted")
    if mode not in CROP_MODES:
        raise CTARRError(f"\"crops\" must be one of {list(CROP_MODES)}, got {mode!r}")
    return mode
