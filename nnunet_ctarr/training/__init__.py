"""nnU-Net training side: the 3 mm planner, TotalSegmentator conversion, region-crop datasets,
the trainer path for ``nnUNet_extTrainer`` and the CPU-torchvision plug-in. Imports the core."""
