"""The scikit-learn style facade: ``KDE``, ``KDEClassifier``, ``MixedKDE`` over pure functions."""

from jaxkde.estimator.evaluation import (
    bounded_grid,
)
from jaxkde.estimator.files import (
    ModelFileError,
)
from jaxkde.estimator.fitting import (
    fit_across_processes,
)
from jaxkde.estimator.kde import (
    KDE,
    KDEClassifier,
    load,
)
from jaxkde.estimator.mixed import MIXED_BANDWIDTHS, MixedKDE
from jaxkde.estimator.traced import (
    TRACED_RULES,
    BootstrapBand,
    bootstrap_band,
    bootstrap_log_density,
    fit_state,
    loo_log_density,
    traced_log_density,
)

__all__ = [
    "KDE",
    "MIXED_BANDWIDTHS",
    "TRACED_RULES",
    "BootstrapBand",
    "KDEClassifier",
    "MixedKDE",
    "ModelFileError",
    "bootstrap_band",
    "bootstrap_log_density",
    "bounded_grid",
    "fit_across_processes",
    "fit_state",
    "load",
    "loo_log_density",
    "traced_log_density",
]
