"""PointBandwidths: one bandwidth per row, as KDEpy's bw array; against KDEpy and float64."""

from __future__ import annotations

import numpy as np
import pytest
from KDEpy import NaiveKDE
from reference import tiered
from scipy import stats
from scipy.special import logsumexp

import jaxkde

VARIANCE = {"gaussian": ("gaussian", 1.0), "epanechnikov": ("epa", 0.2),
            "tricube": ("tricube", 35 / 243), "biweight": ("biweight", 1 / 7)}  # fmt: skip


@pytest.mark.parametrize(
    ("kernel", "d"),
    tiered([("tricube", 2), ("gaussian", 1), ("gaussian", 2), ("epanechnikov", 1),
            ("epanechnikov", 2), ("tricube", 1), ("biweight", 1), ("biweight", 2)], 2),
)  # fmt: skip
def test_matches_kdepy_bw_array(dtype, kernel, d):
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(150, d)), rng.normal(size=(40, d)) * 1.2
    bw = rng.uniform(0.2, 1.2, size=150)
    name, var = VARIANCE[kernel]
    ref = NaiveKDE(kernel=name, bw=bw).fit(x).evaluate(q)
    kde = jaxkde.KDE(kernel, bandwidth=jaxkde.PointBandwidths(bw / np.sqrt(var)))
    got = kde.fit(x.astype(dtype)).predict(q.astype(dtype))
    inside = ref > 1e-10
    assert inside.sum() > 20 and np.all(got[~inside] < 1e-9)
    rtol = 2e-4 if (dtype == "float32" and kernel != "gaussian") else max(
        2e-6 if dtype == "float32" else 1e-9, 1e-8)  # fmt: skip
    np.testing.assert_allclose(got[inside], ref[inside], rtol=rtol)


def test_scales_multiply_a_rule_with_labels_and_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 2)) @ np.array([[1.0, 0.4], [0.0, 0.7]])
    y = np.repeat([0, 1], 60)
    w = rng.uniform(0.5, 2.0, size=120)
    s = rng.uniform(0.5, 2.0, size=120)
    kde = jaxkde.KDE(bandwidth=jaxkde.PointBandwidths(s, "scott_full")).fit(x, y, w)
    q = rng.normal(size=(15, 2))
    got = kde.class_log_density(q)
    for c in (0, 1):
        rows = y == c
        h = kde.bandwidth_[c]
        logk = np.stack([stats.multivariate_normal(xi, si**2 * h).logpdf(q)
                         for xi, si in zip(x[rows], s[rows], strict=True)], 1)  # fmt: skip
        ref = logsumexp(logk + np.log(w[rows] / w[rows].sum()), axis=1)
        np.testing.assert_allclose(got[:, c], ref, rtol=2e-6)
    np.testing.assert_allclose(kde.adaptive_factors_, s, rtol=1e-12)


def test_samples_follow_each_rows_own_bandwidth():
    x = np.array([[0.0], [100.0]])
    kde = jaxkde.KDE(bandwidth=jaxkde.PointBandwidths([0.1, 5.0])).fit(x)
    draws = kde.sample(40_000, key=np.random.default_rng(3))[:, 0]
    near, far = draws[draws < 50], draws[draws >= 50]
    assert abs(len(near) / len(draws) - 0.5) < 0.02
    assert np.std(near) == pytest.approx(0.1, rel=0.03)
    assert np.std(far) == pytest.approx(5.0, rel=0.03)


def test_round_trip_in_a_model_file(tmp_path):
    x = np.random.default_rng(4).normal(size=(30, 2))
    kde = jaxkde.KDE(bandwidth=jaxkde.PointBandwidths(np.linspace(0.5, 1.5, 30), 0.7)).fit(x)
    kde.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(jaxkde.load(tmp_path / "m.npz").score_samples(x),
                                  kde.score_samples(x))  # fmt: skip


@pytest.mark.parametrize(
    ("scales", "kwargs", "error", "match"),
    [([1.0, 2.0], {}, ValueError, r"one entry per row of X, shape \(20,\)"),
     (np.r_[np.ones(19), 0.0], {}, ValueError, "entry 19 is 0.0"),
     (np.r_[np.ones(19), np.nan], {}, ValueError, "positive and finite"),
     (np.ones(20), {"adaptive": True}, ValueError, "cannot be combined with PointBandwidths")],
)  # fmt: skip
def test_bad_scales_are_refused(scales, kwargs, error, match):
    x = np.random.default_rng(5).normal(size=(20, 2))
    with pytest.raises(error, match=match):
        jaxkde.KDE(bandwidth=jaxkde.PointBandwidths(scales), **kwargs).fit(x)
