"""CDFs, box probabilities and quantiles against numerical integration and float64 brute force."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats
from scipy.special import log_ndtr, logsumexp

import jaxkde

KERNELS = ["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_1d_cdf_is_the_integral_of_the_density(kernel, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 1)).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=40)
    kde = jaxkde.KDE(kernel, bandwidth=0.7).fit(x, sample_weight=w)
    radius = 0.7 if kde.state_.kernel.compact else 40.0
    start = x.min() - radius
    queries = np.array([-2.5, -0.3, 0.0, 0.8, 3.0, x.max() + radius + 1.0])
    # Gauss-Legendre (20 points) on pieces between the kinks of the density (centres and the
    # ends of compact supports), at most 0.25 wide: exact for the polynomial kernels, and far
    # below 1e-9 for the smooth ones; one batched density evaluation.
    kinks = np.r_[x[:, 0] - radius, x[:, 0], x[:, 0] + radius, queries] if \
        kde.state_.kernel.compact else np.r_[x[:, 0], queries]  # fmt: skip
    edges = np.unique(np.r_[np.arange(start, queries.max() + 0.25, 0.25), kinks])
    edges = edges[(edges >= start) & (edges <= queries.max())]
    nodes, weights = np.polynomial.legendre.leggauss(20)
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * (edges[1:] - edges[:-1])
    points = (mid[:, None] + half[:, None] * nodes[None, :]).reshape(-1, 1)
    dens = np.exp(kde.score_samples(points).astype(np.float64)).reshape(mid.size, 20)
    cumulative = np.r_[0.0, np.cumsum((dens * weights).sum(axis=1) * half)]
    want = cumulative[np.searchsorted(edges, queries)]
    got = kde.cdf(queries[:, None])
    tol = 1e-7 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(got, want, atol=tol, rtol=0)
    assert kde.cdf(np.array([[x.max() + radius + 1.0]]))[0] == pytest.approx(1.0, abs=tol)


def test_diagonal_gaussian_matches_float64_brute_force(dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)) * [1.0, 3.0, 0.5] + [100.0, 0.0, -5.0]
    kde = jaxkde.KDE(bandwidth="scott").fit(x.astype(dtype))
    sd = np.sqrt(np.diag(kde.bandwidth_))
    q = np.r_[rng.normal(size=(20, 3)) * [1.0, 3.0, 0.5] + [100.0, 0.0, -5.0],
              [[90.0, -12.0, -8.0]], [[np.inf, np.inf, np.inf]], [[-np.inf, 0.0, 0.0]]]  # fmt: skip
    with np.errstate(invalid="ignore"):
        terms = log_ndtr((q[:, None, :] - x[None, :, :]) / sd).sum(-1)
    want = logsumexp(terms, axis=1) - np.log(300)
    got = kde.log_cdf(q)
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin) and got[-1] == -np.inf and got[-2] == 0.0
    rtol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=rtol)
    # the deep tail keeps its digits (checked above): log P is below -100 there
    assert got[20] < -100


def test_box_probabilities(dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 2))
    h = np.array([0.3, 0.5])
    kde = jaxkde.KDE(bandwidth=h).fit(x.astype(dtype))
    low, high = np.array([-1.0, -0.5]), np.array([0.5, 2.0])
    per = stats.norm.cdf((high - x) / h) - stats.norm.cdf((low - x) / h)
    want = per.prod(axis=1).mean()
    tol = 1e-6 if dtype == "float32" else 1e-12
    assert kde.integrate_box(low, high) == pytest.approx(want, abs=tol)
    # many boxes at once, infinite and empty ones included; the whole space has mass 1
    lows = np.array([low, [-np.inf, -np.inf], [0.0, 0.0], [9.0, 9.0]])
    highs = np.array([high, [np.inf, np.inf], [0.0, 1.0], [10.0, 10.0]])
    got = kde.integrate_box(lows, highs)
    assert got[0] == pytest.approx(want, abs=tol) and got[1] == pytest.approx(1.0, abs=tol)
    assert got[2] == 0.0
    tail = (stats.norm.sf((9.0 - x) / h) - stats.norm.sf((10.0 - x) / h)).prod(axis=1).mean()
    assert got[3] == pytest.approx(tail, rel=1e-3)  # ~1e-58: log space keeps it
    # a 2-D box probability equals its CDF differences
    f = kde.cdf
    corner = (f(high[None]) - f(np.array([[low[0], high[1]]])) - f(np.array([[high[0], low[1]]]))
              + f(low[None]))[0]  # fmt: skip
    assert corner == pytest.approx(want, abs=10 * tol)


@pytest.mark.slow
def test_full_bandwidth_2d_matches_scipy(dtype):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 2)) @ np.array([[1.0, 0.0], [0.8, 0.6]]) + [5.0, -2.0]
    ref = stats.gaussian_kde(x.T)
    kde = jaxkde.KDE(bandwidth=ref.covariance).fit(x.astype(dtype))
    tol = 1e-6
    for low, high in [([4.0, -3.0], [6.0, -1.5]), ([-np.inf, -np.inf], [5.0, -2.0]),
                      ([5.5, -10.0], [np.inf, -2.5]), ([3.0, -4.0], [3.5, -3.5])]:  # fmt: skip
        want = ref.integrate_box(low, high)
        assert kde.integrate_box(low, high) == pytest.approx(want, abs=tol), (low, high)
    q = rng.normal(size=(10, 2)) + np.array([5.0, -2.0])
    want = [ref.integrate_box([-np.inf, -np.inf], p) for p in q]
    np.testing.assert_allclose(kde.cdf(q), want, atol=tol)
    assert kde.integrate_box([-np.inf, -np.inf], [np.inf, np.inf]) == pytest.approx(1.0, abs=tol)


def _log_bvn_quadrature(a, b, rho):
    """``log P(X <= a, Y <= b)``, standard normals of correlation ``rho``: the integral of
    ``phi(x) Phi((b - rho x) / s)`` over ``x <= a`` by adaptive quadrature, scaled by its
    largest value (float64, any depth of tail)."""
    s = math.sqrt(1 - rho * rho)

    def log_f(x):
        return -0.5 * x * x - 0.5 * math.log(2 * math.pi) + log_ndtr((b - rho * x) / s)

    grid = np.linspace(min(a, 0.0) - 80.0, a, 4001)
    k = int(np.argmax([log_f(x) for x in grid]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    peak = optimize.minimize_scalar(lambda x: -log_f(x), bounds=(lo, hi), method="bounded").x
    top = max(log_f(peak), log_f(grid[k]))
    edges = [-np.inf, min(peak - 30, a), min(peak, a), a]
    total = sum(integrate.quad(lambda x: math.exp(log_f(x) - top), lo, hi, epsabs=0,
                               epsrel=1e-12, limit=500)[0]
                for lo, hi in itertools.pairwise(edges) if hi > lo)  # fmt: skip
    return top + math.log(total)


def test_2d_tails_keep_their_digits(dtype):
    # A diagonal H in 2-D took the bivariate path and the log of a float32 probability: -inf
    # at (-8, -8). Every diagonal H now takes the product of log_ndtr; a full H in 2-D is in
    # log space too.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]])
    h = np.array([0.3, 0.2])
    kde = jaxkde.KDE(bandwidth=np.diag(h)).fit(x.astype(dtype))
    q = np.array([[-8.0, -8.0], [-3.0, -12.0], [0.5, 0.2]])
    want = logsumexp(log_ndtr((q[:, None, :] - x) / np.sqrt(h)).sum(-1), axis=1) - math.log(40)
    rtol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(kde.log_cdf(q), want, rtol=rtol)
    lo, hi = np.array([-9.0, -9.0]), np.array([-8.0, -8.0])
    cdf = stats.norm.cdf
    box = np.mean(np.prod(cdf((hi - x) / np.sqrt(h)) - cdf((lo - x) / np.sqrt(h)), axis=1))
    assert box > 0 and kde.integrate_box(lo, hi) == pytest.approx(box, rel=rtol)
    # a full H: against adaptive quadrature, centre by centre (the first 8 centres)
    full = np.array([[0.3, 0.15], [0.15, 0.2]])
    sd = np.sqrt(np.diag(full))
    rho = full[0, 1] / (sd[0] * sd[1])
    kde = jaxkde.KDE(bandwidth=full).fit(x[:8].astype(dtype))
    for point in ([-8.0, -8.0], [-6.0, 1.0], [1.0, 1.0]):
        z = (np.array(point) - x[:8]) / sd
        want = logsumexp([_log_bvn_quadrature(a, b, rho) for a, b in z]) - math.log(8)
        assert kde.log_cdf([point])[0] == pytest.approx(want, rel=rtol, abs=1e-6), point


def _log_trivariate_quadrature(a, corr):
    """``log P(Z <= a)``, ``Z ~ N(0, corr)`` in 3-D: the integral over ``z_1 <= a_1`` of
    ``phi(z_1)`` times the conditional bivariate CDF (:func:`_log_bvn_quadrature`), nested
    adaptive quadrature scaled by its largest value."""
    r = corr[1:, 0]
    cond = corr[1:, 1:] - np.outer(r, r)
    s = np.sqrt(np.diag(cond))
    rho = cond[0, 1] / (s[0] * s[1])

    def log_f(x):
        return (
            -0.5 * x * x
            - 0.5 * math.log(2 * math.pi)
            + _log_bvn_quadrature((a[1] - r[0] * x) / s[0], (a[2] - r[1] * x) / s[1], rho)
        )

    grid = np.linspace(min(a[0], 0.0) - 40.0, a[0], 401)
    k = int(np.argmax([log_f(x) for x in grid]))
    top = log_f(grid[k])
    edges = [-np.inf, grid[k] - 25.0, grid[k], a[0]]
    total = sum(integrate.quad(lambda x: math.exp(log_f(x) - top), lo, hi, epsabs=0,
                               epsrel=1e-10, limit=200)[0]
                for lo, hi in itertools.pairwise(edges) if hi > lo)  # fmt: skip
    return top + math.log(total)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [4.0, 6.0])
def test_3d_full_bandwidth_tails_keep_their_digits(dtype, depth):
    # The lattice rule overstated a CDF at -4 standard deviations up to 2.35x and was 1.4 nats
    # off at -6: its error was absolute. The ordered, log-space tensor rule keeps the tail's
    # relative precision: against nested adaptive quadrature, centre by centre.
    corr_factor = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.3, -0.5, 0.8]])
    h = 0.25 * corr_factor @ corr_factor.T
    x = np.array([[0.1, -0.2, 0.3], [-0.3, 0.1, 0.0], [0.2, 0.2, -0.1]])
    kde = jaxkde.KDE(bandwidth=h).fit(x.astype(dtype))
    sd = np.sqrt(np.diag(h))
    corr = h / np.outer(sd, sd)
    point = -depth * sd  # depth kernel standard deviations below the origin in each coordinate
    want = logsumexp([_log_trivariate_quadrature((point - c) / sd, corr) for c in x]) - math.log(3)
    got = kde.log_cdf([point])[0]
    assert got == pytest.approx(want, rel=1e-5 if dtype == "float32" else 1e-8)


_BOXES_3D = [([4.0, -3.0, 0.0], [6.0, -1.5, 2.0]), ([-np.inf] * 3, [5.0, -2.0, 1.0]),
             ([7.0, 0.0, 3.0], [np.inf] * 3)]  # fmt: skip


@functools.lru_cache(maxsize=1)
def _scipy_boxes_3d():
    """Data, H and SciPy's Genz code run to 1e-7 per centre on ``_BOXES_3D`` (once for both
    dtypes: it is the slow part)."""
    rng = np.random.default_rng(7)
    chol = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.3, -0.5, 0.8]])
    x = rng.normal(size=(12, 3)) @ chol.T + [5.0, -2.0, 1.0]
    cov = np.cov(x.T) * 0.5
    want = [stats.multivariate_normal.cdf(np.array(hi) - x, lower_limit=np.array(lo) - x,
                                          cov=cov, abseps=1e-7, releps=1e-7).mean()
            for lo, hi in _BOXES_3D]  # fmt: skip
    return x, cov, want


@pytest.mark.slow
def test_full_bandwidth_3d_lattice_rule(dtype):
    """Genz's separation of variables against SciPy's Genz code, and exact without correlation."""
    x, cov, want = _scipy_boxes_3d()
    kde = jaxkde.KDE(bandwidth=cov).fit(x.astype(dtype))
    for (low, high), p in zip(_BOXES_3D, want, strict=True):
        assert kde.integrate_box(low, high) == pytest.approx(p, rel=2e-4, abs=1e-5), low
    assert kde.integrate_box([-np.inf] * 3, [np.inf] * 3) == pytest.approx(1.0, abs=1e-6)
    q = np.array([_BOXES_3D[1][1], [0.0, -8.0, -3.0]])
    assert kde.cdf(q)[0] == pytest.approx(want[1], rel=2e-4)
    # a full H with no correlation leaves nothing to sample: exact, deep in the tail too
    h = np.diag([0.3, 0.5, 0.2]) ** 2
    full = jaxkde.KDE(bandwidth=h + np.zeros((3, 3))).fit(x.astype(dtype))
    assert full.state_.chol.ndim == 2
    exact = logsumexp(log_ndtr((q[:, None, :] - x) / np.sqrt(np.diag(h))).sum(-1), axis=1)
    rtol = 1e-5 if dtype == "float32" else 1e-10
    got = full.log_cdf(q)
    np.testing.assert_allclose(got, exact - np.log(12), rtol=rtol)
    assert got[1] < -100


def test_adaptive_and_labelled_cdfs():
    rng = np.random.default_rng(3)
    x = rng.standard_t(3, size=(300, 1))
    kde = jaxkde.KDE(adaptive=True).fit(x)
    sd = np.sqrt(kde.bandwidth_[0, 0]) * kde.adaptive_factors_
    q = np.array([[-5.0], [0.0], [2.0]])
    want = stats.norm.cdf((q - x[:, 0]) / sd).mean(axis=1)
    np.testing.assert_allclose(kde.cdf(q), want, atol=1e-6)
    y = (x[:, 0] > 0).astype(int)
    lab = jaxkde.KDE().fit(x, y)
    parts = [jaxkde.KDE().fit(x[y == c]).cdf(q) * lab.class_prior_[c] for c in (0, 1)]
    np.testing.assert_allclose(lab.cdf(q), parts[0] + parts[1], atol=1e-6)


@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov", "exponential"])
def test_quantile_inverts_the_cdf(kernel):
    rng = np.random.default_rng(4)
    x = rng.lognormal(size=(500, 1))
    kde = jaxkde.KDE(kernel).fit(x)
    p = np.array([1e-6, 0.01, 0.25, 0.5, 0.9, 0.999])
    xq = kde.quantile(p)
    np.testing.assert_allclose(kde.cdf(xq[:, None]), p, atol=1e-6)
    ends = kde.quantile([0.0, 1.0])
    if kernel == "epanechnikov":
        assert kde.cdf(ends[:, None]) == pytest.approx([0.0, 1.0], abs=1e-7)
    else:
        assert ends.tolist() == [-np.inf, np.inf]
    assert kde.quantile(np.full((2, 2), 0.5)).shape == (2, 2)


def test_bad_input():
    rng = np.random.default_rng(5)
    x2 = rng.normal(size=(50, 2))
    x3 = rng.normal(size=(50, 3)) @ [[1, 0.5, 0], [0, 1, 0.2], [0, 0, 1]]
    with pytest.raises(ValueError, match=r"lower\[1\] = 2.0 > upper\[1\] = 1.0"):
        jaxkde.KDE(bandwidth="scott_full").fit(x3).integrate_box([0, 2, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="n_samples must be a positive"):
        jaxkde.stats.probability.log_cdf(jaxkde.KDE(bandwidth="scott_full").fit(x3).state_, x3[:1],
                                   n_samples=0)  # fmt: skip
    with pytest.raises(ValueError, match="kernel 'epanechnikov'"):
        jaxkde.KDE("epanechnikov").fit(x2).integrate_box([0, 0], [1, 1])
    with pytest.raises(ValueError, match="univariate_gaussian"):
        jaxkde.KDE("univariate_gaussian").fit(x2).cdf(x2[:2])
    with pytest.raises(ValueError, match="bounds"):
        jaxkde.KDE(bounds=[(0, None)]).fit(np.abs(x2[:, :1])).cdf([[1.0]])
    kde = jaxkde.KDE().fit(x2[:, :1])
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        kde.quantile([0.5, 1.5])
    with pytest.raises(ValueError, match="quantile needs 1-D data"):
        jaxkde.KDE().fit(x2).quantile(0.5)
    with pytest.raises(ValueError, match="points contains NaN"):
        kde.cdf([[np.nan]])
    with pytest.raises(ValueError, match=r"upper must have shape \(m, 1\)"):
        kde.integrate_box([0.0], [[1.0, 2.0]])


def test_quantile_keeps_tail_probabilities(dtype):
    # The stopping rule was |F(x) - p| <= 1e-7: p = 1e-12 gave -18.8 where the answer is
    # near -5. Solved in log space (survival function above the median), every p keeps its
    # relative precision.
    from scipy.optimize import brentq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1))
    kde = jaxkde.KDE().fit(x.astype(dtype))
    h = math.sqrt(kde.bandwidth_[0, 0])

    def log_f(t):
        return logsumexp(log_ndtr((t - x[:, 0]) / h)) - math.log(200)

    def log_s(t):
        return logsumexp(log_ndtr((x[:, 0] - t) / h)) - math.log(200)

    probs = [1e-30, 1e-12, 0.3, 1 - 1e-12]
    want = [brentq(lambda t: log_f(t) - math.log(1e-30), -60, 5, xtol=1e-14),
            brentq(lambda t: log_f(t) - math.log(1e-12), -60, 5, xtol=1e-14),
            brentq(lambda t: log_f(t) - math.log(0.3), -60, 5, xtol=1e-14),
            brentq(lambda t: log_s(t) - math.log1p(-(1 - 1e-12)), -5, 60, xtol=1e-14)]  # fmt: skip
    np.testing.assert_allclose(kde.quantile(probs), want, rtol=1e-5 if dtype == "float32" else 1e-9)
