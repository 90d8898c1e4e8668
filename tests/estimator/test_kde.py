"""The KDE object: agreement with SciPy and scikit-learn, high dimensions, API, bad input."""

from __future__ import annotations

import math
import pickle

import jax
import numpy as np
import pytest
from reference import (
    RTOL,
    assert_float32_close,
    brute_log_density,
    half_min_sq_distance,
    mnist_like,
)
from scipy.special import logsumexp
from scipy.stats import gaussian_kde
from sklearn.base import clone
from sklearn.neighbors import KernelDensity

import jaxkde


@pytest.mark.parametrize("method", ["scott", "silverman"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_scipy_gaussian_kde(dtype, method, weighted):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)) @ np.array([[1.0, 0.4, 0.1], [0.0, 0.7, 0.2], [0.0, 0.0, 0.3]])
    w = rng.uniform(0.2, 2.0, size=500) if weighted else None
    q = rng.normal(size=(100, 3))
    ref = gaussian_kde(x.T, bw_method=method, weights=w).logpdf(q.T)
    kde = jaxkde.KDE(bandwidth=f"{method}_full", chunk_size=128, batch_size=64)
    got = kde.fit(x.astype(dtype), sample_weight=w).score_samples(q.astype(dtype))
    np.testing.assert_allclose(got, ref, rtol=RTOL[dtype])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("d", [1, 2, 5])
def test_matches_sklearn_kernel_density(dtype, weighted, d):
    rng = np.random.default_rng(1)
    x, q = rng.normal(size=(400, d)), rng.normal(size=(60, d)) * 1.5
    w = rng.uniform(0.0, 2.0, size=400) if weighted else None
    # The ball tree with atol = rtol = 0 is exact on small problems.
    ref = (
        KernelDensity(kernel="gaussian", bandwidth=0.6, algorithm="ball_tree")
        .fit(x, sample_weight=w)
        .score_samples(q)
    )
    got = (
        jaxkde.KDE(bandwidth=0.6)
        .fit(x.astype(dtype), sample_weight=w)
        .score_samples(q.astype(dtype))
    )
    # scikit-learn's tree sums are good to about 1e-9 relative even at atol = rtol = 0 (jaxkde
    # is within 1e-15 of float64 brute force here, see test_engine), so the bound is 1e-8.
    np.testing.assert_allclose(got, ref, rtol=max(RTOL[dtype], 1e-8))


def test_784_dimensional_densities_are_finite_where_the_seed_underflowed():
    rng = np.random.default_rng(2)
    train = mnist_like(rng, 1500) / 255.0
    test = mnist_like(rng, 200) / 255.0
    h = 0.05
    kde = jaxkde.KDE(bandwidth=h).fit(train)
    log_dens = kde.score_samples(test)
    want = brute_log_density(train, test, np.full(784, h * h))
    assert np.all(np.isfinite(log_dens))
    assert_float32_close(log_dens, want, half_min_sq_distance(train, test, h))
    # Where the density itself is a representable float64 ...
    representable = np.abs(want) < 700
    assert representable.sum() > 40
    # ... the seed, which exponentiated every kernel term before summing, got exactly 0: in
    # float64 every term underflows.
    d2 = ((test[representable, None, :] - train[None, :, :]) ** 2).sum(-1)
    assert np.all(np.exp(-0.5 * d2 / h**2).sum(axis=1) == 0.0)
    # predict exponentiates only at the boundary, in float64, and returns the density.
    dens = kde.predict(test)
    assert np.all(dens[representable] > 0)
    np.testing.assert_allclose(np.log(dens[representable]), log_dens[representable], rtol=1e-6)


def test_real_mnist_against_float64_brute_force(mnist_test_images):
    x = mnist_test_images[:2000]
    q = mnist_test_images[9000:9100]
    kde = jaxkde.KDE(bandwidth=0.2).fit(x / 255.0)
    got = kde.score_samples(q / 255.0)
    want = brute_log_density(x / 255.0, q / 255.0, np.full(784, 0.04))
    assert np.all(np.isfinite(got))
    assert_float32_close(got, want, half_min_sq_distance(x / 255.0, q / 255.0, 0.2))
    with jax.enable_x64(True):
        got64 = jaxkde.KDE(bandwidth=0.2).fit(x / 255.0).score_samples(q / 255.0)
    np.testing.assert_allclose(got64, want, rtol=1e-10)
    # Scott's diagonal rule on raw pixels: constant border pixels are floored, nothing is NaN.
    with pytest.warns(RuntimeWarning, match="of 784 features"):
        scott = jaxkde.KDE(bandwidth="scott").fit(x)
    assert np.all(np.isfinite(scott.score_samples(q)))


