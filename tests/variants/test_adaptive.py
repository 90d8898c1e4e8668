"""Adaptive (Abramson) bandwidths against float64 brute force and explicit mixtures."""

from __future__ import annotations

import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import brute_log_density
from scipy import stats
from scipy.special import logsumexp

import jaxkde
from jaxkde.bandwidth.objectives import params_from_bandwidth
from jaxkde.variants.adaptive import MAX_LOG_FACTOR, abramson_log_factors

KERNELS = ["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]


def _brute_adaptive(x, q, h, lam, weights=None):
    """float64 log sum_i w_i N(q; x_i, lam_i^2 H)."""
    n, d = x.shape
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    h = np.diag(h) if np.ndim(h) == 1 else np.asarray(h, np.float64)
    chol = np.linalg.cholesky(h)
    u = np.linalg.solve(chol, (q[:, None, :] - x[None, :, :]).reshape(-1, d).T).T
    d2 = np.einsum("ij,ij->i", u, u).reshape(q.shape[0], n) / lam[None, :] ** 2
    log_norm = -0.5 * d * math.log(2 * math.pi) - np.log(np.diag(chol)).sum() - d * np.log(lam)
    with np.errstate(divide="ignore"):
        return logsumexp(np.log(w)[None, :] + log_norm[None, :] - 0.5 * d2, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("d", "bandwidth"),
    [(1, "scott"), (2, "scott_full"), (5, "scott_full"), (8, 2.0), (300, 12.0)],
)
def test_gaussian_matches_float64_brute_force(dtype, d, bandwidth):
    """Factors from the float64 pilot, densities from the mixture of N(x_i, lambda_i^2 H):
    direct differences (d <= 3), the checked product (d = 5, 8) and its compensation (300)."""
    rng = np.random.default_rng(d)
    x = rng.standard_t(3, size=(400, d)) * np.linspace(1.0, 3.0, d)
    w = rng.uniform(0.2, 2.0, size=400)
    q = np.r_[rng.standard_t(3, size=(60, d)), x[:3]]
    kde = jaxkde.KDE(bandwidth=bandwidth, adaptive=True, chunk_size=128).fit(
        x.astype(dtype), sample_weight=w
    )
    h = kde.bandwidth_
    pilot = brute_log_density(x, x, h, w)
    want_log_lam = -0.5 * (pilot - np.average(pilot, weights=w))
    rtol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(np.log(kde.adaptive_factors_), want_log_lam, atol=100 * rtol)
    assert np.ptp(want_log_lam) > 0.3  # the factors really vary
    got = kde.score_samples(q)
    want = _brute_adaptive(x, q, h, kde.adaptive_factors_, w)
    scale = np.maximum(np.abs(want), 1.0)
    assert np.max(np.abs(got - want) / scale) <= rtol


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_is_the_mixture_of_its_centres_kernels(kernel):
    """Each centre's term equals a fixed KDE of that one point with bandwidth lambda_i^2 H."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(30, 2)) * [1.0, 0.5]
        h = np.array([[0.3, 0.05], [0.05, 0.2]])
        kde = jaxkde.KDE(kernel, bandwidth=h, adaptive=True, alpha=0.7).fit(x)
        lam = kde.adaptive_factors_
        q = np.r_[rng.normal(size=(40, 2)), x[:5]]
        parts = [jaxkde.KDE(kernel, bandwidth=h * lam[i] ** 2).fit(x[i : i + 1]).score_samples(q)
                 for i in range(x.shape[0])]  # fmt: skip
        want = logsumexp(np.stack(parts), axis=0) - math.log(x.shape[0])
        got = kde.score_samples(q)
        assert np.array_equal(np.isfinite(got), np.isfinite(want))
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-10, atol=1e-12)
        # The pilot is the fixed KDE: lambda_i = (f(x_i) / g)^-alpha.
        pilot = jaxkde.KDE(kernel, bandwidth=h).fit(x).score_samples(x)
        np.testing.assert_allclose(np.log(lam), -0.7 * (pilot - pilot.mean()), atol=1e-10)


def test_alpha_zero_is_the_fixed_kde():
    rng = np.random.default_rng(4)
    x = rng.lognormal(size=(300, 2))
    q = rng.lognormal(size=(20, 2))
    a = jaxkde.KDE(adaptive=True, alpha=0.0).fit(x)
    b = jaxkde.KDE().fit(x)
    assert np.all(a.adaptive_factors_ == 1.0) and b.adaptive_factors_ is None
    np.testing.assert_allclose(a.score_samples(q), b.score_samples(q), rtol=1e-6)


def test_samples_follow_each_centres_kernel():
    """A two-sided KS test of 20,000 draws against the adaptive mixture's exact CDF."""
    x = np.array([[-3.0], [-2.9], [-2.8], [-2.7], [0.0], [6.0]])
    kde = jaxkde.KDE(bandwidth=0.5, adaptive=True, alpha=1.0).fit(x)
    sd = 0.5 * kde.adaptive_factors_
    assert sd.max() / sd.min() > 1.5

    def cdf(t):
        return stats.norm.cdf((np.asarray(t)[:, None] - x[:, 0]) / sd).mean(axis=1)

    draws = kde.sample(20000, key=7)[:, 0]
    assert stats.kstest(draws, cdf).pvalue > 1e-3
    # and a fixed-width mixture is rejected: the widths matter
    fixed = jaxkde.KDE(bandwidth=0.5).fit(x).sample(20000, key=7)[:, 0]
    assert stats.kstest(fixed, cdf).pvalue < 1e-6
    centre, point = kde.random_sample(key=1)
    assert centre.shape == point.shape == (1,)


def test_loo_likelihood_with_factors_matches_brute_force():
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        x = rng.standard_t(4, size=(120, 2))
        xc = x - x.mean(0)
        log_lam = rng.normal(scale=0.4, size=120)
        h = np.array([0.2, 0.3])
        params = params_from_bandwidth(h, "diagonal")
        lw = jnp.full(120, -math.log(120))
        got = jaxkde.loo_log_likelihood(jnp.asarray(params), jnp.asarray(xc), lw,
                                        jnp.arange(120), None, jnp.asarray(log_lam),
                                        kind="diagonal", chunk_size=32)  # fmt: skip
        d2 = (((xc[:, None, :] - xc[None, :, :]) ** 2) / h).sum(-1) / np.exp(2 * log_lam)
        terms = -0.5 * d2 - 2 * log_lam[None, :] - math.log(2 * math.pi) - 0.5 * np.log(h).sum()
        np.fill_diagonal(terms, -np.inf)
        want = np.mean(logsumexp(terms, axis=1) - math.log(119))
        assert float(got) == pytest.approx(want, rel=1e-12)


@pytest.mark.slow
def test_learned_bandwidth_is_optimal_with_the_factors_held_fixed():
    rng = np.random.default_rng(6)
    x = rng.lognormal(size=(400, 1))
    kde = jaxkde.KDE(bandwidth="cv", adaptive=True).fit(x)
    fit = kde.bandwidth_fit_
    assert fit.converged
    log_lam = np.log(kde.adaptive_factors_)
    fixed = jaxkde.fit_bandwidth(x).matrix
    # The adaptive optimum differs from the fixed one, and beats it with the factors in place.
    with_factors = jaxkde.fit_bandwidth(x, init=fixed, log_factors=log_lam)
    assert with_factors.matrix == pytest.approx(fit.matrix, rel=1e-3)
    assert not fit.matrix == pytest.approx(fixed, rel=0.05)
    xc = jnp.asarray((x - x.mean(0)).astype(np.float32))
    lw = jnp.full(400, -math.log(400), jnp.float32)

    def objective(h):
        p = jnp.asarray(params_from_bandwidth(np.atleast_1d(h), "scalar"))
        return float(jaxkde.loo_log_likelihood(p, xc, lw, jnp.arange(400), None,
                                               jnp.asarray(log_lam, jnp.float32)))  # fmt: skip

    best = objective(fit.matrix)
    assert best >= objective(fit.matrix * 1.1) and best >= objective(fit.matrix / 1.1)
    assert best > objective(fixed)


def test_bounds_and_adaptive():
    rng = np.random.default_rng(7)
    x = rng.exponential(size=(500, 1))
    kde = jaxkde.KDE(bounds=[(0.0, None)], adaptive=True).fit(x)
    grid = np.linspace(0.0, 60.0, 600001)
    assert np.trapezoid(kde.predict(grid[:, None]), grid) == pytest.approx(1.0, abs=1e-4)
    assert kde.score_samples(np.array([[-1e-6]]))[0] == -np.inf
    assert kde.sample(2000, key=0).min() >= 0.0
    # The pilot is the reflected density, and the images carry each centre's factor.
    fixed = jaxkde.KDE(bounds=[(0.0, None)]).fit(x)
    pilot = fixed.score_samples(x).astype(np.float64)
    np.testing.assert_allclose(np.log(kde.adaptive_factors_), -0.5 * (pilot - pilot.mean()),
                               atol=1e-5)  # fmt: skip
    lam = kde.adaptive_factors_
    want = np.logaddexp(
        _brute_adaptive(x, grid[:50, None] + 0.1, kde.bandwidth_, lam),
        _brute_adaptive(-x, grid[:50, None] + 0.1, kde.bandwidth_, lam),
    )
    np.testing.assert_allclose(kde.score_samples(grid[:50, None] + 0.1), want, rtol=1e-5)
    t = jaxkde.KDE(bounds=[(0.0, None)], boundary="transform", adaptive=True).fit(x)
    assert t.sample(500, key=0).min() > 0.0


def test_labels_fit_one_adaptive_kde_per_class():
    rng = np.random.default_rng(8)
    x = np.r_[rng.normal(size=(150, 2)), rng.standard_t(3, size=(100, 2)) + 3]
    y = np.r_[np.zeros(150, int), np.ones(100, int)]
    kde = jaxkde.KDE(adaptive=True).fit(x, y)
    q = rng.normal(size=(10, 2)) + 1.5
    per_class = kde.class_log_density(q)
    for c in (0, 1):
        alone = jaxkde.KDE(adaptive=True).fit(x[y == c])
        np.testing.assert_allclose(per_class[:, c], alone.score_samples(q), rtol=1e-5)
        np.testing.assert_allclose(kde.adaptive_factors_[y == c], alone.adaptive_factors_,
                                   rtol=1e-6)  # fmt: skip


def test_grid_and_pickle():
    rng = np.random.default_rng(9)
    x = rng.standard_t(3, size=(300, 1))
    kde = jaxkde.KDE(adaptive=True, kernel="epanechnikov").fit(x)
    g = kde.score_grid(257)
    assert g.method == "exact"
    np.testing.assert_allclose(g.log_density, kde.score_samples(g.axes[0][:, None]), rtol=1e-5)
    # the default axes reach 3 standard deviations of the widest centre's kernel past the data
    std = np.sqrt(kde.bandwidth_[0, 0] * kde.state_.kernel.coordinate_variance(1))
    reach = 3.0 * std * kde.adaptive_factors_.max()
    assert g.axes[0][0] == pytest.approx(x.min() - reach, rel=1e-6)
    with pytest.raises(ValueError, match="adaptive bandwidths"):
        kde.score_grid(257, method="binned")
    loaded = pickle.loads(pickle.dumps(kde))
    np.testing.assert_array_equal(loaded.score_samples(x[:5]), kde.score_samples(x[:5]))


def test_heavy_tails_fit_better_than_the_fixed_kde():
    rng = np.random.default_rng(10)
    train, test = rng.standard_t(3, size=(1000, 1)), rng.standard_t(3, size=(4000, 1))
    fixed = jaxkde.KDE().fit(train).score_samples(test).mean()
    adaptive = jaxkde.KDE(adaptive=True).fit(train).score_samples(test).mean()
    assert adaptive > fixed + 0.01


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 1.5}, ValueError, r"alpha must be a number in \[0, 1\]; got 1\.5"),
        ({"alpha": -0.1}, ValueError, "alpha must be"),
        ({"alpha": "half"}, ValueError, "alpha must be"),
        ({"alpha": 1.5, "adaptive": False}, ValueError, "alpha must be"),
        ({"kernel": "univariate_gaussian"}, ValueError, "adaptive=True needs a normalised"),
        ({"bandwidth": "lscv_full"}, ValueError, "LSCV"),
        ({"adaptive": "yes"}, TypeError, "adaptive must be True or False"),
    ],
)
def test_bad_input(kwargs, error, match):
    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(error, match=match):
        jaxkde.KDE(**{"adaptive": True, **kwargs}).fit(x)


def test_factors_beyond_the_limit_are_refused_not_clipped():
    log_pilot = np.array([0.0, -200.0, 5.0])
    with pytest.raises(ValueError, match=r"alpha=0\.5 gives adaptive factors up to exp"):
        abramson_log_factors(log_pilot, alpha=0.5)
    ok = abramson_log_factors(log_pilot, alpha=MAX_LOG_FACTOR / 140.0)
    assert np.max(np.abs(ok)) <= MAX_LOG_FACTOR
    with pytest.raises(ValueError, match="pilot density is 0"):
        abramson_log_factors(np.array([0.0, -np.inf]))
    # a row of zero weight is left at lambda = 1 whatever its pilot
    out = abramson_log_factors(np.array([0.0, -np.inf, -2.0]), weights=[1.0, 0.0, 1.0])
    assert out[1] == 0.0 and out[0] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="log_factors must be 50 finite numbers"):
        jaxkde.fit_bandwidth(np.random.default_rng(0).normal(size=(50, 1)), log_factors=[0.0])
