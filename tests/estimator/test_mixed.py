"""MixedKDE: statsmodels' KDEMultivariate (values, leave-one-out likelihood, bandwidths, R's
published bandwidths), mass over mixed supports, conditionals, and its errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference import tiered
from scipy import integrate

import jaxkde

sm = pytest.importorskip("statsmodels.api")
from statsmodels.nonparametric._kernel_base import gpke  # noqa: E402


def _data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=n) * 2 + 50  # an offset continuous column
    u = rng.integers(0, 3, n).astype(float) * 10  # unordered levels 0, 10, 20
    o = np.clip(np.round((c - 50) / 2 + rng.normal(size=n)), -2, 3)  # ordered, tied to c
    return np.column_stack([c, u, o])


def _queries(seed=1, m=40):
    rng = np.random.default_rng(seed)
    q = _data(seed, m)
    q[::5, 1] = 30.0  # an unordered level the data lack
    q[1::5, 2] = rng.choice([-5.0, 4.0, 7.0], size=len(q[1::5]))  # ordered beyond the range
    return q


def _statsmodels(data, var_type, bw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return sm.nonparametric.KDEMultivariate(data, var_type=var_type, bw=bw)


@pytest.mark.parametrize(
    ("cols", "var_type", "bw"),
    tiered([([0, 1, 2], "cuo", [0.8, 0.3, 0.4]), ([1, 2], "uo", [0.05, 0.01]), ([1], "u", [0.5]),
            ([2], "o", [0.2]), ([0, 2], "co", [1.5, 0.9])], 2),
)  # fmt: skip
def test_values_match_statsmodels(dtype, cols, var_type, bw):
    x, q = _data()[:, cols].astype(dtype), _queries()[:, cols]
    got = jaxkde.MixedKDE(var_type, bw).fit(x).score_samples(q.astype(dtype))
    ref = np.log(_statsmodels(x.astype(np.float64), var_type, bw).pdf(q))
    np.testing.assert_allclose(got, ref, rtol=2e-6 if dtype == "float32" else 1e-10)


def test_mass_is_one_over_the_mixed_support():
    x = _data(2, 60)
    kde = jaxkde.MixedKDE("cuo", [0.9, 0.4, 0.3]).fit(x)
    grid = np.linspace(35, 65, 3001)
    total = 0.0
    for u in (0.0, 10.0, 20.0):  # the unordered kernel sums to 1 over the data's levels
        for o in range(-40, 42):  # the ordered one over all integers
            q = np.column_stack([grid, np.full_like(grid, u), np.full_like(grid, float(o))])
            total += integrate.trapezoid(kde.predict(q), grid)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_conditional_matches_statsmodels():
    x, q = _data(), _queries()
    q[:, 1] = np.clip(q[:, 1], 0, 20)
    bw = [0.8, 0.3, 0.4]
    got = jaxkde.MixedKDE("cuo", bw).fit(x).conditional_score_samples(q, [1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = sm.nonparametric.KDEMultivariateConditional(
            endog=x[:, [0]], exog=x[:, [1, 2]], dep_type="c", indep_type="uo", bw=bw)  # fmt: skip
    np.testing.assert_allclose(got, np.log(ref.pdf(q[:, [0]], q[:, [1, 2]])), rtol=2e-6)


def _sm_loo_mean(data, var_type, bw):
    """statsmodels' leave-one-out log-likelihood per row (its sums omit 1 / (n - 1))."""
    n = len(data)
    ref = _statsmodels(data, var_type, [1.0] * len(var_type))
    with np.errstate(all="ignore"):
        return -ref.loo_likelihood(np.asarray(bw), np.log) / n - np.log(n - 1)


