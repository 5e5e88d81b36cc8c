"""Output-side faults (disk full, permission denied, a failure mid-write) are one CTARRError naming
the path, and leave nothing half-written: no partial file, no temporary file, an older file intact."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SMALL

from nnunet_ctarr.core.base import files, images
from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.base.files import write_json, write_text
from nnunet_ctarr.core.base.images import read_image, write_image
from nnunet_ctarr.core.outputs import qc


def _image(n: int = 40) -> sitk.Image:
    rng = np.random.default_rng(0)
    return sitk.GetImageFromArray(rng.integers(-1000, 1000, (n, 64, 64)).astype(np.int16))


def _assert_clean(folder, keep=()) -> None:
    """Only ``keep`` is left in ``folder`` (no partial output, no temporary file)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


def _disk_full_after(n_bytes: int):
    """A writer that puts ``n_bytes`` into the file and then fails as a full disk does."""

    def write(path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"\0" * n_bytes)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_cut_by_a_full_disk_is_an_error_not_a_file(tmp_path, monkeypatch, suffix):
    """SimpleITK's NIfTI writer only prints 'wrote only 0 of N bytes' when the disk is full and
    returns normally; the written file is read back by its header before it is renamed into place."""
    real = sitk.WriteImage

    def cut_short(img, path, compress=True):
        real(img, path, compress)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])

    target = tmp_path / f"ct{suffix}"
    write_image(_image(4), target)  # an older, complete file
    before = target.read_bytes()
    monkeypatch.setattr(images.sitk, "WriteImage", cut_short)
    with pytest.raises(CTARRError, match=rf"cannot write .*ct{suffix.replace('.', '[.]')}: .*incomplete"):
        write_image(_image(), target)
    _assert_clean(tmp_path, [target.name])
    assert target.read_bytes() == before  # the older file is untouched
    monkeypatch.setattr(images.sitk, "WriteImage", real)
    write_image(_image(), target)
    assert read_image(target).GetSize() == (64, 64, 40)


def test_json_text_and_qc_picture_on_a_full_disk(tmp_path, monkeypatch):
    import json

    import matplotlib.figure

    monkeypatch.setattr(json, "dump", lambda obj, f, **k: (f.write('{"half'), _disk_full_after(0)(os.devnull)))
    with pytest.raises(CTARRError, match=r"cannot write .*side\.json: No space left on device"):
        write_json(tmp_path / "side.json", {"a": 1})
    monkeypatch.setattr(files.Path, "write_text", lambda self, text: _disk_full_after(10)(self))
    with pytest.raises(CTARRError, match=r"cannot write .*report\.csv: No space left on device"):
        write_text(tmp_path / "report.csv", "a,b\n")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, path, **k: _disk_full_after(100)(path))
    import matplotlib.pyplot as plt

    fig = plt.figure()
    with pytest.raises(CTARRError, match=r"cannot write .*case_liver_qc\.png: No space left on device"):
        qc.save_figure(fig, tmp_path / "case_liver_qc.png", dpi=50)
    assert not plt.fignum_exists(fig.number)  # closed also on failure
    _assert_clean(tmp_path)


def test_crop_with_qc_on_a_full_disk_is_one_error_line(tmp_path, monkeypatch):
    """The finding: --qc on a full disk gave a PIL OSError traceback and a 0-byte PNG."""
    import matplotlib.figure
    from conftest import run_in_process

    from nnunet_ctarr.cli.crop import main

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, path, **k: _disk_full_after(0)(path))
    out = tmp_path / "out"
    r = run_in_process(
        main, ["-i", str(SMALL[0]), "-anatomy_seg", str(SMALL[1]), "-r", "liver", "-o", str(out), "--qc"]
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "No space left on device" in ln]
    assert errors and all("_qc.png" in ln for ln in errors), r.stderr
    assert not [p for p in out.iterdir() if p.suffix == ".png" or p.name.startswith(".tmp_")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_permission_denied_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(CTARRError, match=r"cannot write .*locked/x\.nii\.gz: Permission denied"):
            write_image(_image(4), locked / "x.nii.gz")
        with pytest.raises(CTARRError, match="Permission denied"):
            write_json(locked / "x.json", {})
        with pytest.raises(CTARRError, match="Permission denied"):
            files.check_output_folder(locked / "sub")
    finally:
        locked.chmod(0o700)
    _assert_clean(locked)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    disk = tmp_path / "tiny"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_real_full_disk(tiny_disk, suffix):
    """A real full file system: every image format is one error line and leaves no file."""
    with pytest.raises(CTARRError, match=rf"cannot write .*ct{suffix.replace('.', '[.]')}: "):
        write_image(_image(), tiny_disk / f"ct{suffix}")
    _assert_clean(tiny_disk)


def test_threaded_writes_keep_the_umask_and_give_its_mode(tmp_path):
    """The crops of a case are written in threads: reading the umask for each file must never expose
    (or leave) a temporary 0 to another thread."""
    import os
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import SimpleITK as sitk

    from nnunet_ctarr.core.base import files
    from nnunet_ctarr.core.base.nifti import write_images

    old, switch = os.umask(0o027), sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often
    try:
        with ThreadPoolExecutor(8) as pool:
            modes = set(pool.map(lambda _: files._file_mode(), range(20000)))
        assert modes == {0o640} and os.umask(0o027) == 0o027
        img = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
        write_images([(img, tmp_path / f"c{k}.nii.gz") for k in range(20)], threads=4)
        assert {(tmp_path / f"c{k}.nii.gz").stat().st_mode & 0o777 for k in range(20)} == {0o640}
    finally:
        os.umask(old)
        sys.setswitchinterval(switch)
