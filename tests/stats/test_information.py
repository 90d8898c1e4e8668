"""Entropy, KL divergence and mutual information: the estimators' sums against float64 brute
force, closed forms for Gaussians, and statsmodels' entropy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import jaxkde


def _brute_log_density(x, q, h, w, loo):
    """float64 log density of a Gaussian KDE with matrix h at q; leave-one-out for q = x."""
    logk = stats.multivariate_normal(np.zeros(x.shape[1]), h).logpdf(q[:, None, :] - x[None])
    logk = logk.reshape(len(q), len(x))
    lw = np.log(w / w.sum())
    if loo:
        np.fill_diagonal(logk, -np.inf)
        return logsumexp(logk + lw, axis=1) - np.log1p(-np.exp(lw))
    return logsumexp(logk + lw, axis=1)


@pytest.mark.parametrize("method", ["resubstitution", "loo"])
def test_estimators_equal_their_float64_sums(dtype, method):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 0.5]])
    w = rng.uniform(0.5, 2.0, size=200)
    y = rng.normal(size=(150, 3)) + 0.3
    kde = jaxkde.KDE(bandwidth="scott", chunk_size=64).fit(x.astype(dtype), sample_weight=w)
    other = jaxkde.KDE(bandwidth=0.6).fit(y.astype(dtype))
    h = kde.bandwidth_
    log_f = _brute_log_density(x, x, h, w, method == "loo")
    wn = w / w.sum()
    rtol = 2e-6 if dtype == "float32" else 1e-10
    assert kde.entropy(method) == pytest.approx(-np.sum(wn * log_f), rel=rtol)
    log_g = _brute_log_density(y, x, other.bandwidth_, np.ones(150), False)
    assert kde.kl_divergence(other, method) == pytest.approx(np.sum(wn * (log_f - log_g)),
                                                             rel=10 * rtol)  # fmt: skip
    # Mutual information between feature 0 and features (1, 2), by the marginal KDEs.
    la = _brute_log_density(x[:, :1], x[:, :1], h[:1, :1], w, method == "loo")
    lb = _brute_log_density(x[:, 1:], x[:, 1:], h[1:, 1:], w, method == "loo")
    ref = np.sum(wn * (log_f - la - lb))
    assert kde.mutual_information([0], [1, 2], method) == pytest.approx(ref, rel=20 * rtol)


def test_gaussian_closed_forms():
    rng = np.random.default_rng(1)
    rho, n = 0.8, 4000
    cov = np.array([[1.0, rho], [rho, 1.0]])
    x = rng.multivariate_normal([0, 0], cov, size=n)
    kde = jaxkde.KDE().fit(x)
    entropy = np.log(2 * np.pi * np.e) + 0.5 * np.log(1 - rho**2)
    # Leave-one-out is biased up by the smoothing, resubstitution down by the own term.
    assert entropy < kde.entropy("loo") < entropy + 0.04
    assert abs(kde.entropy("resubstitution") - entropy) < 0.03
    assert kde.mutual_information(0, 1) == pytest.approx(-0.5 * np.log(1 - rho**2), abs=0.03)
    y = rng.normal(size=(n, 2)) * 1.5 + 1.0
    t, mu = 2.25 * np.eye(2), np.ones(2)
    kl = 0.5 * (np.trace(np.linalg.solve(t, cov)) + mu @ np.linalg.solve(t, mu) - 2
                + np.log(np.linalg.det(t) / np.linalg.det(cov)))  # fmt: skip
    assert kde.kl_divergence(jaxkde.KDE().fit(y)) == pytest.approx(kl, abs=0.06)
    # Resubstitution scores f the same way at both sides; leave-one-out f_{-i} < f there.
    assert kde.kl_divergence(kde, "resubstitution") == pytest.approx(0.0, abs=1e-6)
    assert kde.kl_divergence(kde, "loo") < 0.0


def test_entropy_against_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(2)
    z = rng.normal(size=2000)
    ref = sm.nonparametric.KDEUnivariate(z)
    ref.fit()
    kde = jaxkde.KDE(bandwidth=ref.bw).fit(z[:, None])
    # statsmodels integrates -f log f on its FFT grid; the sample averages differ from that
    # integral by O(n^-1/2) (sd of log f over the data / sqrt(n) ~ 0.016 here).
    for method in ("loo", "resubstitution"):
        assert kde.entropy(method) == pytest.approx(ref.entropy, abs=0.05)


def test_compact_kernel_isolated_row_gives_inf_not_nan():
    x = np.array([[0.0], [0.1], [5.0]])
    kde = jaxkde.KDE("epanechnikov", bandwidth=0.5).fit(x)
    assert kde.entropy("loo") == np.inf
    assert np.isfinite(kde.entropy("resubstitution"))
    far = jaxkde.KDE("epanechnikov", bandwidth=0.5).fit(x + 100.0)
    assert kde.kl_divergence(far, "resubstitution") == np.inf


def test_information_arguments_are_checked():
    kde = jaxkde.KDE().fit(np.random.default_rng(3).normal(size=(50, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        kde.entropy("plugin")
    with pytest.raises(ValueError, match="dims_a and dims_b must be disjoint"):
        kde.mutual_information([0, 1], [1])
    with pytest.raises(ValueError, match="same number of features"):
        kde.kl_divergence(jaxkde.KDE().fit(np.zeros((5, 2)) + np.arange(5)[:, None]))
    with pytest.raises(ValueError, match="gaussian kernel only"):
        jaxkde.KDE("tophat", bandwidth=1.0).fit(np.eye(3)).mutual_information(0, 1)
