"""Write an atlas set: ``<root>/<name>/atlas.npz``, ``regions/<region>.json`` and ``NOTICE``
(the layout ``core.base.user_data`` selects by name)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..anatomy.atlas import Atlas
from ..base.errors import CTARRError
from ..base.files import atomic_write, write_json
from ..base.user_data import ATLAS_FILE, REGIONS_FOLDER, check_set_name
from ..regions.region import Region

SET_ENTRIES = {ATLAS_FILE, REGIONS_FOLDER, "NOTICE"}


def _folder_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def write_set(atlas: Atlas, regions: list[Region], notice: str, root: str | Path, name: str) -> Path:
    """Write the set (the regions get the atlas' id), replacing an earlier set of that name as a
    whole; refuses to replace a folder that is not an atlas set. Files and folders honour the umask."""
    folder = Path(root).expanduser().resolve() / check_set_name(name)
    if folder.exists() and not (folder.is_dir() and {p.name for p in folder.iterdir()} <= SET_ENTRIES):
        raise CTARRError(f"{folder} exists and is not an atlas set: choose another --name or -o")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".import_{name}_", dir=folder.parent))
    except OSError as e:
        raise CTARRError(f"cannot write to {folder.parent}: {e.strerror or e}") from None
    try:
        os.chmod(tmp, _folder_mode())
        atomic_write(tmp / ATLAS_FILE, ".npz", atlas.save)
        for r in regions:
            r.atlas_id = atlas.atlas_id
            write_json(tmp / REGIONS_FOLDER / f"{r.name}.json", r.to_dict())
        atomic_write(tmp / "NOTICE", ".txt", lambda p: Path(p).write_text(notice))
        old = folder.parent / f".old_{name}_{os.getpid()}"
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise CTARRError(f"cannot write the atlas set {folder}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
