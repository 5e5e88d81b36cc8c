"""nnU-Net inference inside a CTARR region: plans, preprocessing hook, export, the predictor
subclass, tiling, organ-wise multi-model prediction and nnU-Net anatomy models. Imports the core."""
