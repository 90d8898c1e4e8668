"""The scikit-learn style facade: ``KDE`` and ``KDEClassifier`` over pure functions."""

from jaxkde.estimator.evaluation import (
    bounded_grid,
)
from jaxkde.estimator.fitting import (
    fit_across_processes,
)
from jaxkde.estimator.kde import (
    KDE,
    KDEClassifier,
)

__all__ = [
    "KDE",
    "KDEClassifier",
    "bounded_grid",
    "fit_across_processes",
]
