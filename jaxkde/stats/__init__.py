"""Questions to a fitted state: grids, probabilities and quantiles, modes and score
functions, marginals and conditionals, closed-form integrals, information measures.
"""

from jaxkde.stats.geometry import (
    Modes,
    mean_shift,
    score_function,
)
from jaxkde.stats.grid import (
    AUTO_EXACT_WORK,
    AUTO_REL_TOL,
    BINNED_MAX_DIM,
    GRID_METHODS,
    MAX_GRID_CELLS,
    MAX_SPACING,
    GridDensity,
    binned_log_density,
    check_axes,
    default_axes,
    grid_log_density,
)
from jaxkde.stats.information import (
    ESTIMATORS,
    entropy,
    kl_divergence,
    mutual_information,
    row_log_density,
)
from jaxkde.stats.integrals import log_integrate_gaussian, log_integrate_kde
from jaxkde.stats.marginals import (
    MixtureParts,
    condition,
    condition_linear,
    marginalize,
    mixture_parts,
)
from jaxkde.stats.probability import (
    DensityLevels,
    check_cdf_coverage,
    density_levels,
    log_box_probability,
    log_cdf,
    quantile,
)

__all__ = [
    "AUTO_EXACT_WORK",
    "AUTO_REL_TOL",
    "BINNED_MAX_DIM",
    "ESTIMATORS",
    "GRID_METHODS",
    "MAX_GRID_CELLS",
    "MAX_SPACING",
    "DensityLevels",
    "GridDensity",
    "MixtureParts",
    "Modes",
    "binned_log_density",
    "check_axes",
    "check_cdf_coverage",
    "condition",
    "condition_linear",
    "default_axes",
    "density_levels",
    "entropy",
    "grid_log_density",
    "kl_divergence",
    "log_box_probability",
    "log_cdf",
    "log_integrate_gaussian",
    "log_integrate_kde",
    "marginalize",
    "mean_shift",
    "mixture_parts",
    "mutual_information",
    "quantile",
    "row_log_density",
    "score_function",
]
