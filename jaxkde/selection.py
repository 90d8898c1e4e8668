"""Bandwidth selection: leave-one-out likelihood learned with optax, grid search, Parzen windows.

* :func:`loo_log_likelihood`: the mean leave-one-out log-likelihood of the data as a pure,
  jitted, differentiable function of unconstrained bandwidth parameters (``log h``, ``log h_i``
  or a Cholesky factor with a log diagonal), computed by the engine's blocked log-sum-exp with
  self-pairs excluded exactly and each scan step rematerialised in the backward pass (memory
  bounded by the block sizes).
* :func:`fit_bandwidth`: maximises it with optax (Adam by default), on minibatches of evaluation
  points for large n (deterministic per key), until a tolerance or a step budget; returns the
  trace of the objective.
* :func:`grid_log_likelihood`: log densities for many scalar bandwidths at once, sharing one
  distance computation per block (one pass over the data for the whole grid).
* :func:`parzen_log_likelihood`: the Parzen-window protocol used to score generative models.

Gradients are defined for the gaussian and exponential kernels everywhere, and for the
epanechnikov, linear and cosine kernels while every evaluation point keeps a neighbour inside
the kernel's support (otherwise the objective is -inf); the tophat kernel's objective is
piecewise constant in the kernel terms and is rejected, as is the unnormalised
``univariate_gaussian``.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import distributed
from ._validation import (
    check_data,
    check_positive_definite,
    check_positive_int,
    check_real,
    check_weights,
    working_dtype,
)
from .bandwidths import _host_rule
from .engine import DIRECT_MAX_DIM, DIRECT_TIER, DirectCoordinates, _logsumexp
from .kernels import Kernel, TophatKernel, UnivariateGaussianKernel, get_kernel
from .moments import rule_bandwidth
from .sampling import as_key
from .scale_search import SCALE_LIMITS, scale_search
from .sharding import reduce_shards
from .state import (
    KDEState,
    build_state,
    chunk_layout,
    normalized_log_weights,
    split_double_word,
    whiten_queries,
)
from .sum_updating import _MAX_WHITENED, SUM_UPDATING_KERNELS, loo_log_sums

__all__ = [
    "CV_RULES",
    "LSCV_RULES",
    "OBJECTIVES",
    "PARAMETERISATIONS",
    "BandwidthFit",
    "ParzenResult",
    "bandwidth_from_params",
    "fit_bandwidth",
    "grid_log_likelihood",
    "loo_log_likelihood",
    "lscv_at_scales",
    "lscv_objective",
    "params_from_bandwidth",
    "parzen_log_likelihood",
]

PARAMETERISATIONS = ("scalar", "diagonal", "full")
#: Bandwidth names that learn H by leave-one-out likelihood, and their parameterisation.
CV_RULES = {"cv": "scalar", "cv_diagonal": "diagonal", "cv_full": "full"}
#: Bandwidth names that learn H by least-squares cross-validation (Gaussian kernel).
LSCV_RULES = {"lscv": "scalar", "lscv_diagonal": "diagonal", "lscv_full": "full"}
_HIGHEST = lax.Precision.HIGHEST


def bandwidth_from_params(params: jax.Array, kind: str, dim: int) -> jax.Array:
    """Cholesky factor ``L`` of ``H``: a vector ``(d,)`` (scalar, diagonal) or ``(d, d)`` (full).

    ``scalar``: ``params = log h``; ``diagonal``: ``params = log h_i`` (shape ``(d,)``);
    ``full``: the ``d (d + 1) / 2`` entries of a lower-triangular ``L`` row by row, with the
    diagonal stored as its log.
    """
    if kind == "scalar":
        return jnp.full((dim,), jnp.exp(params))
    if kind == "diagonal":
        return jnp.exp(params)
    rows, cols = np.tril_indices(dim)
    chol = jnp.zeros((dim, dim), params.dtype).at[rows, cols].set(params)
    diag = jnp.arange(dim)
    return chol.at[diag, diag].set(jnp.exp(chol[diag, diag]))


def params_from_bandwidth(h: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of :func:`bandwidth_from_params`, for ``H`` as ``(d,)`` diagonal or ``(d, d)``."""
    h = np.asarray(h, np.float64)
    full = np.diag(h) if h.ndim == 1 else h
    if kind == "scalar":
        return np.asarray(0.5 * np.mean(np.log(np.diag(full))))
    if kind == "diagonal":
        return 0.5 * np.log(np.diag(full))
    chol = np.linalg.cholesky(full)
    chol[np.diag_indices_from(chol)] = np.log(np.diag(chol))
    return chol[np.tril_indices(full.shape[0])]


def _check_kernel(kernel: str | Kernel) -> Kernel:
    kern = get_kernel(kernel) if isinstance(kernel, str) else kernel
    if isinstance(kern, (TophatKernel, UnivariateGaussianKernel)):
        raise ValueError(
            f"kernel {kern.name!r} has no useful likelihood gradient; learned bandwidths support "
            "gaussian, exponential, epanechnikov, linear and cosine."
        )
    return kern


def _sum_updates(d: int, kernel: Kernel, mesh, log_factors=None) -> bool:
    """1-D data on one device with a kernel that has exact sum updating (and one bandwidth for
    every centre): ``O(n log n)``."""
    return (d == 1 and mesh is None and log_factors is None
            and kernel.name in SUM_UPDATING_KERNELS)  # fmt: skip


