"""Marginals, conditionals and linear observations of Gaussian KDEs: exact identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference import brute_log_density
from scipy import stats
from scipy.special import logsumexp

import jaxkde

MIX = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])


def _data(seed=0, n=400):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) @ MIX + [50.0, 0.0, -3.0], rng


def test_marginal_matches_scipy(dtype):
    x, rng = _data()
    kde = jaxkde.KDE(bandwidth="scott_full").fit(x.astype(dtype))
    ref = stats.gaussian_kde(x.T)
    np.testing.assert_allclose(kde.bandwidth_, ref.covariance, rtol=1e-6)
    marg = kde.marginal([2, 0])
    q = rng.normal(size=(20, 2)) + np.array([-3.0, 50.0])
    want = ref.marginal([2, 0]).logpdf(q.T)
    rtol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(marg.score_samples(q), want, rtol=rtol)
    np.testing.assert_allclose(marg.bandwidth_, kde.bandwidth_[np.ix_([2, 0], [2, 0])])


@pytest.mark.parametrize("adaptive", [False, True])
def test_conditional_is_joint_over_marginal(dtype, adaptive):
    x, rng = _data(1)
    w = rng.uniform(0.2, 2.0, size=x.shape[0])
    kde = jaxkde.KDE(bandwidth="scott_full", adaptive=adaptive).fit(x.astype(dtype),
                                                                    sample_weight=w)  # fmt: skip
    value = [0.4]
    cond = kde.conditional([1], value)
    qa = rng.normal(size=(30, 2)) @ [[1.0, 0.2], [0.0, 1.0]] + [50.0, -3.0]
    joint = np.c_[qa[:, 0], np.full(30, value[0]), qa[:, 1]]
    want = (
        kde.score_samples(joint).astype(np.float64)
        - kde.marginal([1]).score_samples([value]).astype(np.float64)[0]
    )
    rtol = 1e-5 if dtype == "float32" else 1e-10
    got = cond.score_samples(qa)
    assert np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)) <= rtol
    if adaptive:
        np.testing.assert_allclose(cond.adaptive_factors_, kde.adaptive_factors_, rtol=1e-6)


def test_conditional_samples_have_the_conditional_mean():
    x, _ = _data(2)
    kde = jaxkde.KDE(bandwidth="scott_full").fit(x)
    cond = kde.conditional([0], [50.5])
    parts = jaxkde.stats.marginals.mixture_parts(cond.state_)
    mean = np.exp(parts.log_weights) @ parts.centres
    draws = cond.sample(20000, key=3)
    spread = np.sqrt(np.diag(np.cov(draws.T)) / 20000)
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5 * spread)
    # the conditional mean moves with the value conditioned on (x1 and x0 are correlated)
    assert kde.conditional([0], [51.5]).sample(5000, key=3)[:, 0].mean() > mean[0] + 0.2


def test_linear_observation_is_bayes_rule():
    x, rng = _data(3, n=200)
    kde = jaxkde.KDE(bandwidth="scott_full").fit(x)
    a = np.array([[1.0, -1.0, 0.5]])
    noise = np.array([[0.2]])
    y = np.array([50.3])
    post = kde.condition_on(a, y, noise)
    h = kde.bandwidth_
    s = a @ h @ a.T + noise
    log_py = logsumexp(stats.multivariate_normal(np.zeros(1), s).logpdf(y - x @ a.T)) - math.log(
        200
    )
    q = x[:10] + rng.normal(scale=0.3, size=(10, 3))
    like = stats.multivariate_normal(np.zeros(1), noise).logpdf(y - q @ a.T)
    want = brute_log_density(x, q, h) + like - log_py
    np.testing.assert_allclose(post.score_samples(q), want, rtol=1e-5)
    # the observed combination concentrates near y
    draws = post.sample(4000, key=0) @ a.T
    assert abs(draws.mean() - y[0]) < 0.5 and draws.std() < math.sqrt(float(s[0, 0]))


def test_bad_input():
    x, _ = _data(4, n=60)
    kde = jaxkde.KDE(bandwidth="scott_full").fit(x)
    with pytest.raises(ValueError, match="exact for the gaussian kernel only"):
        jaxkde.KDE("epanechnikov").fit(x).marginal([0])
    with pytest.raises(ValueError, match=r"dims must be distinct integers in \[0, 3\)"):
        kde.marginal([0, 3])
    with pytest.raises(ValueError, match="dims must be distinct"):
        kde.marginal([1, 1])
    for dims in ([1.5], [1.0], 1.0, ["1"], [[0, 1.5]]):  # refused, as NumPy refuses them
        with pytest.raises(TypeError, match="dims must be integers"):
            kde.marginal(dims)
    with pytest.raises(ValueError, match="values must be 2 finite numbers"):
        kde.conditional([0, 1], [1.0])
    with pytest.raises(ValueError, match="at least one dimension"):
        kde.conditional([0, 1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="without labels and bounds"):
        jaxkde.KDE().fit(x, np.arange(60) % 2).marginal([0])
    with pytest.raises(ValueError, match="noise must be positive definite"):
        kde.condition_on(np.eye(3)[:1], [1.0], [[-1.0]])
    with pytest.raises(ValueError, match=r"matrix must be a finite \(k, 3\) array"):
        kde.condition_on(np.eye(2), [1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="adaptive KDE is not supported"):
        jaxkde.KDE(adaptive=True).fit(x).condition_on(np.eye(3)[:1], [50.0], 1.0)
    with pytest.raises(ValueError, match="probability 0 under every centre"):
        kde.conditional([0], [1e200])


@pytest.mark.parametrize("offset", [1e6, 1e9])
def test_derived_kdes_far_from_the_origin(offset):
    # 300 points at (offset, 5) + 0.01 N(0, I): the joint was right, but the derived KDEs cast
    # their float64 centres to float32 before centring them, and lost the data.
    rng = np.random.default_rng(0)
    x = np.array([offset, 5.0]) + 0.01 * rng.normal(size=(300, 2))
    h = np.array([0.002, 0.003]) ** 2
    kde = jaxkde.KDE(bandwidth=np.sqrt(h)).fit(x)
    np.testing.assert_allclose(np.diag(kde.bandwidth_), h, rtol=1e-6)
    v = offset + 0.01 * rng.normal(size=40)
    # the marginal of feature 0: an explicit float64 mixture
    want = logsumexp(stats.norm.logpdf(v[:, None], x[None, :, 0], math.sqrt(h[0])), axis=1)
    want -= math.log(300)
    np.testing.assert_allclose(kde.marginal([0]).score_samples(v[:, None]), want, atol=2e-3)
    # given x1 = 5: weights N(5; x_i1, h1), centres x_i0
    log_w = stats.norm.logpdf(5.0, x[:, 1], math.sqrt(h[1]))
    log_w -= logsumexp(log_w)
    want = logsumexp(log_w[None, :] + stats.norm.logpdf(v[:, None], x[None, :, 0],
                                                           math.sqrt(h[0])), axis=1)  # fmt: skip
    cond = kde.conditional([1], [5.0])
    np.testing.assert_allclose(cond.score_samples(v[:, None]), want, atol=2e-3)
    draws = cond.sample(4000, key=1)[:, 0]
    p = np.exp(log_w)
    mean = p @ x[:, 0]
    spread = math.sqrt(p @ (x[:, 0] - mean) ** 2 + h[0])
    assert np.std(draws - offset) == pytest.approx(spread, rel=0.08)
    # a linear observation of feature 1 (noise 1e-6): nearly the conditional
    post = kde.condition_on([[0.0, 1.0]], [5.0], [[1e-6]])
    q = np.c_[v, np.full(40, 5.0)]
    s2 = h[1] + 1e-6
    log_w = stats.norm.logpdf(5.0, x[:, 1], math.sqrt(s2))
    log_w -= logsumexp(log_w)
    gain = h[1] / s2
    c1 = x[:, 1] + gain * (5.0 - x[:, 1])
    var1 = h[1] * (1 - gain)
    want = logsumexp(log_w[None, :] + stats.norm.logpdf(v[:, None], x[None, :, 0], math.sqrt(h[0]))
                     + stats.norm.logpdf(5.0, c1[None, :], math.sqrt(var1)), axis=1)  # fmt: skip
    np.testing.assert_allclose(post.score_samples(q), want, atol=2e-3)