@pytest.mark.slow
def test_cv_ml_reaches_statsmodels_objective_and_r_bandwidths():
    # statsmodels' test_pdf_mixeddata_CV_ML: its data, and R np's npudensbw bandwidths.
    rs = np.random.RandomState(123456)
    o = rs.binomial(2, 0.7, size=(60, 1))
    rs.binomial(3, 0.7, size=(60, 1))
    c1 = rs.normal(size=(60, 1))
    c2 = rs.normal(10, 1, size=(60, 1))
    x = np.column_stack([c1, o, c2]).astype(float)
    kde = jaxkde.MixedKDE("coc").fit(x)
    np.testing.assert_allclose(kde.bandwidth_, [1.021563, 2.806409e-14, 0.5142077], atol=0.1,
                               rtol=0.1)  # fmt: skip
    # The objective is statsmodels' own, and ours is at least as high as statsmodels' optimum.
    assert kde.cv_score_ == pytest.approx(_sm_loo_mean(x, "coc", kde.bandwidth_),
                                                   abs=1e-5)  # fmt: skip
    theirs = _statsmodels(x, "coc", "cv_ml").bw
    assert kde.cv_score_ >= _sm_loo_mean(x, "coc", theirs) - 1e-5


@pytest.mark.slow
def test_cv_ml_on_three_kinds_and_weights():
    x = _data(3, 150)
    kde = jaxkde.MixedKDE("cuo").fit(x)
    theirs = _statsmodels(x, "cuo", "cv_ml").bw
    theirs[1] = min(theirs[1], 2 / 3)  # statsmodels leaves the valid range of lambda
    assert kde.cv_score_ == pytest.approx(_sm_loo_mean(x, "cuo", kde.bandwidth_),
                                                   abs=1e-5)  # fmt: skip
    assert kde.cv_score_ >= _sm_loo_mean(x, "cuo", theirs) - 1e-5
    # Weighted: the objective is sum_i w_i log f_{-i}(x_i), f_{-i} renormalised by 1 - w_i.
    w = np.r_[np.full(75, 3.0), np.ones(75)]
    weighted = jaxkde.MixedKDE("cuo").fit(x, sample_weight=w)
    wn = w / w.sum()
    bw = weighted.bandwidth_
    kern = np.stack([gpke(bw, x, x[i], "cuo", tosum=False) for i in range(150)])
    np.fill_diagonal(kern, 0.0)
    loo = np.log(kern @ wn / (1 - wn))
    assert weighted.cv_score_ == pytest.approx(np.sum(wn * loo), abs=1e-5)
    assert not np.allclose(weighted.bandwidth_, kde.bandwidth_, rtol=1e-3)


def test_normal_reference_is_statsmodels():
    x = _data(4, 100)
    kde = jaxkde.MixedKDE("cuo", "normal_reference").fit(x)
    ref = _statsmodels(x, "cuo", "normal_reference").bw
    assert kde.bandwidth_[0] == pytest.approx(ref[0], rel=1e-12)
    assert 0 < kde.bandwidth_[1] <= 2 / 3 and 0 < kde.bandwidth_[2] < 1


@pytest.mark.parametrize(
    ("var_type", "bandwidth", "x", "match"),
    [("cx", [1, 1], None, "var_type must be a string of 'c'"),
     ("cu", [1, 0.2], None, "var_type has 2 letters for 3 columns"),
     ("cuo", [1, 0.7, 0.3], None, r"column 1 \('u'\) must lie in \(0, 0.666667\]"),
     ("cuo", [1, 0.3, 1.0], None, r"column 2 \('o'\) must lie in \(0, 1\)"),
     ("cuo", [-1, 0.3, 0.3], None, "continuous column 0 must be positive"),
     ("cuo", [1, 0.3], None, r"one value per column, shape \(3,\)"),
     ("cuo", "cv_lsq", None, "bandwidth must be one of"),
     ("cuo", [1, 0.3, 0.3], "single", "column 1 \\('u'\\) has a single value"),
     ("cuo", [1, 0.3, 0.3], "fraction", "column 2 is ordered \\('o'\\) but not integer"),
     ("cuo", [1, 0.3, 0.3], "wide", "spans 2002 integer values")],
)  # fmt: skip
def test_errors_name_the_argument(var_type, bandwidth, x, match):
    data = _data(5, 30)
    if x == "single":
        data[:, 1] = 10.0
    elif x == "fraction":
        data[0, 2] = 0.5
    elif x == "wide":
        data[0, 2], data[1, 2] = -1000.0, 1001.0
    with pytest.raises(ValueError, match=match):
        jaxkde.MixedKDE(var_type, bandwidth).fit(data)


