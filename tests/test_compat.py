"""0.1.0 keeps working after the layout pass: its public names, its module paths, its pickles."""

from __future__ import annotations

import importlib
import pathlib
import pickle

import numpy as np
import pytest

import jaxkde
from jaxkde import _compat

DATA = pathlib.Path(__file__).resolve().parent / "data" / "estimators-0.1.0.pkl"


@pytest.fixture(scope="module")
def release():
    """Estimators pickled by jaxkde 0.1.0 (``tests/data/make_pickles.py``), with their scores."""
    with open(DATA, "rb") as f:
        return pickle.load(f)


def test_public_names_of_the_release_remain(release):
    assert set(release["__all__"]) <= set(jaxkde.__all__)
    assert jaxkde.__version__ == release["__version__"]
    for name in jaxkde.__all__:
        assert getattr(jaxkde, name) is not None


@pytest.mark.parametrize("kind", ["plain", "labelled", "bounded", "adaptive", "learned"])
def test_pickled_estimators_load_and_score_the_same(release, kind):
    entry = release[kind]
    model = entry["model"]
    assert type(model) is jaxkde.KDE
    np.testing.assert_array_equal(model.score_samples(entry["query"]), entry["score"])
    assert model.sample(3, key=0).shape == (3, entry["query"].shape[1])


def test_pickled_classifier_loads_and_predicts_the_same(release):
    entry = release["classifier"]
    got = entry["model"].predict_log_proba(entry["query"])
    np.testing.assert_array_equal(got, entry["score"])


@pytest.mark.parametrize("old", sorted(_compat.OLD_PATHS))
def test_old_module_paths_are_the_new_modules(old):
    module = importlib.import_module(f"jaxkde.{old}")
    assert module is importlib.import_module(_compat.OLD_PATHS[old])
    assert getattr(jaxkde, old) is module


def test_old_imports_taught_by_the_release_still_work(monkeypatch):
    from jaxkde.datasets import load_mnist  # the 0.1.0 README's spelling
    from jaxkde.kde import KDE
    from jaxkde.selectors import isj_bandwidth

    assert KDE is jaxkde.KDE and isj_bandwidth is jaxkde.isj_bandwidth
    monkeypatch.setattr("jaxkde.cli.mnist_available", lambda *a, **k: False)
    assert jaxkde.apps.cli.mnist_available("train") is False
    assert load_mnist is jaxkde.apps.datasets.load_mnist
