"""Shim for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net imports the modules of this folder as top-level names and removes them afterwards,
so a class *defined* here could not be pickled; the real classes live in the installed
``nnunet_ctarr.trainers`` package and are only re-exported here.
"""
from nnunet_ctarr.trainers.anatomy import nnUNetTrainerCTARRAnatomy  # noqa: F401
from nnunet_ctarr.trainers.smoke import nnUNetTrainer_CTARRCPUSmoke, nnUNetTrainerCTARRAnatomy_CPUSmoke  # noqa: F401
