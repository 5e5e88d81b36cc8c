"""AtlasTransform: points, boxes, both directions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nnunet_ctarr.core.base.transform import AtlasTransform, orientation_matrix


@pytest.mark.parametrize("k,fz", list(itertools.product(range(4), (False, True))))
def test_points_round_trip_and_boxes_stay_axis_aligned(k, fz):
    tf = AtlasTransform(k, (False, False, fz), [1.1, 0.9, 1.05], [10, -20, 30])
    rng = np.random.default_rng(k)
    p = rng.normal(0, 200, (20, 3))
    assert np.allclose(tf.to_world(tf.to_atlas(p)), p)
    lo, hi = np.array([-10.0, 5.0, 20.0]), np.array([40.0, 60.0, 90.0])
    wlo, whi = tf.box_to_world(lo, hi)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    mapped = tf.to_world(corners)
    assert np.allclose(mapped.min(0), wlo)
    assert np.allclose(mapped.max(0), whi)
    # every mapped corner is a corner of the world box: axis-aligned
    for c in mapped:
        assert all(np.isclose(c[i], wlo[i]) or np.isclose(c[i], whi[i]) for i in range(3))


def test_quarter_turn_convention():
    assert np.array_equal(orientation_matrix(1, (False, False, False)) @ [1, 0, 0], [0, 1, 0])
    assert np.array_equal(orientation_matrix(0, (False, False, True)) @ [0, 0, 1], [0, 0, -1])


def test_dict_round_trip():
    tf = AtlasTransform(3, (False, False, True), [1.2, 0.8, 1.0], [1, 2, 3])
    back = AtlasTransform.from_dict(tf.to_dict())
    assert back.k_rot == 3
    assert back.flip == (False, False, True)
    assert np.allclose(back.matrix, tf.matrix)
    assert np.allclose(back.translation, tf.translation)
