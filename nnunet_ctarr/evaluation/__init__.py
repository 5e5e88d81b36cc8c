"""Evaluation on labelled scans: crop scores (the paper's Table 2) and perturbed copies with
known ground truth. Imports the core."""
