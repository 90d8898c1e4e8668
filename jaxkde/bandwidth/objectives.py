"""Cross-validation objectives of a bandwidth, as pure jitted functions of its parameters.

* :func:`loo_log_likelihood`: the mean leave-one-out log-likelihood of the data as a
  differentiable function of unconstrained bandwidth parameters (``log h``, ``log h_i`` or a
  Cholesky factor with a log diagonal), computed by the engine's blocked log-sum-exp with
  self-pairs excluded exactly and each scan step rematerialised in the backward pass (memory
  bounded by the block sizes).
* :func:`lscv_objective`, :func:`lscv_at_scales`: least-squares cross-validation (Gaussian).
* :func:`grid_log_likelihood`: log densities for many scalar bandwidths at once, sharing one
  distance computation per block.
* :func:`bandwidth_from_params`, :func:`params_from_bandwidth`: the parameterisations.

:mod:`jaxkde.bandwidth.learned` optimises these objectives.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxkde._validation import (
    check_data,
    check_weights,
)
from jaxkde.core.engine import DIRECT_MAX_DIM, DIRECT_TIER, DirectCoordinates, _logsumexp
from jaxkde.core.kernels import Kernel, TophatKernel, UnivariateGaussianKernel, get_kernel
from jaxkde.core.sharding import reduce_shards
from jaxkde.core.state import (
    KDEState,
    build_state,
    chunk_layout,
    chunk_rows,
    normalized_log_weights,
    whiten_queries,
)
from jaxkde.core.sum_updating import _MAX_WHITENED, SUM_UPDATING_KERNELS, loo_log_sums

__all__ = [
    "OBJECTIVES",
    "PARAMETERISATIONS",
    "bandwidth_from_params",
    "grid_log_likelihood",
    "loo_log_likelihood",
    "lscv_at_scales",
    "lscv_objective",
    "params_from_bandwidth",
]


PARAMETERISATIONS = ("scalar", "diagonal", "full")


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
            "every normalised kernel but tophat."
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

    Distances follow the engine (:func:`jaxkde.core.engine._logsumexp`): matrix products of
    the whitened points with an error account, or direct differences of the centred
    double-word coordinates whitened per pair (``L`` diagonal, or full up to
    ``DIRECT_MAX_DIM`` features; above that, of the whitened words).
    """
    n, d = x_hi.shape
    n_chunks, size = chunk_layout(n, chunk_size)
    chunks = functools.partial(chunk_rows, n_chunks=n_chunks, size=size)

    z_hi, _ = _whiten_rows(x_hi, chol)
    z_lo = None if x_lo is None else _whiten_rows(x_lo, chol)[0]
    zq_hi, _ = _whiten_rows(q_hi, chol)
    zq_lo = None if q_lo is None else _whiten_rows(q_lo, chol)[0]
    state = KDEState(
        points=chunks(z_hi),
        points_lo=None if z_lo is None else chunks(z_lo),
        sq_norms=chunks(jnp.sum(z_hi * z_hi, axis=1)),
        log_weights=chunks(log_weights, fill=-jnp.inf),
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
    # triple its compile time (see jaxkde.core.engine.DIRECT_TIER).
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
        sums are merged exactly (:func:`jaxkde.core.sharding.reduce_shards`).
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
        raise ValueError("grid_log_likelihood supports the normalised kernels with p = 2.")
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
