"""``nnUNetTrainerCTARRAnatomy``: the CTARR paper's anatomy-model recipe as an nnU-Net trainer.

* Input: raw HU (plans ``nnUNetPlans_CTARR3mm`` use ``NoNormalization``) turned into the paper's
  three CT windows by a fixed first layer (:class:`CTWindows`): bone -500..1300, lung -1024..150,
  soft tissue -150..250 HU, each scaled to [0, 1]. A layer rather than a 3-channel dataset keeps
  the raw dataset and the predictor's input a plain 1-channel CT, lets the augmentation act on HU
  (noise relative to the image's standard deviation) and costs nothing (docs/training.md).
* Augmentation (Appendix B, Table 5): rotation about z +-45 deg (p 0.5), 90/180/270 deg xy
  rotation (p 0.75), xy scaling 0.7-1.4 (p 0.5), z flip only (p 0.5), Gaussian noise with
  sigma = std(image) x U(0, 0.25) (p 0.5), Gaussian blur with FWHM U(0, 5) voxels (p 0.5).
  Mirroring at inference only along z.
* Optimiser: AdamW, lr 1.6e-3 with linear warm-up then cosine decay, betas (0.98, 0.999),
  weight decay 1e-4; batch size 4 comes from the plans.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.rot90 import Rot90Transform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

WINDOWS_HU = ((-500.0, 1300.0), (-1024.0, 150.0), (-150.0, 250.0))   # bone, lung, soft tissue
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
DEG = math.pi / 180.0


class CTWindows(nn.Module):
    """Fixed layer: 1 HU channel -> 3 windowed channels in [0, 1]."""

    def __init__(self, windows=WINDOWS_HU):
        super().__init__()
        self.register_buffer("lo", torch.tensor([w[0] for w in windows]).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("hi", torch.tensor([w[1] for w in windows]).view(1, -1, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x[:, :1] - self.lo) / (self.hi - self.lo)).clamp(0, 1)


class WindowedNetwork(nn.Module):
    """CT windows + nnU-Net's network; exposes ``decoder`` for nnU-Net's deep-supervision switch."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.windows = CTWindows()
        self.network = network

    @property
    def decoder(self):
        return self.network.decoder

    def forward(self, x):
        return self.network(self.windows(x))


class RelativeGaussianNoiseTransform(ImageOnlyTransform):
    """Additive Gaussian noise with sigma = std(image) x U(range) (paper Table 5)."""

    def __init__(self, relative_sigma: tuple[float, float] = (0.0, 0.25)):
        super().__init__()
        self.relative_sigma = relative_sigma

    def get_parameters(self, **data_dict) -> dict:
        return {"factor": float(np.random.uniform(*self.relative_sigma))}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        return img + torch.randn_like(img) * (params["factor"] * img.std())


def _xy_only(value_xy, value_z):
    """A per-axis RandomScalar: axis 0 (z, nnU-Net's first spatial axis) gets ``value_z``."""
    def sample(*args, dim: int = 0, **kwargs):
        v = value_z if dim == 0 else value_xy
        return float(np.random.uniform(*v)) if isinstance(v, tuple) else float(v)
    return sample


def ctarr_training_transforms(patch_size, deep_supervision_scales=None) -> BasicTransform:
    """The paper's augmentation pipeline (Table 5) in batchgeneratorsv2 terms."""
    t = [
        SpatialTransform(patch_size, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                         p_rotation=0.5, rotation=_xy_only(0.0, (-45 * DEG, 45 * DEG)),
                         p_scaling=0.5, scaling=_xy_only((0.7, 1.4), 1.0), p_synchronize_scaling_across_axes=0,
                         border_mode_seg="constant", padding_value_seg=-1,
                         padding_mode_image="constant", padding_value_image=-1024.0),
        RandomTransform(Rot90Transform(num_axis_combinations=1, num_rot_per_combination=(1, 2, 3),
                                       allowed_axes={1, 2}), apply_probability=0.75),
        MirrorTransform(allowed_axes=(0,)),
        RandomTransform(RelativeGaussianNoiseTransform((0.0, 0.25)), apply_probability=0.5),
        RandomTransform(GaussianBlurTransform(blur_sigma=(0.0, 5.0 * FWHM_TO_SIGMA), synchronize_channels=True,
                                              synchronize_axes=True, p_per_channel=1), apply_probability=0.5),
        RemoveLabelTansform(-1, 0),
    ]
    if deep_supervision_scales is not None:
        t.append(DownsampleSegForDSTransform(ds_scales=deep_supervision_scales))
    return ComposeTransforms(t)


class WarmupCosine:
    """Linear warm-up over ``warmup`` epochs, then cosine decay to 0 (stepped per epoch)."""

    def __init__(self, optimizer, max_lr: float, num_epochs: int, warmup: int):
        self.optimizer, self.max_lr, self.num_epochs, self.warmup = optimizer, max_lr, num_epochs, warmup
        self.step(0)

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.max_lr * (epoch + 1) / self.warmup
        t = (epoch - self.warmup) / max(1, self.num_epochs - self.warmup)
        return 0.5 * self.max_lr * (1 + math.cos(math.pi * min(t, 1.0)))

    def step(self, current_step: int | None = None) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(current_step or 0)


class nnUNetTrainerCTARRAnatomy(nnUNetTrainer):
    """The CTARR anatomy model recipe (use with ``-p nnUNetPlans_CTARR3mm``)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 (nnU-Net's trainer signature)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1.6e-3
        self.weight_decay = 1e-4
        self.betas = (0.98, 0.999)

    @property
    def warmup_epochs(self) -> int:
        """Linear warm-up over 2 % of the epochs (at least one), read when the optimiser is built,
        so a subclass that changes ``num_epochs`` keeps the proportion."""
        return max(1, round(0.02 * self.num_epochs))

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        net = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, len(WINDOWS_HU),
                                                       num_output_channels, enable_deep_supervision)
        return WindowedNetwork(net)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, betas=self.betas,
                                weight_decay=self.weight_decay)
        return opt, WarmupCosine(opt, self.initial_lr, self.num_epochs, self.warmup_epochs)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, _, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        patch = np.array(self.configuration_manager.patch_size)
        # room for a 45-degree xy rotation and 1.4x zoom-out before the final crop
        initial = np.concatenate([patch[:1], np.ceil(patch[1:] * math.sqrt(2) * 1.4)]).astype(int)
        self.inference_allowed_mirroring_axes = (0,)
        return rotation, False, initial, (0,)

    @staticmethod
    def get_training_transforms(patch_size: np.ndarray | tuple[int], rotation_for_DA: RandomScalar,
                                deep_supervision_scales: list | tuple | None, mirror_axes: tuple[int, ...],
                                do_dummy_2d_data_aug: bool, use_mask_for_norm: list[bool] = None,
                                is_cascaded: bool = False, foreground_labels=None, regions=None,
                                ignore_label: int = None) -> BasicTransform:
        return ctarr_training_transforms(patch_size, deep_supervision_scales)
