"""Shared fixtures: the real CTs bundled in examples/data (override with CTARR_DATA).

Registrations are memoised for the session (:func:`_registration_memo`): the same anatomy volume,
atlas and settings registered again returns a copy of the first result. ``CTARR_TEST_FRESH_REGISTRATION=1``
registers every time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import LabelScheme
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks
from nnunet_ctarr.core.base.errors import WarningLog
from nnunet_ctarr.core.base.images import read_image

#: under pytest-xdist (``make test`` runs two workers) each worker gets one of the two cores
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
torch.set_num_threads(1 if XDIST_WORKER else 2)
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


def pytest_collection_modifyitems(items: list) -> None:
    """The slow end-to-end files first (stable otherwise): under ``--dist loadfile`` the longest file
    then starts at once on one worker while the other takes the rest."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _shared_across_workers(tmp_path_factory, name: str, build):
    """``build(folder)`` run once per test run: under pytest-xdist the first worker builds into the
    run's common temporary folder (under a file lock) and the others wait for it and reuse it;
    ``build`` returns a JSON-able value. Without xdist, a fresh folder of this session."""
    if not XDIST_WORKER:
        return build(tmp_path_factory.mktemp(name))
    import json
    import shutil

    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / f"shared_{name}"   # pytest-N/: this run only
    done = folder.with_suffix(".json")
    with FileLock(str(done) + ".lock"):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)                   # a build that failed in another worker
            folder.mkdir()
            done.write_text(json.dumps(build(folder)))
        return json.loads(done.read_text())


def _volume_digest(vol) -> str:
    """Content hash of a scan's anatomy volume (grid, observed groups, label/probability arrays)."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    for a in (vol.origin, vol.spacing, vol.observed, vol.labels, vol.prob, vol.coverage):
        if a is None:
            h.update(b"-")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@pytest.fixture(scope="session", autouse=True)
def _registration_memo():
    """Registration (about a second per case) computed once per session for each (anatomy
    volume, atlas, settings, forced orientation): many tests crop the same bundled scans.
    Only what ``core.pipeline.locate`` registers, and only against an atlas with a content id (a
    loaded atlas file); test_registration calls the registration itself and is never memoised.
    A registration that raises is not memoised. Worker processes (``-np``) register themselves."""
    if os.environ.get("CTARR_TEST_FRESH_REGISTRATION", "") not in ("", "0"):
        yield
        return
    import copy

    import numpy as np

    from nnunet_ctarr.core.localise import localisation as pipeline
    from nnunet_ctarr.core.localise.settings import RegistrationSettings

    real, memo = pipeline.register, {}

    def register(moving, fixed, settings=None, orientation=None):
        atlas_id = getattr(fixed, "meta", {}).get("atlas_id")
        if not atlas_id:
            return real(moving, fixed, settings, orientation)
        grid = tuple(np.asarray(a).tobytes() for a in (fixed.origin, fixed.spacing, fixed.observed))
        key = (
            _volume_digest(moving),
            atlas_id,
            fixed.prob.shape,
            grid,
            repr(settings or RegistrationSettings()),
            repr(orientation),
        )
        if key not in memo:
            memo[key] = real(moving, fixed, settings, orientation)
        return copy.deepcopy(memo[key])

    pipeline.register = register
    try:
        yield
    finally:
        pipeline.register = real


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


@pytest.fixture(scope="session")
def random_models(tmp_path_factory) -> dict[str, Path]:
    """The suite's randomly initialised tiny nnU-Net model folders (benchmarks/model_factory.py),
    all built in one factory process the first time a test needs one. Tests copy a folder
    before changing it.

    ``tiny``: liver = 1, kidney = 2, planned on both subjects (3 mm); ``anatomy19``: the 19 groups
    (an anatomy model whose anatomy is garbage, as an untrained model's would be); ``multi_base``:
    heads a, b, 6 mm (few tiles); ``totalseg``: TotalSegmentator's 117 v2 names, planned on the
    30-slice CT at 3 mm."""
    built = _shared_across_workers(tmp_path_factory, "random_models", _build_random_models)
    return {name: Path(folder) for name, folder in built.items()}


def _build_random_models(tmp: Path) -> dict[str, str]:
    """The model folders of :func:`random_models`, built under ``tmp``."""
    import SimpleITK as sitk
    from model_factory import make_random_models, model_spec

    from nnunet_ctarr.core.anatomy.groups import GROUPS, totalsegmentator_scheme
    from nnunet_ctarr.core.anatomy.masks import load_anatomy

    (tmp / "targets").mkdir()
    (tmp / "groups").mkdir()
    targets = write_liver_kidney_targets(tmp / "targets")
    groups = []
    for name, lab_f in (("abd", ABDOMEN[1]), ("chest", CHEST[1])):
        sitk.WriteImage(load_anatomy(lab_f, warnings=WarningLog()).labels, str(tmp / "groups" / f"{name}.nii.gz"))
        groups.append(tmp / "groups" / f"{name}.nii.gz")
    cts = [ABDOMEN[0], CHEST[0]]
    specs = {
        "tiny": model_spec(tmp / "tiny", cts, targets, {"background": 0, "liver": 1, "kidney": 2}),
        "anatomy19": model_spec(
            tmp / "anatomy19",
            cts,
            groups,
            {"background": 0, **{g: i + 1 for i, g in enumerate(GROUPS)}},
            dataset_id=988,
            seed=1,
        ),
        "multi_base": model_spec(
            tmp / "multi_base",
            cts,
            targets,
            {"background": 0, "a": 1, "b": 2},
            dataset_id=986,
            seed=4,
            spacing=[6.0, 6.0, 6.0],
        ),
        "totalseg": model_spec(
            tmp / "totalseg",
            [SMALL[0]],
            [SMALL[1]],
            {"background": 0, **{n: i for i, n in totalsegmentator_scheme(2).items()}},
            spacing=[3.0, 3.0, 3.0],
            dataset_id=297,
        ),
    }
    return {name: str(folder) for name, folder in zip(specs, make_random_models(list(specs.values())))}


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

    from nnunet_ctarr.core.anatomy.groups import totalsegmentator_scheme

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
