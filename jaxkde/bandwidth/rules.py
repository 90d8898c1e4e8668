"""Bandwidth rules of thumb as pure JAX functions, and the resolution of a user's choice.

A bandwidth is the matrix ``H`` of the kernel ``K_H``; it is returned either as a vector of
its diagonal (shape ``(d,)``) or as a full matrix (shape ``(d, d)``). Standard deviations
``sigma_i`` and covariances are the weighted, bias-corrected ones of
``numpy.cov(data.T, aweights=weights)``, so the diagonal rules are exactly the diagonals of the
full-covariance (SciPy-style) rules.

Rules of thumb (``n_eff = (sum w)^2 / sum w^2``, ``n`` for unweighted data):

* Scott: ``sqrt(H_ii) = n_eff^{-1/(d+4)} sigma_i``
* Silverman: ``sqrt(H_ii) = (4 / (d + 2))^{1/(d+4)} n_eff^{-1/(d+4)} sigma_i``
* ``*_full``: ``H = factor^2 Cov`` with the same factors, as ``scipy.stats.gaussian_kde``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxkde._validation import check_positive_definite, check_real
from jaxkde.bandwidth.selectors import (
    FULL_SELECTORS,
    PER_DIMENSION_SELECTORS,
    SELECTORS,
    select_with_fallback,
)
from jaxkde.core.moments import Moments
from jaxkde.core.state import normalized_log_weights

__all__ = [
    "RULES",
    "BandwidthChoice",
    "BandwidthContext",
    "CovarianceFactor",
    "PointBandwidths",
    "check_point_scales",
    "effective_sample_size",
    "identity_bandwidth",
    "moments_bandwidth",
    "normal_reference_bandwidth",
    "normal_reference_factor",
    "resolve_bandwidth",
    "rule_bandwidth",
    "scott_bandwidth",
    "scott_factor",
    "scott_full_bandwidth",
    "silverman_bandwidth",
    "silverman_factor",
    "silverman_full_bandwidth",
    "weighted_mean_and_covariance",
]


# Statistics are computed with true float32/float64 products (no TF32 on GPUs).
_HIGHEST = lax.Precision.HIGHEST


def _normalised_weights(data: jax.Array, weights: jax.Array | None) -> jax.Array:
    n = data.shape[0]
    if data.ndim != 2 or n < 2:
        raise ValueError(
            f"data must have shape (n_samples, n_features) with at least 2 samples to estimate "
            f"a variance; got {data.shape}."
        )
    if weights is None:
        return jnp.full((n,), 1.0 / n, dtype=data.dtype)
    weights = jnp.asarray(weights, dtype=data.dtype)
    return weights / jnp.sum(weights)


@jax.jit
def effective_sample_size(weights: jax.Array) -> jax.Array:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of weights of shape ``(n,)``."""
    return jnp.sum(weights) ** 2 / jnp.sum(weights**2)


