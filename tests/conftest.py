"""Shared fixtures: the real CTs bundled in examples/data (override with CTARR_DATA)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from nnunet_ctarr.core.anatomy import AnatomyMasks, LabelScheme
from nnunet_ctarr.core.atlas import Atlas
from nnunet_ctarr.core.errors import WarningLog
from nnunet_ctarr.core.io import read_image

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]
# evaluation protocols and the random-model factory live in benchmarks/ (not in the package)
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = Path(os.environ.get("CTARR_DATA", REPO / "examples" / "data"))

#: sliding-window step of every test prediction: tiles do not overlap (up to 8x fewer than nnU-Net's
#: default 0.5 in 3D); each comparison (CTARR vs stock nnU-Net, npy vs files) uses the same step
TEST_STEP = 1.0
ABDOMEN = (DATA / "totalseg_example" / "example_ct.nii.gz", DATA / "totalseg_example" / "example_ct_totalseg_v2.nii.gz")
CHEST = (DATA / "chest_lidc" / "chest_ct_3mm.nii.gz", DATA / "chest_lidc" / "chest_ct_3mm_totalseg_v2.nii.gz")
DICOM = (
    DATA / "totalseg_example" / "example_ct_dicom",
    DATA / "totalseg_example" / "example_ct_dicom_totalseg_v2.nii.gz",
)
SMALL = (
    DATA / "totalseg_example" / "example_ct_sm.nii.gz",
    DATA / "totalseg_example" / "example_ct_sm_totalseg_v2.nii.gz",
)


@pytest.fixture(scope="session")
def atlas() -> Atlas:
    return Atlas.load()


@pytest.fixture(scope="session")
def ts_v2() -> LabelScheme:
    return LabelScheme.named("ts_v2")


@pytest.fixture(scope="session")
def abdomen():
    return read_image(ABDOMEN[0]), read_image(ABDOMEN[1])


@pytest.fixture(scope="session")
def chest():
    return read_image(CHEST[0]), read_image(CHEST[1])


def anatomy_of(labels, scheme: LabelScheme) -> AnatomyMasks:
    return AnatomyMasks.from_label_image(labels, scheme, WarningLog(), "test")


def write_liver_kidney_targets(folder: Path) -> list[Path]:
    """Target maps (liver = 1, kidneys = 2) of the two subjects for tiny test models."""
    import numpy as np
    import SimpleITK as sitk

    out = []
    for name, lab_f in (("abd", ABDOMEN[1]), ("chest", CHEST[1])):
        lab = sitk.ReadImage(str(lab_f))
        a = sitk.GetArrayFromImage(lab)
        t = np.zeros_like(a)
        t[a == 5] = 1  # liver
        t[np.isin(a, [2, 3])] = 2  # kidneys
        img = sitk.GetImageFromArray(t)
        img.CopyInformation(lab)
        sitk.WriteImage(img, str(folder / f"{name}.nii.gz"))
        out.append(folder / f"{name}.nii.gz")
    return out


def assert_same_geometry_as_dicom(result_file: Path, dicom_folder: Path = DICOM[0]) -> None:
    """A written result has the DICOM series' size, origin, spacing and direction."""
    import numpy as np
    import SimpleITK as sitk

    dcm = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(dicom_folder)))
    res = sitk.ReadImage(str(result_file))
    assert res.GetSize() == dcm.GetSize()
    assert np.allclose(res.GetOrigin(), dcm.GetOrigin())
    assert np.allclose(res.GetSpacing(), dcm.GetSpacing())
    assert np.allclose(res.GetDirection(), dcm.GetDirection())


def write_totalseg_subject(root: Path, subject: str, labels, ct=None, version: int = 2, drop=()) -> Path:
    """TotalSegmentator's dataset layout from a v2 label map (image or file): ``root/subject/
    segmentations/<structure>.nii.gz`` with v1 or v2 structure names (v1: the heart as
    ``heart_myocardium``), and ``ct.nii.gz`` when ``ct`` (image or file) is given."""
    import numpy as np
    import SimpleITK as sitk

    from nnunet_ctarr.core.anatomy import totalsegmentator_scheme

    lab = labels if isinstance(labels, sitk.Image) else sitk.ReadImage(str(labels))
    arr = sitk.GetArrayViewFromImage(lab)
    seg = root / subject / "segmentations"
    seg.mkdir(parents=True)
    if ct is not None:
        sitk.WriteImage(
            ct if isinstance(ct, sitk.Image) else sitk.ReadImage(str(ct)), str(root / subject / "ct.nii.gz")
        )
    names = set(totalsegmentator_scheme(version).values())
    for i, name in totalsegmentator_scheme(2).items():
        out = name if name in names else ("heart_myocardium" if name == "heart" and version == 1 else None)
        if out is None or out in drop:
            continue
        m = sitk.GetImageFromArray((arr == i).astype(np.uint8))
        m.CopyInformation(lab)
        sitk.WriteImage(m, str(seg / f"{out}.nii.gz"))
    return root / subject


@pytest.fixture(scope="session")
def ts_root(tmp_path_factory) -> Path:
    """A TotalSegmentator-layout root with the two real subjects (s0001 abdomen, s0002 chest)."""
    root = tmp_path_factory.mktemp("totalseg")
    write_totalseg_subject(root, "s0001", ABDOMEN[1], ct=ABDOMEN[0])
    write_totalseg_subject(root, "s0002", CHEST[1], ct=CHEST[0])
    return root


def run_in_process(main, argv: list[str]):
    """A command's ``main`` run in this process as its console entry point runs it (one-line
    errors, exit code, argparse usage errors): returns an object like ``subprocess.run``'s."""
    import contextlib
    import io
    from types import SimpleNamespace

    from nnunet_ctarr.cli.common import run_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(main, argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
