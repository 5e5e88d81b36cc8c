"""nnU-Net experiment planner for the CTARR anatomy model: 3 mm isotropic, 64^3 patches.

nnU-Net 2.8 only finds ``-pl`` planners inside its own package, so this planner is driven by
``nnUNetv2_ctarr_plan_and_preprocess`` (fingerprint -> plan -> preprocess through nnU-Net's API).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join, save_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

PLANS_NAME = "nnUNetPlans_CTARR3mm"
SPACING_MM = 3.0
PATCH = (64, 64, 64)


#: ExperimentPlanner's U-Net width/depth settings (nnU-Net 2.8 defaults), for planning without a dataset
NNUNET_UNET_DEFAULTS = SimpleNamespace(UNet_base_num_features=32, UNet_max_features_3d=320,
                                       UNet_featuremap_min_edge_length=4, UNet_blocks_per_stage_encoder=(2,) * 14,
                                       UNet_blocks_per_stage_decoder=(2,) * 13)


def ctarr_arch_kwargs(planner=NNUNET_UNET_DEFAULTS) -> tuple[dict, list[int]]:
    """U-Net topology for a 64^3 patch at 3 mm with nnU-Net's width rules (32 -> 320 features):
    (the ``arch_kwargs`` entries CTARR sets, the patch size)."""
    _, pool_op_kernel_sizes, conv_kernel_sizes, patch, _ = get_pool_and_conv_props(
        [SPACING_MM] * 3, PATCH, planner.UNet_featuremap_min_edge_length, 999999)
    n_stages = len(pool_op_kernel_sizes)
    return {
        "n_stages": n_stages,
        "features_per_stage": [min(planner.UNet_max_features_3d, planner.UNet_base_num_features * 2 ** i)
                               for i in range(n_stages)],
        "kernel_sizes": [list(k) for k in conv_kernel_sizes],
        "strides": [list(s) for s in pool_op_kernel_sizes],
        "n_conv_per_stage": list(planner.UNet_blocks_per_stage_encoder[:n_stages]),
        "n_conv_per_stage_decoder": list(planner.UNet_blocks_per_stage_decoder[:n_stages - 1]),
    }, [int(v) for v in patch]


def ctarr_configuration() -> dict:
    """The 3d_fullres architecture entry of ``nnUNetPlans_CTARR3mm`` without a dataset (benchmarks)."""
    arch, patch = ctarr_arch_kwargs()
    arch.update({"conv_op": "torch.nn.modules.conv.Conv3d", "conv_bias": True,
                 "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                 "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                 "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}})
    return {"architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": arch,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "patch_size": patch, "spacing": [SPACING_MM] * 3, "batch_size": 4}


class CTARR3mmPlanner(ExperimentPlanner):
    """3d_fullres only (no lowres/cascade/2d), 3 mm isotropic spacing, 64^3 patch, the
    paper's 4-stage U-Net width (32 features in the first stage)."""

    def __init__(self, dataset_name_or_id: str | int, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = PLANS_NAME,
                 overwrite_target_spacing=None, suppress_transpose: bool = True):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         [SPACING_MM] * 3, suppress_transpose=True)

    def save_plans(self, plans: dict) -> None:
        """Reduce nnU-Net's plans to the CTARR configuration, then save them (replacing, not
        merging with, an older file of the same name)."""
        from nnunetv2.paths import nnUNet_preprocessed
        from nnunetv2.utilities.json_export import recursive_fix_for_json_export
        cfg = plans["configurations"]["3d_fullres"]
        spacing = [SPACING_MM] * 3
        arch, patch = ctarr_arch_kwargs(self)
        cfg["architecture"]["arch_kwargs"].update(arch)
        cfg["patch_size"] = [int(v) for v in patch]
        cfg["spacing"] = spacing
        cfg["batch_size"] = 4                                  # the paper's batch size
        cfg["normalization_schemes"] = ["NoNormalization"]    # raw HU: the trainer windows itself
        cfg["use_mask_for_norm"] = [False]
        median = np.array(plans["original_median_shape_after_transp"]) * np.array(
            plans["original_median_spacing_after_transp"]) / SPACING_MM
        cfg["median_image_size_in_voxels"] = [int(round(v)) for v in median]
        plans["configurations"] = {"3d_fullres": cfg}
        recursive_fix_for_json_export(plans)
        save_json(plans, join(nnUNet_preprocessed, self.dataset_name, self.plans_identifier + ".json"), sort_keys=False)
