"""The registry of bandwidth names and the bandwidth a fit asks for (``bandwidth.choice``)."""

from __future__ import annotations

import numpy as np
import pytest

import jaxkde
from jaxkde.bandwidth import choice
from jaxkde.core.kernels import get_kernel
from jaxkde.estimator.fitting import FitParams

GAUSS = get_kernel("gaussian")


def test_one_registry_of_names():
    names = choice.BANDWIDTH_NAMES
    assert len(names) == len(set(names))
    assert set(names) == {*jaxkde.RULES, *jaxkde.SELECTORS, *jaxkde.CV_RULES, *jaxkde.LSCV_RULES}
    assert jaxkde.CV_RULES is choice.CV_RULES and jaxkde.LSCV_RULES is choice.LSCV_RULES
    assert {k for k, (_, o) in choice.LEARNED.items() if o == "lscv"} == set(choice.LSCV_RULES)


@pytest.mark.parametrize("name", ["scott", "silverman_robust", "isj", "cv"])
def test_every_name_is_accepted_by_both_spellings(name):
    x = np.random.default_rng(0).normal(size=(200, 1))
    a = jaxkde.KDE(bandwidth=name).fit(x).bandwidth_
    b = jaxkde.KDE(bandwidth_estimator=name).fit(x).bandwidth_
    np.testing.assert_array_equal(a, b)


def test_bandwidth_spec_defaults_and_errors():
    assert choice.bandwidth_spec(FitParams(), GAUSS) == "scott"
    uni = get_kernel("univariate_gaussian")
    assert choice.bandwidth_spec(FitParams(kernel="univariate_gaussian"), uni) == 1.0
    assert choice.bandwidth_spec(FitParams(bandwidth={"a": 0.3}), GAUSS, label="a") == 0.3
    with pytest.raises(ValueError, match="give one of bandwidth, bandwidth_estimator"):
        choice.bandwidth_spec(FitParams(bandwidth=1.0, bandwidth_estimator="scott"), GAUSS)
    with pytest.raises(ValueError, match="fit with labels y"):
        choice.bandwidth_spec(FitParams(bandwidth={"a": 0.3}), GAUSS)
    with pytest.raises(ValueError, match="no entry for class 'b'"):
        choice.bandwidth_spec(FitParams(bandwidth={"a": 0.3}), GAUSS, label="b")
    with pytest.raises(ValueError, match="bandwidth_estimator must be one of"):
        choice.bandwidth_spec(FitParams(bandwidth_estimator="magic"), GAUSS)
    with pytest.raises(ValueError, match="univariate_bandwidth applies to"):
        choice.bandwidth_spec(FitParams(univariate_bandwidth=0.2), GAUSS)


def test_rule_or_explicit_refuses_what_needs_every_row():
    where = "X streamed from a file (a numpy.memmap)"
    assert choice.rule_or_explicit(FitParams(), GAUSS, None, where) == "scott"
    with pytest.raises(ValueError, match=r"bandwidth='cv'.*not supported yet for X streamed"):
        choice.rule_or_explicit(FitParams(bandwidth="cv"), GAUSS, None, where)
    with pytest.raises(ValueError, match="adaptive=True is not supported yet"):
        choice.rule_or_explicit(FitParams(adaptive=True), GAUSS, None, "X spread over processes")


def test_learn_raises_naming_where_when_no_bandwidth_is_found():
    x = np.zeros((50, 1))
    x[25:] = 1.0  # two tied values: the likelihood grows without bound as h shrinks
    with pytest.raises(ValueError, match=r"^bandwidth='cv': "):
        choice.learn("bandwidth='cv'", x, None, kind="scalar")
