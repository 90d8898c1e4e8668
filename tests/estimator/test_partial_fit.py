"""``partial_fit``: appending rows equals the fit on all of them."""

from __future__ import annotations

import numpy as np
import pytest

from jaxkde import KDE, KDEClassifier

CASES = {
    "plain": ({}, False, False),
    "full-weighted": ({"bandwidth": "scott_full"}, False, True),
    "labelled": ({}, True, False),
    "labelled-weighted": ({"bandwidth": "silverman"}, True, True),
    "adaptive": ({"adaptive": True, "kernel": "epanechnikov"}, False, False),
    "reflected": ({"bounds": [(0.0, None)] * 3}, False, False),
}


def _data(dtype="float32"):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 3)) + 2.0).astype(dtype)
    return x, (x[:, 0] > 2).astype(int), rng.uniform(0.1, 2.0, 300), x[:25] + 0.1


@pytest.mark.parametrize("built", [False, True], ids=["lazy", "built"])
@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=() if c in ("plain", "labelled-weighted") else pytest.mark.slow)
     for c in CASES],
)  # fmt: skip
def test_appending_rows_equals_fitting_all_of_them(dtype, case, built):
    params, labelled, weighted = CASES[case]
    x, y, w, q = _data(dtype)
    if "bounds" in params:
        x, q = np.abs(x), np.abs(q)
    parts = [slice(0, 100), slice(100, 250), slice(250, 300)]
    kde = KDE(**params)
    for part in parts:
        kde.partial_fit(x[part], y[part] if labelled else None, w[part] if weighted else None)
        if built:
            kde.score_samples(q[:2])  # the layout built before the next append
    whole = KDE(**params).fit(x, y if labelled else None, w if weighted else None)
    assert kde.n_samples_fit_ == 300
    states = kde.state_.states if labelled else (kde.state_,)
    assert {s.dtype for s in states} == {np.dtype(dtype)}
    np.testing.assert_allclose(kde.bandwidth_, whole.bandwidth_, rtol=1e-12 if not weighted
                               or dtype == "float64" else 1e-6)  # fmt: skip
    got, want = kde.score_samples(q), whole.score_samples(q)
    if case == "plain" and not built:  # the rows themselves kept (lazy layout): same numbers
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == "float32" else 1e-12)


def test_classifier_partial_fit():
    x, y, _, q = _data()
    clf = KDEClassifier().partial_fit(x[:150], y[:150]).partial_fit(x[150:], y[150:])
    whole = KDEClassifier().fit(x, y)
    np.testing.assert_allclose(clf.predict_log_proba(q), whole.predict_log_proba(q), rtol=1e-5)
    with pytest.raises(ValueError, match=r"labels \[2\] that are not in classes \[0, 1\]"):
        clf.partial_fit(x[:3], [0, 2, 1], classes=[0, 1])


def test_partial_fit_refuses_what_it_cannot_append():
    x, y, _, _ = _data()
    with pytest.raises(ValueError, match="fitted without them"):
        KDE().fit(x).partial_fit(x, y)
    with pytest.raises(ValueError, match="fitted with them"):
        KDE().fit(x, y).partial_fit(x)
    with pytest.raises(ValueError, match="derived"):
        KDE().fit(x).marginal([0, 1]).partial_fit(x[:, :2])
    with pytest.raises(ValueError, match="boundary='transform'"):
        KDE(bounds=[(0.0, None)] * 3, boundary="transform").fit(np.abs(x) + 0.1).partial_fit(
            np.abs(x) + 0.1
        )
    with pytest.raises(ValueError, match="expecting 3 features"):
        KDE().fit(x).partial_fit(x[:, :2])
