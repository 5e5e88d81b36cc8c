"""nnunet-ctarr: CT Anatomical Region Recognition (CTARR) for nnU-Net v2.

Subpackages, in the order the data flows (docs/architecture.md)::

    core/        image -> anatomy -> registration to the atlas -> region boxes -> crops
                 (imports no nnunetv2 and nothing from the other subpackages)
    inference/   nnU-Net prediction inside the region, pasted back (nnUNetPredictorCTARR)
    training/    nnU-Net planning, TotalSegmentator conversion, region-crop datasets, trainer path
    evaluation/  crop scores on labelled scans, perturbations with known truth
    cli/         thin command-line tools: parse, call, report
"""
__version__ = "0.2.0.dev0"
