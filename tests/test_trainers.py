"""nnUNetTrainerCTARRAnatomy: the paper's augmentation (Table 5), CT windows, optimiser, and
lookup through nnU-Net's nnUNet_extTrainer."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch

from nnunet_ctarr.trainers.anatomy import CTWindows, WarmupCosine, ctarr_training_transforms, nnUNetTrainerCTARRAnatomy

N = 2000


def _pipeline():
    return ctarr_training_transforms((32, 48, 48)).transforms


def test_rotation_and_scaling_only_in_xy_with_their_probabilities():
    spatial = _pipeline()[0]
    np.random.seed(0)
    x = torch.zeros(1, 40, 64, 64)
    rot = scale = 0
    for _ in range(N):
        a = spatial.get_parameters(image=x)["affine"]
        if a is None:
            continue
        a = np.asarray(a)
        assert np.allclose(a[0], [1, 0, 0])
        assert np.allclose(a[:, 0], [1, 0, 0])  # z untouched
        block = a[1:, 1:]
        sv = np.linalg.svd(block, compute_uv=False)
        u, _, vt = np.linalg.svd(block)
        r = u @ vt
        angle = abs(np.degrees(np.arctan2(r[1, 0], r[0, 0])))
        rot += angle > 1e-6
        scale += not np.allclose(sv, 1)
        assert angle <= 45 + 1e-6
        assert sv.min() >= 0.7 - 1e-6
        assert sv.max() <= 1.4 + 1e-6
    assert abs(rot / N - 0.5) < 0.05
    assert abs(scale / N - 0.5) < 0.05


def test_quarter_turns_noise_blur_probabilities_and_z_only_mirroring():
    t = _pipeline()
    rot90, mirror, noise, blur = t[1], t[2], t[3], t[4]
    torch.manual_seed(0)
    x = torch.zeros(1, 8, 8, 8)
    assert abs(np.mean([rot90.get_parameters(image=x)["apply_transform"] for _ in range(N)]) - 0.75) < 0.04
    assert abs(np.mean([noise.get_parameters(image=x)["apply_transform"] for _ in range(N)]) - 0.5) < 0.04
    assert abs(np.mean([blur.get_parameters(image=x)["apply_transform"] for _ in range(N)]) - 0.5) < 0.04
    axes = [mirror.get_parameters(image=x)["axes"] for _ in range(N)]
    assert all(a in ([], [0]) for a in axes)
    assert abs(np.mean([a == [0] for a in axes]) - 0.5) < 0.04
    p = rot90.transform.get_parameters(image=x)
    assert p["axis_combinations"] == [[2, 3]]
    assert p["num_rot_per_combination"][0] in (1, 2, 3)  # y-x plane


def test_augmentation_output_keeps_z_profile_under_xy_turns():
    """Applied to data: a slab marked at z 10-12 stays at z 10-12 (possibly mirrored to 19-21)
    whatever rotation/zoom is drawn, so nothing but the z flip acts along z."""
    t = ctarr_training_transforms((32, 48, 48))
    img = torch.full((1, 32, 48, 48), -1000.0)
    seg = torch.zeros((1, 32, 48, 48), dtype=torch.int16)
    seg[0, 10:13] = 1
    flips = 0
    for i in range(60):
        torch.manual_seed(i), np.random.seed(i)
        out = t(image=img.clone(), segmentation=seg.clone())
        zs = np.nonzero(out["segmentation"][0].numpy().any(axis=(1, 2)))[0]
        assert set(zs.tolist()) in ({10, 11, 12}, {19, 20, 21}), zs
        flips += zs[0] == 19
    assert 15 < flips < 45


def test_relative_noise_scales_with_image_std():
    noise = _pipeline()[3].transform
    img = torch.randn(1, 16, 16, 16) * 100
    out = noise._apply_to_image(img.clone(), factor=0.25)
    assert abs((out - img).std().item() / img.std().item() - 0.25) < 0.03


def test_ct_windows_and_schedule():
    w = CTWindows()
    x = torch.tensor([-1024.0, -500.0, 0.0, 150.0, 250.0, 1300.0]).view(1, 1, 1, 1, 6)
    y = w(x)[0, :, 0, 0]
    assert torch.allclose(y[0], torch.tensor([0, 0, 500 / 1800, 650 / 1800, 750 / 1800, 1.0]))  # bone
    assert torch.allclose(y[1], torch.tensor([0, 524 / 1174, 1024 / 1174, 1, 1, 1]))  # lung
    assert torch.allclose(y[2], torch.tensor([0, 0, 150 / 400, 300 / 400, 1, 1]))  # soft tissue
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.6e-3)
    s = WarmupCosine(opt, 1.6e-3, 100, 5)
    lrs = [s.lr_at(e) for e in range(100)]
    assert lrs[0] < lrs[4] == max(lrs) == 1.6e-3
    assert lrs[-1] < 1e-5
    assert all(np.diff(lrs[4:]) <= 0)
    assert nnUNetTrainerCTARRAnatomy.__module__ == "nnunet_ctarr.trainers.anatomy"


def test_shim_reexports_the_installed_classes():
    """The shim module nnU-Net imports from nnUNet_extTrainer only re-exports: the classes stay
    importable (picklable) as nnunet_ctarr.trainers.anatomy.* after nnU-Net drops the shim."""
    import importlib.util
    import pickle

    from nnunet_ctarr.training.trainer_path import ensure_ext_trainer_path, ext_trainer_folder

    spec = importlib.util.spec_from_file_location("ctarr_trainers", ext_trainer_folder() / "ctarr_trainers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.nnUNetTrainerCTARRAnatomy is nnUNetTrainerCTARRAnatomy
    assert pickle.loads(pickle.dumps(mod.nnUNetTrainerCTARRAnatomy)) is nnUNetTrainerCTARRAnatomy
    old = os.environ.get("nnUNet_extTrainer")
    try:
        os.environ["nnUNet_extTrainer"] = "/somewhere/else"
        ensure_ext_trainer_path()
        ensure_ext_trainer_path()
        assert os.environ["nnUNet_extTrainer"].split(os.pathsep) == ["/somewhere/else", str(ext_trainer_folder())]
    finally:
        os.environ.pop("nnUNet_extTrainer", None) if old is None else os.environ.__setitem__("nnUNet_extTrainer", old)


def test_trainer_found_through_nnunet_ext_trainer():
    """nnU-Net's own lookup (a fresh interpreter, only nnUNet_extTrainer set) finds the trainer; on a
    CPU torch + CUDA torchvision install this needs nnunet_ctarr.torchvision_compat (torch plug-in)."""
    from nnunet_ctarr.training.trainer_path import ext_trainer_folder

    code = (
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
        "import pickle; c = f('nnUNetTrainerCTARRAnatomy'); print(c.__module__, len(pickle.dumps(c)) > 0)"
    )
    env = dict(os.environ, nnUNet_extTrainer=str(ext_trainer_folder()))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nnunet_ctarr.trainers.anatomy True" in r.stdout


def test_torchvision_imports_and_compat_is_what_makes_it_work():
    """``import torchvision, timm`` works in a fresh interpreter of this install; where torch is a
    CPU build and torchvision a CUDA build, switching the compat plug-in off brings the crash back."""
    from nnunet_ctarr.training.torchvision_compat import torchvision_build_mismatch

    code = "import torchvision, timm; print(torchvision.__version__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    if torchvision_build_mismatch():
        env = dict(os.environ, NNUNET_CTARR_TORCHVISION_COMPAT="0")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert r.returncode != 0
        assert "torchvision::nms" in r.stderr
