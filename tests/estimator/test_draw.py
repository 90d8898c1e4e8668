"""Sampling as pure functions (``jaxkde.estimator.draw``)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxkde
from jaxkde.estimator import draw
from jaxkde.variants.bounds import check_bounds

rng = np.random.default_rng(2)


def test_class_index_checks_the_label():
    classes, prior = np.array(["a", "b"]), np.array([1.0, 0.0])
    assert draw.class_index(classes, prior, None) is None
    assert draw.class_index(classes, prior, "a") == 0
    with pytest.raises(ValueError, match="label 'c' is not a class"):
        draw.class_index(classes, prior, "c")
    with pytest.raises(ValueError, match="has prior 0"):
        draw.class_index(classes, prior, "b")
    with pytest.raises(ValueError, match="label needs a KDE fitted with labels"):
        draw.class_index(None, None, "a")


def test_draw_folds_into_the_bounds_or_maps_back_from_z():
    x = rng.exponential(size=(400, 1))
    kde = jaxkde.KDE(bounds=[(0.0, None)]).fit(x)
    key = jax.random.key(0)
    _, centres, samples = draw.draw(kde.state_, kde._whitening, key, 500, 4.0,
                                    bounds=kde._bounds, images=kde._images)  # fmt: skip
    assert samples.min() >= 0 and centres.shape == (500, 1)
    raw = draw.draw(kde.state_, kde._whitening, key, 500, 4.0)[2]
    assert raw.min() < 0  # without the bounds, the kernel's mass below 0
    np.testing.assert_allclose(samples, np.abs(raw))  # folding at 0 is the reflection
    bounds = check_bounds([(0.0, 1.0)], 1)
    kde = jaxkde.KDE(bounds=[(0.0, 1.0)], boundary="transform").fit(rng.beta(2, 5, (400, 1)))
    _, _, samples = draw.draw(kde.state_, kde._whitening, key, 500, 1.0, bounds=bounds)
    assert 0 < samples.min() and samples.max() < 1


def test_draw_by_class_returns_codes():
    x = rng.normal(size=(300, 2))
    kde = jaxkde.KDE().fit(x, (x[:, 0] > 0).astype(int))
    codes, centres, samples = draw.draw(kde.state_, kde._whitening, jax.random.key(1), 50, 1.0,
                                        index=1)  # fmt: skip
    assert codes.tolist() == [1] * 50 and samples.shape == (50, 2)
    assert np.all(centres[:, 0] > 0)  # centres of class 1 only
