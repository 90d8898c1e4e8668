"""Score function and mean shift against autodiff, finite differences and known modes;
density levels against fresh draws."""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkde

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
from low_dim import mixture_2d

KERNELS = ["gaussian", "epanechnikov", "exponential", "linear", "cosine"]


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("d", "bandwidth", "adaptive"),
                         [(1, 0.8, False), (2, "full", True), (5, 2.5, False)])  # fmt: skip
def test_score_function_equals_autodiff_and_finite_differences(kernel, d, bandwidth, adaptive):
    with jax.enable_x64(True):
        rng = np.random.default_rng(d)
        x = rng.normal(size=(300, d)) + 10.0
        if bandwidth == "full":
            bandwidth = np.array([[0.5, 0.2], [0.2, 0.4]]) * (2.0 if kernel != "gaussian" else 1)
        kde = jaxkde.KDE(kernel, bandwidth=bandwidth, adaptive=adaptive).fit(x)
        q = x[:12] + 0.3 * rng.normal(size=(12, d))
        got = kde.score_function(q)
        auto = jax.grad(lambda v: jnp.sum(jaxkde.log_density(kde.state_, v)))(jnp.asarray(q))
        np.testing.assert_allclose(got, np.asarray(auto), rtol=1e-8, atol=1e-8)
        eps = 1e-5
        fd = np.stack([(kde.score_samples(q + eps * e) - kde.score_samples(q - eps * e)) / (2 * eps)
                       for e in np.eye(d)], axis=1)  # fmt: skip
        np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-5)


def test_float32_score_is_close_to_float64():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, 50))
    q = rng.normal(size=(20, 50))
    got = jaxkde.KDE(bandwidth="scott").fit(x.astype(np.float32)).score_function(q)
    with jax.enable_x64(True):
        want = jaxkde.KDE(bandwidth="scott").fit(x).score_function(q)
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))


def test_mean_shift_finds_the_three_modes_of_w3():
    rng = np.random.default_rng(0)
    x = mixture_2d(3000, rng)
    kde = jaxkde.KDE().fit(x)
    result = kde.modes()
    big = np.bincount(result.labels) >= 0.05 * x.shape[0]
    modes = result.modes[big]
    assert modes.shape[0] == 3 and result.converged.all()
    # each is a true mode of the KDE: a zero of its gradient with a higher density around...
    assert np.max(np.abs(kde.score_function(modes))) < 1e-3
    for m in modes:
        ring = m + 0.05 * np.c_[np.cos(np.arange(8)), np.sin(np.arange(8))]
        assert np.all(kde.score_samples(ring) < kde.score_samples(m[None])[0])
    # ... near the mixture's component means, in their order of weight
    means = np.array([[0.0, 0.0], [3.0, 2.0], [-2.0, 3.0]])
    dist = np.linalg.norm(modes[:, None, :] - means[None], axis=2).min(axis=0)
    assert np.all(dist < 0.5)


@pytest.mark.slow
def test_density_levels_hold_their_mass():
    rng = np.random.default_rng(1)
    kde = jaxkde.KDE().fit(mixture_2d(2000, rng))
    probs = np.array([0.1, 0.5, 0.9, 0.99])
    levels = kde.density_levels(probs, n_samples=50_000, key=2)
    assert np.all(np.diff(levels.levels) < 0)
    fresh = kde.score_samples(kde.sample(50_000, key=99))
    mass = np.array([(fresh >= c).mean() for c in levels.log_levels])
    np.testing.assert_allclose(mass, probs, atol=0.01)
    with pytest.raises(ValueError, match=r"probs must lie in \(0, 1\)"):
        kde.density_levels([0.5, 1.0])


def test_bad_input():
    x = np.random.default_rng(2).normal(size=(50, 2))
    with pytest.raises(ValueError, match="tophat"):
        jaxkde.KDE("tophat").fit(x).score_function(x[:2])
    with pytest.raises(ValueError, match="without labels and bounds"):
        jaxkde.KDE().fit(x, np.arange(50) % 2).modes()
