"""The fast NIfTI writer: the same file content as SimpleITK's writer (header and voxels, over pixel
types and orientations), read back identically by SimpleITK, nibabel and nnU-Net; levels, threads,
atomic writes with the umask's permissions."""

from __future__ import annotations

import gzip
import itertools
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import CHEST

from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.base.images import read_image, write_image
from nnunet_ctarr.core.base.nifti import LEVELS, Crop, write_images, write_nifti

PIXEL_TYPES = [
    sitk.sitkUInt8,
    sitk.sitkInt8,
    sitk.sitkUInt16,
    sitk.sitkInt16,
    sitk.sitkUInt32,
    sitk.sitkInt32,
    sitk.sitkUInt64,
    sitk.sitkInt64,
    sitk.sitkFloat32,
    sitk.sitkFloat64,
]


def _directions(rng) -> list[np.ndarray]:
    """The 48 axis-aligned directions (every axis order and sense) and 8 oblique ones."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product([1, -1], repeat=3):
            d = np.zeros((3, 3))
            d[list(perm), [0, 1, 2]] = signs
            out.append(d)
    for _ in range(8):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        out.append(q)
    return out


def _image(rng, pixel_id: int, direction: np.ndarray) -> sitk.Image:
    size = [int(n) for n in rng.integers(1, 7, 3)]
    img = sitk.Cast(sitk.GetImageFromArray(rng.integers(0, 120, size[::-1]).astype(np.float64)), pixel_id)
    img.SetDirection(direction.ravel().tolist())
    img.SetSpacing(rng.uniform(0.3, 5.0, 3).tolist())
    img.SetOrigin(rng.uniform(-500.0, 500.0, 3).tolist())
    return img


def _content(path) -> bytes:
    """A NIfTI file's bytes, uncompressed."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def test_file_content_equals_simpleitks_over_pixel_types_and_orientations(tmp_path):
    rng = np.random.default_rng(0)
    for k, direction in enumerate(_directions(rng)):
        img = _image(rng, PIXEL_TYPES[k % len(PIXEL_TYPES)], direction)
        ext = (".nii.gz", ".nii")[k % 2]
        # own names: ITK's NIfTI reader mixes up files whose names differ only by .nii / .nii.gz
        ref, new = tmp_path / f"ref{k}{ext}", tmp_path / f"new{k}{ext}"
        sitk.WriteImage(img, str(ref))
        write_nifti(img, new)
        assert _content(new) == _content(ref), (k, img.GetPixelIDTypeAsString(), direction.tolist())
        back = sitk.ReadImage(str(new))
        assert back.GetPixelID() == img.GetPixelID()
        assert back.GetOrigin() == sitk.ReadImage(str(ref)).GetOrigin()
        assert back.GetDirection() == sitk.ReadImage(str(ref)).GetDirection()
        assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(img))


def test_a_read_image_with_its_metadata_and_nibabel_read_back(tmp_path):
    """A real scan (NIfTI metadata attached by the reader) and a crop of it: SimpleITK's content,
    and nibabel reads the same affine, codes, dtype and voxels as from SimpleITK's file."""
    img = read_image(CHEST[0])
    for name, im in (("full", img), ("crop", img[10:70, 25:90, 5:60])):
        ref, new = tmp_path / f"{name}_ref.nii.gz", tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(im, str(ref))
        write_image(im, new)
        assert _content(new) == _content(ref)
        a, b = nib.load(ref), nib.load(new)
        assert np.array_equal(a.affine, b.affine)
        assert a.header.get_qform(coded=True)[1] == b.header.get_qform(coded=True)[1] == 1
        assert a.header.get_sform(coded=True)[1] == b.header.get_sform(coded=True)[1] == 1
        assert b.get_data_dtype() == np.int16
        assert np.array_equal(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj))


def test_crops_streamed_from_the_image_equal_simpleitks_crops(tmp_path):
    """A Crop (an index box, never copied) is written as SimpleITK writes ``image[box]``: the native
    chest with its metadata, and stored orientations with every axis order and sense."""
    rng = np.random.default_rng(3)
    images = [read_image(CHEST[0])]
    for k, direction in enumerate(_directions(rng)[::7]):
        images.append(_image(rng, PIXEL_TYPES[k % len(PIXEL_TYPES)], direction))
    for k, img in enumerate(images):
        size = np.array(img.GetSize())
        start = rng.integers(0, size)
        stop = np.minimum(size, start + rng.integers(1, size + 1))
        box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        ref, new = tmp_path / f"c{k}_ref.nii.gz", tmp_path / f"c{k}.nii.gz"
        sitk.WriteImage(img[box], str(ref))
        write_nifti(Crop(img, tuple(start), tuple(stop)), new)
        assert _content(new) == _content(ref), (k, start, stop)
    with pytest.raises(CTARRError, match="does not lie inside"):
        Crop(images[0], (0, 0, 0), (10, 10, 200))