def test_uint8_input_is_accepted_and_equals_float():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(200, 16), dtype=np.uint8)
    a = jaxkde.KDE(bandwidth=30.0).fit(x).score_samples(x[:10])
    b = (
        jaxkde.KDE(bandwidth=30.0)
        .fit(x.astype(np.float32))
        .score_samples(x[:10].astype(np.float32))
    )
    np.testing.assert_array_equal(a, b)


def test_float64_under_x64_and_float32_by_default():
    x = np.random.default_rng(4).normal(size=(50, 2))
    assert jaxkde.KDE().fit(x).score_samples(x).dtype == np.float32
    with jax.enable_x64(True):
        assert jaxkde.KDE().fit(x).score_samples(x).dtype == np.float64
        assert jaxkde.KDE().fit(x.astype(np.float32)).score_samples(x).dtype == np.float32


def test_seed_spellings_are_equivalent():
    rng = np.random.default_rng(5)
    x, q = rng.normal(size=(300, 3)), rng.normal(size=(20, 3))
    a = jaxkde.KDE(kernel="multivariate_gaussian", bandwidth_estimator="silverman").fit(x)
    b = jaxkde.KDE(kernel="gaussian", bandwidth="silverman").fit(x)
    np.testing.assert_array_equal(a.score_samples(q), b.score_samples(q))
    c = jaxkde.KDE(kernel="univariate_gaussian", univariate_bandwidth=0.7).fit(x)
    e = jaxkde.KDE(kernel="univariate_gaussian", bandwidth=0.7).fit(x)
    np.testing.assert_array_equal(c.predict(q), e.predict(q))
    np.testing.assert_array_equal(c.predict_proba(q), c.predict(q))


def test_predict_score_and_batch_size():
    rng = np.random.default_rng(6)
    x, q = rng.normal(size=(300, 4)), rng.normal(size=(77, 4))
    kde = jaxkde.KDE().fit(x)
    full = kde.score_samples(q)
    np.testing.assert_allclose(kde.score_samples(q, batch_size=7), full, rtol=1e-6)
    np.testing.assert_allclose(
        kde.predict(q, batch_size=1), np.exp(full.astype(np.float64)), rtol=1e-5
    )
    assert kde.score(q) == pytest.approx(float(np.sum(full, dtype=np.float64)), rel=1e-6)
    assert kde.predict(q).dtype == np.float64  # exp at the boundary, in float64


def test_fitted_attributes():
    x = np.random.default_rng(7).normal(size=(120, 3))
    kde = jaxkde.KDE(bandwidth="scott_full").fit(x)
    assert kde.n_features_in_ == 3
    assert kde.n_samples_fit_ == 120
    np.testing.assert_allclose(kde.bandwidth_, gaussian_kde(x.T).covariance, rtol=1e-5)
    assert isinstance(kde.state_, jaxkde.KDEState)


def test_get_set_params_clone_and_repr():
    kde = jaxkde.KDE(bandwidth=0.3, batch_size=256)
    params = kde.get_params()
    assert params["bandwidth"] == 0.3 and params["batch_size"] == 256
    assert set(params) >= {"kernel", "bandwidth", "bandwidth_estimator", "univariate_bandwidth"}
    cloned = clone(kde)
    assert cloned.get_params() == params and cloned is not kde
    assert kde.set_params(bandwidth=0.5) is kde and kde.bandwidth == 0.5
    with pytest.raises(ValueError, match="Invalid parameter 'bandwith'"):
        kde.set_params(bandwith=1.0)
    assert repr(kde) == "KDE(bandwidth=0.5, batch_size=256)"


