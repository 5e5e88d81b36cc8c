"""Damaged inputs and unusable outputs are one-line errors before any work; written files honour
the umask. Damaged files are fabricated from the bundled real CTs."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, SMALL, run_in_process

import nnunet_ctarr.core.pipeline as pipeline
from nnunet_ctarr.cli.crop import main
from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.base.geometry import Geometry
from nnunet_ctarr.core.base.images import read_image, write_image


def _one_error(r, needle: str) -> str:
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, r.stderr
    assert needle in errors[0], errors[0]
    return errors[0]


def _truncated(src, dst, fraction=0.5):
    data = open(src, "rb").read()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _crop(tmp_path, image, anatomy=SMALL[1], extra=()):
    out = tmp_path / "out"
    r = run_in_process(main, ["-i", str(image), "-anatomy_seg", str(anatomy), "-r", "liver", "-o", str(out), *extra])
    return r, out


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_an_error_not_zeros(tmp_path, suffix):
    full = tmp_path / f"full{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(SMALL[0])), str(full), suffix.endswith(".gz"))
    assert np.array_equal(
        sitk.GetArrayFromImage(read_image(full)), sitk.GetArrayFromImage(sitk.ReadImage(str(SMALL[0])))
    )
    cut = _truncated(full, tmp_path / f"cut{suffix}")
    # what SimpleITK alone does: the missing half reads as zeros, silently
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(cut)))
    assert (arr.reshape(arr.shape[0], -1) == 0).all(1).sum() >= arr.shape[0] // 3
    with pytest.raises(CTARRError, match="incomplete"):
        read_image(cut)
    r, out = _crop(tmp_path, cut)
    _one_error(r, "incomplete")
    assert not out.exists() or not any(out.iterdir())


def test_truncated_anatomy_map_is_an_error(tmp_path):
    cut = _truncated(SMALL[1], tmp_path / "anat.nii.gz", 0.6)
    r, out = _crop(tmp_path, SMALL[0], anatomy=cut)
    _one_error(r, "incomplete")
    assert not any(out.iterdir())


@pytest.mark.parametrize("value,what", [(np.nan, "NaN slab"), (np.inf, "Inf slices")])
def test_nonfinite_voxels_refused_or_replaced(tmp_path, value, what):
    img = sitk.Cast(sitk.ReadImage(str(ABDOMEN[0])), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(img)
    arr[10:13] = value  # three axial slices
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        path = tmp_path / f"bad{suffix}"
        sitk.WriteImage(bad, str(path))
        r, out = (
            run_in_process(
                main, ["-i", str(path), "-anatomy_seg", str(ABDOMEN[1]), "-r", "liver", "-o", str(tmp_path / suffix)]
            ),
            tmp_path / suffix,
        )
        line = _one_error(r, f"{3 * arr.shape[1] * arr.shape[2]} NaN or infinite voxel(s)")
        assert "--allow_nonfinite" in line, what
        assert not any(out.iterdir())
    r = run_in_process(
        main,
        [
            "-i",
            str(tmp_path / "bad.nii.gz"),
            "-anatomy_seg",
            str(ABDOMEN[1]),
            "-r",
            "liver",
            "-o",
            str(tmp_path / "ok"),
            "--allow_nonfinite",
        ],
    )
    assert r.returncode == 0, r.stderr
    crop = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ok" / "bad_liver.nii.gz")))
    assert np.isfinite(crop).all()
    import json

    side = json.loads((tmp_path / "ok" / "bad.ctarr.json").read_text())
    assert any("NaN/infinite voxel(s) replaced" in w for w in side["regions"]["liver"]["warnings"])


def test_output_path_that_is_a_file_fails_before_registration(tmp_path, monkeypatch):
    def no_registration(*a, **k):
        raise AssertionError("registration ran although the output cannot be written")

    monkeypatch.setattr(pipeline, "locate_case", no_registration)
    afile = tmp_path / "out.txt"
    afile.write_text("x")
    r = run_in_process(main, ["-i", str(SMALL[0]), "-anatomy_seg", str(SMALL[1]), "-r", "liver", "-o", str(afile)])
    _one_error(r, "is an existing file")
    r = run_in_process(
        main, ["-i", str(SMALL[0]), "-anatomy_seg", str(SMALL[1]), "-r", "liver", "-o", str(afile / "sub")]
    )
    _one_error(r, "cannot write to the output folder")


def test_write_errors_are_one_line_naming_the_path(tmp_path):
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(CTARRError, match=r"cannot write .*blocker/x\.nii\.gz"):
        write_image(sitk.Image([4, 4, 4], sitk.sitkInt16), tmp_path / "blocker" / "x.nii.gz")


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        r, out = _crop(tmp_path, ABDOMEN[0], anatomy=ABDOMEN[1], extra=("--qc",))
        assert r.returncode == 0, r.stderr
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
        assert len(modes) >= 3
        assert set(modes.values()) == {0o644}, modes  # readable by group and others, as open() gives
        os.umask(0o077)
        r, out2 = _crop(tmp_path / "private", ABDOMEN[0], anatomy=ABDOMEN[1])
        assert {stat.S_IMODE(p.stat().st_mode) for p in out2.iterdir()} == {0o600}
    finally:
        os.umask(old)


def _scaled_copy(src, dst, stored: str, slope: float, inter: float):
    """The real CT stored as ``stored`` integers with scl_slope/scl_inter (HU = stored * slope + inter)."""
    import nibabel

    nii = nibabel.load(str(src))
    hu = np.asanyarray(nii.dataobj).astype(float)
    info = np.iinfo(stored)
    raw = np.clip(np.round((hu - inter) / slope), info.min, info.max).astype(stored)
    out = nibabel.Nifti1Image(raw, nii.affine, dtype=np.dtype(stored))
    out.header.set_slope_inter(slope, inter)
    nibabel.save(out, str(dst))
    return np.clip(hu, info.min * slope + inter, info.max * slope + inter)


@pytest.mark.parametrize(
    "stored,slope,inter,suffix",
    [("uint16", 1.0, -1024.0, ".nii.gz"), ("int16", 0.5, 0.0, ".nii"), ("uint8", 2.21, -1024.0, ".nii.gz")],
)
def test_scaled_nifti_is_read_and_cut_scaled_nifti_still_refused(tmp_path, stored, slope, inter, suffix):
    """Scaled files read as float (SimpleITK applies the scaling) but hold stored integers: the size
    check follows the header's datatype, so they are complete; cut copies are still incomplete."""
    path = tmp_path / f"scaled{suffix}"
    hu = _scaled_copy(SMALL[0], path, stored, slope, inter)
    img = read_image(path)
    assert sitk.GetArrayViewFromImage(img).dtype == np.float32
    assert np.abs(sitk.GetArrayViewFromImage(img) - hu.T).max() <= slope / 2 + 1e-3
    ref = sitk.ReadImage(str(SMALL[0]))
    assert np.allclose(img.GetOrigin(), ref.GetOrigin()) and np.allclose(img.GetDirection(), ref.GetDirection())
    with pytest.raises(CTARRError, match="incomplete"):
        read_image(_truncated(path, tmp_path / f"cut{suffix}", 0.8))


def test_scaled_nifti_is_cropped(tmp_path):
    _scaled_copy(SMALL[0], tmp_path / "scaled.nii.gz", "uint16", 1.0, -1024.0)
    r, out = _crop(tmp_path, tmp_path / "scaled.nii.gz")
    assert r.returncode == 0, r.stderr
    crop, full = read_image(out / "scaled_liver.nii.gz"), read_image(tmp_path / "scaled.nii.gz")
    assert np.prod(crop.GetSize()) < 0.8 * np.prod(full.GetSize())
    start = Geometry.of(full).offset_of(Geometry.of(crop))
    stop = start + np.array(crop.GetSize())
    sub = sitk.GetArrayViewFromImage(full)[Geometry.slices_zyx(start, stop)]
    assert np.array_equal(sitk.GetArrayViewFromImage(crop), sub)  # the scaled HU voxels, not cut
