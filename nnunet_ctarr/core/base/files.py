"""Files written atomically with the permissions of the user's umask: JSON, CSV, text; input stamps."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from .errors import CTARRError, itk_message

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the system says it (Linux: /proc); else
    set and restored under a lock (files of one case are written in threads, and a second thread
    must never see the temporary 0)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def atomic_write(path: Path, suffix: str, write) -> None:
    """``write(tmp_path)`` into a temporary file beside ``path``, give it the umask's mode, rename
    it into place. OS and ITK write errors become one :class:`CTARRError` naming the path."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else itk_message(e)
        if _disk_full(path.parent) and "space" not in detail:
            detail += " (no space left on the device)"
        raise CTARRError(f"cannot write {path}: {detail}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _disk_full(folder: Path) -> bool:
    """Whether the file system holding ``folder`` has less than 1 MiB free."""
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def check_output_folder(path: str | Path) -> Path:
    """Create the output folder and check that files can be written there, before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CTARRError(f"output folder {path} is an existing file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ctarr_write_test_"):
            pass
    except OSError as e:
        raise CTARRError(f"cannot write to the output folder {path}: {e.strerror or e}") from None
    return path


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (numpy values and paths converted), with the umask's permissions."""
    def dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(_jsonable(data), f, indent=2)
            f.write("\n")
    atomic_write(Path(path), ".json", dump)


def as_json(x):
    """``x`` as it reads back from a JSON file (tuples as lists, numpy values and paths converted)."""
    return json.loads(json.dumps(_jsonable(x)))


def write_json_if_changed(path: Path, data: dict) -> bool:
    """:func:`write_json` unless ``path`` already holds exactly ``data`` (its time stays); True if written."""
    try:
        if json.loads(Path(path).read_text()) == as_json(data):
            return False
    except (OSError, ValueError):
        pass
    write_json(path, data)
    return True


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically, with the umask's permissions."""
    atomic_write(Path(path), Path(path).suffix or ".txt", lambda tmp: Path(tmp).write_text(text))


def write_csv(path: Path, rows: list[dict], fields) -> None:
    """Rows as CSV with the header ``fields`` (missing or None values empty), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(fields), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in fields})
    write_text(path, buf.getvalue())


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def input_stamp(src: Path) -> list[int]:
    """(size, mtime_ns) of an input file, or summed over a DICOM folder's files."""
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    stats = [p.stat() for p in files]
    return [sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)]
