"""Helpers shared by the command-line tools: logging, one-line errors, versions, nnU-Net inputs."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from ..core.anatomy.atlas import Atlas
from ..core.base.cases import case_id, is_dicom_dir
from ..core.base.errors import CTARRError, route_itk_messages
from ..core.base.images import read_image


class _TqdmHandler(logging.Handler):
    """Log lines written with ``tqdm.write``: above a running progress bar, never on its line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:                       # noqa: BLE001 (logging must never raise)
            self.handleError(record)


#: how every command's log lines look (``warning: ...``, ``error: ...``)
LOG_FORMAT = "%(levelname)s: %(message)s"


def setup_logging(verbose: bool = False) -> None:
    """Warnings and errors as ``warning: ...`` / ``error: ...`` lines on stderr, above any progress bar."""
    for level, name in ((logging.WARNING, "warning"), (logging.INFO, "info"), (logging.ERROR, "error")):
        logging.addLevelName(level, name)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("nnunet_ctarr.itk").setLevel(logging.DEBUG if verbose else logging.WARNING)
    route_itk_messages()


def parse(parser, argv: list[str] | None):
    """Parse the command line and set up logging (``-v/--verbose`` where the command has it)."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    return args


def map_cases(fn: Callable, items: list, n_workers: int, init: Callable, initargs: tuple, desc: str) -> Iterator:
    """``fn(x) for x in items``, yielded in order as they finish, with a progress bar: in this
    process (``n_workers <= 1``, after ``init(*initargs, threads=None)``) or in ``n_workers`` spawned
    processes, each with ``cores // n_workers`` threads (torch, OpenMP and BLAS: NumPy's OpenBLAS
    threads spin, and two workers with two threads each took twice the CPU time) so that workers x
    threads <= cores. The workers' log lines come to this process (one stream, above the bar).
    ``fn`` must not raise; a worker process that dies raises :class:`WorkerDied` for its item."""
    bar = tqdm(total=len(items), desc=desc, disable=len(items) < 2, file=sys.stderr)
    if n_workers <= 1:
        init(*initargs, threads=None)
        for x in items:
            yield fn(x)
            bar.update()
        bar.close()
        return
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Manager().Queue()
    listener = QueueListener(queue, *logging.getLogger().handlers, respect_handler_level=False)
    listener.start()
    try:
        with _thread_env(threads), ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_logged,
                                                       initargs=(init, queue, logging.getLogger().level,
                                                                 *initargs, threads)) as ex:
            futures = [ex.submit(fn, x) for x in items]
            for x, f in zip(items, futures):
                try:
                    yield f.result()
                except BrokenProcessPool as e:
                    raise WorkerDied(f"a worker process died ({e}); the case {x} and every case after it were "
                                     "not finished") from None
                bar.update()
    finally:
        bar.close()
        listener.stop()


class WorkerDied(CTARRError):
    """A worker process of :func:`map_cases` died (killed, out of memory)."""


def _init_logged(init: Callable, queue, level: int, *initargs) -> None:
    """A spawned worker: log records go to the main process, then the command's own init."""
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(queue)]
    root.setLevel(level)
    for lvl, name in ((logging.WARNING, "warning"), (logging.INFO, "info"), (logging.ERROR, "error")):
        logging.addLevelName(lvl, name)
    route_itk_messages()
    init(*initargs[:-1], threads=initargs[-1])


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


def without_case(message: str, case: str) -> str:
    """A case's error message without a leading ``<case>: `` (the log line names the case once)."""
    return message[len(case) + 2:] if message.startswith(f"{case}: ") else message


def internal_error(e: BaseException) -> tuple[str, str]:
    """(one line, the traceback) of an unexpected exception in a case: the batch goes on."""
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    text = " ".join(str(e).split())[:300]
    line = (f"internal error {type(e).__name__}{at}: {text or '(no message)'} "
            "(a bug: please report it with the traceback)")
    return line, "".join(traceback.format_exception(type(e), e, e.__traceback__))


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a CLI main (on ``argv``, default the command line): a user error or an OS error is one
    ``error:`` line and exit code 1; anything unexpected is one line too, its traceback written to
    a file it names (and printed with ``-v``); Ctrl-C exits 130."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = main(argv)
    except CTARRError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except OSError as e:
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as e:                     # noqa: BLE001 (the one place that turns a bug into one line)
        line, tb = internal_error(e)
        log = _save_traceback(tb)
        print(f"error: {line}" + (f"; traceback in {log}" if log else ""), file=sys.stderr)
        if "-v" in args or "--verbose" in args:
            print(tb, file=sys.stderr)
        code = 1
    sys.exit(code)


def _save_traceback(tb: str) -> str | None:
    """The traceback in a temporary file (its path), or None when it cannot be written."""
    import tempfile
    try:
        fd, path = tempfile.mkstemp(prefix="nnunet_ctarr_error_", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(tb)
        return path
    except OSError:
        return None


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