def _whiten_rows(x: jax.Array, chol: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``L^{-1} x`` row by row for a diagonal ``(d,)`` or triangular ``(d, d)`` ``L``; log|L|."""
    if chol.ndim == 1:
        return x / chol, jnp.sum(jnp.log(chol))
    z = jax.scipy.linalg.solve_triangular(chol, x.T, lower=True).T
    return z, jnp.sum(jnp.log(jnp.diag(chol)))


def _loo_log_sum(x_hi, x_lo, log_weights, q_hi, q_lo, rows, chol, log_norm, row_offset, *,
                 kernel, chunk_size, block_size, precision, grid=None,
                 log_factors=None):  # fmt: skip
    """``log sum_{j != i} w_j k(|L^{-1}(x_i - x_j)|^2)`` over the rows of ``x`` (a whole data
    set or one device's shard starting at global row ``row_offset``), for the queries ``q`` that
    are the data rows ``rows``; shape ``(m,)`` (``(m, g)`` with a ``grid`` of squared-distance
    scales). ``log_factors`` ``(n,)``: adaptive bandwidths ``lambda_j^2 H`` of the data rows
    (held fixed). Built inside a trace: differentiable in ``chol``.

    Distances follow the engine (:func:`jaxkde.engine._block_logsumexp`): matrix products of
    the whitened points with an error account, or direct differences of the centred
    double-word coordinates whitened per pair (``L`` diagonal, or full up to
    ``DIRECT_MAX_DIM`` features; above that, of the whitened words).
    """
    n, d = x_hi.shape
    n_chunks, size = chunk_layout(n, chunk_size)
    pad = n_chunks * size - n

    def chunks(a, fill=0.0):
        a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1), constant_values=fill)
        return a.reshape((n_chunks, size, *a.shape[1:]))

    z_hi, _ = _whiten_rows(x_hi, chol)
    z_lo = None if x_lo is None else _whiten_rows(x_lo, chol)[0]
    zq_hi, _ = _whiten_rows(q_hi, chol)
    zq_lo = None if q_lo is None else _whiten_rows(q_lo, chol)[0]
    state = KDEState(
        points=chunks(z_hi),
        points_lo=None if z_lo is None else chunks(z_lo),
        sq_norms=chunks(jnp.sum(z_hi * z_hi, axis=1)),
        log_weights=chunks(log_weights, -jnp.inf),
        mean=jnp.zeros((d,), x_hi.dtype),
        chol=chol,
        basis=None,
        log_normalizer=log_norm,
        kernel=kernel,
        log_factors=None if log_factors is None else chunks(log_factors),
    )
    if chol.ndim == 1 or d <= DIRECT_MAX_DIM:  # direct differences whitened per pair, exactly
        direct = (q_hi, q_lo, chunks(x_hi), None if x_lo is None else chunks(x_lo), chol)
    else:
        direct = None
    coords = None if direct is None else DirectCoordinates(*direct)
    # The direct tier alone: this is differentiated, and the product tiers' derivatives would
    # triple its compile time (see jaxkde.engine.DIRECT_TIER).
    return _logsumexp(state, zq_hi, zq_lo, precision, rows, remat=True, row_offset=row_offset,
                      tiers=DIRECT_TIER, block_size=block_size, grid=grid, direct=coords,
                      log_normalizer=log_norm)  # fmt: skip


@functools.partial(
    jax.jit,
    static_argnames=("kind", "kernel", "chunk_size", "block_size", "precision", "mesh"),
)
def loo_log_likelihood(
    params: jax.Array,
    data: jax.Array,
    log_weights: jax.Array,
    rows: jax.Array,
    data_lo: jax.Array | None = None,
    log_factors: jax.Array | None = None,
    *,
    kind: str = "scalar",
    kernel: Kernel = get_kernel("gaussian"),  # noqa: B008 - a frozen, hashable value
    chunk_size: int = 2048,
    block_size: int = 256,
    precision: str = "highest",
    mesh: Mesh | None = None,
) -> jax.Array:
    """Weighted mean leave-one-out log-likelihood of the data rows ``rows``.

    ``sum_i w_i log f_{-i}(x_i) / sum_i w_i`` over ``i`` in ``rows``, where ``f_{-i}`` is the
    KDE of all the data but ``x_i`` (weights renormalised). Differentiable in ``params``.

    Parameters
    ----------
    params : array
        Unconstrained bandwidth parameters (see :func:`bandwidth_from_params`).
    data : array, shape (n, d)
        Centred data (subtracting the mean changes nothing but rounding); in float32, the high
        words of the float64 centred data.
    log_weights : array, shape (n,)
        Normalised log weights (log-sum-exp 0); padding rows carry -inf.
    rows : int array, shape (m,)
        Evaluation points, as rows of ``data`` of positive weight (any number; taken
        ``block_size`` at a time).
    data_lo : array of shape (n, d), optional
        The low words of the centred data (``data + data_lo`` is the float64 value); with them
        distances of nearby points are exact whatever the data's offset and spread.
    log_factors : array of shape (n,), optional
        Adaptive bandwidths: row ``j``'s kernel has bandwidth ``lambda_j^2 H`` (``log lambda_j``
        held fixed; 0 on padding). Default: one bandwidth ``H`` for all.
    mesh : jax.sharding.Mesh, optional
        ``data`` (and ``data_lo``) and ``log_weights`` are sharded by rows along the mesh's first
        axis (``n`` a multiple of its size): each device sums over its own rows and the partial
        sums are merged exactly (:func:`jaxkde.sharding.reduce_shards`).
    """
    d = data.shape[1]
    chol = bandwidth_from_params(params, kind, d)
    log_det = jnp.sum(jnp.log(chol if chol.ndim == 1 else jnp.diag(chol)))
    log_norm = kernel.log_normalizer(d, log_det)
    q_hi = data[rows]
    q_lo = None if data_lo is None else data_lo[rows]
    local = functools.partial(_loo_log_sum, kernel=kernel, chunk_size=chunk_size,
                              block_size=block_size, precision=precision)  # fmt: skip
    if _sum_updates(d, kernel, mesh, log_factors):
        # Sum updating while x / h stays in its exact range; the engine beyond (tiny h).
        h = chol.reshape(())
        inside = jnp.max(jnp.abs(data)) < h * _MAX_WHITENED[np.dtype(data.dtype)]
        lse = lax.cond(
            inside,
            lambda: loo_log_sums(data, data_lo, log_weights, rows, h, kernel=kernel),
            lambda: local(data, data_lo, log_weights, q_hi, q_lo, rows, chol, log_norm, 0),
        )
    elif mesh is None:
        lse = local(data, data_lo, log_weights, q_hi, q_lo, rows, chol, log_norm, 0,
                    log_factors=log_factors)  # fmt: skip
    else:
        axis = mesh.axis_names[0]
        per_device = data.shape[0] // mesh.shape[axis]

        def on_shard(x, x_lo, lw, q_hi, q_lo, rows, chol, log_norm, lf, index):
            return local(x, x_lo, lw, q_hi, q_lo, rows, chol, log_norm, index * per_device,
                         log_factors=lf)  # fmt: skip

        lo_spec = None if data_lo is None else P(axis)
        q_spec = None if q_lo is None else P()
        lf_spec = None if log_factors is None else P(axis)
        lse = reduce_shards(on_shard, mesh, axis,
                            (data, data_lo, log_weights, q_hi, q_lo, rows, chol, log_norm,
                             log_factors),
                            (P(axis), lo_spec, P(axis), P(), q_spec, P(), P(), P(),
                             lf_spec))  # fmt: skip
    own = log_weights[rows]
    # f_{-i}(x_i) = sum_{j != i} w_j K / (1 - w_i); a point with all the weight has none left.
    log_loo = lse - jnp.log1p(-jnp.exp(own)) + log_norm
    w = jnp.exp(own)
    return jnp.sum(w * log_loo) / jnp.sum(w)


class BandwidthFit(NamedTuple):
    """Result of :func:`fit_bandwidth`.

    Attributes
    ----------
    matrix : np.ndarray
        The learned ``H``: ``(d,)`` diagonal (scalar, diagonal) or ``(d, d)`` (full).
    objective : float
        Mean leave-one-out log-likelihood at ``matrix``, on all the data; for
        ``objective="lscv"``, ``-LSCV(H)`` (in units of density).
    trace : np.ndarray
        The objective at every optimiser step (after the scale search); for ``"lscv"`` in
        units of the leave-one-out term at the scaled start.
    steps : int
        Optimiser steps taken (0 for ``kind="scalar"``, solved by the scale search alone).
    converged : bool
        True only when a maximum was certified: the largest gradient entry (in log bandwidth)
        is at most ``gtol``, or, for a scalar bandwidth, a maximum is bracketed within a
        relative width of ``xtol``.
    params : np.ndarray
    status : str
        ``"converged"``; ``"max_steps"`` (budget spent, gradient above ``gtol``);
        ``"stalled"`` (no parameter moved by ``tol`` in ``patience`` steps, gradient above
        ``gtol``); ``"unbounded"`` (the objective keeps growing as the bandwidth shrinks, as it
        does when every point has an exact duplicate: no maximum exists, ``matrix`` is the
        starting one); ``"nonfinite"`` (the objective is -inf or NaN at every bandwidth tried).
    gradient : float
        Largest absolute entry of the objective's gradient at ``params`` (on the evaluation
        rows; NaN when not computed).
    scale : float
        The factor the scale search applied to the starting bandwidth's ``L`` (``H`` scaled by
        ``scale**2``) before any optimiser step.
    """

    matrix: np.ndarray
    objective: float
    trace: np.ndarray
    steps: int
    converged: bool
    params: np.ndarray
    status: str = "converged"
    gradient: float = math.nan
    scale: float = 1.0


def _lse_on_grid(data, data_lo, log_weights, rows, chol, log_norm, grid, *, local, mesh,
                 log_factors=None):  # fmt: skip
    """Leave-one-out log sums ``(m, g)`` of the rows ``rows`` at each squared-distance scale of
    ``grid`` ``(g,)``, from one shared distance computation (sharded over ``mesh``)."""
    q_hi = data[rows]
    q_lo = None if data_lo is None else data_lo[rows]
    m, g = rows.shape[0], grid.shape[0]
    if mesh is None:
        return local(data, data_lo, log_weights, q_hi, q_lo, rows, chol, log_norm, 0, grid=grid,
                     log_factors=log_factors)  # fmt: skip
    axis = mesh.axis_names[0]
    per_device = data.shape[0] // mesh.shape[axis]

    def on_shard(x, x_lo, lw, q_hi, q_lo, rows, chol, log_norm, grid, lf, index):
        out = local(x, x_lo, lw, q_hi, q_lo, rows, chol, log_norm, index * per_device,
                    grid=grid, log_factors=lf)  # fmt: skip
        return out.reshape(-1)

    specs = (P(axis), None if data_lo is None else P(axis), P(axis), P(),
             None if q_lo is None else P(), P(), P(), P(), P(),
             None if log_factors is None else P(axis))  # fmt: skip
    args = (data, data_lo, log_weights, q_hi, q_lo, rows, chol, log_norm, grid, log_factors)
    return reduce_shards(on_shard, mesh, axis, args, specs).reshape(m, g)


def _chol_and_log_det(params, kind, d):
    chol = bandwidth_from_params(params, kind, d)
    return chol, jnp.sum(jnp.log(chol if chol.ndim == 1 else jnp.diag(chol)))


@functools.partial(
    jax.jit,
    static_argnames=("kind", "kernel", "chunk_size", "block_size", "precision", "mesh"),
)
def _loo_at_scales(params, data, log_weights, rows, data_lo, log_scales, log_factors=None, *,
                   kind, kernel, chunk_size, block_size, precision, mesh):  # fmt: skip
    """The objective of :func:`loo_log_likelihood` at ``L * exp(s)`` for every ``s`` of
    ``log_scales`` ``(g,)``, from one shared distance computation: shape ``(g,)``."""
    d = data.shape[1]
    chol, log_det = _chol_and_log_det(params, kind, d)
    log_norm = kernel.log_normalizer(d, log_det + d * log_scales)
    local = functools.partial(_loo_log_sum, kernel=kernel, chunk_size=chunk_size,
                              block_size=block_size, precision=precision)  # fmt: skip
    if _sum_updates(d, kernel, mesh, log_factors):
        h = chol.reshape(()) * jnp.exp(log_scales)
        lse = jax.vmap(lambda b: loo_log_sums(data, data_lo, log_weights, rows, b,
                                              kernel=kernel))(h).T  # fmt: skip
    else:
        lse = _lse_on_grid(data, data_lo, log_weights, rows, chol, log_norm,
                           jnp.exp(-2.0 * log_scales), local=local, mesh=mesh,
                           log_factors=log_factors)  # fmt: skip
    own = log_weights[rows]
    log_loo = lse - jnp.log1p(-jnp.exp(own))[:, None] + log_norm[None, :]
    w = jnp.exp(own)
    return jnp.sum(w[:, None] * log_loo, axis=0) / jnp.sum(w)


@functools.partial(
    jax.jit,
    static_argnames=("kind", "kernel", "chunk_size", "block_size", "precision", "mesh"),
)
def lscv_at_scales(params, data, log_weights, rows, data_lo=None, log_scales=None, log_ref=0.0,
                   *, kind="scalar", kernel=get_kernel("gaussian"),  # noqa: B008
                   chunk_size=2048, block_size=256, precision="highest", mesh=None):  # fmt: skip
    """Negated least-squares cross-validation ``-LSCV(H) / exp(log_ref)`` of a Gaussian KDE at
    ``L * exp(s)`` for each ``s`` of ``log_scales`` ``(g,)`` (default one scale, 0): ``(g,)``.

    ``LSCV(H) = int f^2 - 2 sum_i w_i f_{-i}(x_i)``, with ``int f^2 = sum_ij w_i w_j
    phi_{2H}(x_i - x_j)`` in closed form (Gaussian kernel), both sums over the evaluation rows
    ``rows`` (their weights renormalised) and read, in log space, from one leave-one-out pass
    of the engine at the scales ``c`` and ``sqrt(2) c`` (the self pair added back for
    ``int f^2``). Differentiable in ``params``; arguments as :func:`loo_log_likelihood`.
    ``log_ref`` fixes the objective's unit (the optimiser's ``gtol`` is relative to it).
    """
    d = data.shape[1]
    log_scales = jnp.zeros((1,), data.dtype) if log_scales is None else log_scales
    g = log_scales.shape[0]
    chol, log_det = _chol_and_log_det(params, kind, d)
    both = jnp.concatenate([log_scales, log_scales + 0.5 * math.log(2.0)])
    log_norm = kernel.log_normalizer(d, log_det + d * both)
    local = functools.partial(_loo_log_sum, kernel=kernel, chunk_size=chunk_size,
                              block_size=block_size, precision=precision)  # fmt: skip
    lse = _lse_on_grid(data, data_lo, log_weights, rows, chol, log_norm, jnp.exp(-2.0 * both),
                       local=local, mesh=mesh)  # fmt: skip
    own = log_weights[rows]
    log_loo = lse[:, :g] - jnp.log1p(-jnp.exp(own))[:, None] + log_norm[None, :g]
    log_square = jnp.logaddexp(lse[:, g:], own[:, None]) + log_norm[None, g:]
    row_w = (own - jax.scipy.special.logsumexp(own))[:, None]
    loo = jnp.exp(jax.scipy.special.logsumexp(row_w + log_loo, axis=0) - log_ref)
    square = jnp.exp(jax.scipy.special.logsumexp(row_w + log_square, axis=0) - log_ref)
    return 2.0 * loo - square


def lscv_objective(params, data, log_weights, rows, data_lo=None, log_ref=0.0, **static):
    """:func:`lscv_at_scales` at the bandwidth ``params`` itself: a scalar to maximise."""
    static.pop("log_factors", None)  # fit_bandwidth refuses adaptive LSCV before this
    return lscv_at_scales(params, data, log_weights, rows, data_lo, None, log_ref, **static)[0]


def _check_init(init, kind: str, d: int) -> np.ndarray:
    """Validate a starting ``H`` (``(d,)`` diagonal or ``(d, d)``) for :func:`fit_bandwidth`."""
    try:
        h = np.asarray(init, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"init must be a bandwidth matrix H of numbers; got {init!r}.") from None
    if h.ndim == 0:
        h = np.full(d, float(h))
    if h.shape not in ((d,), (d, d)):
        raise ValueError(f"init must be H of shape ({d},) or ({d}, {d}); got {h.shape}.")
    if not np.all(np.isfinite(h)):
        raise ValueError("init must be finite; it contains NaN or inf.")
    if h.ndim == 1 and not np.all((h > 1e-300) & (h < 1e300)):
        raise ValueError(f"init must hold positive variances in [1e-300, 1e300]; got {h.tolist()}.")
    if h.ndim == 2:
        check_positive_definite(h, "init")
    return h


_DEFAULT_OPTIMIZER = optax.lbfgs()
_STATIC = ("kind", "kernel", "chunk_size", "block_size", "precision", "mesh")
#: What :func:`fit_bandwidth` maximises: the mean leave-one-out log-likelihood, or the
#: negated least-squares cross-validation (Gaussian kernel).
OBJECTIVES = ("likelihood", "lscv")


def _objective_fn(objective: str):
    """``fn(params, data, log_weights, rows, data_lo, log_ref, **static)`` to maximise."""
    if objective == "lscv":
        return lscv_objective
    return lambda p, x, lw, rows, x_lo, log_ref, log_factors=None, **static: loo_log_likelihood(
        p, x, lw, rows, x_lo, log_factors, **static
    )


_VALUE_AND_GRAD = {
    name: jax.jit(jax.value_and_grad(_objective_fn(name)), static_argnames=_STATIC)
    for name in OBJECTIVES
}


@functools.partial(jax.jit, static_argnames=(*_STATIC, "opt", "length", "objective"))
def _optimiser_steps(p, s, x, x_lo, lw, rows, log_ref, lf, *, length, opt, objective,
                     **static):  # fmt: skip
    """``length`` optimiser steps in one compiled loop; a non-finite step freezes the rest.

    The data are arguments, not constants captured by the trace (which would be copied into
    the compiled program and lose their sharding); the program is cached across calls.
    """
    extra = isinstance(opt, optax.GradientTransformationExtraArgs)

    def loss(q):
        return -_objective_fn(objective)(q, x, lw, rows, x_lo, log_ref, log_factors=lf,
                                         **static)  # fmt: skip

    def one(carry, _):
        p, s, alive = carry
        value, grad = jax.value_and_grad(loss)(p)
        if extra:
            updates, s_new = opt.update(grad, s, p, value=value, grad=grad, value_fn=loss)
        else:
            updates, s_new = opt.update(grad, s, p)
        p_new = optax.apply_updates(p, updates)
        ok = alive & jnp.all(jnp.isfinite(p_new)) & jnp.isfinite(value)
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(ok, new, old))
        return (keep(p_new, p), keep(s_new, s), ok), (-value, ok, jnp.max(jnp.abs(grad)))

    (p, s, _), (values, ok, grads) = lax.scan(one, (p, s, jnp.asarray(True)), None,
                                              length=length)  # fmt: skip
    return p, s, values, ok, grads


#: The scale search: a first grid of factors of the starting L (10^-3 to 10^1, a quarter
#: decade apart), moved by 3 decades while the best value sits at an edge, up to these limits.
def fit_bandwidth(
    X,
    sample_weight=None,
    *,
    kind: str = "scalar",
    objective: str = "likelihood",
    kernel: str | Kernel = "gaussian",
    init=None,
    optimizer: optax.GradientTransformation | None = None,
    max_steps: int = 500,
    gtol: float = 1e-3,
    xtol: float = 1e-3,
    tol: float = 1e-7,
    patience: int = 10,
    batch_size: int | None = None,
    key=0,
    chunk_size: int = 2048,
    block_size: int = 256,
    mesh: Mesh | None = None,
    dtype=None,
    log_factors=None,
) -> BandwidthFit:
    """Learn a bandwidth by maximising the leave-one-out likelihood, or by least-squares
    cross-validation.

    Two stages. First a **scale search**: the objective at ``c * L_init`` for 17 values of
    ``log c`` at a time (one shared distance computation per grid, as
    :func:`grid_log_likelihood`), the window re-centred on the best point seen until that
    point is bracketed (from 1e-12 to 1e6 times the start; :func:`jaxkde.scale_search.
    scale_search`, bounded), then refined inside the bracket until it is narrower than ``xtol``
    in ``log h``. This reaches optima many decades
    from the start, and finds when none exists. For ``kind="scalar"`` that is the answer.
    For ``"diagonal"`` and ``"full"`` an **optimiser** (L-BFGS with a zoom line search by
    default) then maximises the objective from the scaled start, until the largest entry of
    the gradient is at most ``gtol``.

    Parameters
    ----------
    X : array-like, shape (n, d)
        Read in float64; centred there, then split into double words of the working dtype. A
        global ``jax.Array`` whose rows live in several processes (with ``mesh``) is learned
        on where it lies: the rows are centred at the merged mean in their own process, and
        only the evaluation rows cross the network (:mod:`jaxkde.distributed`).
    sample_weight : array-like, shape (n,), optional
    kind : {"scalar", "diagonal", "full"}
        Parameterisation: ``H = h^2 I``, ``diag(h_i^2)`` or ``L L^T``.
    objective : {"likelihood", "lscv"}
        ``"likelihood"``: the mean leave-one-out log-likelihood (:func:`loo_log_likelihood`).
        ``"lscv"``: minus the least-squares cross-validation ``int f^2 - 2 mean f_{-i}(x_i)``
        (:func:`lscv_at_scales`, in units of its leave-one-out term at the scaled start), for
        the Gaussian kernel only (the one with ``int f^2`` in closed form).
    kernel : str
        Any kernel but tophat and univariate_gaussian (see the module docstring).
    init : array, optional
        Starting ``H`` (``(d,)`` diagonal or ``(d, d)``); default Scott's diagonal rule.
    optimizer : optax.GradientTransformation, optional
        Default ``optax.lbfgs()``; any optax transformation works (it receives the negated
        gradient, and ``value``, ``grad`` and ``value_fn`` when it takes extra arguments).
    max_steps : int
        Optimiser step budget.
    gtol : float
        Convergence: largest absolute gradient entry (nats per unit of log bandwidth).
    xtol : float
        Width in ``log h`` of the bracket that certifies the scale search's maximum.
    tol, patience
        The optimiser runs ``patience`` steps per compiled loop (one host round trip each) and
        stops as ``"stalled"`` when no parameter moved by more than ``tol`` over them.
    batch_size : int, optional
        Evaluation rows: all of them when ``n <= 4096`` (default), else a fixed random subset
        of this many (4096 by default) drawn from ``key``; the objective on those rows is the
        one maximised (the returned ``objective`` is on all rows).
    key : JAX PRNG key or int
    mesh : jax.sharding.Mesh, optional
        Shard the data by rows over the mesh's first axis (see :func:`loo_log_likelihood`);
        the result equals the single-device one up to rounding.
    dtype : numpy dtype, optional
        Working dtype (default from ``X``: float32, or float64 under x64).
    log_factors : array-like of shape (n,), optional
        Adaptive bandwidths (:mod:`jaxkde.adaptive`): row ``j``'s kernel is ``lambda_j^2 H``;
        the global ``H`` is learned with these ``log lambda_j`` held fixed (likelihood only).

    Returns
    -------
    BandwidthFit
        Its ``status`` says what happened; anything but ``"converged"`` also warns.
    """
    if kind not in PARAMETERISATIONS:
        raise ValueError(f"kind must be one of {list(PARAMETERISATIONS)}; got {kind!r}.")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None; got {mesh!r}.")
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}; got {objective!r}.")
    kern = _check_kernel(kernel)
    if objective == "lscv" and kern.name != "gaussian":
        raise ValueError(
            f"objective='lscv' needs the gaussian kernel (int f^2 in closed form); got kernel "
            f"{kern.name!r}."
        )
    max_steps = check_positive_int(max_steps, "max_steps")
    patience = check_positive_int(patience, "patience")
    block_size = check_positive_int(block_size, "block_size")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    gtol = check_real(gtol, "gtol", low=0.0)
    xtol = check_real(xtol, "xtol", low=0.0, low_open=True)
    tol = check_real(tol, "tol", low=0.0)
    learn = functools.partial(_learn, kind=kind, objective=objective, kernel=kern,
                              chunk_size=chunk_size, block_size=block_size, mesh=mesh,
                              optimizer=optimizer, max_steps=max_steps, gtol=gtol, xtol=xtol,
                              tol=tol, patience=patience)  # fmt: skip
    if distributed.is_global(X):
        if log_factors is not None:
            raise ValueError("log_factors (adaptive bandwidths) are not supported yet for X "
                             "spread over processes.")  # fmt: skip
        return _learn_across_processes(X, sample_weight, init, batch_size, key, dtype, learn)
    data, in_dtype = check_data(X, "X")
    dtype = in_dtype if dtype is None else np.dtype(dtype)
    n, d = data.shape
    if n < 2:
        raise ValueError(f"leave-one-out selection needs at least 2 rows of X; got {n}.")
    weights = check_weights(sample_weight, n)
    if weights is not None and np.count_nonzero(weights) < 2:
        raise ValueError(
            "leave-one-out selection needs at least 2 rows of X with positive sample_weight."
        )
    if log_factors is not None:
        if objective == "lscv":
            raise ValueError(
                "objective='lscv' has no closed-form int f^2 for adaptive bandwidths; use "
                "objective='likelihood' with log_factors."
            )
        log_factors = np.asarray(log_factors, np.float64).reshape(-1)
        if log_factors.shape != (n,) or not np.all(np.isfinite(log_factors)):
            raise ValueError(f"log_factors must be {n} finite numbers, one per row of X.")
    w64, log_w64 = normalized_log_weights(weights, n)
    if objective == "lscv" and d == 1 and mesh is None and init is None:
        binned = _binned_lscv_fit(data, weights, kind)
        if binned is not None:
            return binned
    centred = data - w64 @ data  # float64, on the host
    init, params0 = _start(init, lambda: _host_rule("scott", centred, w64), kind, d)
    hi, lo = _centred_words(centred, dtype)
    log_w = log_w64.astype(dtype)
    # Rows of zero weight count for nothing in the objective (and an isolated one would give
    # 0 * -inf): only positive-weight rows are evaluated.
    positive = np.flatnonzero(w64 > 0)
    eval_rows = _evaluation_rows(positive, batch_size, key)
    lf = None if log_factors is None else log_factors.astype(dtype)
    if mesh is None:
        x, x_lo, lw = jnp.asarray(hi), None if lo is None else jnp.asarray(lo), jnp.asarray(log_w)
        lf = None if lf is None else jnp.asarray(lf)
    else:  # pad the rows to equal shards (log weight -inf), then place them on the devices
        devices = mesh.shape[mesh.axis_names[0]]
        n_chunks, size = chunk_layout(-(-n // devices), chunk_size)
        pad = devices * n_chunks * size - n
        rows_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
        x = jax.device_put(np.pad(hi, ((0, pad), (0, 0))), rows_sharding)
        x_lo = None if lo is None else jax.device_put(np.pad(lo, ((0, pad), (0, 0))),
                                                       rows_sharding)  # fmt: skip
        lw = jax.device_put(np.pad(log_w, (0, pad), constant_values=-np.inf), rows_sharding)
        lf = None if lf is None else jax.device_put(np.pad(lf, (0, pad)), rows_sharding)
    lowest = SCALE_LIMITS[0]
    if _sum_updates(d, kern, mesh, lf):
        # Sum updating places points in unit cells of the working dtype: keep x / h within
        # its exact range (2^22 bandwidths of float32 from the centre).
        span = float(np.max(np.abs(centred)))
        start_scale = float(np.sqrt(init.max()))
        if span > 0:
            lowest = max(lowest, math.log(span / _MAX_WHITENED[np.dtype(dtype)] / start_scale))
    return learn((x, x_lo, lw, lf, eval_rows, positive), init, params0, lowest, dtype=dtype)


def _start(init, default, kind: str, d: int) -> tuple[np.ndarray, np.ndarray]:
    """``(H, params)`` to start from: ``init``, or the rule ``default()`` (Scott's diagonal)."""
    if init is None:
        init = default()
        if not init.max() > 0:
            raise ValueError("X has no variance (every feature constant): no bandwidth to learn.")
        init = np.maximum(init, 1e-12 * init.max())
    init = _check_init(init, kind, d)
    params0 = params_from_bandwidth(init, kind)
    if kind == "scalar":  # the search scales an isotropic start
        init = np.full(d, math.exp(2.0 * float(params0)))
    return init, params0


def _centred_words(centred: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray | None]:
    hi, lo = split_double_word(centred, dtype)
    if not np.all(np.isfinite(hi)):
        raise ValueError(
            f"X, centred, overflows {np.dtype(dtype).name}; rescale X or enable float64."
        )
    return hi, lo


def _evaluation_rows(positive: np.ndarray, batch_size, key) -> np.ndarray:
    """All the rows ``positive`` (up to 4096 of them by default), or a sorted random subset of
    ``batch_size`` drawn from ``key``."""
    n_pos = positive.size
    batch = min(n_pos, 4096) if batch_size is None else check_positive_int(batch_size, "batch_size")
    if min(batch, n_pos) < n_pos:
        return np.sort(positive[np.asarray(jax.random.permutation(as_key(key), n_pos))[:batch]])
    return positive


def _learn_across_processes(X, sample_weight, init, batch_size, key, dtype, learn):
    """:func:`fit_bandwidth` of a global ``X`` whose rows live in several processes
    (:mod:`jaxkde.distributed`): each process centres and places its own rows; the
    leave-one-out sums run on the sharded data (:func:`loo_log_likelihood` with a mesh), whose
    evaluation rows XLA gathers by a masked local gather and a sum over devices."""
    mesh = learn.keywords["mesh"]
    if mesh is None:
        raise ValueError("X is a global jax.Array spread over processes: pass mesh=... with "
                         "a mesh over its devices.")  # fmt: skip
    x = distributed.process_rows(X, "X")
    w = None if sample_weight is None else distributed.process_rows(sample_weight, "sample_weight")
    if not np.all(np.isfinite(x)) or (w is not None and not np.all(np.isfinite(w) & (w >= 0))):
        raise ValueError("X must be finite and sample_weight finite and non-negative.")
    stats = distributed.global_moments(x, w)
    d = x.shape[1]
    if int(stats.counts.sum()) < 2:
        raise ValueError("leave-one-out selection needs at least 2 rows of X.")
    dtype = working_dtype(X.dtype) if dtype is None else np.dtype(dtype)
    init, params0 = _start(init, lambda: rule_bandwidth("scott", stats), learn.keywords["kind"], d)
    hi, lo = _centred_words(x - stats.mean, dtype)
    w = np.ones(x.shape[0]) if w is None else w
    with np.errstate(divide="ignore"):
        log_w = (np.log(w) - math.log(stats.total_weight)).astype(dtype)
    # Every process holds the same number of rows per device: its own, padded with weight 0.
    local_devices = mesh.devices.size // jax.process_count()
    n_chunks, size = chunk_layout(-(-int(stats.counts.max()) // local_devices),
                                  learn.keywords["chunk_size"])  # fmt: skip
    per_process = local_devices * n_chunks * size
    pad = per_process - x.shape[0]
    rows = NamedSharding(mesh, P(mesh.axis_names[0]))

    def place(a, fill=0.0):
        a = np.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1), constant_values=fill)
        return jax.make_array_from_process_local_data(rows, a)

    mine = np.flatnonzero(w > 0) + jax.process_index() * per_process
    counts = distributed.allgather_float64(np.array([mine.size], np.float64))[:, 0].astype(int)
    padded = np.full(int(counts.max()), -1.0)
    padded[: mine.size] = mine
    every = distributed.allgather_float64(padded)
    positive = np.concatenate([every[p, : counts[p]] for p in range(counts.size)]).astype(int)
    if positive.size < 2:
        raise ValueError(
            "leave-one-out selection needs at least 2 rows of X with positive sample_weight."
        )
    arrays = (place(hi), None if lo is None else place(lo), place(log_w, -np.inf), None,
              _evaluation_rows(positive, batch_size, key), positive)  # fmt: skip
    return learn(arrays, init, params0, SCALE_LIMITS[0], dtype=dtype)


