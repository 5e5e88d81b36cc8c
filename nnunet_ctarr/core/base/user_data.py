"""The user data folder: imported atlas sets, selectable by a short name.

An *atlas set* is a folder ``<root>/<name>/`` holding ``atlas.npz`` and ``regions/<region>.json``
(written by ``nnUNetv2_ctarr_import_ctarr``). ``<root>`` is ``$NNUNET_CTARR_DATA`` when set,
else ``$XDG_DATA_HOME/nnunet_ctarr``, else ``~/.local/share/nnunet_ctarr``.

Selection rule (docs/ctarr_import.md): ``-atlas NAME`` is the set's atlas when ``NAME`` is not a
file (a folder of that name, e.g. the ctarr clone, does not count); ``-r NAME:REGION`` is a
region of the set (``NAME:all``: every one of them).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import CTARRError

ENV = "NNUNET_CTARR_DATA"
ATLAS_FILE = "atlas.npz"
REGIONS_FOLDER = "regions"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def data_root(environ: dict | None = None) -> Path:
    """The folder that holds the imported atlas sets (it need not exist)."""
    env = os.environ if environ is None else environ
    if env.get(ENV):
        return Path(env[ENV]).expanduser()
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]) / "nnunet_ctarr"
    home = Path("/tmp") if str(Path.home()) == "/" else Path.home()
    return home / ".local" / "share" / "nnunet_ctarr"


def is_set_name(name: str) -> bool:
    """A set name: a letter, then letters, digits, ``_`` or ``-`` (no dots, no slashes)."""
    return bool(_NAME.fullmatch(name))


def check_set_name(name: str) -> str:
    if not is_set_name(name):
        raise CTARRError(f"invalid atlas set name '{name}': use a letter, then letters, digits, _ or - "
                         "(no dots or slashes)")
    return name


def set_folder(name: str) -> Path:
    return data_root() / name


def installed_sets() -> list[str]:
    root = data_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if is_set_name(p.name) and (p / ATLAS_FILE).is_file())


def resolve_atlas(path: str | Path) -> Path:
    """``path`` itself when it is a file or cannot be a set name; else the atlas of the imported set
    of that name (one-line error when there is none)."""
    p = Path(path)
    if p.is_file() or not is_set_name(str(path)):
        return p
    f = set_folder(str(path)) / ATLAS_FILE
    if not f.is_file():
        have = ", ".join(installed_sets()) or "none"
        raise CTARRError(f"no atlas file '{path}' and no imported atlas set of that name in {data_root()} "
                         f"(imported sets: {have}; import one with nnUNetv2_ctarr_import_ctarr)")
    return f


def set_regions(name: str) -> dict[str, Path]:
    """Region name -> JSON file of an imported set (one-line error when the set does not exist)."""
    folder = set_folder(name)
    if not is_set_name(name) or not (folder / ATLAS_FILE).is_file():
        have = ", ".join(installed_sets()) or "none"
        raise CTARRError(f"no imported atlas set '{name}' in {data_root()} (imported sets: {have})")
    return {f.stem: f for f in sorted((folder / REGIONS_FOLDER).glob("*.json"))}


def set_region(ref: str) -> Path:
    """The JSON file of ``SET:REGION``."""
    name, _, region = ref.partition(":")
    regions = set_regions(name)
    if region not in regions:
        raise CTARRError(f"unknown region '{region}' in atlas set '{name}'; available: {', '.join(regions) or 'none'}")
    return regions[region]
