"""Closed-form integrals of Gaussian KDEs against SciPy's gaussian_kde and float64 sums."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import jaxkde


def _data(seed, n, d, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ np.triu(np.ones((d, d))) * 0.7 + shift


@pytest.mark.parametrize("d", [1, 3])
def test_integrate_gaussian_matches_scipy(dtype, d):
    x = _data(0, 150, d)
    kde = jaxkde.KDE(bandwidth="scott_full").fit(x.astype(dtype))
    ref_kde = stats.gaussian_kde(x.T)
    rng = np.random.default_rng(1)
    for _ in range(3):
        mean = rng.normal(size=d)
        a = rng.normal(size=(d, d))
        cov = a @ a.T * 0.3 + 0.1 * np.eye(d)
        ref = ref_kde.integrate_gaussian(mean, cov)
        assert kde.integrate_gaussian(mean, cov) == pytest.approx(ref, rel=1e-7)


def test_integrate_gaussian_weighted_adaptive_and_far_tails_in_log_space():
    rng = np.random.default_rng(2)
    x, w = _data(3, 80, 2), rng.uniform(0.2, 2.0, size=80)
    kde = jaxkde.KDE(bandwidth=[0.4, 0.3], adaptive=True).fit(x, sample_weight=w)
    parts = jaxkde.stats.mixture_parts(kde.state_)
    mean, cov = np.array([0.5, -0.3]), np.array([[0.2, 0.05], [0.05, 0.1]])
    # float64 brute force: a normal density per centre, covariance lambda_i^2 H + S
    terms = []
    for c, lw, lf in zip(parts.centres, parts.log_weights, parts.log_factors, strict=True):
        terms.append(lw + stats.multivariate_normal(c, np.exp(2 * lf) * parts.bandwidth + cov)
                     .logpdf(mean))  # fmt: skip
    ref = np.logaddexp.reduce(terms)
    got = jaxkde.stats.log_integrate_gaussian(parts, mean, cov)
    assert got == pytest.approx(ref, rel=1e-12)
    # cov = 0 is the density at the mean; a far mean keeps its digits as a log.
    assert np.log(kde.integrate_gaussian(mean, 0.0)) == pytest.approx(
        float(kde.score_samples(mean[None])[0]), rel=1e-6)  # fmt: skip
    far = jaxkde.stats.log_integrate_gaussian(parts, mean + 300.0, 0.01)
    assert np.isfinite(far) and far < -1e4


def test_integrate_gaussian_refuses_bad_covariances_and_other_kernels():
    kde = jaxkde.KDE().fit(_data(4, 30, 2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        kde.integrate_gaussian([0, 0], [[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        kde.integrate_gaussian([0, 0], [[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"cov must have shape \(2, 2\)"):
        kde.integrate_gaussian([0, 0], np.eye(3))
    with pytest.raises(ValueError, match="mean"):
        kde.integrate_gaussian([0, 0, 0], np.eye(2))
    with pytest.raises(ValueError, match="gaussian kernel only"):
        jaxkde.KDE("epanechnikov").fit(_data(4, 30, 2)).integrate_gaussian([0, 0], np.eye(2))


@pytest.mark.parametrize("d", [1, 2, 4])
def test_integrate_kde_matches_scipy_and_is_symmetric(dtype, d):
    x, y = _data(5, 300, d), _data(6, 120, d, shift=0.4)
    a = jaxkde.KDE(bandwidth="scott_full").fit(x.astype(dtype))
    b = jaxkde.KDE(bandwidth="silverman_full").fit(y.astype(dtype))
    ref = stats.gaussian_kde(x.T).integrate_kde(stats.gaussian_kde(y.T, "silverman"))
    rtol = 1e-5 if dtype == "float32" else 1e-10
    assert a.integrate_kde(b) == pytest.approx(ref, rel=rtol)
    assert b.integrate_kde(a) == pytest.approx(ref, rel=rtol)


def test_integrate_kde_refuses_adaptive_and_mismatched_kdes():
    a = jaxkde.KDE().fit(_data(7, 40, 2))
    with pytest.raises(ValueError, match="same number of features"):
        a.integrate_kde(jaxkde.KDE().fit(_data(7, 40, 3)))
    with pytest.raises(ValueError, match="adaptive=True"):
        a.integrate_kde(jaxkde.KDE(adaptive=True).fit(_data(8, 40, 2)))
    with pytest.raises(TypeError, match=r"other must be a fitted jaxkde\.KDE"):
        a.integrate_kde(stats.gaussian_kde(_data(7, 40, 2).T))