def _learn(
    arrays,
    init,
    params0,
    lowest,
    *,
    kind,
    objective,
    kernel,
    chunk_size,
    block_size,
    mesh,
    dtype,
    optimizer,
    max_steps,
    gtol,
    xtol,
    tol,
    patience,
) -> BandwidthFit:
    """The two stages of :func:`fit_bandwidth` on prepared arrays: the centred data's words
    ``x``, ``x_lo``, log weights ``lw``, adaptive ``lf`` (placed on the devices), and the
    evaluation and positive-weight rows ``eval_rows``, ``positive`` (host indices)."""
    x, x_lo, lw, lf, eval_rows, positive = arrays
    kern, d = kernel, x.shape[1]
    batch, n_pos = eval_rows.shape[0], positive.shape[0]
    eval_rows = jnp.asarray(eval_rows)
    static = {"kind": kind, "kernel": kern, "chunk_size": chunk_size, "block_size": block_size,
              "precision": "highest", "mesh": mesh}  # fmt: skip
    value_fn = functools.partial(_objective_fn(objective), **static)
    value_and_grad = functools.partial(_VALUE_AND_GRAD[objective], **static)
    start = jnp.asarray(params0, dtype)
    log_ref = jnp.asarray(0.0, dtype)
    if objective == "lscv":  # LSCV in units of its leave-one-out term at the start
        both = lscv_at_scales(start, x, lw, eval_rows, x_lo, jnp.zeros(1, dtype), log_ref,
                              **static)  # fmt: skip
        term = float(jnp.abs(both[0]))
        log_ref = jnp.asarray(math.log(term) if term > 0 and math.isfinite(term) else 0.0, dtype)

    def value_and_gradient(p) -> tuple[float, float]:
        """The objective on all rows, and the largest gradient entry on the evaluation rows
        (one program when those are all the rows)."""
        value, grad = value_and_grad(p, x, lw, eval_rows, x_lo, log_ref, log_factors=lf)
        if batch < n_pos:
            value = value_fn(p, x, lw, jnp.asarray(positive), x_lo, log_ref, log_factors=lf)
        # LSCV's value in density units; its gradient in the optimiser's (relative to gtol).
        return float(value) * math.exp(float(log_ref)), float(jnp.max(jnp.abs(grad)))

    # Stage 1: the scale of the starting bandwidth, over as many decades as it takes.
    def evaluate(log_scales):
        scales = jnp.asarray(log_scales, dtype)
        if objective == "lscv":
            return lscv_at_scales(start, x, lw, eval_rows, x_lo, scales, log_ref, **static)
        return _loo_at_scales(start, x, lw, eval_rows, x_lo, scales, lf, **static)

    status, log_c, _, _ = scale_search(evaluate, xtol, lowest)
    if status != "converged":
        value, gradient = value_and_gradient(start)
        fit = BandwidthFit(init, value, np.zeros(0), 0, False, params0, status, gradient)
        _warn_fit(fit, objective)
        return fit
    scaled = init * math.exp(2.0 * log_c)
    params = jnp.asarray(params_from_bandwidth(scaled, kind), dtype)

    if kind == "scalar":
        value, gradient = value_and_gradient(params)
        fit = BandwidthFit(_matrix(params, kind, d), value, np.zeros(0), 0, True,
                           np.asarray(params), "converged", gradient, math.exp(log_c))  # fmt: skip
        return fit

    # Stage 2: the optimiser, from the scaled start.
    opt = _DEFAULT_OPTIMIZER if optimizer is None else optimizer
    opt_state = opt.init(params)
    steps_static = {**static, "opt": opt, "objective": objective}

    trace: list[float] = []
    steps = 0
    status = "max_steps"
    while steps < max_steps:
        anchor = params
        length = min(patience, max_steps - steps)
        params, opt_state, values, ok, grads = _optimiser_steps(
            params,
            opt_state,
            x,
            x_lo,
            lw,
            eval_rows,
            log_ref,
            lf,
            length=length,
            **steps_static,
        )
        ok, grads = np.asarray(ok), np.asarray(grads)
        trace.extend(np.asarray(values)[ok].astype(np.float64).tolist())
        steps += int(ok.sum())
        if not ok.all():  # a step left the finite range: keep the last finite parameters
            status = "nonfinite"
            break
        if grads[-1] <= gtol:  # the gradient at the last step's start
            status = "converged"
            break
        if float(jnp.max(jnp.abs(params - anchor))) <= tol:
            status = "stalled"
            break
    value, gradient = value_and_gradient(params)
    if status != "nonfinite" and gradient <= gtol:
        status = "converged"
    fit = BandwidthFit(_matrix(params, kind, d), value, np.asarray(trace), steps,
                       status == "converged", np.asarray(params), status, gradient,
                       math.exp(log_c))  # fmt: skip
    if status != "converged":
        _warn_fit(fit, objective)
    return fit


