"""The fit paths as pure functions (``jaxkde.estimator.fitting``), without the estimator."""

from __future__ import annotations

import numpy as np
import pytest
from reference import brute_log_density

import jaxkde
from jaxkde.core.state import ClassConditionalState, KDEState
from jaxkde.estimator import fitting

rng = np.random.default_rng(0)
X = rng.normal(size=(300, 2))


DEFAULT = fitting.FitParams()


def fit(params=DEFAULT, X=X, y=None, w=None, dtype=None):
    kernel, chunk = fitting.check_params(params, y)
    return fitting.fit_in_memory(params, X, y, w, kernel, chunk, dtype)


def test_params_mirror_the_estimator():
    assert fitting.FitParams._fields == tuple(jaxkde.KDE().get_params())
    assert fitting.FitParams() == fitting.FitParams(**jaxkde.KDE().get_params())


def test_fit_in_memory_is_what_the_estimator_stores():
    fitted = fit(fitting.FitParams(bandwidth=0.4))
    kde = jaxkde.KDE(bandwidth=0.4).fit(X)
    attributes = fitted.attributes()
    assert attributes["n_samples_fit_"] == 300 and attributes["n_features_in_"] == 2
    np.testing.assert_array_equal(attributes["bandwidth_"], kde.bandwidth_)
    np.testing.assert_allclose(attributes["bandwidth_"], 0.16 * np.eye(2), rtol=1e-6)
    state = fitted.state.state  # a lazy layout, built on first use
    assert isinstance(state, KDEState)
    got = np.asarray(jaxkde.log_density(state, X[:7]), np.float64)
    np.testing.assert_allclose(got, brute_log_density(X, X[:7], 0.16 * np.eye(2)), rtol=1e-5)
    assert "classes_" not in attributes and attributes["_images"] is None


def test_labelled_fit_has_one_state_per_class_and_the_class_attributes():
    y = np.where(X[:, 0] > 0, "b", "a")
    fitted = fit(y=y)
    assert isinstance(fitted.state, ClassConditionalState)
    assert fitted.classes.tolist() == ["a", "b"]
    np.testing.assert_allclose(fitted.class_prior, [np.mean(y == "a"), np.mean(y == "b")])
    assert fitted.bandwidth.shape == (2, 2, 2)
    assert set(fitted.attributes()) >= {"classes_", "class_prior_", "class_count_"}


def test_fit_mixture_keeps_the_parents_dtype_and_float64_centres():
    far = X + 1e6  # centred in float64 first: a cast first would lose the spread
    parent = jaxkde.KDE(bandwidth="scott_full").fit(far)
    parts = jaxkde.stats.marginals.mixture_parts(parent.state_, "marginal")
    parts = jaxkde.stats.marginals.marginalize(parts, [1])
    fitted = fitting.fit_mixture(parent._params(), parts, np.dtype("float32"))
    assert fitted.state.dtype == np.float32 and fitted.shape == (300, 1)
    got = np.asarray(jaxkde.log_density(fitted.state.state, far[:5, 1:]), np.float64)
    want = brute_log_density(far[:, 1:], far[:5, 1:], parent.bandwidth_[1:, 1:])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_check_params_names_the_bad_parameter():
    with pytest.raises(ValueError, match="chunk_size"):
        fitting.check_params(fitting.FitParams(chunk_size=0), None)
    with pytest.raises(ValueError, match="precision"):
        fitting.check_params(fitting.FitParams(precision="tf32"), None)
    with pytest.raises(TypeError, match="mesh"):
        fitting.check_params(fitting.FitParams(mesh="cpu"), None)
    with pytest.raises(ValueError, match="priors needs class labels"):
        fitting.check_params(fitting.FitParams(priors=[0.5, 0.5]), None)


def test_class_priors():
    classes, totals = np.array([0, 1, 2]), np.array([1.0, 3.0, 0.0])
    np.testing.assert_allclose(fitting.class_priors(None, classes, totals), [0.25, 0.75, 0])
    np.testing.assert_allclose(
        fitting.class_priors({0: 0.2, 1: 0.8, 2: 0.0}, classes, totals), [0.2, 0.8, 0]
    )
    with pytest.raises(ValueError, match="zero total sample_weight"):
        fitting.class_priors([0.2, 0.4, 0.4], classes, totals)
    with pytest.raises(ValueError, match="sum to 1"):
        fitting.class_priors([0.2, 0.2, 0.0], classes, totals)
    with pytest.raises(ValueError, match="no entry for classes"):
        fitting.class_priors({0: 1.0}, classes, totals)


def test_encode_labels_sorts_or_keeps_first_seen_order():
    classes, codes = fitting.encode_labels(["b", "a", "b"], 3)
    assert classes.tolist() == ["a", "b"] and codes.tolist() == [1, 0, 1]
    classes, codes = fitting.encode_labels(np.array(["x", 1, "x"], dtype=object), 3)
    assert classes.tolist() == ["x", 1] and codes.tolist() == [0, 1, 0]


def test_weighted_range_ignores_rows_of_zero_weight():
    data = np.array([[0.0, 5.0], [1.0, -1.0], [9.0, 9.0]])
    low, high = fitting.weighted_range(data, np.array([1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(low, [0.0, -1.0])
    np.testing.assert_array_equal(high, [1.0, 5.0])
