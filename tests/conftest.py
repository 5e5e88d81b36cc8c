"""Shared fixtures: the real CTs bundled in examples/data (override with CTARR_DATA)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nnunet_ctarr.anatomy import AnatomyMasks, LabelScheme
from nnunet_ctarr.atlas import Atlas
from nnunet_ctarr.errors import WarningLog
from nnunet_ctarr.io import read_image

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CTARR_DATA", REPO / "examples" / "data"))

ABDOMEN = (DATA / "totalseg_example" / "example_ct.nii.gz", DATA / "totalseg_example" / "example_ct_totalseg_v2.nii.gz")
CHEST = (DATA / "chest_lidc" / "chest_ct_3mm.nii.gz", DATA / "chest_lidc" / "chest_ct_3mm_totalseg_v2.nii.gz")
DICOM = (DATA / "totalseg_example" / "example_ct_dicom", DATA / "totalseg_example" / "example_ct_dicom_totalseg_v2.nii.gz")
SMALL = (DATA / "totalseg_example" / "example_ct_sm.nii.gz", DATA / "totalseg_example" / "example_ct_sm_totalseg_v2.nii.gz")


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
        t[a == 5] = 1                       # liver
        t[np.isin(a, [2, 3])] = 2           # kidneys
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
    assert np.allclose(res.GetOrigin(), dcm.GetOrigin()) and np.allclose(res.GetSpacing(), dcm.GetSpacing())
    assert np.allclose(res.GetDirection(), dcm.GetDirection())