def _binned_lscv_fit(data: np.ndarray, weights, kind: str) -> BandwidthFit | None:
    """1-D least-squares cross-validation on bins (:func:`jaxkde.selectors.lscv_bandwidth`),
    ``O(n + M log M)``; ``None`` where bins cannot resolve it (the engine then runs)."""
    from .selectors import SelectorError, _lscv_1d_value, lscv_bandwidth

    try:
        h2 = lscv_bandwidth(data, weights)
    except SelectorError:
        return None
    params = params_from_bandwidth(h2, kind)
    value = -_lscv_1d_value(data, weights, float(h2[0]))
    return BandwidthFit(h2, value, np.zeros(0), 0, True, np.asarray(params), "converged")


def _matrix(params, kind: str, d: int) -> np.ndarray:
    chol = np.asarray(bandwidth_from_params(params, kind, d), np.float64)
    return chol**2 if chol.ndim == 1 else chol @ chol.T


_FAILURES = {
    ("unbounded", "likelihood"): "the leave-one-out likelihood keeps growing as the bandwidth "
    "shrinks (down to 1e-12 times the start): it has no maximum, as when every point has an "
    "exact duplicate. Remove the duplicates or choose the bandwidth by a rule.",
    ("unbounded", "lscv"): "least-squares cross-validation keeps decreasing as the bandwidth "
    "shrinks (down to 1e-12 times the start): it has no minimum, as when the data have exact "
    "duplicates (their leave-one-out density grows without bound). Remove the duplicates or "
    "choose the bandwidth by a rule.",
    ("nonfinite", "likelihood"): "the leave-one-out likelihood is -inf or NaN at every "
    "bandwidth tried (from 1e-12 to 1e6 times the start): some point has no neighbour the "
    "kernel reaches, or all the weight sits on one point.",
    ("nonfinite", "lscv"): "least-squares cross-validation is not finite at any bandwidth "
    "tried, or keeps decreasing up to 1e6 times the start.",
}
_NOT_CONVERGED = {
    "max_steps": "the optimiser spent max_steps without reaching gtol; the last bandwidth is "
    "returned (raise max_steps, or loosen gtol).",
    "stalled": "the optimiser stopped moving before the gradient reached gtol; the last "
    "bandwidth is returned.",
}


