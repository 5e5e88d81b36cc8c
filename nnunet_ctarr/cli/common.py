"""Helpers shared by the command-line tools: logging, one-line errors, versions, nnU-Net inputs."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from ..core.anatomy.atlas import Atlas
from ..core.base.cases import case_id, is_dicom_dir
from ..core.base.errors import CTARRError, route_itk_messages
from ..core.base.images import read_image


def setup_logging(verbose: bool = False) -> None:
    """Warnings and errors as ``warning: ...`` / ``error: ...`` lines on stderr."""
    for level, name in ((logging.WARNING, "warning"), (logging.INFO, "info"), (logging.ERROR, "error")):
        logging.addLevelName(level, name)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    if verbose:
        logging.getLogger("nnunet_ctarr.itk").setLevel(logging.DEBUG)
    route_itk_messages()


def parse(parser, argv: list[str] | None):
    """Parse the command line and set up logging (``-v/--verbose`` where the command has it)."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    return args


def map_cases(fn: Callable, items: list, n_workers: int, init: Callable, initargs: tuple, desc: str) -> list:
    """``[fn(x) for x in items]`` with a progress bar: in this process (``n_workers <= 1``, after
    ``init(*initargs, threads=None)``) or in ``n_workers`` spawned processes, each with
    ``cores // n_workers`` threads (torch, OpenMP and BLAS: NumPy's OpenBLAS threads spin, and two
    workers with two threads each took twice the CPU time) so that workers x threads <= cores.
    Order is kept."""
    if n_workers <= 1:
        init(*initargs, threads=None)
        return [fn(x) for x in tqdm(items, desc=desc, disable=len(items) < 2, file=sys.stderr)]
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    ctx = multiprocessing.get_context("spawn")
    with _thread_env(threads), ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=init,
                                                   initargs=(*initargs, threads)) as ex:
        return list(tqdm(ex.map(fn, items), total=len(items), desc=desc, file=sys.stderr))


#: thread-count variables a spawned worker's libraries read when they load
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _thread_env(threads: int):
    """The thread-count variables set to ``threads`` (where the user has not set them) while
    workers start; restored afterwards."""
    old = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: str(threads) for k, v in old.items() if v is None})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)


#: what every case of a batch shares, set by :func:`init_worker` in each worker (and in this process for -np 1)
WORKER: dict = {}


def init_worker(job, anatomy, atlas: Atlas | str | None, threads: int | None = None) -> None:
    """The shared state of a :func:`map_cases` worker: the command's job, the anatomy source and
    the atlas (loaded here when given as a path, as for a spawned worker); ``threads`` torch threads
    (where torch is loaded already)."""
    if threads and "torch" in sys.modules:      # else torch reads OMP_NUM_THREADS when it is imported
        sys.modules["torch"].set_num_threads(threads)
    WORKER.update(job=job, anatomy=anatomy, atlas=atlas if isinstance(atlas, Atlas) else Atlas.load(atlas))


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a CLI main (on ``argv``, default the command line); user errors become one line on
    stderr and exit code 1."""
    try:
        code = main(argv)
    except CTARRError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def prepare_inputs(src: Path, tmp: Path) -> str | list[list[str]]:
    """nnU-Net input: a folder as is; a single image file or DICOM folders converted to a list."""
    if not src.exists():
        raise CTARRError(f"input not found: {src}")
    if src.is_dir() and not is_dicom_dir(src) and not any(is_dicom_dir(d) for d in src.iterdir() if d.is_dir()):
        return str(src)
    sources = [src] if (src.is_file() or is_dicom_dir(src)) else sorted(d for d in src.iterdir() if is_dicom_dir(d))
    lists = []
    for s in sources:
        if s.is_file():
            lists.append([str(s)])
            continue
        dst = tmp / f"{case_id(s)}_0000.nii.gz"
        sitk.WriteImage(read_image(s), str(dst), True)
        lists.append([str(dst)])
    return lists
