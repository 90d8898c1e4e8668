"""PCA: agreement with NumPy's SVD, round trips, whitening."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxkde


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 3.0


def test_full_rank_round_trip(dtype, data):
    x = data.astype(dtype)
    pca = jaxkde.pca_fit(jnp.asarray(x), 6)
    back = jaxkde.pca_inverse_transform(pca, jaxkde.pca_transform(pca, x))
    np.testing.assert_allclose(np.asarray(back), x, atol=1e-4 if dtype == "float32" else 1e-10)


def test_agrees_with_numpy_svd(data):
    pca = jaxkde.pca_fit(jnp.asarray(data), 3)
    centred = data - data.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    got = np.asarray(pca.components)
    for i in range(3):  # axes agree up to sign
        assert abs(abs(got[i] @ vt[i]) - 1) < 1e-5
    np.testing.assert_allclose(np.asarray(pca.explained_variance), s[:3] ** 2 / 199, rtol=1e-5)
    scores = np.asarray(jaxkde.pca_transform(pca, data))
    np.testing.assert_allclose(np.abs(scores), np.abs(centred @ vt[:3].T), rtol=1e-4, atol=1e-4)


def test_whitened_scores_have_unit_variance(data):
    pca = jaxkde.pca_fit(jnp.asarray(data), 4, whiten=True)
    scores = np.asarray(jaxkde.pca_transform(pca, data))
    np.testing.assert_allclose(scores.var(0, ddof=1), 1.0, rtol=1e-4)
    back = np.asarray(jaxkde.pca_inverse_transform(pca, jaxkde.pca_transform(pca, data)))
    plain = jaxkde.pca_fit(jnp.asarray(data), 4)
    np.testing.assert_allclose(
        back,
        np.asarray(jaxkde.pca_inverse_transform(plain, jaxkde.pca_transform(plain, data))),
        atol=1e-4,
    )


def test_reduced_reconstruction_is_the_best_rank_k_approximation(data):
    pca = jaxkde.pca_fit(jnp.asarray(data), 2)
    back = np.asarray(jaxkde.pca_inverse_transform(pca, jaxkde.pca_transform(pca, data)))
    centred = data - data.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    best = (u[:, :2] * s[:2]) @ vt[:2] + data.mean(0)
    np.testing.assert_allclose(back, best, atol=1e-4)


@pytest.mark.parametrize("k", [0, 7, 2.5])
def test_bad_component_counts(data, k):
    with pytest.raises((ValueError, TypeError), match="n_components"):
        jaxkde.pca_fit(jnp.asarray(data), k)


def test_shapes_are_checked_with_named_errors():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="x must be 2-D"):
        jaxkde.pca_fit(x[:, 0], 2)
    state = jaxkde.pca_fit(x, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(m, 3\)"):
        jaxkde.pca_transform(state, x[:, :2])
    with pytest.raises(ValueError, match=r"z must have shape \(m, 2\)"):
        jaxkde.pca_inverse_transform(state, np.zeros((4, 5)))


def test_offset_data_are_centred_in_float64():
    rng = np.random.default_rng(1)
    x = 1e6 + rng.normal(size=(200, 4)) * [1e-2, 1e-3, 1.0, 1e-1]
    scores = np.asarray(jaxkde.pca_transform(jaxkde.pca_fit(x, 2), x))
    centred = x - x.mean(0)
    _, s, _ = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.sort(np.abs(scores).max(0))[::-1] > 0, True)
    np.testing.assert_allclose(np.sqrt((scores**2).sum(0)), s[:2], rtol=1e-3)
