"""Bounded, adaptive, class-conditional and mixed-data KDEs over the core state."""

from jaxkde.variants.adaptive import (
    MAX_LOG_FACTOR,
    abramson_log_factors,
    check_alpha,
    pilot_log_density,
)
from jaxkde.variants.bounds import (
    BOUNDARY_METHODS,
    Bounds,
    check_bounds,
    check_inside,
    fold,
    from_transformed,
    inside,
    log_jacobian,
    reflection_images,
    to_transformed,
)
from jaxkde.variants.classes import (
    class_log_density,
    class_log_posterior,
    mixture_log_density,
    sample_classes,
    sample_classes_host,
)
from jaxkde.variants.mixed import (
    MAX_ORDERED_SPAN,
    VAR_TYPES,
    MixedLayout,
    mixed_layout,
)

__all__ = [
    "BOUNDARY_METHODS",
    "MAX_LOG_FACTOR",
    "MAX_ORDERED_SPAN",
    "VAR_TYPES",
    "Bounds",
    "MixedLayout",
    "abramson_log_factors",
    "check_alpha",
    "check_bounds",
    "check_inside",
    "class_log_density",
    "class_log_posterior",
    "fold",
    "from_transformed",
    "inside",
    "log_jacobian",
    "mixed_layout",
    "mixture_log_density",
    "pilot_log_density",
    "reflection_images",
    "sample_classes",
    "sample_classes_host",
    "to_transformed",
]
