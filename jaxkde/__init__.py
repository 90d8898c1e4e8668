"""jaxkde: exact, log-space kernel density estimation in JAX, at matrix-product speed.

The engine is a set of pure, jitted functions of a fitted :class:`KDEState`
(:func:`build_state`, :func:`log_density`, :func:`sample`); :class:`KDE` is a thin
scikit-learn style wrapper around them.
"""

from . import datasets
from ._validation import NotFittedError
from .bandwidths import (
    RULES,
    BandwidthChoice,
    effective_sample_size,
    identity_bandwidth,
    resolve_bandwidth,
    scott_bandwidth,
    scott_factor,
    scott_full_bandwidth,
    silverman_bandwidth,
    silverman_factor,
    silverman_full_bandwidth,
    weighted_mean_and_covariance,
)
from .conditional import (
    ClassConditionalState,
    class_log_density,
    class_log_posterior,
    mixture_log_density,
    sample_classes,
    sample_classes_host,
)
from .engine import (
    BLOCK_SIZES,
    PRECISIONS,
    RTOL,
    combine_log_sums,
    default_block_sizes,
    direct_sq_distances,
    gemm_error_bound,
    log_density,
    log_density_whitened,
    pairwise_sq_distances,
)
from .kde import KDE, KDEClassifier
from .kernels import (
    KERNEL_NAMES,
    CosineKernel,
    EpanechnikovKernel,
    ExponentialKernel,
    GaussianKernel,
    Kernel,
    LinearKernel,
    TophatKernel,
    UnivariateGaussianKernel,
    get_kernel,
)
from .pca import PCAState, pca_fit, pca_inverse_transform, pca_transform
from .sampling import as_key, sample, sample_around, sample_host, sample_with_centres
from .selection import (
    CV_RULES,
    BandwidthFit,
    ParzenResult,
    fit_bandwidth,
    grid_log_likelihood,
    loo_log_likelihood,
    parzen_log_likelihood,
)
from .sharding import (
    reduce_shards,
    shard_state,
    sharded_log_density,
    sharded_log_density_whitened,
)
from .state import (
    HostWhitening,
    KDEState,
    build_state,
    host_whitening,
    unwhiten,
    unwhiten_host,
    whiten,
    whiten_queries,
)

__version__ = "0.1.0"

__all__ = [
    "BLOCK_SIZES",
    "CV_RULES",
    "KDE",
    "KERNEL_NAMES",
    "PRECISIONS",
    "RTOL",
    "RULES",
    "BandwidthChoice",
    "BandwidthFit",
    "ClassConditionalState",
    "CosineKernel",
    "EpanechnikovKernel",
    "ExponentialKernel",
    "GaussianKernel",
    "HostWhitening",
    "KDEClassifier",
    "KDEState",
    "Kernel",
    "LinearKernel",
    "NotFittedError",
    "PCAState",
    "ParzenResult",
    "TophatKernel",
    "UnivariateGaussianKernel",
    "as_key",
    "build_state",
    "class_log_density",
    "class_log_posterior",
    "combine_log_sums",
    "datasets",
    "default_block_sizes",
    "direct_sq_distances",
    "effective_sample_size",
    "fit_bandwidth",
    "gemm_error_bound",
    "get_kernel",
    "grid_log_likelihood",
    "host_whitening",
    "identity_bandwidth",
    "log_density",
    "log_density_whitened",
    "loo_log_likelihood",
    "mixture_log_density",
    "pairwise_sq_distances",
    "parzen_log_likelihood",
    "pca_fit",
    "pca_inverse_transform",
    "pca_transform",
    "reduce_shards",
    "resolve_bandwidth",
    "sample",
    "sample_around",
    "sample_classes",
    "sample_classes_host",
    "sample_host",
    "sample_with_centres",
    "scott_bandwidth",
    "scott_factor",
    "scott_full_bandwidth",
    "shard_state",
    "sharded_log_density",
    "sharded_log_density_whitened",
    "silverman_bandwidth",
    "silverman_factor",
    "silverman_full_bandwidth",
    "unwhiten",
    "unwhiten_host",
    "weighted_mean_and_covariance",
    "whiten",
    "whiten_queries",
]
