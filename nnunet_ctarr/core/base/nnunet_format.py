"""nnU-Net raw datasets: find one by id/name/path, list its cases, resolve label names."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CTARRError


def raw_root() -> Path:
    root = os.environ.get("nnUNet_raw")
    if not root:
        raise CTARRError("nnUNet_raw is not set (export nnUNet_raw=/path/to/nnUNet_raw)")
    return Path(root)


def find_raw_dataset(dataset: str) -> Path:
    """``dataset``: an id (``500``), a name (``Dataset500_Liver``) or a folder path."""
    p = Path(dataset)
    if p.is_dir() and (p / "dataset.json").is_file():
        return p
    root = raw_root()
    if dataset.isdigit():
        hits = sorted(root.glob(f"Dataset{int(dataset):03d}_*"))
        if len(hits) != 1:
            raise CTARRError(f"dataset {dataset}: found {len(hits)} folders Dataset{int(dataset):03d}_* in {root}")
        return hits[0]
    if (root / dataset / "dataset.json").is_file():
        return root / dataset
    raise CTARRError(f"dataset {dataset} not found (neither a dataset folder nor an id/name in {root})")


def n_channels(dataset_json: dict) -> int:
    """Input channels of an nnU-Net dataset/model (``channel_names``, v1 ``modality``; default 1)."""
    return len(dataset_json.get("channel_names", dataset_json.get("modality", {"0": "CT"})))


def foreground_labels(dataset_json: dict, where: str) -> dict[str, int]:
    """``dataset.json`` labels without background and nnU-Net's ``ignore`` label: name -> value.
    Region-based labels (lists of values) and label-less files are refused."""
    out = {}
    for name, value in dataset_json.get("labels", {}).items():
        if name in ("background", "ignore"):
            continue
        if isinstance(value, (list, tuple)):
            raise CTARRError(f"{where}: region-based label '{name}' = {value} is not supported; "
                             "one value per label is needed")
        out[name] = int(value)
    if not out:
        raise CTARRError(f"{where}: dataset.json has no foreground labels")
    return out


def group_channels(folder: Path, ending: str, n: int, expected: str = "dataset.json says") -> dict[str, list[Path]]:
    """nnU-Net image naming (``CASE_XXXX<ending>``) -> case -> its channel files, in channel order;
    every case must have channels 0..n-1. Empty if the folder holds none."""
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    found: dict[str, dict[int, Path]] = {}
    for f in sorted(Path(folder).iterdir()):
        m = pattern.match(f.name)
        if m and f.is_file():
            found.setdefault(m.group(1), {})[int(m.group(2))] = f
    out = {}
    for case in sorted(found):
        chans = found[case]
        if sorted(chans) != list(range(n)):
            raise CTARRError(f"{folder}: case '{case}' has channels {sorted(chans)}; {expected} {n} "
                             f"(_0000 .. _{n - 1:04d})")
        out[case] = [chans[c] for c in range(n)]
    return out


@dataclass
class RawCase:
    case: str
    images: list[Path]                  # one file per channel, channel order
    label: Path | None = None


@dataclass
class RawDataset:
    folder: Path
    dataset_json: dict
    training: list[RawCase] = field(default_factory=list)
    test: list[RawCase] = field(default_factory=list)

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def labels(self) -> dict[str, int]:
        """Label name -> value (foreground only); region-based labels are refused."""
        return foreground_labels(self.dataset_json, self.folder.name)

    def label_values(self, wanted: list[str] | None) -> dict[str, int]:
        """Resolve label names or values from the command line (default: every foreground label)."""
        labels = self.labels
        if not wanted:
            return labels
        out = {}
        by_value = {v: k for k, v in labels.items()}
        for w in wanted:
            if w in labels:
                out[w] = labels[w]
            elif w.isdigit() and int(w) in by_value:
                out[by_value[int(w)]] = int(w)
            else:
                raise CTARRError(f"label '{w}' is not in {self.folder.name}/dataset.json (labels: "
                                 f"{', '.join(f'{k}={v}' for k, v in labels.items())})")
        return out


def _cases(images: Path, labels: Path | None, ending: str, n: int) -> list[RawCase]:
    if not images.is_dir():
        return []
    out = []
    for case, files in group_channels(images, ending, n).items():
        label = labels / f"{case}{ending}" if labels is not None else None
        if label is not None and not label.is_file():
            raise CTARRError(f"{labels}: label file {case}{ending} missing")
        out.append(RawCase(case, files, label))
    return out


def load_raw_dataset(dataset: str, need_labels: bool = True) -> RawDataset:
    folder = find_raw_dataset(dataset)
    try:
        dj = json.loads((folder / "dataset.json").read_text())
        ending, n = dj["file_ending"], n_channels(dj)
    except (OSError, ValueError, KeyError) as e:
        raise CTARRError(f"{folder}/dataset.json is not a valid nnU-Net dataset.json: {e}") from None
    if "dataset" in dj:
        raise CTARRError(f"{folder}/dataset.json lists its files explicitly ('dataset' key); only the standard "
                         "imagesTr/labelsTr layout is supported")
    ds = RawDataset(folder, dj,
                    _cases(folder / "imagesTr", folder / "labelsTr" if need_labels else None, ending, n),
                    _cases(folder / "imagesTs", None, ending, n))
    if not ds.training:
        raise CTARRError(f"{folder}: no training cases in imagesTr (expected CASE_0000{ending})")
    return ds