def fit_failure(status: str, objective: str = "likelihood") -> str | None:
    """What a :class:`BandwidthFit`'s ``status`` means when no bandwidth was found
    (``"unbounded"``, ``"nonfinite"``) for that ``objective``; ``None`` for other statuses."""
    return _FAILURES.get((status, objective))


def _warn_fit(fit: BandwidthFit, objective: str) -> None:
    failure = fit_failure(fit.status, objective)
    message = (_NOT_CONVERGED[fit.status] if failure is None
               else failure + " The starting bandwidth is returned.")  # fmt: skip
    warnings.warn(
        f"fit_bandwidth: {message} (status {fit.status!r}, largest gradient entry "
        f"{fit.gradient:.3g}).",
        RuntimeWarning,
        stacklevel=3,
    )


@functools.partial(jax.jit, static_argnames=("precision",))
def _grid_block(state, q_hi, q_lo, rows, grid, log_norm, *, precision):
    # The direct tier alone, as before the tiers: one fused program per fold shape, and the
    # product tiers would double its compile time for queries a grid rarely marks.
    return _logsumexp(state, q_hi, q_lo, precision, rows, grid=grid, log_normalizer=log_norm,
                      tiers=DIRECT_TIER)  # fmt: skip


def grid_log_likelihood(
    X,
    queries=None,
    bandwidths=(1.0,),
    *,
    sample_weight=None,
    kernel: str = "gaussian",
    block_size: int = 256,
    chunk_size: int = 2048,
    precision: str = "highest",
) -> np.ndarray:
    """Log densities of ``queries`` under KDEs of ``X`` for many scalar bandwidths at once.

    Every block of squared distances is computed once and shared by the whole grid, with the
    engine's accuracy (data centred in float64, direct differences in low dimension, the
    rounding-error account of the matrix products above). With ``queries=None`` the rows of
    ``X`` are scored leave-one-out (their own term excluded).

    Returns
    -------
    np.ndarray, shape (n_queries, n_bandwidths)
    """
    kern = get_kernel(kernel) if isinstance(kernel, str) else kernel
    if kern.norm != 2.0 or isinstance(kern, UnivariateGaussianKernel):
        raise ValueError("grid_log_likelihood supports the six normalised kernels.")
    data, dtype = check_data(X, "X")
    n, d = data.shape
    try:
        hs = np.asarray(bandwidths, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"bandwidths must be positive numbers; got {bandwidths!r}.") from None
    if hs.size == 0 or not np.all(np.isfinite(hs) & (hs > 0)):
        raise ValueError(f"bandwidths must be positive numbers; got {bandwidths!r}.")
    loo = queries is None
    q = data if loo else check_data(queries, "queries", n_features=d)[0]
    weights = check_weights(sample_weight, n)
    state = build_state(data, weights, np.ones(d), kern, chunk_size=chunk_size, dtype=dtype)
    q_hi, q_lo = whiten_queries(state, q)
    with np.errstate(over="ignore"):
        grid = jnp.asarray((1.0 / hs**2).astype(dtype))
    log_norm = np.array([float(kern.log_normalizer(d, d * math.log(h))) for h in hs])
    log_norm_j = jnp.asarray(log_norm.astype(dtype))
    out = []
    m = q_hi.shape[0]
    for start in range(0, m, block_size):
        stop = min(start + block_size, m)
        rows = np.arange(start, stop)
        blk_hi, blk_lo = q_hi[start:stop], None if q_lo is None else q_lo[start:stop]
        if stop - start < block_size:  # pad the last block: one compiled shape
            extra = block_size - (stop - start)
            blk_hi = jnp.concatenate([blk_hi, jnp.repeat(blk_hi[:1], extra, axis=0)])
            if blk_lo is not None:
                blk_lo = jnp.concatenate([blk_lo, jnp.repeat(blk_lo[:1], extra, axis=0)])
            rows = np.concatenate([rows, np.full(extra, -1)])
        out.append(_grid_block(state, blk_hi, blk_lo, jnp.asarray(rows) if loo else None, grid,
                               log_norm_j, precision=precision))  # fmt: skip
    lse = np.concatenate([np.asarray(r) for r in out])[:m].astype(np.float64)
    if loo:
        w, _ = normalized_log_weights(weights, n)
        with np.errstate(divide="ignore"):
            lse = lse - np.log1p(-w)[:, None]
    return lse + log_norm[None, :]


