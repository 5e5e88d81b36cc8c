"""The SSBR seed's prealignment protocol (a few pairs) and the grid-search baseline, through the
functions that benchmarks/eval_prealign.py uses (benchmarks/prealign_protocol.py)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from conftest import DATA
from prealign_protocol import (
    FAIL_MM,
    Pair,
    ctarr_prealign,
    evaluate_pair,
    grid_search,
    load_subject,
    make_copy,
    same_subject_pairs,
    z_errors,
)


def test_truth_of_a_copy_is_exact():
    """Labels of a cut + zoomed + turned + flipped + shifted copy sit where its truth says."""
    subj = load_subject(DATA, "abdomen")
    size = np.array(subj.image.GetSize())
    cp = make_copy(
        subj, "t", [5, 8, 20], [size[0] - 3, size[1] - 6, 100], zoom=1.1, k_rot=3, flip_z=True, shift_mm=(10, -20, 150)
    )
    arr, orig = sitk.GetArrayViewFromImage(cp.labels), sitk.GetArrayViewFromImage(subj.labels)
    rng = np.random.default_rng(0)
    pick = [rng.integers(0, n, 500) for n in arr.shape]
    for z, y, x in zip(*pick):
        p = cp.to_orig(np.array(cp.labels.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))))
        i = np.rint(subj.labels.TransformPhysicalPointToContinuousIndex(tuple(p))).astype(int)
        assert orig[i[2], i[1], i[0]] == arr[z, y, x]


def test_protocol_pairs_ctarr_within_target(atlas, ts_v2):
    errs = []
    for name in ("abdomen", "chest"):
        for pair in same_subject_pairs(load_subject(DATA, name), 3, seed=0):
            errs.append(evaluate_pair(pair, atlas, ts_v2, baseline=False)["ctarr"]["z_err_mm"])
    assert np.median(errs) <= 6.0, errs  # the SSBR seed's target
    assert max(errs) <= FAIL_MM, errs


def test_grid_search_fails_on_z_flip_ctarr_does_not(atlas, ts_v2):
    subj = load_subject(DATA, "abdomen")
    size = subj.image.GetSize()
    moving = make_copy(subj, "z10+50", [0, 0, 10], [size[0], size[1], 60])
    fixed = make_copy(subj, "flip_z", flip_z=True, shift_mm=(0, 0, 120))
    pair = Pair("abdomen", "rot_flip", moving, fixed)
    ct = ctarr_prealign(moving, fixed, atlas, ts_v2)
    assert np.sign(ct["A"][2, 2]) == -1
    assert z_errors(pair, ct["A"], ct["b"])["z_err_mm"] < 10.0
    g = grid_search(moving.image, fixed.image)
    assert z_errors(pair, np.eye(3), g["t"])["z_err_mm"] > FAIL_MM
    # without the flip (same crop and table shift) the grid search is exact: it is the flip
    unflipped = make_copy(subj, "shift", shift_mm=(0, 0, 120))
    g = grid_search(moving.image, unflipped.image)
    assert z_errors(Pair("abdomen", "translation", moving, unflipped), np.eye(3), g["t"])["z_err_mm"] < 3.0
