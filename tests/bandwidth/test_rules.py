"""Bandwidth rules against NumPy/SciPy formulas; zero-variance handling; user bandwidths."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import gaussian_kde

import jaxkde
from jaxkde.bandwidth.rules import resolve_bandwidth


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)) @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])
    w = rng.uniform(0.1, 3.0, size=400)
    return x, w


@pytest.mark.parametrize("weighted", [False, True])
def test_full_rules_match_scipy(dtype, data, weighted):
    x, w = data
    w = w if weighted else None
    for rule, method in [
        (jaxkde.scott_full_bandwidth, "scott"),
        (jaxkde.silverman_full_bandwidth, "silverman"),
    ]:
        ref = gaussian_kde(x.T, bw_method=method, weights=w).covariance
        got = rule(jnp.asarray(x, dtype), None if w is None else jnp.asarray(w, dtype))
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_diagonal_rules_are_squared_factor_times_variance(data, weighted):
    x, w = data
    w = w if weighted else None
    n, d = x.shape
    var = np.diag(np.cov(x.T, aweights=w))
    n_eff = n if w is None else w.sum() ** 2 / (w**2).sum()
    scott = n_eff ** (-1 / (d + 4))
    silverman = (4 / (d + 2)) ** (1 / (d + 4)) * n_eff ** (-1 / (d + 4))
    xw = (jnp.asarray(x, jnp.float32), None if w is None else jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(np.asarray(jaxkde.scott_bandwidth(*xw)), (scott**2) * var, rtol=1e-5)
    # The seed forgot to square Silverman's factor * sigma; H_ii is its square.
    np.testing.assert_allclose(
        np.asarray(jaxkde.silverman_bandwidth(*xw)), (silverman * np.sqrt(var)) ** 2, rtol=1e-5
    )
    full = np.asarray(jaxkde.scott_full_bandwidth(*xw))
    np.testing.assert_allclose(np.asarray(jaxkde.scott_bandwidth(*xw)), np.diag(full), rtol=1e-5)


def test_effective_sample_size():
    assert float(jaxkde.effective_sample_size(jnp.ones(10))) == pytest.approx(10.0)
    assert float(jaxkde.effective_sample_size(jnp.array([1.0, 0.0, 0.0]))) == pytest.approx(1.0)


def test_mean_and_covariance_match_numpy(data):
    x, w = data
    mean, cov = jaxkde.weighted_mean_and_covariance(jnp.asarray(x), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(mean), np.average(x, axis=0, weights=w), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(cov), np.cov(x.T, aweights=w), rtol=1e-4)


def test_identity_rule():
    got = resolve_bandwidth(jnp.zeros((5, 4)), None, "identity")
    np.testing.assert_array_equal(got.matrix, np.ones(4))


def _with_constant_columns(rng, n=300):
    x = rng.normal(size=(n, 5))
    x[:, 1] = 0.0
    x[:, 3] = 7.0
    return x


@pytest.mark.parametrize("rule", ["scott", "silverman", "scott_full", "silverman_full"])
def test_zero_variance_floor_warns_and_stays_finite(rule):
    x = _with_constant_columns(np.random.default_rng(1))
    with pytest.warns(RuntimeWarning, match="2 of 5"):
        kde = jaxkde.KDE(bandwidth=rule).fit(x)
    assert kde.n_degenerate_features_ == 2
    h = kde.bandwidth_
    assert np.all(np.linalg.eigvalsh(h) > 0)
    ld = kde.score_samples(x[:20])
    assert np.all(np.isfinite(ld))
    # Floored variances are variance_floor times the largest.
    largest = np.linalg.eigvalsh(h).max()
    np.testing.assert_allclose(np.linalg.eigvalsh(h).min(), 1e-6 * largest, rtol=1e-3)


@pytest.mark.parametrize("rule", ["scott", "scott_full"])
def test_zero_variance_subspace_equals_fit_without_constant_columns(rule):
    x = _with_constant_columns(np.random.default_rng(2))
    keep = [0, 2, 4]
    q = x[:25] + np.random.default_rng(3).normal(size=(25, 5)) * 0.1
    with pytest.warns(RuntimeWarning, match="subspace"):
        sub = jaxkde.KDE(bandwidth=rule, zero_variance="subspace").fit(x)
    reduced = jaxkde.KDE(bandwidth=rule).fit(x[:, keep])
    np.testing.assert_allclose(sub.score_samples(q), reduced.score_samples(q[:, keep]), rtol=1e-5)
    # Samples live in the data's subspace: constant features keep their value.
    s = sub.sample(50, key=0)
    np.testing.assert_allclose(s[:, [1, 3]], np.broadcast_to([0.0, 7.0], (50, 2)), atol=1e-5)


def test_full_rule_on_collinear_features_subspace():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200, 2))
    x = np.column_stack([a, a[:, 0] + a[:, 1]])  # rank-2 covariance, no constant column
    with pytest.warns(RuntimeWarning, match="1 of 3 eigenvalues"):
        kde = jaxkde.KDE(bandwidth="scott_full", zero_variance="subspace").fit(x)
    assert kde.state_.dim == 2
    assert np.all(np.isfinite(kde.score_samples(x[:10])))


def test_no_warning_without_constant_features(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxkde.KDE(bandwidth="scott").fit(data[0])


def test_user_bandwidths():
    x = np.random.default_rng(5).normal(size=(50, 3))
    np.testing.assert_allclose(jaxkde.KDE(bandwidth=0.5).fit(x).bandwidth_, 0.25 * np.eye(3))
    np.testing.assert_allclose(
        jaxkde.KDE(bandwidth=[1.0, 2.0, 3.0]).fit(x).bandwidth_, np.diag([1.0, 4.0, 9.0])
    )
    h = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.5]])
    np.testing.assert_allclose(jaxkde.KDE(bandwidth=h).fit(x).bandwidth_, h, rtol=1e-6)


@pytest.mark.parametrize(
    ("bandwidth", "match"),
    [
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (np.eye(3), r"shape \(2, 2\)"),
        (-1.0, "positive"),
        (0.0, "positive"),
        ([1.0, -2.0], "entry 1"),
        ([1.0, 2.0, 3.0], r"shape \(2,\)"),
        (np.nan, "finite"),
        ("scot", "scott"),
        (np.ones((2, 2, 2)), "3 dimensions"),
    ],
)
def test_bad_user_bandwidths_are_rejected(bandwidth, match):
    x = np.random.default_rng(6).normal(size=(20, 2))
    with pytest.raises(ValueError, match=match):
        jaxkde.KDE(bandwidth=bandwidth).fit(x)


def test_rule_needs_two_rows_and_varying_data():
    with pytest.raises(ValueError, match="at least 2 samples"):
        jaxkde.KDE(bandwidth="silverman").fit(np.ones((1, 3)))
    with pytest.raises(ValueError, match="constant"):
        jaxkde.KDE(bandwidth="scott").fit(np.ones((10, 3)))
    # A user bandwidth needs neither.
    assert np.isfinite(jaxkde.KDE(bandwidth=1.0).fit(np.ones((1, 3))).score([[1.0, 1.0, 1.0]]))


def test_bad_zero_variance_options():
    x = _with_constant_columns(np.random.default_rng(7))
    with pytest.raises(ValueError, match="zero_variance"):
        jaxkde.KDE(zero_variance="drop").fit(x)
    with pytest.raises(ValueError, match="variance_floor"):
        jaxkde.KDE(variance_floor=0.0).fit(x)


# ------------------------------------------------------------- SciPy's bw_method spellings
def _scipy_case(seed=0, n=150, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ np.array([[1, 0.4, 0], [0, 1, 0.2], [0, 0, 0.6]])[:d, :d]
    return x, rng.uniform(0.3, 2.0, size=n), rng.normal(size=(20, d))


@pytest.mark.parametrize(
    "bw_method",
    [None, "scott", "silverman", 0.35, lambda k: 0.9 * k.neff ** (-1.0 / (k.d + 4))],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_set_bandwidth_and_callables_match_scipy(bw_method, weighted):
    from scipy.stats import gaussian_kde

    x, w, q = _scipy_case()
    w = w if weighted else None
    ref = gaussian_kde(x.T, bw_method=bw_method, weights=w).logpdf(q.T)
    kde = jaxkde.KDE(bandwidth=0.5).fit(x, sample_weight=w).set_bandwidth(bw_method)
    np.testing.assert_allclose(kde.score_samples(q), ref, rtol=2e-6)
    if callable(bw_method) or isinstance(bw_method, float):
        spec = bw_method if callable(bw_method) else jaxkde.CovarianceFactor(bw_method)
        again = jaxkde.KDE(bandwidth=spec).fit(x, sample_weight=w)
        np.testing.assert_allclose(again.bandwidth_, kde.bandwidth_, rtol=1e-12)


def test_callable_bandwidth_sees_scipys_attributes_per_class():
    x, _, _ = _scipy_case(1, n=90)
    y = np.repeat([0, 1, 2], 30)
    seen = []

    def factor(ctx):
        seen.append(ctx)
        return 0.5

    kde = jaxkde.KDE(bandwidth=factor).fit(x, y)
    assert [c.n for c in seen] == [30, 30, 30] and all(c.d == 3 for c in seen)
    assert all(c.neff == pytest.approx(30.0) for c in seen)
    for c in range(3):
        cov = np.cov(x[y == c].T)
        np.testing.assert_allclose(kde.bandwidth_[c], 0.25 * cov, rtol=1e-6)


def test_set_bandwidth_refits_classes_and_keeps_rows():
    x, _, q = _scipy_case(2, n=60)
    y = np.repeat(["a", "b"], 30)
    kde = jaxkde.KDE().fit(x, y).set_bandwidth(0.4)
    ref = jaxkde.KDE(bandwidth=jaxkde.CovarianceFactor(0.4)).fit(x, y)
    np.testing.assert_allclose(kde.score_samples(q), ref.score_samples(q), rtol=1e-6)
    unfitted = jaxkde.KDE().set_bandwidth("silverman")
    assert unfitted.bandwidth == "silverman_full"


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [(lambda k: -1.0, ValueError, "value of the callable bandwidth must be a positive"),
     (lambda k: "big", TypeError, "value of the callable bandwidth must be a positive number"),
     (jaxkde.CovarianceFactor(np.nan), ValueError, "factor of CovarianceFactor must be"),
     (jaxkde.CovarianceFactor(0.0), ValueError, "factor of CovarianceFactor must be")],
)  # fmt: skip
def test_bad_factors_are_refused_naming_them(bad, error, match):
    x, _, _ = _scipy_case(3, n=20)
    with pytest.raises(error, match=match):
        jaxkde.KDE(bandwidth=bad).fit(x)


def test_set_bandwidth_refuses_what_scipy_refuses():
    kde = jaxkde.KDE().fit(_scipy_case(4, n=20)[0])
    for bad, error in (("isj", ValueError), (True, TypeError), ([0.3], TypeError)):
        with pytest.raises(error, match="bw_method must be None, 'scott', 'silverman'"):
            kde.set_bandwidth(bad)


def test_normal_reference_is_statsmodels_kde_multivariate():
    sm = pytest.importorskip("statsmodels.api")
    x = np.random.default_rng(7).normal(size=(200, 3)) * [1.0, 2.0, 3.0] + 40.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = sm.nonparametric.KDEMultivariate(x, "ccc", bw="normal_reference").bw
    host = resolve_bandwidth(x, None, "normal_reference").matrix
    np.testing.assert_allclose(np.sqrt(host), ref, rtol=1e-12)
    device = jaxkde.normal_reference_bandwidth(jnp.asarray(x - 40.0, jnp.float32))
    np.testing.assert_allclose(np.sqrt(np.asarray(device, np.float64)), ref, rtol=1e-5)
    traced = jaxkde.fit_state(jnp.asarray(x, jnp.float32), "normal_reference")
    np.testing.assert_allclose(np.sqrt(np.diag(traced.bandwidth_matrix())), ref, rtol=1e-5)


def test_set_bandwidth_that_cannot_refit_leaves_the_kde_as_it_was():
    x = _scipy_case(5, n=20)[0]
    kde = jaxkde.KDE("univariate_gaussian", bandwidth=0.7).fit(x)
    before = kde.score_samples(x[:3])
    with pytest.raises(ValueError, match="univariate_gaussian"):
        kde.set_bandwidth(0.3)
    assert kde.bandwidth == 0.7
    np.testing.assert_array_equal(kde.score_samples(x[:3]), before)
