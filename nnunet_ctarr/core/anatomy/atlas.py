"""The CTARR atlas: averaged masks of the 19 groups on a 3 mm grid (the builder is atlas_builder).

**Atlas frame.** Axes are the LPS patient axes (+x left, +y posterior, +z superior), units mm.
The frame is the average anatomy of the build scans (group-wise mean of the pairwise
transforms, paper 3.2); it is shifted so that the centre of voxel ``[0, 0, 0]`` of the atlas
grid is at (0, 0, 0) mm. Region boxes (``region_defs/*.json``) are given in this frame.

**File.** ``.npz`` with ``prob`` (19, Z, Y, X) uint8 (probability x 255), ``coverage``
(Z, Y, X) uint8 (share of build scans covering the voxel x 255), ``origin``, ``spacing``,
``observed`` (19,) and ``meta`` (JSON: atlas id, provenance, per-group coverage).
"""
from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from isal import isal_zlib

from ..base.errors import CTARRError
from ..base.geometry import Geometry
from ..base.user_data import resolve_atlas
from .volume import MaskVolume

DEFAULT_ATLAS = "atlas_ctarr_starter.npz"
#: atlases being prepared in a background thread (:meth:`Atlas.warm_up`), by id
_WARMING: dict[int, threading.Thread] = {}


@dataclass
class Atlas(MaskVolume):
    """The atlas (module docstring). A loaded atlas keeps its probabilities as stored, ``prob8``
    (uint8 x 255), and makes the float32 ``prob`` (216 MB for the starter atlas) only when a caller
    needs all of it; :meth:`prob_values` converts just what it indexes, with the same values."""
    meta: dict = field(default_factory=dict)
    prob8: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def prob(self) -> np.ndarray | None:
        """(19, Z, Y, X) float32 probabilities (converted from ``prob8`` on first use)."""
        if self.__dict__.get("_prob") is None and self.prob8 is not None:
            self.__dict__["_prob"] = _unit(self.prob8)
        return self.__dict__.get("_prob")

    @prob.setter
    def prob(self, value: np.ndarray | None) -> None:
        self.__dict__["_prob"] = value

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        stored = self.__dict__.get("_prob")
        return tuple((stored if stored is not None else self.prob8).shape[1:])

    def _axis_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact integer sums of the stored values / 255 (a float32 sum of the converted values
        differs by ~1e-7 relative), without converting the atlas."""
        if self.prob8 is None:
            return super()._axis_sums()
        return tuple(self.prob8.sum(axis=a, dtype=np.uint16 if self.prob8.shape[a] <= 257 else np.uint32) / 255.0
                     for a in (3, 2))

    def prob_values(self, index: tuple = ()) -> np.ndarray:
        stored = self.__dict__.get("_prob")
        return stored[index] if stored is not None else _unit(self.prob8[index])

    def warm_up(self, levels: tuple[int, ...] = (4, 2)) -> None:
        """Compute what every registration reads of the atlas (group masses, centres and boxes; the
        pooled ``levels``) in a background thread, while the caller reads a case's files; a reader of
        those caches waits for the thread instead of computing them a second time."""
        if id(self) in _WARMING or "moments" in self._cache:
            return

        def work() -> None:
            try:
                self._prob_moments()
                for f in levels:
                    self.pooled(f)
            except Exception:                     # noqa: BLE001 - the registration computes (and reports) it again
                pass
            finally:
                _WARMING.pop(id(self), None)
        _WARMING[id(self)] = thread = threading.Thread(target=work, name="ctarr-atlas-warm-up", daemon=True)
        thread.start()

    def _wait_warm(self) -> None:
        thread = _WARMING.get(id(self))
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _prob_moments(self) -> tuple[np.ndarray, np.ndarray]:
        self._wait_warm()
        return super()._prob_moments()

    def pooled(self, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self._wait_warm()
        return super().pooled(f)

    def prob_sum(self, groups, box: tuple = ()) -> np.ndarray:
        """The summed probability of ``groups`` over ``box`` ((z, y, x) slices), float32; from the
        stored uint8 values an exact integer sum, divided once (no per-group conversion)."""
        box = tuple(box)
        exact = self.__dict__.get("_prob") is None               # uint8 values: 19 x 255 fits uint16
        acc = np.zeros((self.prob8 if exact else self.prob)[(0,) + box].shape, np.uint16 if exact else np.float32)
        for g in groups:
            np.add(acc, self.prob8[(g,) + box] if exact else self.prob_values((g,) + box), out=acc)
        if not exact:
            return acc
        out = acc.astype(np.float32)
        out /= np.float32(255.0)
        return out

    @property
    def atlas_id(self) -> str:
        return self.meta.get("atlas_id", "unknown")

    @property
    def grid(self) -> Geometry:
        return self.geometry

    def save(self, path: str | Path) -> None:
        prob8 = np.round(np.clip(self.prob, 0, 1) * 255).astype(np.uint8)
        cov8 = np.round(np.clip(self.coverage, 0, 1) * 255).astype(np.uint8)
        meta = dict(self.meta)
        meta["atlas_id"] = hashlib.sha1(prob8.tobytes() + cov8.tobytes()).hexdigest()[:12]
        self.meta = meta
        np.savez_compressed(path, prob=prob8, coverage=cov8, origin=self.origin, spacing=self.spacing,
                            observed=self.observed, meta=json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path | None = None) -> Atlas:
        """Load an atlas file; ``None`` loads the atlas shipped with the package; a name that is
        not a file loads the imported atlas set of that name (``core.base.user_data``)."""
        try:
            if path is None:
                ref = resources.files("nnunet_ctarr").joinpath(f"resources/{DEFAULT_ATLAS}")
                with resources.as_file(ref) as p:
                    data = read_npz(p)
            else:
                data = read_npz(resolve_atlas(path))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, isal_zlib.error) as e:
            raise CTARRError(f"cannot load atlas {path or DEFAULT_ATLAS}: {e}") from None
        return cls(origin=data["origin"].astype(float), spacing=data["spacing"].astype(float),
                   observed=data["observed"].astype(bool), prob8=data["prob"],
                   coverage=_unit(data["coverage"]), meta=json.loads(str(data["meta"])))


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (``np.load``'s values), each member inflated by ISA-L (~3x
    faster than zlib for the 54 MB atlas) and checked against the CRC in the zip directory."""
    out = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            f.seek(info.header_offset)
            head = f.read(30)
            if head[:4] != b"PK\x03\x04" or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ValueError(f"{info.filename}: not a stored or deflated zip member")
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            raw = f.read(info.compress_size)
            if info.compress_type == zipfile.ZIP_DEFLATED:
                raw = isal_zlib.decompress(raw, -15)
            if isal_zlib.crc32(raw) != info.CRC:
                raise ValueError(f"{info.filename}: CRC mismatch (damaged file)")
            out[info.filename.removesuffix(".npy")] = _npy_array(raw)
    return out


def _npy_array(raw: bytes) -> np.ndarray:
    """The array of an ``.npy`` file's bytes, on those bytes (read-only, no copy); object arrays refused."""
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise ValueError("object arrays are not read (no pickles)")
    arr = np.frombuffer(raw, dtype, int(np.prod(shape)), f.tell())
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _unit(a8: np.ndarray) -> np.ndarray:
    """uint8 x 255 -> float32 in [0, 1] (divided in place: the values of ``a / 255.0``, ~20x faster)."""
    out = a8.astype(np.float32)
    out /= np.float32(255.0)
    return out