def test_pickle_round_trip():
    rng = np.random.default_rng(8)
    x, q = rng.normal(size=(100, 3)), rng.normal(size=(10, 3))
    kde = jaxkde.KDE(bandwidth="silverman_full").fit(x)
    restored = pickle.loads(pickle.dumps(kde))
    np.testing.assert_array_equal(restored.score_samples(q), kde.score_samples(q))
    np.testing.assert_array_equal(restored.sample(4, key=3), kde.sample(4, key=3))
    unfitted = pickle.loads(pickle.dumps(jaxkde.KDE(bandwidth=2.0)))
    assert unfitted.bandwidth == 2.0


@pytest.mark.parametrize("weighted", [False, True])
def test_fit_lays_out_the_state_on_first_use_only(dtype, weighted):
    """fit keeps the float64 statistics; the engine's layout is built once, by the first call
    that needs it (a binned grid never does), and a refit drops the old one."""
    rng = np.random.default_rng(12)
    x, q = rng.normal(size=(300, 2)) + 1e3, rng.normal(size=(7, 2)) + 1e3
    w = rng.uniform(0.5, 1.0, size=300) if weighted else None
    kde = jaxkde.KDE(bandwidth="scott_full").fit(x.astype(dtype), sample_weight=w)
    assert "state_" not in vars(kde)
    kde.score_grid(64, method="binned")
    assert "state_" not in vars(kde)
    got = kde.score_samples(q)
    state = vars(kde)["state_"]
    assert kde.state_ is state and "_lazy_state" not in vars(kde)
    np.testing.assert_array_equal(kde.bandwidth_, state.bandwidth_matrix())
    want = brute_log_density(x, q, kde.bandwidth_, w)
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype] * 10)
    kde.fit((x + 5.0).astype(dtype), sample_weight=w)
    assert "state_" not in vars(kde)
    np.testing.assert_allclose(kde.score_samples(q + 5.0), want, rtol=RTOL[dtype] * 10)


def test_a_lazy_fit_keeps_its_own_copy_of_the_data():
    """The layout is built after fit returns: changing X or the weights afterwards must not
    change the model (float64 X is not copied by the validation)."""
    rng = np.random.default_rng(14)
    x, q = rng.normal(size=(200, 2)), rng.normal(size=(9, 2))
    w = rng.uniform(0.5, 1.0, size=200)
    want = jaxkde.KDE(bandwidth=0.5).fit(x.copy(), sample_weight=w.copy()).score_samples(q)
    kde = jaxkde.KDE(bandwidth=0.5).fit(x, sample_weight=w)
    view = jaxkde.KDE(bandwidth=0.5).fit(x[:, :], sample_weight=w)  # a view of X
    x += 100.0
    w[:100] = 0.0
    np.testing.assert_array_equal(kde.score_samples(q), want)
    np.testing.assert_array_equal(view.score_samples(q), want)


def test_fit_still_refuses_data_whose_whitening_overflows():
    """The lazy layout's overflow check runs at fit, for diagonal and full bandwidths."""
    x = np.random.default_rng(13).normal(size=(50, 3))
    wide = np.concatenate([x, [[1e39, 0.0, 0.0]]])
    for bandwidth in (1.0, np.diag([1.0, 2.0, 3.0]), [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0],
                                                      [0.0, 0.0, 1.0]]):  # fmt: skip
        with pytest.raises(ValueError, match="overflows float32"):
            jaxkde.KDE(bandwidth=bandwidth).fit(wide)  # float64 data, float32 working dtype


def test_zero_weight_points_are_ignored():
    rng = np.random.default_rng(9)
    x, q = rng.normal(size=(60, 2)), rng.normal(size=(15, 2))
    w = np.r_[np.ones(40), np.zeros(20)]
    a = jaxkde.KDE(bandwidth=0.5).fit(x, sample_weight=w).score_samples(q)
    b = jaxkde.KDE(bandwidth=0.5).fit(x[:40]).score_samples(q)
    np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------- bad input