class ParzenResult(NamedTuple):
    """Result of :func:`parzen_log_likelihood`.

    Attributes
    ----------
    mean : float
        Mean log-likelihood of the test points (nats).
    stderr : float
        Population standard deviation of the per-point log-likelihoods / sqrt(n_test).
    sigma : float
        The window width used.
    sigmas : np.ndarray
        The grid searched.
    validation_means : np.ndarray or None
        Mean validation log-likelihood for each sigma of the grid.
    """

    mean: float
    stderr: float
    sigma: float
    sigmas: np.ndarray
    validation_means: np.ndarray | None


def parzen_log_likelihood(
    samples, test, validation=None, sigmas=None, *, block_size: int = 256, mesh=None
) -> ParzenResult:
    """The Parzen-window estimate of a generative model's test log-likelihood.

    The protocol of Breuleux et al. (2011), used by Goodfellow et al. (2014, Table 1): an
    isotropic Gaussian KDE with the model's ``samples`` as centres,
    ``log p(x) = logsumexp_i(-|x - s_i|^2 / (2 sigma^2)) - log n - (d/2) log(2 pi sigma^2)``;
    ``sigma`` is the value of the grid (default ``numpy.logspace(-1, 0, 10)``, as the original
    code) with the highest mean log-likelihood on ``validation``; the result is the mean over
    ``test`` with its standard error, the population standard deviation over sqrt(n_test).

    Parameters
    ----------
    samples : array-like, shape (n, d)
        Generated points (for MNIST: pixels in [0, 1]).
    test : array-like, shape (m, d)
    validation : array-like, shape (k, d), optional
        Needed when ``sigmas`` has more than one value.
    sigmas : array-like, optional
    block_size : int
        Queries per block.
    mesh : jax.sharding.Mesh, optional
        With ``samples`` a global ``jax.Array`` whose rows are spread over processes
        (:mod:`jaxkde.distributed`): each sigma is a ``KDE(bandwidth=sigma, mesh=mesh)`` fitted
        across processes, the same estimate (every process gets the result).
    """
    if mesh is not None:
        return _parzen_across_processes(samples, test, validation, sigmas, block_size, mesh)
    samples = check_data(samples, "samples")[0]
    test, validation, grid = _parzen_inputs(samples.shape[1], test, validation, sigmas, block_size)
    val_means = None
    if validation is not None:
        val = grid_log_likelihood(samples, validation, grid, block_size=block_size)
        val_means = val.mean(axis=0)
        sigma = float(grid[int(np.argmax(val_means))])
    else:
        sigma = float(grid[0])
    ll = grid_log_likelihood(samples, test, [sigma], block_size=block_size)[:, 0]
    return _parzen_result(ll, sigma, grid, val_means)


