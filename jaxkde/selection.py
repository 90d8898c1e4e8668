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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._validation import check_data, check_positive_int, check_weights
from .bandwidths import scott_bandwidth
from .engine import _block_logsumexp, lse_finish, lse_update, pairwise_sq_distances
from .kernels import Kernel, TophatKernel, UnivariateGaussianKernel, get_kernel
from .sharding import reduce_shards
from .state import KDEState, chunk_layout

__all__ = [
    "CV_RULES",
    "PARAMETERISATIONS",
    "BandwidthFit",
    "ParzenResult",
    "bandwidth_from_params",
    "fit_bandwidth",
    "grid_log_likelihood",
    "loo_log_likelihood",
    "params_from_bandwidth",
    "parzen_log_likelihood",
]

PARAMETERISATIONS = ("scalar", "diagonal", "full")
#: Bandwidth names that learn H by leave-one-out likelihood, and their parameterisation.
CV_RULES = {"cv": "scalar", "cv_diagonal": "diagonal", "cv_full": "full"}
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


def _whiten_rows(x: jax.Array, chol: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``L^{-1} x`` row by row for a diagonal ``(d,)`` or triangular ``(d, d)`` ``L``; log|L|."""
    if chol.ndim == 1:
        return x / chol, jnp.sum(jnp.log(chol))
    z = jax.scipy.linalg.solve_triangular(chol, x.T, lower=True).T
    return z, jnp.sum(jnp.log(jnp.diag(chol)))


def _loo_log_sum(data, log_weights, zq, rows, chol, row_offset, *, kernel, chunk_size,
                 block_size, precision) -> jax.Array:  # fmt: skip
    """``log sum_{j != i} w_j k(|zq_i - z_j|^2)`` over the rows of ``data`` (a whole data set or
    one device's shard starting at global row ``row_offset``), for the queries ``zq`` that are
    the data rows ``rows``; shape ``(m,)``. Built inside a trace: differentiable in ``chol``.
    """
    n, d = data.shape
    n_chunks, size = chunk_layout(n, chunk_size)
    z, _ = _whiten_rows(data, chol)
    pad = n_chunks * size - n
    z = jnp.pad(z, ((0, pad), (0, 0)))
    lw = jnp.pad(log_weights, (0, pad), constant_values=-jnp.inf)
    state = KDEState(
        points=z.reshape(n_chunks, size, d),
        sq_norms=jnp.sum(z * z, axis=1).reshape(n_chunks, size),
        log_weights=lw.reshape(n_chunks, size),
        mean=jnp.zeros((d,), data.dtype),
        chol=chol,
        basis=None,
        log_normalizer=jnp.zeros((), data.dtype),
        n_samples=n,
        kernel=kernel,
    )
    m = rows.shape[0]
    if m <= block_size:
        return _block_logsumexp(state, zq, precision, rows, remat=True, row_offset=row_offset)
    blocks = m // block_size
    return lax.map(
        lambda args: _block_logsumexp(
            state, args[0], precision, args[1], remat=True, row_offset=row_offset
        ),
        (zq.reshape(blocks, block_size, d), rows.reshape(blocks, block_size)),
    ).reshape(-1)


@functools.partial(
    jax.jit,
    static_argnames=("kind", "kernel", "chunk_size", "block_size", "precision", "mesh"),
)
def loo_log_likelihood(
    params: jax.Array,
    data: jax.Array,
    log_weights: jax.Array,
    rows: jax.Array,
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
        Centred data (subtracting the mean changes nothing but rounding).
    log_weights : array, shape (n,)
        Normalised log weights (log-sum-exp 0); padding rows carry -inf.
    rows : int array, shape (m,)
        Evaluation points, as rows of ``data``; ``m`` a multiple of ``block_size`` or smaller.
    mesh : jax.sharding.Mesh, optional
        ``data`` and ``log_weights`` are sharded by rows along the mesh's first axis (``n`` a
        multiple of its size): each device sums over its own rows and the partial sums are
        merged exactly (:func:`jaxkde.sharding.reduce_shards`).
    """
    d = data.shape[1]
    chol = bandwidth_from_params(params, kind, d)
    zq, log_det = _whiten_rows(data[rows], chol)
    local = functools.partial(_loo_log_sum, kernel=kernel, chunk_size=chunk_size,
                              block_size=block_size, precision=precision)  # fmt: skip
    if mesh is None:
        lse = local(data, log_weights, zq, rows, chol, 0)
    else:
        axis = mesh.axis_names[0]
        per_device = data.shape[0] // mesh.shape[axis]

        def on_shard(x, lw, zq, rows, chol, index):
            return local(x, lw, zq, rows, chol, index * per_device)

        lse = reduce_shards(on_shard, mesh, axis, (data, log_weights, zq, rows, chol),
                            (P(axis), P(axis), P(), P(), P()))  # fmt: skip
    own = log_weights[rows]
    # f_{-i}(x_i) = sum_{j != i} w_j K / (1 - w_i); a point with all the weight has none left.
    log_loo = lse - jnp.log1p(-jnp.exp(own)) + kernel.log_normalizer(d, log_det)
    w = jnp.exp(own)
    return jnp.sum(w * log_loo) / jnp.sum(w)


class BandwidthFit(NamedTuple):
    """Result of :func:`fit_bandwidth`.

    Attributes
    ----------
    matrix : np.ndarray
        The learned ``H``: ``(d,)`` diagonal (scalar, diagonal) or ``(d, d)`` (full).
    objective : float
        Mean leave-one-out log-likelihood at ``matrix``, on all the data.
    trace : np.ndarray
        The objective (on each step's minibatch) at every step.
    steps : int
    converged : bool
        Whether the tolerance was met before the step budget ran out.
    params : np.ndarray
    """

    matrix: np.ndarray
    objective: float
    trace: np.ndarray
    steps: int
    converged: bool
    params: np.ndarray


def fit_bandwidth(
    X,
    sample_weight=None,
    *,
    kind: str = "scalar",
    kernel: str | Kernel = "gaussian",
    init=None,
    optimizer: optax.GradientTransformation | None = None,
    max_steps: int = 500,
    tol: float = 1e-4,
    patience: int = 10,
    batch_size: int | None = None,
    key=0,
    chunk_size: int = 2048,
    block_size: int = 256,
    mesh: Mesh | None = None,
) -> BandwidthFit:
    """Learn a bandwidth by maximising the leave-one-out likelihood with optax.

    Parameters
    ----------
    X : array-like, shape (n, d)
    sample_weight : array-like, shape (n,), optional
    kind : {"scalar", "diagonal", "full"}
        Parameterisation: ``H = h^2 I``, ``diag(h_i^2)`` or ``L L^T``.
    kernel : str
        Any kernel but tophat and univariate_gaussian (see the module docstring).
    init : array, optional
        Starting ``H`` (``(d,)`` diagonal or ``(d, d)``); default Scott's diagonal rule.
    optimizer : optax.GradientTransformation, optional
        Default: Adam on the parameters with a learning rate of 0.1 halved every 25 steps.
    max_steps, tol, patience
        Stop after ``max_steps``, or once no parameter has moved by more than ``tol`` (in log
        bandwidth: a relative change of ``tol``) over the last ``patience`` steps. The steps
        between two such checks run as one compiled loop on the device (one host round trip
        per ``patience`` steps).
    batch_size : int, optional
        Evaluation points per step (a multiple of ``block_size`` is best); default all points
        when ``n <= 4096``, else 4096. Minibatches are drawn without replacement from ``key``.
    key : JAX PRNG key or int
    mesh : jax.sharding.Mesh, optional
        Shard the data by rows over the mesh's first axis (see :func:`loo_log_likelihood`);
        the result equals the single-device one up to rounding.
    """
    from .sampling import as_key

    if kind not in PARAMETERISATIONS:
        raise ValueError(f"kind must be one of {list(PARAMETERISATIONS)}; got {kind!r}.")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None; got {mesh!r}.")
    kern = _check_kernel(kernel)
    data = check_data(X, "X")
    n, d = data.shape
    if n < 2:
        raise ValueError(f"leave-one-out selection needs at least 2 rows of X; got {n}.")
    weights = check_weights(sample_weight, n, data.dtype)
    max_steps = check_positive_int(max_steps, "max_steps")
    patience = check_positive_int(patience, "patience")
    block_size = check_positive_int(block_size, "block_size")
    w = np.ones(n) if weights is None else weights.astype(np.float64)
    with np.errstate(divide="ignore"):
        log_w = np.log(w / w.sum()).astype(data.dtype)
    centred = (data - np.average(data.astype(np.float64), axis=0, weights=w)).astype(data.dtype)
    if init is None:
        init = np.asarray(scott_bandwidth(jnp.asarray(centred),
                                          None if weights is None else jnp.asarray(w)))  # fmt: skip
        init = np.maximum(init, 1e-12 * init.max())
    params = jnp.asarray(params_from_bandwidth(init, kind), data.dtype)
    batch = min(n, 4096) if batch_size is None else check_positive_int(batch_size, "batch_size")
    batch = min(batch, n)
    if batch > block_size:
        batch -= batch % block_size
    if optimizer is None:
        schedule = optax.exponential_decay(0.1, transition_steps=25, decay_rate=0.5)
        optimizer = optax.adam(schedule)
    opt = optimizer
    opt_state = opt.init(params)
    if mesh is None:
        x, lw = jnp.asarray(centred), jnp.asarray(log_w)
    else:  # pad the rows to equal shards (log weight -inf), then place them on the devices
        devices = mesh.shape[mesh.axis_names[0]]
        n_chunks, size = chunk_layout(-(-n // devices), chunk_size)
        pad = devices * n_chunks * size - n
        rows_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
        x = jax.device_put(np.pad(centred, ((0, pad), (0, 0))), rows_sharding)
        lw = jax.device_put(np.pad(log_w, (0, pad), constant_values=-np.inf), rows_sharding)
    objective = functools.partial(loo_log_likelihood, kind=kind, kernel=kern,
                                  chunk_size=chunk_size, block_size=block_size,
                                  mesh=mesh)  # fmt: skip
    all_rows = jnp.arange(n)
    weights_np = np.exp(log_w.astype(np.float64))

    def full_objective(p) -> float:
        usable = n if n <= block_size else n - n % block_size
        parts = [(0, usable)] + ([(usable, n)] if usable < n else [])
        total = sum(float(objective(p, x, lw, all_rows[a:b])) * weights_np[a:b].sum()
                    for a, b in parts)  # fmt: skip
        return total / weights_np.sum()

    @functools.partial(jax.jit, static_argnames="length")
    def run_steps(p, s, key, x, lw, length):
        """``length`` optimiser steps in one compiled loop; a non-finite step freezes the rest.

        The data are arguments, not constants captured by the trace (which would be copied
        into the compiled program and lose their sharding).
        """

        def one(carry, _):
            p, s, key, alive = carry
            key, sub = jax.random.split(key)
            rows = jax.random.permutation(sub, n)[:batch] if batch < n else jnp.arange(n)
            value, grad = jax.value_and_grad(objective)(p, x, lw, rows)
            updates, s_new = opt.update(-grad, s, p)  # maximise
            p_new = optax.apply_updates(p, updates)
            ok = alive & jnp.all(jnp.isfinite(p_new))
            keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(ok, new, old))
            return (keep(p_new, p), keep(s_new, s), key, ok), (value, ok)

        (p, s, key, _), (values, ok) = lax.scan(one, (p, s, key, jnp.asarray(True)), None,
                                                length=length)  # fmt: skip
        return p, s, key, values, ok

    key = as_key(key)
    trace: list[float] = []
    converged = False
    steps = 0
    while steps < max_steps:
        anchor = params
        length = min(patience, max_steps - steps)
        params, opt_state, key, values, ok = run_steps(params, opt_state, key, x, lw, length)
        ok = np.asarray(ok)
        trace.extend(np.asarray(values)[ok].astype(np.float64).tolist())
        steps += int(ok.sum())
        if not ok.all():  # a step left the finite range: keep the last finite parameters
            break
        if length == patience and float(jnp.max(jnp.abs(params - anchor))) < tol:
            converged = True
            break
    chol = np.asarray(bandwidth_from_params(params, kind, d), np.float64)
    matrix = chol**2 if chol.ndim == 1 else chol @ chol.T
    return BandwidthFit(
        matrix=matrix,
        objective=full_objective(params),
        trace=np.asarray(trace),
        steps=steps,
        converged=converged,
        params=np.asarray(params),
    )


@functools.partial(jax.jit, static_argnames=("kernel", "loo", "precision"))
def _grid_block(q, q_rows, x, x_sq, log_w, inv_h2, *, kernel, loo, precision):
    chunk = x.shape[1]
    q_sq = jnp.sum(q * q, axis=1)

    def step(carry, xs):
        z, z_sq, lw, first = xs
        d2 = pairwise_sq_distances(q, q_sq, z, z_sq, 2.0, precision)  # (b, c), shared by the grid
        logits = lw[None, None, :] + kernel.log_profile(d2[:, None, :] * inv_h2[None, :, None])
        if loo:
            own = q_rows[:, None] == first + jnp.arange(chunk)[None, :]
            logits = jnp.where(own[:, None, :], -jnp.inf, logits)
        return lse_update(*carry, logits), None

    b, g = q.shape[0], inv_h2.shape[0]
    init = (jnp.full((b, g), -jnp.inf, q.dtype), jnp.zeros((b, g), q.dtype))
    starts = jnp.arange(x.shape[0]) * chunk
    (run_max, run_sum), _ = lax.scan(step, init, (x, x_sq, log_w, starts))
    return lse_finish(run_max, run_sum)


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

    Every block of squared distances is computed once and shared by the whole grid. With
    ``queries=None`` the rows of ``X`` are scored leave-one-out (their own term excluded).

    Returns
    -------
    np.ndarray, shape (n_queries, n_bandwidths)
    """
    kern = get_kernel(kernel) if isinstance(kernel, str) else kernel
    if kern.norm != 2.0 or isinstance(kern, UnivariateGaussianKernel):
        raise ValueError("grid_log_likelihood supports the six normalised kernels.")
    data = check_data(X, "X")
    n, d = data.shape
    hs = np.asarray(bandwidths, np.float64).reshape(-1)
    if hs.size == 0 or not np.all(np.isfinite(hs) & (hs > 0)):
        raise ValueError(f"bandwidths must be positive numbers; got {bandwidths!r}.")
    loo = queries is None
    q = data if loo else check_data(queries, "queries", n_features=d, dtype=data.dtype)
    weights = check_weights(sample_weight, n, data.dtype)
    w = np.ones(n) if weights is None else weights.astype(np.float64)
    w = w / w.sum()
    mean = np.average(data.astype(np.float64), axis=0, weights=w)
    x = (data - mean).astype(data.dtype)
    qc = (q - mean).astype(data.dtype)
    n_chunks, size = chunk_layout(n, chunk_size)
    pad = n_chunks * size - n
    xp = np.pad(x, ((0, pad), (0, 0))).reshape(n_chunks, size, d)
    with np.errstate(divide="ignore"):
        lw = np.pad(np.log(w), (0, pad), constant_values=-np.inf).reshape(n_chunks, size)
    xj, lwj = jnp.asarray(xp), jnp.asarray(lw, data.dtype)
    x_sq = jnp.sum(xj * xj, axis=2)
    inv_h2 = jnp.asarray(1.0 / hs**2, data.dtype)
    out = []
    for start in range(0, qc.shape[0], block_size):
        blk = qc[start : start + block_size]
        rows = np.arange(start, start + blk.shape[0])
        if blk.shape[0] < block_size:  # pad the last block: one compiled shape
            extra = block_size - blk.shape[0]
            blk = np.concatenate([blk, np.zeros((extra, d), blk.dtype)])
            rows = np.concatenate([rows, np.full(extra, -1)])
        res = _grid_block(jnp.asarray(blk), jnp.asarray(rows), xj, x_sq, lwj, inv_h2,
                          kernel=kern, loo=loo, precision=precision)  # fmt: skip
        out.append(res)
    lse = np.concatenate([np.asarray(r) for r in out])[: qc.shape[0]].astype(np.float64)
    log_norm = np.array([float(kern.log_normalizer(d, d * math.log(h))) for h in hs])
    if loo:
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
    samples, test, validation=None, sigmas=None, *, block_size: int = 256
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
    """
    grid = np.logspace(-1, 0, 10) if sigmas is None else np.asarray(sigmas, np.float64).ravel()
    if validation is None and grid.size != 1:
        raise ValueError("validation is needed to choose sigma from a grid; or pass one sigma.")
    val_means = None
    if validation is not None:
        val = grid_log_likelihood(samples, validation, grid, block_size=block_size)
        val_means = val.mean(axis=0)
        sigma = float(grid[int(np.argmax(val_means))])
    else:
        sigma = float(grid[0])
    ll = grid_log_likelihood(samples, test, [sigma], block_size=block_size)[:, 0]
    return ParzenResult(
        mean=float(ll.mean()),
        stderr=float(ll.std() / math.sqrt(ll.size)),
        sigma=sigma,
        sigmas=grid,
        validation_means=val_means,
    )
