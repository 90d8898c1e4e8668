"""Bounded data: reflection and log / logit transforms against float64 brute force."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy import stats

import jaxkde
from jaxkde.variants.bounds import fold

KERNELS = ["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]


def _gauss_full(x, centres, h):
    inv = np.linalg.inv(h)
    u = x[:, None, :] - centres[None, :, :]
    quad = np.einsum("qni,ij,qnj->qn", u, inv, u)
    d = x.shape[1]
    return np.exp(-0.5 * quad) / math.sqrt((2 * math.pi) ** d * np.linalg.det(h))


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("law", ["exponential", "beta"])
def test_reflection_integrates_to_one(kernel, law):
    rng = np.random.default_rng(0)
    x = rng.exponential(size=500) if law == "exponential" else rng.beta(2, 5, size=500)
    bounds = [(0.0, None)] if law == "exponential" else [(0.0, 1.0)]
    kde = jaxkde.KDE(kernel=kernel, bounds=bounds).fit(x[:, None])
    top = 40.0 if law == "exponential" else 1.0
    grid = np.linspace(0.0, top, 400001)
    dens = kde.predict(grid[:, None])
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-4)
    assert kde.score_samples(np.array([[-1e-9], [top + 1e-3 if law == "beta" else -5.0]]))[0] \
        == -np.inf  # fmt: skip


def test_reflection_with_a_full_bandwidth_matches_brute_force(dtype):
    rng = np.random.default_rng(1)
    x = np.c_[rng.exponential(size=300), rng.uniform(size=300)]
    h = np.array([[0.04, 0.01], [0.01, 0.02]])
    kde = jaxkde.KDE(bandwidth=np.linalg.cholesky(h) @ np.linalg.cholesky(h).T,
                     bounds=[(0, None), (0, 1)]).fit(x.astype(dtype))  # fmt: skip
    q = np.c_[rng.uniform(0, 2, 50), rng.uniform(0, 1, 50)]
    want = np.zeros(50)
    for s0, o0 in [(1, 0), (-1, 0)]:
        for s1, o1 in [(1, 0), (-1, 0), (-1, 2)]:
            s = np.array([s0, s1], float)
            img = x * s + np.array([o0, o1], float)
            want += _gauss_full(q, img, s[:, None] * h * s).mean(axis=1)
    got = kde.score_samples(q)
    np.testing.assert_allclose(got, np.log(want), rtol=1e-5 if dtype == "float32" else 1e-10)


def test_transform_is_the_density_of_log_and_logit_data():
    rng = np.random.default_rng(2)
    x = np.c_[rng.lognormal(size=400), rng.beta(2, 5, size=400)]
    kde = jaxkde.KDE(bounds=[(0, None), (0, 1)], boundary="transform").fit(x)
    z = np.c_[np.log(x[:, 0]), np.log(x[:, 1] / (1 - x[:, 1]))]
    inner = jaxkde.KDE().fit(z)
    np.testing.assert_allclose(kde.bandwidth_, inner.bandwidth_)
    q = np.c_[rng.uniform(0.05, 4, 30), rng.uniform(0.01, 0.99, 30)]
    qz = np.c_[np.log(q[:, 0]), np.log(q[:, 1] / (1 - q[:, 1]))]
    jac = -np.log(q[:, 0]) - np.log(q[:, 1]) - np.log(1 - q[:, 1])
    np.testing.assert_allclose(kde.score_samples(q), inner.score_samples(qz) + jac, rtol=1e-5)
    assert np.all(kde.score_samples(np.array([[0.0, 0.5], [1.0, 1.0], [-1.0, 0.5]])) == -np.inf)


@pytest.mark.parametrize("boundary", ["reflect", "transform"])
def test_samples_stay_inside_with_the_right_law(boundary):
    rng = np.random.default_rng(3)
    x = rng.exponential(size=400)[:, None]
    kde = jaxkde.KDE(bounds=[(0.0, None)], boundary=boundary).fit(x)
    s = kde.sample(20000, key=4).ravel()
    assert s.min() > 0
    grid = np.linspace(1e-9, 30.0, 300001)
    dens = kde.predict(grid[:, None])
    cdf = np.concatenate([[0], np.cumsum(np.diff(grid) * 0.5 * (dens[1:] + dens[:-1]))])
    result = stats.kstest(s, lambda t: np.interp(t, grid, cdf))
    assert result.pvalue > 1e-3


def test_fold_is_the_law_of_all_images():
    y = np.array([[-0.3], [1.2], [2.5], [-1.7], [0.4]])
    got = fold(y, jaxkde.variants.bounds.check_bounds([(0.0, 1.0)], 1)).ravel()
    np.testing.assert_allclose(got, [0.3, 0.8, 0.5, 0.3, 0.4])


@pytest.mark.parametrize("boundary", ["reflect", "transform"])
def test_grid_matches_score_samples(boundary):
    rng = np.random.default_rng(5)
    x = rng.beta(2, 5, size=(300, 1))
    kde = jaxkde.KDE(bounds=[(0, 1)], boundary=boundary).fit(x)
    axes, log_density = kde.score_grid(64)
    assert axes[0][0] >= 0 and axes[0][-1] <= 1
    np.testing.assert_allclose(log_density, kde.score_samples(axes[0][:, None]), rtol=1e-4,
                               atol=1e-4)  # fmt: skip
    again = pickle.loads(pickle.dumps(kde))
    np.testing.assert_array_equal(again.score_samples(x[:5]), kde.score_samples(x[:5]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bounds", "grid"), [([(0.0, None)], 512), ([(0.0, 1.0), (0.0, None)], 128)]
)
def test_binned_grid_of_a_reflected_kde(bounds, grid):
    # The images lie beyond the bounds, outside the default axes clipped to them: binned used
    # to refuse its own default axes. They are binned on the axes extended on their spacing.
    rng = np.random.default_rng(6)
    x = rng.exponential(size=(500, len(bounds)))
    if len(bounds) == 2:
        x[:, 0] = rng.uniform(size=500)
    kde = jaxkde.KDE(bounds=bounds, boundary="reflect").fit(x)
    exact = kde.score_grid(grid, method="exact")
    binned = kde.score_grid(grid, method="binned")
    assert binned.method == "binned"
    for a, b in zip(binned.axes, exact.axes, strict=True):
        np.testing.assert_array_equal(a, b)
    inside = np.isfinite(exact.log_density)
    np.testing.assert_array_equal(np.isfinite(binned.log_density), inside)
    # linear binning's own error at this spacing, where the density is within e^-4 of its
    # peak (as without bounds: binned errors are relative to the peak, the tails are auto's)
    body = inside & (exact.log_density > exact.log_density[inside].max() - 4.0)
    np.testing.assert_allclose(binned.log_density[body], exact.log_density[body], atol=0.02)
    auto = kde.score_grid(grid)
    np.testing.assert_allclose(auto.log_density[inside], exact.log_density[inside], atol=6e-3)
    axes = [np.linspace(0.05, 0.9, 40)] * len(bounds)  # the user's own axes, inside the bounds
    np.testing.assert_allclose(
        kde.score_grid(axes=axes, method="binned").log_density,
        kde.score_grid(axes=axes, method="exact").log_density,
        atol=0.05,
    )


@pytest.mark.parametrize(
    ("kwargs", "data", "match"),
    [
        ({"bounds": [(0, 1)]}, [[0.5, 0.5]], r"one \(lo, hi\) pair per feature \(2\)"),
        ({"bounds": [(1, 0)]}, [[0.5]], r"bounds\[0\] needs lo < hi"),
        ({"bounds": [(0, 0)]}, [[0.0]], r"bounds\[0\] needs lo < hi"),
        ({"bounds": [(0, None)]}, [[0.5], [-0.1]], r"X has 3 values outside bounds\[0\]"),
        ({"bounds": [(0, 1)], "boundary": "transform"}, [[0.5], [1.0]], "strictly inside"),
        ({"bounds": [(0, 1)], "boundary": "mirror"}, [[0.5]], "boundary must be one of"),
        ({"bounds": [("a", 1)]}, [[0.5]], r"bounds\[0\] lo must be a number"),
        ({"bounds": [(0, 1)], "kernel": "univariate_gaussian"}, [[0.5]], "normalised kernel"),
    ],
)
def test_bad_bounds(kwargs, data, match):
    with pytest.raises((ValueError, TypeError), match=match):
        jaxkde.KDE(**kwargs).fit(np.asarray(data, float).repeat(3, axis=0) + 0.0)


def test_bounds_refuse_labels():
    with pytest.raises(ValueError, match="not supported with class labels"):
        jaxkde.KDE(bounds=[(0, None)]).fit(np.ones((4, 1)) + np.arange(4)[:, None], [0, 0, 1, 1])