def _parzen_inputs(d, test, validation, sigmas, block_size):
    test = check_data(test, "test", n_features=d, owner="samples")[0]
    if validation is not None:
        validation = check_data(validation, "validation", n_features=d, owner="samples")[0]
    if sigmas is None:
        grid = np.logspace(-1, 0, 10)
    else:
        try:
            grid = np.asarray(sigmas, np.float64).ravel()
        except (TypeError, ValueError):
            raise TypeError(f"sigmas must be positive numbers; got {sigmas!r}.") from None
        if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
            raise ValueError(f"sigmas must be positive numbers; got {sigmas!r}.")
    check_positive_int(block_size, "block_size")
    if validation is None and grid.size != 1:
        raise ValueError("validation is needed to choose sigma from a grid; or pass one sigma.")
    return test, validation, grid


def _parzen_across_processes(samples, test, validation, sigmas, block_size, mesh):
    """:func:`parzen_log_likelihood` of samples spread over processes: a KDE per sigma."""
    from .kde import KDE

    test, validation, grid = _parzen_inputs(samples.shape[1], test, validation, sigmas,
                                            block_size)  # fmt: skip

    def scores(sigma, queries):
        kde = KDE(bandwidth=float(sigma), mesh=mesh, batch_size=block_size).fit(samples)
        return kde.score_samples(queries.astype(np.float32)).astype(np.float64)

    val_means = None
    if validation is not None:
        val_means = np.array([scores(s, validation).mean() for s in grid])
        sigma = float(grid[int(np.argmax(val_means))])
    else:
        sigma = float(grid[0])
    return _parzen_result(scores(sigma, test), sigma, grid, val_means)


def _parzen_result(ll, sigma, grid, val_means) -> ParzenResult:
    return ParzenResult(
        mean=float(ll.mean()),
        stderr=float(ll.std() / math.sqrt(ll.size)),
        sigma=sigma,
        sigmas=grid,
        validation_means=val_means,
    )