X_OK = np.random.default_rng(10).normal(size=(20, 3))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda: jaxkde.KDE().fit(np.where(np.arange(60).reshape(20, 3) == 40, np.nan, X_OK)),
            ValueError,
            "X contains NaN or infinity .*in row 13",
        ),
        (
            lambda: jaxkde.KDE().fit(np.where(np.arange(60).reshape(20, 3) % 7 == 0, np.inf, X_OK)),
            ValueError,
            r"row 0 \(and \d+ other rows\)",
        ),
        (lambda: jaxkde.KDE().fit(np.zeros((0, 3))), ValueError, "X is empty"),
        (lambda: jaxkde.KDE().fit(np.zeros((5, 0))), ValueError, r"0 feature\(s\)"),
        (lambda: jaxkde.KDE().fit(X_OK[:, 0]), ValueError, r"reshape\(-1, 1\)"),
        (lambda: jaxkde.KDE().fit([["a", "b"]]), TypeError, "real numbers"),
        (lambda: jaxkde.KDE().fit(None), TypeError, "got None"),
        (lambda: jaxkde.KDE(kernel="gausian").fit(X_OK), ValueError, "kernel must be one of"),
        (
            lambda: jaxkde.KDE(bandwidth="scott", bandwidth_estimator="scott").fit(X_OK),
            ValueError,
            "give one of",
        ),
        (
            lambda: jaxkde.KDE(bandwidth_estimator="cv2").fit(X_OK),
            ValueError,
            "bandwidth_estimator must be one of",
        ),
        (
            lambda: jaxkde.KDE(kernel="univariate_gaussian", bandwidth="scott").fit(X_OK),
            ValueError,
            "positive scalar bandwidth",
        ),
        (
            lambda: jaxkde.KDE(kernel="univariate_gaussian", univariate_bandwidth=-1).fit(X_OK),
            ValueError,
            "bandwidth must be positive",
        ),
        (
            lambda: jaxkde.KDE(univariate_bandwidth=1.0).fit(X_OK),
            ValueError,
            "univariate_gaussian' only",
        ),
        (lambda: jaxkde.KDE().fit(X_OK, sample_weight=-np.ones(20)), ValueError, "non-negative"),
        (lambda: jaxkde.KDE().fit(X_OK, sample_weight=np.zeros(20)), ValueError, "all zero"),
        (lambda: jaxkde.KDE().fit(X_OK, sample_weight=np.ones(19)), ValueError, r"shape \(20,\)"),
        (lambda: jaxkde.KDE(batch_size=0).fit(X_OK), ValueError, "batch_size"),
        (lambda: jaxkde.KDE(chunk_size=2.5).fit(X_OK), ValueError, "chunk_size"),
        (lambda: jaxkde.KDE(precision="tf32").fit(X_OK), ValueError, "precision"),
        (lambda: jaxkde.KDE().predict(X_OK), jaxkde.NotFittedError, "not fitted"),
        (lambda: jaxkde.KDE().sample(3), jaxkde.NotFittedError, "not fitted"),
        (
            lambda: jaxkde.KDE().fit(X_OK).score_samples(X_OK[:, :2]),
            ValueError,
            "X has 2 features, but KDE is expecting 3 features as input",
        ),
        (
            lambda: jaxkde.KDE().fit(X_OK).score_samples(X_OK, batch_size=-3),
            ValueError,
            "batch_size",
        ),
        (lambda: jaxkde.KDE().fit(X_OK).sample(0), ValueError, "n_samples"),
        (
            lambda: jaxkde.KDE().fit(X_OK).sample(2, scaling_factor=-1.0),
            ValueError,
            "scaling_factor",
        ),
        (
            lambda: jaxkde.KDE().fit(X_OK).random_sample(scaling_factor=float("nan")),
            ValueError,
            "scaling_factor",
        ),
        (lambda: jaxkde.KDE().fit(X_OK).sample(2, key="seed"), TypeError, "key must be"),
        (lambda: jaxkde.KDE().fit(X_OK).sample(2, key=-1), ValueError, "key must be"),
        # Parameters that used to pass unchecked:
        (lambda: jaxkde.KDE(bandwidth=True).fit(X_OK), TypeError, "bandwidth must be"),
        (lambda: jaxkde.KDE(bandwidth=1e200).fit(X_OK), ValueError, "bandwidth must lie in"),
        (
            lambda: jaxkde.KDE(bandwidth=1.0, zero_variance="bogus").fit(X_OK),
            ValueError,
            "zero_variance must be one of",
        ),
        (lambda: jaxkde.KDE(variance_floor=2.0).fit(X_OK), ValueError, "variance_floor"),
        (lambda: jaxkde.KDE(priors=[0.5, 0.5]).fit(X_OK), ValueError, "priors needs class labels"),
        (lambda: jaxkde.KDE().fit(X_OK).sample(10**12), ValueError, "n_samples=.* is too many"),
        (
            lambda: jaxkde.KDE().fit(X_OK).sample(2, scaling_factor=float("inf")),
            ValueError,
            "scaling_factor",
        ),
        (lambda: jaxkde.KDE().fit(X_OK.astype(complex)), ValueError, "Complex data"),
        (lambda: jaxkde.KDE().fit(X_OK, [0.0, np.nan] * 10), ValueError, "y contains NaN"),
        (lambda: jaxkde.KDE().fit(X_OK, np.linspace(0, 1, 20)), ValueError, "continuous"),
        (lambda: jaxkde.KDE().fit(X_OK[:1]), ValueError, "1 sample"),
    ],
)
def test_bad_input_is_rejected_with_a_named_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_failed_fit_leaves_a_fitted_estimator_untouched():
    kde = jaxkde.KDE(bandwidth=1.0).fit(X_OK)
    before = kde.score_samples(X_OK[:3])
    with pytest.raises(ValueError):
        kde.fit(np.full((4, 3), np.nan))
    np.testing.assert_array_equal(kde.score_samples(X_OK[:3]), before)