@jax.jit
def weighted_mean_and_covariance(
    data: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Weighted mean ``(d,)`` and bias-corrected covariance ``(d, d)`` of ``data`` ``(n, d)``.

    Equal to ``numpy.average(data, 0, weights)`` and ``numpy.cov(data.T, aweights=weights)``.
    """
    w = _normalised_weights(data, weights)
    mean = jnp.matmul(w, data, precision=_HIGHEST)
    centred = data - mean
    cov = jnp.matmul((centred * w[:, None]).T, centred, precision=_HIGHEST) / (1.0 - jnp.sum(w**2))
    return mean, cov


@jax.jit
def _weighted_variance(data: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    w = _normalised_weights(data, weights)
    if weights is None:  # reductions: several times faster than products with 1/n
        centred = data - jnp.mean(data, axis=0)
        return jnp.sum(centred * centred, axis=0) / (data.shape[0] - 1)
    mean = jnp.matmul(w, data, precision=_HIGHEST)
    return jnp.matmul(w, (data - mean) ** 2, precision=_HIGHEST) / (1.0 - jnp.sum(w**2))


def scott_factor(n_eff, dim: int):
    """Scott's factor ``n_eff^{-1/(d+4)}`` (a float for a float, an array for an array)."""
    return n_eff ** (-1.0 / (dim + 4))


def silverman_factor(n_eff, dim: int):
    """Silverman's factor ``(n_eff (d + 2) / 4)^{-1/(d+4)}``."""
    return (n_eff * (dim + 2) / 4.0) ** (-1.0 / (dim + 4))


def normal_reference_factor(n_eff, dim: int):
    """statsmodels' ``normal_reference`` factor over the bias-corrected deviation:
    ``1.06 n_eff^{-1/(d+4)} sqrt(1 - 1/n_eff)`` (its ``sigma`` has ``ddof=0``)."""
    return 1.06 * n_eff ** (-1.0 / (dim + 4)) * (1.0 - 1.0 / n_eff) ** 0.5


def _n_eff(data: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.asarray(data.shape[0], data.dtype)
    return effective_sample_size(jnp.asarray(weights, data.dtype))


@jax.jit
def scott_bandwidth(data: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Diagonal of Scott's bandwidth matrix, ``(n_eff^{-1/(d+4)} sigma_i)^2``, shape ``(d,)``."""
    factor = scott_factor(_n_eff(data, weights), data.shape[1])
    return factor**2 * _weighted_variance(data, weights)


@jax.jit
def silverman_bandwidth(data: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Diagonal of Silverman's bandwidth matrix, shape ``(d,)`` (squared, unlike the seed's)."""
    factor = silverman_factor(_n_eff(data, weights), data.shape[1])
    return factor**2 * _weighted_variance(data, weights)


@jax.jit
def scott_full_bandwidth(data: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """SciPy's Scott bandwidth ``scott_factor^2 * Cov``, shape ``(d, d)``."""
    factor = scott_factor(_n_eff(data, weights), data.shape[1])
    return factor**2 * weighted_mean_and_covariance(data, weights)[1]


@jax.jit
def silverman_full_bandwidth(data: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """SciPy's Silverman bandwidth ``silverman_factor^2 * Cov``, shape ``(d, d)``."""
    factor = silverman_factor(_n_eff(data, weights), data.shape[1])
    return factor**2 * weighted_mean_and_covariance(data, weights)[1]


@jax.jit
def normal_reference_bandwidth(data: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Diagonal of statsmodels' ``KDEMultivariate(bw="normal_reference")`` bandwidth,
    ``(1.06 sigma_i n_eff^{-1/(d+4)})^2`` with ``sigma_i`` of ``ddof=0``, shape ``(d,)``."""
    factor = normal_reference_factor(_n_eff(data, weights), data.shape[1])
    return factor**2 * _weighted_variance(data, weights)


@jax.jit
def identity_bandwidth(data: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """The identity bandwidth, diagonal of ones, shape ``(d,)``."""
    del weights
    return jnp.ones((data.shape[1],), data.dtype)


RULES = {
    "scott": scott_bandwidth,
    "silverman": silverman_bandwidth,
    "scott_full": scott_full_bandwidth,
    "silverman_full": silverman_full_bandwidth,
    "normal_reference": normal_reference_bandwidth,
    "identity": identity_bandwidth,
}
ZERO_VARIANCE_MODES = ("floor", "subspace")
_FACTORS = {"scott": scott_factor, "silverman": silverman_factor,
            "normal_reference": normal_reference_factor}  # fmt: skip


def _host_rule(name, centred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The rule ``name`` in float64 on the host, from centred data and normalised weights.

    The same formulas as the JAX functions of ``RULES`` (weighted, bias-corrected statistics;
    Kish's effective sample size), computed before any cast to the working dtype; a
    :class:`CovarianceFactor` scales the full covariance.
    """
    scale = 1.0 - np.sum(w**2)
    if isinstance(name, CovarianceFactor):
        cov = (centred * w[:, None]).T @ centred / scale
        return name.factor**2 * (cov + cov.T) / 2
    if name.endswith("_full"):
        spread = (centred * w[:, None]).T @ centred / scale
    else:
        spread = (w @ centred**2) / scale
    return rule_from_statistics(name, spread, 1.0 / np.sum(w**2))


def rule_from_statistics(name: str, spread: np.ndarray, n_eff: float) -> np.ndarray:
    """``H`` of the rule ``name`` (a key of ``RULES`` but ``"identity"``) from the weighted,
    bias-corrected covariance ``(d, d)`` (``_full`` rules) or variances ``(d,)`` and Kish's
    effective sample size, in float64."""
    factor = _FACTORS[name.removesuffix("_full")](n_eff, spread.shape[0])
    if name.endswith("_full"):
        return factor**2 * (spread + spread.T) / 2
    return factor**2 * spread


class CovarianceFactor(NamedTuple):
    """SciPy's scalar ``bw_method``: ``H = factor^2 Cov``, with ``Cov`` the data's weighted,
    bias-corrected covariance matrix (full), as ``scipy.stats.gaussian_kde`` builds it.

    ``KDE(bandwidth=CovarianceFactor(0.3))`` is ``gaussian_kde(X, bw_method=0.3)``; a bare
    number is jaxkde's (and scikit-learn's) isotropic scale ``h`` instead.
    """

    factor: float


class PointBandwidths(NamedTuple):
    """One bandwidth per data row (KDEpy's ``bw`` array): row ``i``'s kernel has the bandwidth
    ``scales[i]^2 H``, ``H`` from ``base`` (any other bandwidth: a rule, ``h``, per-feature
    scales, a matrix; default ``1.0``, so ``scales`` are the rows' own ``h``).

    ``KDE(bandwidth=PointBandwidths(bw / sqrt(var)))`` is KDEpy's ``NaiveKDE(bw=bw)`` (``var``
    the kernel's 1-D variance, :meth:`jaxkde.Kernel.coordinate_variance`). ``scales`` has one
    positive entry per row of the ``X`` given to ``fit`` (with labels too).
    """

    scales: np.ndarray
    base: object = 1.0


def check_point_scales(spec: PointBandwidths, n: int) -> np.ndarray:
    """``spec.scales`` as float64 ``(n,)``, positive and finite; ``ValueError`` otherwise."""
    try:
        scales = np.asarray(spec.scales, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"PointBandwidths scales must be an array of {n} positive numbers; got "
                        f"{spec.scales!r}.") from None  # fmt: skip
    if scales.shape != (n,):
        raise ValueError(f"PointBandwidths scales must have one entry per row of X, shape "
                         f"({n},); got shape {scales.shape}.")  # fmt: skip
    bad = ~(np.isfinite(scales) & (scales > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"PointBandwidths scales must be positive and finite; entry {i} is "
                         f"{float(scales[i])!r}.")  # fmt: skip
    if isinstance(spec.base, PointBandwidths):
        raise TypeError("PointBandwidths base must be another kind of bandwidth.")
    return scales


class BandwidthContext(NamedTuple):
    """What a callable ``bandwidth`` is called with (SciPy passes its ``gaussian_kde``, whose
    ``n``, ``d`` and ``neff`` these are): it returns the factor of :class:`CovarianceFactor`.

    Attributes
    ----------
    n : int
        Rows fitted (of the class, with labels).
    d : int
        Features.
    neff : float
        Kish's effective sample size ``(sum w)^2 / sum w^2`` (``n`` without weights).
    """

    n: int
    d: int
    neff: float


def _covariance_factor(bandwidth, n: int, d: int, w64: np.ndarray) -> CovarianceFactor:
    """A checked :class:`CovarianceFactor` from one, or from a callable's value."""
    factor = bandwidth.factor if isinstance(bandwidth, CovarianceFactor) else bandwidth(
        BandwidthContext(n, d, float(1.0 / np.sum(w64**2))))  # fmt: skip
    what = "the factor of CovarianceFactor" if isinstance(bandwidth, CovarianceFactor) else (
        "the value of the callable bandwidth")  # fmt: skip
    if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, (int, float, np.integer,
                                                                      np.floating)):  # fmt: skip
        raise TypeError(f"{what} must be a positive number; got {factor!r}.")
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"{what} must be a positive finite number; got {factor!r}.")
    return CovarianceFactor(float(factor))


class BandwidthChoice(NamedTuple):
    """A resolved bandwidth.

    Attributes
    ----------
    matrix : np.ndarray
        ``H`` as its diagonal ``(k,)`` or in full ``(k, k)``, in the coordinates of ``basis``.
    basis : np.ndarray or None
        ``(d, k)`` orthonormal columns spanning the subspace the density lives in, or ``None``
        for the whole space.
    n_degenerate : int
        Number of data dimensions with (near) zero variance that were floored or removed.
    """

    matrix: np.ndarray
    basis: np.ndarray | None
    n_degenerate: int


def _as_float64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


_BANDWIDTH_TYPES = (
    "a rule name, a positive number, a vector of positive numbers or a positive-definite matrix"
)
# A scale h enters H as h^2, which must stay a normal float64.
_H_RANGE = (1e-150, 1e150)


def _check_user_bandwidth(bandwidth, dim: int) -> np.ndarray:
    """Validate a user scalar (h), vector (h per dimension) or matrix H; return H."""
    if isinstance(bandwidth, (bool, np.bool_)) or np.asarray(bandwidth).dtype == bool:
        raise TypeError(f"bandwidth must be {_BANDWIDTH_TYPES}; got {bandwidth!r}.")
    try:
        arr = np.asarray(bandwidth, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"bandwidth must be {_BANDWIDTH_TYPES}; got {bandwidth!r}.") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError("bandwidth must be finite; it contains NaN or inf.")
    if arr.ndim in (0, 1):
        if arr.ndim == 1 and arr.shape[0] != dim:
            raise ValueError(
                f"bandwidth vector must have one scale h per feature, shape ({dim},); "
                f"got shape {arr.shape}."
            )
        flat = arr.reshape(-1)
        where = "" if arr.ndim == 0 else " entry {}"
        if np.any(flat <= 0):
            bad = int(np.flatnonzero(flat <= 0)[0])
            raise ValueError(
                f"bandwidth must be positive;{where.format(bad)} got {float(flat[bad])!r}."
            )
        if np.any((flat < _H_RANGE[0]) | (flat > _H_RANGE[1])):
            bad = int(np.flatnonzero((flat < _H_RANGE[0]) | (flat > _H_RANGE[1]))[0])
            raise ValueError(
                f"bandwidth must lie in [{_H_RANGE[0]:g}, {_H_RANGE[1]:g}] (h^2 scales H);"
                f"{where.format(bad)} got {float(flat[bad])!r}. Rescale the data."
            )
        return np.full((dim,), float(arr) ** 2) if arr.ndim == 0 else arr**2
    if arr.ndim == 2:
        if arr.shape != (dim, dim):
            raise ValueError(
                f"bandwidth matrix must have shape ({dim}, {dim}); got shape {arr.shape}."
            )
        check_positive_definite(arr, "bandwidth matrix")
        return arr
    raise ValueError(
        f"bandwidth must be a scalar, a vector or a matrix; got {arr.ndim} dimensions."
    )


def resolve_bandwidth(
    data: jax.Array,
    weights: jax.Array | None,
    bandwidth,
    *,
    zero_variance: str = "floor",
    variance_floor: float = 1e-6,
) -> BandwidthChoice:
    """Turn a user's bandwidth (rule name, scalar, vector or matrix) into ``H`` for ``data``.

    Parameters
    ----------
    data : array-like, shape (n, d)
        Read in float64: the rules are computed on the host, from data centred there.
    weights : array-like of shape (n,), or None
    bandwidth : str, float, array of shape (d,) or (d, d), CovarianceFactor or callable
        A rule name from ``RULES`` or a selector from :data:`jaxkde.bandwidth.selectors.SELECTORS`
        (``"silverman_robust"``, ``"isj"``, ``"sj"``, ``"plugin"``; one that finds no bandwidth
        falls back to ``"silverman_robust"`` with a warning), SciPy's scalar factor as
        :class:`CovarianceFactor` (``H = factor^2 Cov``), a callable taking a
        :class:`BandwidthContext` and returning that factor (SciPy's callable ``bw_method``),
        the isotropic scale ``h`` (``H = h^2 I``), one scale per
        dimension (``H = diag(h_i^2)``), or the matrix ``H``. ``h`` scales the kernel's radius,
        as scikit-learn's ``bandwidth`` does: it is the standard deviation of each coordinate for
        the Gaussian kernel only (see :meth:`jaxkde.Kernel.coordinate_variance`).
    zero_variance : {"floor", "subspace"}
        What a data rule does with dimensions of (near) zero variance, which would make ``H``
        singular. ``"floor"`` (default) raises each variance of ``H`` (each eigenvalue for the
        full rules) to ``variance_floor`` times the largest, keeping a proper density on the whole
        space. ``"subspace"`` restricts the density to the affine subspace the data span:
        queries are projected onto it, and the rule is applied in its dimension.
    variance_floor : float
        Relative threshold below which a variance counts as zero, and the floor in ``"floor"``.

    Returns
    -------
    BandwidthChoice
    """
    dim = data.shape[1]
    if not isinstance(zero_variance, str) or zero_variance not in ZERO_VARIANCE_MODES:
        raise ValueError(
            f"zero_variance must be one of {list(ZERO_VARIANCE_MODES)}; got {zero_variance!r}."
        )
    check_real(variance_floor, "variance_floor", low=0.0, high=1.0, low_open=True)
    if variance_floor == 1.0:
        raise ValueError(f"variance_floor must be in (0, 1); got {variance_floor!r}.")
    factor = callable(bandwidth) or isinstance(bandwidth, CovarianceFactor)
    if not isinstance(bandwidth, str) and not factor:
        return BandwidthChoice(_check_user_bandwidth(bandwidth, dim), None, 0)
    if not factor:
        _check_rule_name(bandwidth)
    if bandwidth == "identity":
        return BandwidthChoice(np.ones((dim,)), None, 0)
    if data.shape[0] < 2:
        raise ValueError(
            f"bandwidth rule {bandwidth!r} needs at least 2 samples (rows of X) to estimate a "
            f"variance; got {data.shape[0]} sample."
        )
    full = factor or bandwidth.endswith("_full") or bandwidth in FULL_SELECTORS
    # Statistics and rules in float64 on the host, from data centred there: the offset of the
    # data never meets the working dtype's rounding.
    x64 = _as_float64(data)
    w64, _ = normalized_log_weights(None if weights is None else _as_float64(weights), len(x64))
    if factor:
        bandwidth = _covariance_factor(bandwidth, len(x64), dim, w64)
    centred = x64 - w64 @ x64
    scale = 1.0 - np.sum(w64**2)
    if not scale > 0:
        raise ValueError(
            f"bandwidth rule {bandwidth!r} needs at least 2 samples (rows of X) with positive "
            "weight to estimate a variance; got 1 sample."
        )
    with np.errstate(over="ignore", invalid="ignore"):
        if full:
            cov = (centred * w64[:, None]).T @ centred / scale
            finite = bool(np.all(np.isfinite(cov)))
            eigval, eigvec = np.linalg.eigh((cov + cov.T) / 2) if finite else (cov, None)
        else:
            eigval, eigvec = w64 @ centred**2 / scale, None
    top = eigval.max()
    if not np.all(np.isfinite(eigval)):
        raise ValueError(
            "the variance of X overflows float64 (values near 1e154 or beyond); rescale X."
        )
    if not top > 0:
        raise ValueError(
            f"bandwidth rule {bandwidth!r} needs data that vary: every feature of X is constant "
            "(zero variance). Pass an explicit bandwidth instead."
        )
    degenerate = eigval <= variance_floor * top
    n_degenerate = int(degenerate.sum())

    def rule(coords: np.ndarray) -> np.ndarray:
        if not factor and bandwidth in SELECTORS:
            return select_with_fallback(bandwidth, coords, weights)
        return _host_rule(bandwidth, coords, w64)

    if n_degenerate == 0:
        return BandwidthChoice(rule(centred), None, 0)
    what = "eigenvalues of the covariance" if full else "features"
    if zero_variance == "floor":
        warnings.warn(
            f"{n_degenerate} of {dim} {what} have zero (or below variance_floor={variance_floor:g} "
            f"relative) variance; their bandwidth variance is raised to {variance_floor:g} times "
            "the largest. Pass zero_variance='subspace' to restrict the density to the data's "
            "support instead.",
            RuntimeWarning,
            stacklevel=3,
        )
        if factor or bandwidth in RULES:  # the rule's own value on every feature, floored
            matrix = _host_rule(bandwidth, centred, w64)
        else:  # selectors need spread: selected on the span of the data, then floored
            basis = eigvec[:, ~degenerate] if full else np.eye(dim)[:, ~degenerate]
            matrix = _embed(rule(centred @ basis), basis, full)
        floor = variance_floor * (np.linalg.eigvalsh(matrix).max() if full else matrix.max())
        if full:
            val, vec = np.linalg.eigh((matrix + matrix.T) / 2)
            matrix = (vec * np.maximum(val, floor)) @ vec.T
        else:
            matrix = np.maximum(matrix, floor)
        return BandwidthChoice(matrix, None, n_degenerate)
    warnings.warn(
        f"{n_degenerate} of {dim} {what} have zero (or below variance_floor={variance_floor:g} "
        f"relative) variance; the density is restricted to the {dim - n_degenerate}-dimensional "
        "subspace the data span (zero_variance='subspace').",
        RuntimeWarning,
        stacklevel=3,
    )
    if full:
        basis = eigvec[:, ~degenerate]
    else:
        basis = np.eye(dim)[:, ~degenerate]
    return BandwidthChoice(rule(centred @ basis), basis, n_degenerate)


def _embed(matrix: np.ndarray, basis: np.ndarray, full: bool) -> np.ndarray:
    """``H`` of the subspace ``basis`` as a ``(d, d)`` matrix (or diagonal ``(d,)``), zero on
    the complement (floored by the caller)."""
    if not full:
        return basis @ matrix  # columns of the identity: the diagonal, zeros elsewhere
    inner = np.diag(matrix) if matrix.ndim == 1 else matrix
    return basis @ inner @ basis.T


def _check_rule_name(bandwidth: str) -> None:
    if bandwidth in RULES or bandwidth in SELECTORS:
        return
    stem = bandwidth.removesuffix("_full")
    if stem != bandwidth and stem in PER_DIMENSION_SELECTORS:
        raise ValueError(
            f"bandwidth={bandwidth!r}: the {stem!r} selector is defined one feature at a time "
            "(a diagonal H) and has no full-matrix version; for a full H use 'plugin', "
            "'lscv_full', 'cv_full' or 'scott_full'."
        )
    raise ValueError(f"bandwidth rule must be one of {[*RULES, *SELECTORS]}; got {bandwidth!r}.")


def rule_bandwidth(name: str, stats: Moments) -> np.ndarray:
    """``H`` of the rule ``name`` (``"scott"``, ``"silverman"``, their ``_full`` forms or
    ``"identity"``) from merged statistics: the same formulas as
    :func:`jaxkde.bandwidth.rules.resolve_bandwidth` on the whole data."""
    d = stats.mean.shape[0]
    if name == "identity":
        return np.ones(d)
    if not np.all(np.isfinite(stats.cov)):
        raise ValueError(f"bandwidth rule {name!r} needs at least 2 rows of positive weight.")
    full = name.endswith("_full")
    spread = stats.cov if full else np.diag(stats.cov)
    if not np.all((np.linalg.eigvalsh(spread) if full else spread) > 0):
        raise ValueError(
            f"bandwidth rule {name!r}: the data have zero variance along some direction; for "
            "data spread over processes or streamed from a file pass an explicit bandwidth "
            "(zero_variance is not applied there)."
        )
    return rule_from_statistics(name, spread, stats.n_eff)


def moments_bandwidth(spec, stats: Moments, row: np.ndarray) -> np.ndarray:
    """``H`` for ``spec`` when the data are known by their merged statistics only: a rule's
    name goes to :func:`rule_bandwidth`, an explicit bandwidth to
    :func:`jaxkde.resolve_bandwidth`, which checks it against ``row`` ``(<= 1, d)``, one row
    of the data (none on a process that holds none)."""
    if isinstance(spec, str):
        return rule_bandwidth(spec, stats)
    return resolve_bandwidth(row, None, spec).matrix
