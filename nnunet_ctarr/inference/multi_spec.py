"""The spec of ``nnUNetv2_predict_ctarr_multi``: output labels and the models, each with its region
and label mapping (docs/predict_multi.md). Read and validated with one-line errors."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.base.errors import CTARRError
from ..core.base.nnunet_format import foreground_labels, n_channels
from ..core.regions.model_config import config_crops, config_region, read_model_config
from ..core.regions.region import Region

MODEL_KEYS = {"name", "folder", "folds", "checkpoint", "region", "margin", "labels", "crops"}
TOP_KEYS = {"labels", "models", "description"}


@dataclass
class ModelSpec:
    """One model of the spec, resolved and validated."""
    name: str
    folder: Path
    folds: list | None                  # None: every fold_X holding the checkpoint
    checkpoint: str
    region: Region
    margin_mm: float
    label_map: dict[int, int]           # model class value -> output value (foreground only)
    n_channels: int
    file_ending: str
    crops: str = "fitted"               # "fitted" to the model's tiles or "exact" region boxes
    region_ref: str = ""                # the spec's "region" as written (SET:REGION brings its set's atlas)

    def lut(self, n_classes: int) -> np.ndarray:
        """Model class -> output value; 0 = no vote."""
        lut = np.zeros(max(n_classes, max(self.label_map, default=0) + 1), np.int32)
        for c, v in self.label_map.items():
            lut[c] = v
        return lut


@dataclass
class MultiSpec:
    labels: dict[str, int]              # output label name -> value
    models: list[ModelSpec] = field(default_factory=list)

    @property
    def file_ending(self) -> str:
        return self.models[0].file_ending


def _int_value(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"\d+", v.strip()):
        return int(v)
    return None


def _check_output_labels(labels) -> dict[str, int]:
    if not isinstance(labels, dict) or not labels:
        raise CTARRError('spec: "labels" must be a dict of output label name -> value, e.g. '
                         '{"background": 0, "liver": 1}')
    out: dict[str, int] = {}
    seen: dict[int, str] = {}
    for name, v in labels.items():
        if isinstance(v, (list, tuple)):
            raise CTARRError(f"spec: output label '{name}' is region-based ({v}); output labels need one value each")
        iv = v if isinstance(v, int) and not isinstance(v, bool) else None
        if iv is None or not 0 <= iv < 65536:
            raise CTARRError(f"spec: output label '{name}' has value {v!r}; values must be integers 0..65535")
        if iv in seen:
            raise CTARRError(f"spec: output labels '{seen[iv]}' and '{name}' share the value {iv}")
        seen[iv] = name
        out[name] = iv
    if out.get("background") != 0:
        raise CTARRError('spec: output labels need "background": 0')
    return out


def _model_labels(dataset_json: dict, where: str) -> dict[str, int]:
    """The model's labels incl. background (nnU-Net's ignore label is never predicted)."""
    return {"background": 0, **foreground_labels(dataset_json, where)}


def _label_map(mapping, model_labels: dict[str, int], out_labels: dict[str, int], where: str) -> dict[int, int]:
    fg = {k: v for k, v in model_labels.items() if v > 0}
    values = set(out_labels.values())
    if mapping is None:                 # by name
        missing = [k for k in fg if k not in out_labels]
        if missing:
            raise CTARRError(f"{where}: no \"labels\" mapping and its label(s) {missing} are not output labels; "
                             "add a mapping model label -> output label")
        return {v: out_labels[k] for k, v in fg.items()}
    if not isinstance(mapping, dict) or not mapping:
        raise CTARRError(f"{where}: \"labels\" must be a dict model label (name or value) -> output label "
                         "(value or name)")
    res: dict[int, int] = {}
    seen: set[int] = set()
    known = ", ".join(f"{k}={v}" for k, v in fg.items())
    for key, target in mapping.items():
        if key in model_labels:
            c = model_labels[key]
        elif _int_value(key) is not None and _int_value(key) in model_labels.values():
            c = _int_value(key)
        else:
            raise CTARRError(f"{where}: '{key}' is not a label of the model (its labels: {known})")
        if c == 0:
            raise CTARRError(f"{where}: the model's background cannot be mapped")
        if isinstance(target, str) and target in out_labels:
            v = out_labels[target]
        elif _int_value(target) in values:
            v = _int_value(target)
        else:
            raise CTARRError(f"{where}: label '{key}' is mapped to {target!r}, which is not an output label "
                             f"(output labels: {', '.join(f'{k}={v}' for k, v in out_labels.items())})")
        if c in seen:
            raise CTARRError(f"{where}: model label value {c} is mapped twice")
        seen.add(c)
        if v:                            # mapped to background: the class never votes
            res[c] = v
    if not res:
        raise CTARRError(f"{where}: every label is mapped to background; the model would contribute nothing")
    return res


def region_for_model(folder: Path, region_arg, base: Path, where: str) -> tuple[Region, dict]:
    """The spec's region (name, or .json relative to the spec), else the model folder's CTARR
    settings (as ``nnUNetv2_predict_ctarr``); returns (region, the model's CTARR settings)."""
    if region_arg is not None and not (isinstance(region_arg, str) and region_arg):
        raise CTARRError(f"{where}: \"region\" must be a region name or a region .json path")
    if region_arg and region_arg.endswith(".json") and not Path(region_arg).is_absolute():
        region_arg = str(base / region_arg)
    try:
        cfg = read_model_config(folder)
        region = config_region(cfg, region_arg)
    except CTARRError as e:
        raise CTARRError(f"{where}: {e}") from None
    if region is None:
        raise CTARRError(f"{where}: no region (give \"region\", or a model folder whose ctarr.json / "
                         "dataset.json names one)")
    return region, cfg


def load_spec(path: str | Path) -> MultiSpec:
    """Read and validate a spec (see docs/predict_multi.md); relative paths are relative to
    the spec file. Raises :class:`CTARRError` with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise CTARRError(f"spec file not found: {path}")
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        raise CTARRError(f"spec {path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise CTARRError("spec: the top level must be an object with \"labels\" and \"models\"")
    unknown = set(d) - TOP_KEYS
    if unknown:
        raise CTARRError(f"spec: unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    out_labels = _check_output_labels(d.get("labels"))
    models_in = d.get("models")
    if not isinstance(models_in, list) or not models_in:
        raise CTARRError("spec: \"models\" must be a non-empty list")
    base = path.resolve().parent
    spec = MultiSpec(out_labels)
    for i, m in enumerate(models_in):
        spec.models.append(_model_spec(m, i, base, out_labels))
    names = [m.name for m in spec.models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CTARRError(f"spec: model name(s) {dup} used more than once; give each model a distinct \"name\"")
    for attr, what in (("n_channels", "number of input channels"), ("file_ending", "file ending")):
        vals = {getattr(m, attr) for m in spec.models}
        if len(vals) > 1:
            raise CTARRError(f"spec: all models must share the {what}; got " +
                             ", ".join(f"{m.name}: {getattr(m, attr)}" for m in spec.models))
    return spec


def _model_spec(m, i: int, base: Path, out_labels: dict[str, int]) -> ModelSpec:
    where = f"spec models[{i}]"
    if not isinstance(m, dict):
        raise CTARRError(f"{where}: each model must be an object with at least \"folder\"")
    unknown = set(m) - MODEL_KEYS
    if unknown:
        raise CTARRError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(MODEL_KEYS)}")
    if not isinstance(m.get("folder"), str):
        raise CTARRError(f"{where}: \"folder\" (the trained model folder) is missing")
    folder = Path(m["folder"])
    folder = folder if folder.is_absolute() else base / folder
    if "name" in m:
        where = f"{where} ('{m['name']}')"
    if not folder.is_dir():
        raise CTARRError(f"{where}: model folder not found: {folder}")
    for f in ("dataset.json", "plans.json"):
        if not (folder / f).is_file():
            raise CTARRError(f"{where}: {folder} is not a trained nnU-Net model folder ({f} missing)")
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans = json.loads((folder / "plans.json").read_text())
    if plans.get("image_reader_writer", "SimpleITKIO") != "SimpleITKIO":
        raise CTARRError(f"{where}: CTARR needs a model whose image reader is SimpleITKIO, this one uses "
                         f"{plans['image_reader_writer']}")
    checkpoint = m.get("checkpoint", "checkpoint_final.pth")
    folds = m.get("folds")
    if folds is not None:
        folds = folds if isinstance(folds, list) else [folds]
        folds = [f if f == "all" else _int_value(f) for f in folds]
        if any(f is None for f in folds) or not folds:
            raise CTARRError(f"{where}: \"folds\" must be a list of fold numbers or \"all\", got {m['folds']!r}")
        for f in folds:
            if not (folder / f"fold_{f}" / checkpoint).is_file():
                raise CTARRError(f"{where}: checkpoint not found: {folder / f'fold_{f}' / checkpoint}")
    elif not any(p.name != "fold_all" and (p / checkpoint).is_file() for p in folder.glob("fold_*")):
        raise CTARRError(f"{where}: no fold_X/{checkpoint} in {folder}")
    region, cfg = region_for_model(folder, m.get("region"), base, where)
    margin = m.get("margin", cfg.get("margin_mm", 0.0))
    try:
        crops = config_crops(cfg, m.get("crops"))
    except CTARRError as e:
        raise CTARRError(f"{where}: {e}") from None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise CTARRError(f"{where}: \"margin\" must be a number (mm), got {margin!r}")
    name = m.get("name", region.name)
    if not isinstance(name, str) or not name:
        raise CTARRError(f"{where}: \"name\" must be a non-empty string")
    where = f"spec models[{i}] ('{name}')"
    label_map = _label_map(m.get("labels"), _model_labels(dataset_json, where), out_labels, where)
    return ModelSpec(name, folder, folds, checkpoint, region, float(margin), label_map, n_channels(dataset_json),
                     dataset_json.get("file_ending", ".nii.gz"), crops, m.get("region") or "")
