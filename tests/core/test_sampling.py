"""Sampling: moments of the mixture, determinism per key, centres and the seed's random_sample."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxkde


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)) * [1.0, 3.0, 0.5]
    w = rng.uniform(0.0, 2.0, size=40)
    h = np.array([[0.5, 0.2, 0.0], [0.2, 0.8, 0.1], [0.0, 0.1, 0.3]])
    return x, w, h, jaxkde.KDE(bandwidth=h).fit(x, sample_weight=w)


@pytest.mark.parametrize("scaling_factor", [1.0, 0.1])
def test_sample_moments_match_the_mixture(fitted, scaling_factor):
    x, w, h, kde = fitted
    n = 200_000
    s = kde.sample(n, key=1, scaling_factor=scaling_factor).astype(np.float64)
    p = w / w.sum()
    mean = p @ x
    cov = (x - mean).T @ ((x - mean) * p[:, None]) + scaling_factor * h
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(s.mean(0) - mean) < 5 * se_mean)
    np.testing.assert_allclose(np.cov(s.T), cov, atol=0.05 * np.abs(cov).max())


def test_noise_around_each_centre_is_scaled_bandwidth(fitted):
    x, w, h, kde = fitted
    idx, centres, samples = jaxkde.sample_with_centres(kde.state_, jax.random.key(2), 100_000, 0.25)
    idx, centres, samples = map(np.asarray, (idx, centres, samples))
    np.testing.assert_allclose(centres, x[idx], atol=1e-5)
    noise = (samples - centres).astype(np.float64)
    np.testing.assert_allclose(noise.mean(0), 0, atol=0.01)
    np.testing.assert_allclose(np.cov(noise.T), 0.25 * h, atol=0.01)
    # Centres are drawn in proportion to the weights.
    counts = np.bincount(idx, minlength=40) / idx.size
    np.testing.assert_allclose(counts, w / w.sum(), atol=0.01)


def test_zero_weight_points_are_never_centres():
    x = np.arange(10.0)[:, None]
    w = np.r_[np.zeros(7), np.ones(3)]
    kde = jaxkde.KDE(bandwidth=0.1).fit(x, sample_weight=w)
    idx, _, _ = jaxkde.sample_with_centres(kde.state_, jax.random.key(0), 5000, 1.0)
    assert set(np.unique(np.asarray(idx))) == {7, 8, 9}


def test_same_key_same_samples_and_int_seed_equals_key(fitted):
    kde = fitted[3]
    a = kde.sample(50, key=7)
    np.testing.assert_array_equal(a, kde.sample(50, key=7))
    np.testing.assert_array_equal(a, kde.sample(50, key=jax.random.key(7)))
    np.testing.assert_array_equal(a, kde.sample(50, key=jax.random.PRNGKey(7)))
    assert not np.array_equal(a, kde.sample(50, key=8))
    assert not np.array_equal(kde.sample(50), kde.sample(50))  # None: fresh entropy


def test_scaling_factor_zero_returns_centres(fitted):
    x, _, _, kde = fitted
    s = kde.sample(30, key=3, scaling_factor=0.0)
    d = np.abs(s[:, None, :] - x[None]).max(-1).min(1)
    assert np.all(d < 1e-5)


def test_random_sample_returns_training_point_and_nearby_draw(fitted):
    x, _, h, kde = fitted
    original, sample = kde.random_sample(scaling_factor=0.01, key=4)
    assert original.shape == sample.shape == (3,)
    assert np.abs(x - original).max(1).min() < 1e-5
    assert np.all(np.abs(sample - original) < 6 * np.sqrt(0.01 * np.diag(h)))
    again = kde.random_sample(scaling_factor=0.01, key=4)
    np.testing.assert_array_equal(again[1], sample)


def test_univariate_kernel_samples_isotropic_gaussian_noise():
    x = np.zeros((1, 4))
    kde = jaxkde.KDE(kernel="univariate_gaussian", univariate_bandwidth=0.5).fit(x)
    s = kde.sample(100_000, key=5, scaling_factor=2.0).astype(np.float64)
    np.testing.assert_allclose(np.cov(s.T), 2.0 * 0.25 * np.eye(4), atol=0.01)


def test_samples_are_float64_under_x64():
    with jax.enable_x64(True):
        kde = jaxkde.KDE(bandwidth=1.0).fit(np.random.default_rng(6).normal(size=(10, 2)))
        assert kde.sample(3, key=0).dtype == np.float64


@pytest.mark.parametrize(
    ("offset", "bandwidth", "device"),
    [(0.0, "scott_full", True), (5.0, "scott", True), (0.0, "silverman_full", True),
     (1e4, 1e-2, False)],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_points_formed_on_the_device_only_where_their_rounding_is_negligible(
    offset, bandwidth, device
):
    """Well-scaled data are sampled on the device, within DEVICE_SAMPLING_TOL kernel standard
    deviations (along every coordinate) of the same draws formed in float64 on the host, and
    the stated bound holds; data far from the origin in bandwidths take the host route."""
    from jaxkde.core import sampling

    rng = np.random.default_rng(3)
    x = offset + rng.normal(size=(500, 4)) * [1.0, 2.0, 0.3, 1.0]
    x[:, 3] = x[:, 0] + x[:, 1]  # collinear: the subspace rule projects (a basis)
    kde = jaxkde.KDE(bandwidth=bandwidth, zero_variance="subspace").fit(x)
    state, hw = kde.state_, kde._whitening
    scales = sampling.sampling_scales(hw)
    key = jax.random.key(5)
    idx, got, at, bound = sampling._device_draws(state, key, 2000, 2.0**0.5, *scales)
    same_idx, z, lo, noise = sampling._replay_program(state, key, 2000)
    np.testing.assert_array_equal(idx, same_idx)  # the replay draws the same numbers
    at_host, want = sampling._host_points(state, z, lo, noise, 2.0, hw)
    sigma = np.sqrt(np.diag(kde.bandwidth_))
    err = max(np.max(np.abs(np.asarray(got, np.float64) - want) / sigma),
              np.max(np.abs(np.asarray(at, np.float64) - at_host) / sigma))  # fmt: skip
    assert err <= float(bound)  # the bound is a bound
    assert (float(bound) <= sampling.DEVICE_SAMPLING_TOL) == device
    # The public sampler returns those float64 points whichever route it takes.
    _, centres, samples = sampling.sample_host(state, key, 2000, 2.0, hw, scales=scales)
    np.testing.assert_allclose(samples, want, rtol=0, atol=1e-4 * sigma.min())
    np.testing.assert_allclose(centres, at_host, rtol=0, atol=1e-4 * sigma.min())


def test_numpy_generators_and_seeds_are_keys_as_in_scipy():
    from jaxkde.core.sampling import as_key

    kde = jaxkde.KDE().fit(np.random.default_rng(0).normal(size=(40, 2)))
    a = kde.sample(5, key=np.random.default_rng(7))
    np.testing.assert_array_equal(a, kde.sample(5, key=np.random.default_rng(7)))
    gen = np.random.default_rng(7)
    first, second = kde.sample(5, key=gen), kde.sample(5, key=gen)  # the generator advances
    assert not np.array_equal(first, second)
    b = kde.sample(5, key=np.random.RandomState(3))
    np.testing.assert_array_equal(b, kde.sample(5, key=np.random.RandomState(3)))
    np.testing.assert_array_equal(kde.sample(5, key=11), kde.sample(5, key=jax.random.key(11)))
    assert as_key(np.random.default_rng(1)).dtype == jax.random.key(0).dtype
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator or RandomState"):
        kde.sample(5, key="seed")
