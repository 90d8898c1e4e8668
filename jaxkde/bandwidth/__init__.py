"""Choosing the bandwidth: rules of thumb, 1-D selectors, cross-validation objectives and
the optax fits that learn H, with one registry of bandwidth names.
"""

from jaxkde.bandwidth.choice import (
    CV_RULES,
    LSCV_RULES,
)
from jaxkde.bandwidth.learned import (
    BandwidthFit,
    fit_bandwidth,
    lscv_bandwidth,
)
from jaxkde.bandwidth.objectives import (
    OBJECTIVES,
    PARAMETERISATIONS,
    bandwidth_from_params,
    grid_log_likelihood,
    loo_log_likelihood,
    lscv_at_scales,
    lscv_objective,
    params_from_bandwidth,
)
from jaxkde.bandwidth.rules import (
    RULES,
    BandwidthChoice,
    BandwidthContext,
    CovarianceFactor,
    effective_sample_size,
    identity_bandwidth,
    moments_bandwidth,
    resolve_bandwidth,
    rule_bandwidth,
    scott_bandwidth,
    scott_factor,
    scott_full_bandwidth,
    silverman_bandwidth,
    silverman_factor,
    silverman_full_bandwidth,
    weighted_mean_and_covariance,
)
from jaxkde.bandwidth.scale_search import (
    LATTICE_STEP,
    MAX_REFINEMENTS,
    SCALE_LIMITS,
)
from jaxkde.bandwidth.selectors import (
    FULL_SELECTORS,
    PER_DIMENSION_SELECTORS,
    SELECTORS,
    SelectorError,
    isj_bandwidth,
    plugin_bandwidth,
    silverman_robust_bandwidth,
    sj_bandwidth,
)

__all__ = [
    "CV_RULES",
    "FULL_SELECTORS",
    "LATTICE_STEP",
    "LSCV_RULES",
    "MAX_REFINEMENTS",
    "OBJECTIVES",
    "PARAMETERISATIONS",
    "PER_DIMENSION_SELECTORS",
    "RULES",
    "SCALE_LIMITS",
    "SELECTORS",
    "BandwidthChoice",
    "BandwidthContext",
    "BandwidthFit",
    "CovarianceFactor",
    "SelectorError",
    "bandwidth_from_params",
    "effective_sample_size",
    "fit_bandwidth",
    "grid_log_likelihood",
    "identity_bandwidth",
    "isj_bandwidth",
    "loo_log_likelihood",
    "lscv_at_scales",
    "lscv_bandwidth",
    "lscv_objective",
    "moments_bandwidth",
    "params_from_bandwidth",
    "plugin_bandwidth",
    "resolve_bandwidth",
    "rule_bandwidth",
    "scott_bandwidth",
    "scott_factor",
    "scott_full_bandwidth",
    "silverman_bandwidth",
    "silverman_factor",
    "silverman_full_bandwidth",
    "silverman_robust_bandwidth",
    "sj_bandwidth",
    "weighted_mean_and_covariance",
]