def test_queries_are_checked_and_conditionals_refuse_bad_columns():
    kde = jaxkde.MixedKDE("cuo", [1.0, 0.3, 0.3]).fit(_data(6, 30))
    with pytest.raises(ValueError, match="ordered \\('o'\\): its values must be integers"):
        kde.score_samples(np.array([[50.0, 0.0, 0.5]]))
    with pytest.raises(ValueError, match="given must be distinct column indices"):
        kde.conditional_score_samples(_data(6, 3), [0, 1, 2])
    with pytest.raises(jaxkde.NotFittedError if hasattr(jaxkde, "NotFittedError") else Exception):
        jaxkde.MixedKDE("c").score_samples(np.zeros((1, 1)))


@pytest.mark.slow
def test_efficient_with_the_whole_data_is_cv_ml():
    x = _data(7, 80)
    full = jaxkde.MixedKDE("cuo").fit(x)
    one = jaxkde.MixedKDE("cuo", efficient=True, n_sub=80, n_res=1).fit(x)
    np.testing.assert_allclose(one.bandwidth_, full.bandwidth_, rtol=2e-3)


@pytest.mark.slow
def test_efficient_bandwidths_near_statsmodels_and_cv_ml_on_large_n():
    rng = np.random.default_rng(8)
    n = 2000
    c1, c2 = rng.normal(size=n), rng.normal(size=n)
    x = np.column_stack([c1, c1 + 0.5 * c2])
    full = jaxkde.MixedKDE("cc").fit(x).bandwidth_
    ours = jaxkde.MixedKDE("cc", efficient=True, n_sub=100, n_res=25).fit(x).bandwidth_
    settings = sm.nonparametric.EstimatorSettings(efficient=True, n_sub=100, n_res=25,
                                                  randomize=True)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        theirs = np.median([sm.nonparametric.KDEMultivariate(
            x, "cc", bw="cv_ml", defaults=settings, rng=np.random.default_rng(seed)).bw
            for seed in range(5)], axis=0)  # fmt: skip
    # Subsampling is noisy: statsmodels' own efficient bandwidths range over 0.15-0.31 for
    # the first column between seeds; compare with their median.
    np.testing.assert_allclose(ours, full, rtol=0.3)
    np.testing.assert_allclose(ours, theirs, rtol=0.3)


def test_efficient_arguments_are_checked():
    with pytest.raises(ValueError, match=r"n_sub must lie in \[2, 30\]"):
        jaxkde.MixedKDE("cuo", efficient=True, n_sub=31).fit(_data(9, 30))
    with pytest.raises(TypeError, match="efficient must be True or False"):
        jaxkde.MixedKDE("cuo", efficient="yes").fit(_data(9, 30))


def _sm_imse(data, var_type, bw):
    ref = _statsmodels(data, var_type, [1.0] * len(var_type))
    return ref.imse(np.asarray(bw, np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("var_type", ["cuo", "co"])
def test_cv_ls_reaches_statsmodels_imse(var_type):
    cols = [0, 1, 2] if var_type == "cuo" else [0, 2]
    x = _data(10, 120)[:, cols]
    kde = jaxkde.MixedKDE(var_type, "cv_ls").fit(x)
    mine = _sm_imse(x, var_type, kde.bandwidth_)
    assert kde.cv_score_ == pytest.approx(mine, rel=1e-4, abs=1e-7)
    theirs = _statsmodels(x, var_type, "cv_ls").bw
    theirs[1:] = np.minimum(theirs[1:], jaxkde.variants.mixed.discrete_bounds(kde.layout_))
    assert kde.cv_score_ <= _sm_imse(x, var_type, theirs) + 1e-6