def test_2d_4d_and_vector_images(tmp_path):
    for dim in (2, 4):
        img = sitk.GetImageFromArray(np.arange(3**dim, dtype=np.int16).reshape([3] * dim), isVector=False)
        img.SetSpacing([0.7] * dim)
        sitk.WriteImage(img, str(tmp_path / "ref.nii.gz"))
        write_nifti(img, tmp_path / "new.nii.gz")
        assert _content(tmp_path / "new.nii.gz") == _content(tmp_path / "ref.nii.gz")
    vec = sitk.Compose([sitk.Image(4, 5, 6, sitk.sitkFloat32) + 1.0, sitk.Image(4, 5, 6, sitk.sitkFloat32) + 2.0])
    write_nifti(vec, tmp_path / "vec.nii.gz")  # written by SimpleITK itself
    back = sitk.ReadImage(str(tmp_path / "vec.nii.gz"))
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(vec))


def test_levels_uncompressed_and_nnunet_reads_it(tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    img = read_image(CHEST[0])[:, :, 20:60]
    raw = None
    sizes = []
    for level in LEVELS:
        p = tmp_path / f"l{level}.nii.gz"
        write_nifti(img, p, level)
        raw = raw or _content(p)
        assert _content(p) == raw
        sizes.append(p.stat().st_size)
    write_nifti(img, tmp_path / "plain.nii")
    assert (tmp_path / "plain.nii").read_bytes() == raw
    assert sizes[-1] < sizes[0] < len(raw)
    data, props = SimpleITKIO().read_images([str(tmp_path / "l2.nii.gz")])
    assert np.array_equal(data[0], sitk.GetArrayViewFromImage(img))
    assert tuple(props["sitk_stuff"]["origin"]) == img.GetOrigin()
    with pytest.raises(CTARRError, match="compression level 5"):
        write_nifti(img, tmp_path / "x.nii.gz", 5)
    with pytest.raises(CTARRError, match="not a NIfTI file name"):
        write_nifti(img, tmp_path / "x.mha")


def test_threads_write_the_same_files_atomically_with_the_umask(tmp_path):
    img = read_image(CHEST[0])
    crops = [img[i * 10 : i * 10 + 50, 20:90, :] for i in range(3)] + [img > 0]
    # many boxes of one image: the voxel views are taken before the threads start (a view taken in a
    # thread while another sliced the same image segfaulted: SimpleITK copied the buffer under it)
    crops += [Crop(img, (i * 5, 20, 0), (i * 5 + 50, 90, img.GetSize()[2])) for i in range(12)]
    seq, par = tmp_path / "seq", tmp_path / "par"
    write_images([(c, seq / f"c{i}.nii.gz") for i, c in enumerate(crops)], threads=1)
    old = os.umask(0o027)
    try:
        write_images([(c, par / f"c{i}.nii.gz") for i, c in enumerate(crops)], threads=2)
    finally:
        os.umask(old)
    for i in range(len(crops)):
        assert (par / f"c{i}.nii.gz").read_bytes() == (seq / f"c{i}.nii.gz").read_bytes()  # gzip mtime 0
        assert (par / f"c{i}.nii.gz").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in par.iterdir()) == sorted(f"c{i}.nii.gz" for i in range(len(crops)))  # no temp files
    write_images([(crops[0], par / "c.mha")], threads=2)  # other formats: SimpleITK
    assert sitk.ReadImage(str(par / "c.mha")).GetSize() == crops[0].GetSize()
    write_images([(crops[-1], par / "box.mha")], threads=1)  # a Crop too
    assert sitk.ReadImage(str(par / "box.mha")).GetSize() == crops[0].GetSize()


def test_write_errors_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CTARRError, match="cannot write"):
        write_images([(sitk.Image(4, 4, 4, sitk.sitkUInt8), blocker / "a.nii.gz")] * 2, threads=2)


RACE = """
import sys, tempfile
from pathlib import Path
import SimpleITK as sitk
from nnunet_ctarr.core.base.nifti import Crop, write_images
big = sitk.Expand(sitk.ReadImage(sys.argv[1]), [2, 2, 2])
with tempfile.TemporaryDirectory() as d:
    for _ in range(2):
        crops = [Crop(big, (i * 8, 10, 0), (i * 8 + 120, 200, big.GetSize()[2])) for i in range(16)]
        write_images([(c, Path(d) / f"c{i}.nii.gz") for i, c in enumerate(crops)], 0, 2)
"""


def test_many_crops_of_one_image_in_threads_do_not_crash():
    """In a process of its own: a voxel view taken in one thread while another sliced the same image
    crashed the interpreter (SimpleITK made the buffer unique, copying it under the view)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", RACE, str(CHEST[0])], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-500:]
