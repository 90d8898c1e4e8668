"""Learned bandwidths: the objectives of :mod:`jaxkde.bandwidth.objectives`, optimised.

* :func:`fit_bandwidth`: maximises the leave-one-out likelihood
  (:func:`jaxkde.loo_log_likelihood`) or minimises least-squares cross-validation over
  scalar, diagonal or full bandwidths: a bounded scale search
  (:func:`jaxkde.bandwidth.scale_search.scale_search`), then L-BFGS (optax; any optax
  transformation may be given) on minibatches of evaluation points for large n
  (deterministic per key), until a tolerance or a step budget; returns the trace of the
  objective and a status.
* :func:`lscv_bandwidth`: least-squares cross-validation, on bins in 1-D
  (:mod:`jaxkde.bandwidth.selectors`), by :func:`fit_bandwidth` in more.

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

from jaxkde._validation import (
    check_data,
    check_positive_definite,
    check_positive_int,
    check_real,
    check_weights,
    working_dtype,
)
from jaxkde.bandwidth.objectives import (
    OBJECTIVES,
    PARAMETERISATIONS,
    _check_kernel,
    _loo_at_scales,
    _objective_fn,
    _sum_updates,
    bandwidth_from_params,
    lscv_at_scales,
    params_from_bandwidth,
)
from jaxkde.bandwidth.rules import _host_rule, rule_bandwidth
from jaxkde.bandwidth.scale_search import SCALE_LIMITS, scale_search
from jaxkde.bandwidth.selectors import (
    GRID_SIZE,
    SelectorError,
    _lscv_1d,
    _lscv_1d_value,
    _per_dimension,
)
from jaxkde.core.kernels import Kernel
from jaxkde.core.sampling import as_key
from jaxkde.core.state import (
    chunk_layout,
    normalized_log_weights,
    split_double_word,
)
from jaxkde.core.sum_updating import _MAX_WHITENED
from jaxkde.scale import distributed

__all__ = [
    "BandwidthFit",
    "fit_bandwidth",
    "lscv_bandwidth",
]


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
    :func:`jaxkde.grid_log_likelihood`), the window re-centred on the best point seen until that
    point is bracketed (from 1e-12 to 1e6 times the start; :func:`jaxkde.bandwidth.scale_search.
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
        only the evaluation rows cross the network (:mod:`jaxkde.scale.distributed`).
    sample_weight : array-like, shape (n,), optional
    kind : {"scalar", "diagonal", "full"}
        Parameterisation: ``H = h^2 I``, ``diag(h_i^2)`` or ``L L^T``.
    objective : {"likelihood", "lscv"}
        ``"likelihood"``: the mean leave-one-out log-likelihood (:func:`jaxkde.loo_log_likelihood`).
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
        Shard the data by rows over the mesh's first axis (see :func:`jaxkde.loo_log_likelihood`);
        the result equals the single-device one up to rounding.
    dtype : numpy dtype, optional
        Working dtype (default from ``X``: float32, or float64 under x64).
    log_factors : array-like of shape (n,), optional
        Adaptive bandwidths (:mod:`jaxkde.variants.adaptive`): row ``j``'s kernel is ``lambda_j^2
        H``; the global ``H`` is learned with these ``log lambda_j`` held fixed (likelihood only).

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
    if objective == "lscv" and (kern.name != "gaussian" or kern.norm != 2.0):
        raise ValueError(
            f"objective='lscv' needs the gaussian kernel with p = 2 (int f^2 in closed form); "
            f"got kernel {kern.name!r}, p = {kern.norm:g}."
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
    (:mod:`jaxkde.scale.distributed`): each process centres and places its own rows; the
    leave-one-out sums run on the sharded data (:func:`jaxkde.loo_log_likelihood` with a
    mesh), whose evaluation rows XLA gathers by a masked local gather and a sum over devices."""
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
    """1-D least-squares cross-validation on bins (:func:`jaxkde.bandwidth.learned.lscv_bandwidth`),
    ``O(n + M log M)``; ``None`` where bins cannot resolve it (the engine then runs)."""
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


def lscv_bandwidth(data, weights=None, *, kind: str = "scalar", grid_size: int = GRID_SIZE):
    """Least-squares (ISE) cross-validation of a Gaussian KDE (Rudemo 1982; Bowman 1984).

    Minimises ``LSCV(H) = int f_H^2 - 2 sum_i w_i f_{H,-i}(x_i)``, with
    ``int f_H^2 = sum_ij w_i w_j phi_{2H}(x_i - x_j)`` in closed form.

    * 1-D (any ``kind``): pair sums on ``grid_size`` linear bins, refined wherever they are
      too coarse for the bandwidth (as :func:`jaxkde.sj_bandwidth`), ``O(n + M log M)``;
      the minimum is searched from the normal-scale rule by :func:`jaxkde.bandwidth.scale_search.
      scale_search` (1e-12 to 1e6 times the rule, bracketed, bounded) to 1e-7 in ``log h``.
    * ``d >= 2``: the exact objective learned with optax, ``H = h^2 I``, ``diag(h_i^2)`` or full
      by ``kind`` (:func:`jaxkde.fit_bandwidth` with ``objective="lscv"``; its minibatch and
      convergence defaults apply).

    Returns
    -------
    np.ndarray
        The diagonal of ``H`` ``(d,)``, or ``(d, d)`` for ``kind="full"`` with ``d >= 2``.

    Raises
    ------
    SelectorError
        In 1-D, when LSCV keeps decreasing down to 1e-12 times the rule (exact duplicates:
        the objective has no minimum).
    """
    grid_size = check_positive_int(grid_size, "grid_size")
    if np.ndim(data) == 2 and np.shape(data)[1] == 1:
        return _per_dimension("lscv", _lscv_1d, data, weights, grid_size=grid_size)
    return fit_bandwidth(data, weights, kind=kind, objective="lscv").matrix
