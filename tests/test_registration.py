"""Landmarks, orientation search and Dice refinement on real anatomy with known transforms."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import anatomy_of

from nnunet_ctarr.core.anatomy.volume import MaskVolume, anatomy_to_volume
from nnunet_ctarr.core.base.errors import CTARRError
from nnunet_ctarr.core.base.transform import AtlasTransform, orientation_matrix
from nnunet_ctarr.core.build.atlas_builder import _average
from nnunet_ctarr.core.localise.registration import landmark_weights, register, search_orientation
from nnunet_ctarr.core.localise.settings import RegistrationSettings


def _as_fixed(vol: MaskVolume, tf: AtlasTransform) -> MaskVolume:
    """The scan's own masks moved by ``tf`` into a new frame: a target with a known answer."""
    prob, cov, grid = _average([vol], [tf], 3.0, "cpu")
    return MaskVolume(grid.origin, grid.spacing, vol.observed, prob=prob, coverage=cov)


@pytest.fixture(scope="module")
def abdomen_vol(abdomen, ts_v2):
    return anatomy_to_volume(anatomy_of(abdomen[1], ts_v2))


def test_self_registration_is_identity(abdomen_vol):
    res = register(abdomen_vol, abdomen_vol)
    assert res.transform.k_rot == 0
    assert not any(res.transform.flip)
    assert np.allclose(res.transform.scale, 1, atol=0.01)
    assert np.allclose(res.transform.translation, 0, atol=1.5)


def test_known_shift_is_recovered_without_scale_mixing(abdomen_vol):
    """Composition check: a pure shift of 88.5 mm must come back as 88.5 mm, not scale*t."""
    true = AtlasTransform(0, (False, False, False), [1, 1, 1], [-20.0, 35.0, 88.5])
    res = register(abdomen_vol, _as_fixed(abdomen_vol, true))
    assert np.allclose(res.transform.translation, true.translation, atol=3.0)
    assert np.allclose(res.transform.scale, 1, atol=0.02)


def test_known_scale_and_shift_are_recovered(abdomen_vol):
    true = AtlasTransform(0, (False, False, False), [1.10, 0.90, 1.05], [10.0, -20.0, 30.0])
    res = register(abdomen_vol, _as_fixed(abdomen_vol, true))
    assert np.allclose(res.transform.scale, true.scale, atol=0.03)
    # compare where it matters: the mapped positions of the scan's corners
    lo, hi = abdomen_vol.extent()
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    err = np.abs(res.transform.to_atlas(corners) - true.to_atlas(corners)).max()
    assert err < 8.0


@pytest.mark.parametrize("k,flip_z", [(1, False), (2, False), (3, True), (0, True)])
def test_orientation_search_recovers_rotation_and_flip(abdomen_vol, k, flip_z):
    true = AtlasTransform(k, (False, False, flip_z), [1, 1, 1], [5.0, -10.0, 15.0])
    res = register(abdomen_vol, _as_fixed(abdomen_vol, true))
    assert res.transform.k_rot == k
    assert res.transform.flip[2] == flip_z
    assert res.orientation_searched


def test_landmark_search_picks_correct_candidate_with_closed_form_translation():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 100, (8, 3))
    w = np.full(8, 1 / 8)
    M = orientation_matrix(3, (False, False, True))
    y = x @ M.T + np.array([12.0, -7.0, 40.0])
    cands = search_orientation(x, y, w, [(k, (False, False, f)) for k in range(4) for f in (False, True)])
    assert cands[0]["k_rot"] == 3
    assert cands[0]["flip"] == (False, False, True)
    assert np.allclose(cands[0]["translation"], [12.0, -7.0, 40.0])
    assert cands[0]["wmse"] < 1e-9


def test_unobserved_and_empty_groups_get_zero_weight(abdomen_vol, atlas):
    vol = MaskVolume(abdomen_vol.origin, abdomen_vol.spacing, abdomen_vol.observed.copy(), labels=abdomen_vol.labels)
    vol.observed[14] = False  # pretend the source cannot express liver
    ratio, usable = landmark_weights(vol, atlas)
    assert ratio[14] == 0
    assert not usable[14]
    assert ratio[0] == 0
    assert ratio[1] == 0  # skull, C vertebrae: empty in this scan


def test_sparse_anatomy_is_refused(abdomen_vol, atlas):
    labels = np.where(abdomen_vol.labels == 15, 15, 0).astype(np.uint8)  # liver only
    vol = MaskVolume(abdomen_vol.origin, abdomen_vol.spacing, abdomen_vol.observed, labels=labels)
    with pytest.raises(CTARRError, match="too sparse"):
        register(vol, atlas)


def test_default_is_the_paper_rule_and_adam_option_agrees(abdomen_vol, atlas):
    s = RegistrationSettings()
    assert (s.optimizer, s.lr, s.lr_factor, s.min_improvement, s.n_lr_reductions) == ("paper", 0.05, 0.5, 0.005, 4)
    a = register(abdomen_vol, atlas)
    b = register(abdomen_vol, atlas, RegistrationSettings(optimizer="adam", lr=0.02, min_improvement=0.002))
    assert 0 < a.n_iterations < len(s.levels) * s.max_iter_per_level
    assert a.dice > 0.3
    assert b.dice > 0.3
    assert np.allclose(a.transform.scale, b.transform.scale, atol=0.05)
    assert np.allclose(a.transform.translation, b.transform.translation, atol=8.0)
