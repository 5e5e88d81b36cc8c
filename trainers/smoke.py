"""Test fixtures: seconds-long CPU variants for the end-to-end tests. Not product defaults.

Both keep the planned topology and patch size but with 8-32 features per stage and train one
epoch of one iteration (and one validation iteration) on batches of 2 without test-time
mirroring, so ``nnUNetv2_train ... -device cpu`` (training, checkpoint; no validation pass)
takes seconds on 2 cores. Inference rebuilds the same small network from the trainer name.
"""
from __future__ import annotations

import copy

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from torch import nn

from .anatomy import nnUNetTrainerCTARRAnatomy


def small_configuration(configuration_manager: ConfigurationManager) -> ConfigurationManager:
    """The same configuration with features per stage cut to 8-32."""
    cfg = copy.deepcopy(configuration_manager.configuration)
    kwargs = cfg["architecture"]["arch_kwargs"]
    kwargs["features_per_stage"] = [min(32, max(8, f // 4)) for f in kwargs["features_per_stage"]]
    return ConfigurationManager(cfg)


class _CPUSmoke:
    """Mixin (before the trainer in the bases): 1 epoch x 1 iteration, batches of at most 2,
    8-32 features, and validation/inference without mirroring (up to 8x fewer forward passes);
    training augmentation stays as planned."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 (nnU-Net's trainer signature)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 1
        self.num_val_iterations_per_epoch = 1

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        self.batch_size = min(self.batch_size, 2)

    def perform_actual_validation(self, save_probabilities: bool = False):
        """No validation pass: the scores of a 1-iteration model mean nothing, and it is most of the run."""
        self.print_to_log_file("CPU smoke trainer: validation skipped")

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        out = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return out

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # nnU-Net calls this on the class (inference) and on the trainer (training)
        return super().build_network_architecture(plans_manager, small_configuration(configuration_manager),
                                                  num_input_channels, num_output_channels, enable_deep_supervision)


class nnUNetTrainerCTARRAnatomy_CPUSmoke(_CPUSmoke, nnUNetTrainerCTARRAnatomy):
    """The anatomy recipe (windows, augmentation, optimiser), tiny and short."""


class nnUNetTrainer_CTARRCPUSmoke(_CPUSmoke, nnUNetTrainer):
    """Stock nnU-Net training (for region-crop datasets), tiny and short."""