def test_not_fitted_error_is_a_value_and_attribute_error():
    assert issubclass(jaxkde.NotFittedError, ValueError)
    assert issubclass(jaxkde.NotFittedError, AttributeError)


def test_logsumexp_reference_sanity():
    """The brute-force oracle itself against a direct float64 sum in a benign case."""
    rng = np.random.default_rng(11)
    x, q = rng.normal(size=(30, 2)), rng.normal(size=(5, 2))
    d2 = ((q[:, None] - x[None]) ** 2).sum(-1)
    direct = np.log(np.mean(np.exp(-0.5 * d2), axis=1) / (2 * np.pi))
    np.testing.assert_allclose(brute_log_density(x, q, np.ones(2)), direct, rtol=1e-12)
    assert logsumexp([0.0, 0.0]) == pytest.approx(np.log(2))


def test_weights_of_any_scale_normalise_exactly():
    rng = np.random.default_rng(12)
    x, q = rng.normal(size=(60, 2)), rng.normal(size=(10, 2))
    base = jaxkde.KDE().fit(x).score_samples(q)
    for scale in (1e-50, 1e39, 1e-300, 1e300):
        got = jaxkde.KDE().fit(x, sample_weight=np.full(60, scale)).score_samples(q)
        np.testing.assert_allclose(got, base, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e19, 1e-20])
def test_data_scaled_far_from_one(scale):
    """Rules in float64 on the host: the density of scaled data is the scaled density."""
    rng = np.random.default_rng(13)
    x, q = rng.normal(size=(80, 3)), rng.normal(size=(10, 3))
    base = jaxkde.KDE().fit(x).score_samples(q)
    got = jaxkde.KDE().fit(x * scale).score_samples(q * scale)
    np.testing.assert_allclose(got, base - 3 * math.log(scale), rtol=1e-6)


def test_longdouble_is_computed_in_float64_under_x64():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(100, 2)).astype(np.longdouble)
    with jax.enable_x64(True):
        got = jaxkde.KDE(bandwidth=0.4).fit(x).score_samples(x[:10])
        assert got.dtype == np.float64
        want = brute_log_density(x.astype(np.float64), x[:10].astype(np.float64),
                                 np.full(2, 0.16))  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_samples_are_float64_and_keep_the_offset():
    """Draws are formed in float64 on the host: data at 1.7e9 keep their sub-second spread."""
    rng = np.random.default_rng(15)
    t = 1.7e9 + rng.uniform(0, 100, size=(500, 1))
    kde = jaxkde.KDE(bandwidth=0.01).fit(t)
    centres, samples = kde.random_sample(key=0)
    assert samples.dtype == np.float64
    assert np.any(np.isclose(t[:, 0], centres[0], rtol=0, atol=1e-6))  # a real data point
    assert 0 < abs(samples[0] - centres[0]) < 0.1  # noise of the bandwidth's size, not 128 s
    huge = kde.sample(5, key=1, scaling_factor=1e40)
    assert np.all(np.isfinite(huge))
