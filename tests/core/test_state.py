"""The fitted state's host side (``jaxkde.core.state``)."""

from __future__ import annotations

import numpy as np

import jaxkde
from jaxkde.core.state import build_state, host_whitening, state_points


def test_state_points_are_the_data_in_float64_far_from_the_origin():
    x = np.random.default_rng(3).normal(size=(1000, 3)) * 1e-3 + 1.7e9
    w = np.ones(1000)
    w[:10] = 0.0  # rows of weight 0 are not centres
    state = build_state(x, w, 1e-8 * np.eye(3), jaxkde.GaussianKernel(), chunk_size=128)
    got = state_points(state, host_whitening(state))
    assert got.shape == (990, 3)
    np.testing.assert_allclose(np.sort(got, axis=0), np.sort(x[10:], axis=0), rtol=0, atol=1e-6)
