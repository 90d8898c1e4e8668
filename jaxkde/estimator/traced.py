"""KDEs built inside JAX programs: a traceable fit, leave-one-out scores and bootstrap bands.

:func:`fit_state` builds the same :class:`~jaxkde.core.state.KDEState` as ``KDE().fit``, but
from device arrays and with JAX operations only, so it runs under ``jit``, ``grad`` and
``vmap``: a KDE can be fitted inside a training step, differentiated with respect to its
data, weights and bandwidth, or fitted to a thousand resamples in one call.

What it gives up against the host fit, and what it keeps:

* **Centring.** The host centres in float64 and splits the whitened data into double words;
  :func:`fit_state` centres in the working dtype with a compensated two-pass mean
  (``m = m0 + mean(x - m0)``), so the centre is right to a few roundings of the data's
  spread, not of its offset, and every difference ``x - m`` is then exact or nearly so. The
  whitened points of a diagonal bandwidth are double words as on the host, from an exact
  two-sum and product (Knuth, Dekker); a full matrix's are single words (``points_lo``
  zero): distances of points far from the centre relative to the bandwidth lose the host's
  extra 2^-24 there. Data given in float32 carry their own rounding, which no fit undoes.
  ``benchmarks/accuracy.py`` measures both on offset data (``docs/accuracy.md``).
* **Rules.** Scott's and Silverman's rules, diagonal and full, from the same pure functions
  as the host (:mod:`jaxkde.bandwidth.rules`), on the centred data; a diagonal rule floors a
  constant feature's variance at ``variance_floor`` times the largest, as the host does.
  Selectors and learned bandwidths are not traceable: use the host fit, or
  :func:`jaxkde.fit_bandwidth`, or a gradient through :func:`fit_state` (``docs/traced.md``).
* **Bad input in JAX arrays** is not read back from the device (and a trace cannot raise):
  NaN anywhere in ``X`` or ``weights`` propagates, every log density of the state is NaN
  (the centre is NaN), never a finite wrong number. A traced bandwidth matrix that is not
  positive definite has a NaN Cholesky factor, so every log density is NaN too. Host inputs
  (NumPy arrays, lists, numbers) are checked as by ``KDE().fit`` and refused with a
  ``ValueError``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

from jaxkde._validation import check_positive_int, check_real, working_dtype
from jaxkde.bandwidth.rules import RULES, _check_user_bandwidth
from jaxkde.core.engine import default_block_sizes, log_density_program
from jaxkde.core.kernels import Kernel, get_kernel
from jaxkde.core.state import KDEState, chunk_layout, chunk_rows, whiten_on_device

__all__ = [
    "TRACED_RULES",
    "BootstrapBand",
    "bootstrap_band",
    "bootstrap_log_density",
    "fit_state",
    "loo_log_density",
    "traced_log_density",
]

#: The rules of thumb :func:`fit_state` computes inside a trace.
TRACED_RULES = ("scott", "silverman", "scott_full", "silverman_full", "normal_reference",
                "identity")  # fmt: skip
_HIGHEST = lax.Precision.HIGHEST


def _is_traced(*values) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(values))


def _kernel(kernel: str | Kernel, p) -> Kernel:
    return kernel if isinstance(kernel, Kernel) else get_kernel(kernel, p)


def _check_host(x, weights) -> None:
    """The host fit's checks of the inputs that are host data (NumPy arrays, lists): JAX
    arrays are not read back from their device, and a trace cannot raise on values."""
    if not isinstance(x, jax.Array) and not np.all(np.isfinite(np.asarray(x, np.float64))):
        raise ValueError("X must be finite; it contains NaN or inf.")
    if weights is not None and not isinstance(weights, jax.Array):
        w = np.asarray(weights, np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
            raise ValueError(
                "weights must be finite and non-negative, not all zero; got "
                f"min {w.min()!r}, sum {w.sum()!r}."
            )


def _bandwidth_matrix(bandwidth, u, weights, variance_floor) -> jax.Array:
    """``H`` ``(d,)`` (diagonal) or ``(d, d)`` of a rule name or a user's ``h`` / ``H`` (checked
    as by ``KDE`` unless it is traced)."""
    d = u.shape[1]
    if isinstance(bandwidth, str):
        if bandwidth not in TRACED_RULES:
            raise ValueError(
                f"bandwidth must be one of {list(TRACED_RULES)} inside fit_state (selectors and "
                f"learned bandwidths need the host fit, KDE().fit); got {bandwidth!r}."
            )
        if bandwidth != "identity" and u.shape[0] < 2:
            raise ValueError(
                f"bandwidth rule {bandwidth!r} needs at least 2 samples (rows of X); got "
                f"{u.shape[0]}."
            )
        h = RULES[bandwidth](u, weights)
        if h.ndim == 1:  # a constant feature: floored as the host fit does
            h = jnp.maximum(h, variance_floor * jnp.max(h))
        return h
    if not _is_traced(bandwidth):
        return jnp.asarray(_check_user_bandwidth(bandwidth, d), u.dtype)
    h = jnp.asarray(bandwidth, u.dtype)
    if h.ndim == 0:
        return jnp.full((d,), h * h)
    if h.ndim == 1 and h.shape == (d,):
        return h * h
    if h.ndim == 2 and h.shape == (d, d):
        return h
    raise ValueError(
        f"bandwidth must be a scalar h, a vector of {d} scales or a ({d}, {d}) matrix H; got "
        f"shape {h.shape}."
    )


def fit_state(
    X,
    bandwidth="scott",
    *,
    weights=None,
    kernel: str | Kernel = "gaussian",
    p=2,
    variance_floor: float = 1e-6,
    chunk_size: int | None = None,
) -> KDEState:
    """Fit a KDE to ``X`` with JAX operations only: usable under ``jit``, ``grad`` and ``vmap``.

    Parameters
    ----------
    X : array, shape (n, d)
        Data (a JAX or NumPy array, or a tracer). The working dtype is ``X``'s: float32, or
        float64 under x64 (integers: the default float).
    bandwidth : str, float, array of shape (d,) or (d, d)
        A rule of :data:`TRACED_RULES` (``"scott"`` by default), the isotropic scale ``h``
        (``H = h^2 I``), one scale per feature (``H = diag(h_i^2)``) or the matrix ``H``; any
        of them may be traced (differentiate with respect to ``H``, or pass ``L @ L.T`` to
        differentiate with respect to a Cholesky factor ``L``).
    weights : array of shape (n,), optional
        Non-negative weights (normalised here; traceable).
    kernel : str or Kernel
        A kernel name of :data:`jaxkde.KERNEL_NAMES` or a :class:`~jaxkde.Kernel`.
    p : {1, 2, inf}
        Norm of ``"univariate_gaussian"``.
    variance_floor : float
        A diagonal rule raises each variance of ``H`` to at least this share of the largest.
    chunk_size : int, optional
        Data points reduced per step (default by the backend, as ``KDE``).

    Returns
    -------
    KDEState
        Scores with :func:`traced_log_density` (or :func:`jaxkde.log_density`), samples with
        :func:`jaxkde.sample`. Equal to the host fit's state up to the centring (see the module
        docstring): log densities agree to float32 rounding on well-centred data.
    """
    kern = _kernel(kernel, p)
    check_real(variance_floor, "variance_floor", low=0.0, high=1.0, low_open=True)
    chunk = default_block_sizes()[1] if chunk_size is None else chunk_size
    chunk = check_positive_int(chunk, "chunk_size")
    _check_host(X, weights)
    x = jnp.asarray(X)
    dtype = working_dtype(x.dtype)
    x = x.astype(dtype)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"X must have shape (n_samples, n_features), n >= 1; got {x.shape}.")
    n, d = x.shape
    w = None if weights is None else jnp.asarray(weights, dtype)
    if w is not None and w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},); got {w.shape}.")
    wn = None if w is None else w / jnp.sum(w)

    def average(a):
        return jnp.mean(a, axis=0) if wn is None else jnp.matmul(wn, a, precision=_HIGHEST)

    # Compensated two-pass centre: the second pass corrects the first's rounding of the offset.
    m0 = average(x)
    mean = m0 + average(x - m0)
    u = x - mean
    h = _bandwidth_matrix(bandwidth, u, w, variance_floor)
    z_lo = None
    if h.ndim == 1:
        chol = jnp.sqrt(h)
        diag = chol
        if dtype == np.float64:
            z = u / chol
        else:  # double words: x - mean and its division by the bandwidth, without rounding
            z, z_lo = _whiten_double_word(x, mean, chol)
    else:
        chol = jnp.linalg.cholesky(h)
        z = solve_triangular(chol, u.T, lower=True).T
        diag = jnp.diag(chol)
    log_w = jnp.full((n,), -math.log(n), dtype) if w is None else jnp.log(wn)
    n_chunks, size = chunk_layout(n, chunk)
    chunked = functools.partial(chunk_rows, n_chunks=n_chunks, size=size)

    points = chunked(z)
    if dtype == np.float64:
        points_lo, sq = None, jnp.sum(z * z, axis=1)
    elif z_lo is None:
        points_lo, sq = jnp.zeros_like(points), jnp.sum(z * z, axis=1)
    else:
        points_lo, sq = chunked(z_lo), jnp.sum(z * z + 2.0 * z * z_lo, axis=1)
    return KDEState(
        points=points,
        points_lo=points_lo,
        sq_norms=chunked(sq),
        log_weights=chunked(log_w, fill=-jnp.inf),
        mean=mean,
        chol=chol,
        basis=None,
        log_normalizer=jnp.asarray(kern.log_normalizer(d, jnp.sum(jnp.log(diag))), dtype),
        kernel=kern,
    )


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Veltkamp's split of float32 ``a`` into two halves of 12 significant bits."""
    c = 4097.0 * a
    high = c - (c - a)
    return high, a - high


def _two_product(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(p, e)`` with ``p = fl(a b)`` and ``p + e = a b`` exactly (Dekker, no FMA needed)."""
    p = a * b
    a1, a2 = _split(a)
    b1, b2 = _split(b)
    return p, ((a1 * b1 - p) + a1 * b2 + a2 * b1) + a2 * b2


def _whiten_double_word(x, mean, scale) -> tuple[jax.Array, jax.Array]:
    """``(hi, lo)`` of ``(x - mean) / scale`` in float32 to about 2^-44 relative: the
    difference kept exactly as a two-sum, the quotient corrected by its exact remainder (what
    the host fit gets from float64)."""
    u, u_err = _two_sum(x, -mean)
    hi = u / scale
    p, p_err = _two_product(hi, scale)
    rest = ((u - p) - p_err) + u_err  # u - p is exact: p is within an ulp of u
    return hi, rest / scale


def traced_log_density(
    state: KDEState, queries, *, block_size: int | None = None, precision: str = "highest"
) -> jax.Array:
    """``log f(queries)`` ``(m,)`` of a state, the queries always whitened on the device in
    the working dtype (:func:`jaxkde.whiten_on_device`), the exact engine and its error account
    as :func:`jaxkde.log_density`. Inside a trace the two are the same; outside, with concrete
    arrays, :func:`jaxkde.log_density` whitens host queries in float64 (more exact), while this
    gives the values whose gradient a traced program takes."""
    zq_hi, zq_lo = whiten_on_device(state, queries)
    return log_density_program(state, zq_hi, zq_lo, block_size=block_size, precision=precision)


def loo_log_density(
    state: KDEState, X, *, block_size: int | None = None, precision: str = "highest"
) -> jax.Array:
    """Leave-one-out log densities ``log f_{-i}(x_i)`` ``(n,)`` of the rows ``X`` a state was
    fitted to (by :func:`fit_state`, in order): each row's own term left out and the weights
    renormalised, ``log sum_{j != i} w_j K_H(x_i - x_j) - log(1 - w_i)``. Traceable, and
    differentiable in the state (hence in the data, weights and bandwidth of the fit)."""
    zq_hi, zq_lo = whiten_on_device(state, X)
    n = zq_hi.shape[0]
    if n > state.log_weights.size:
        raise ValueError(f"X has {n} rows but the state holds {state.log_weights.size}.")
    lse = log_density_program(state, zq_hi, zq_lo, jnp.arange(n), block_size=block_size,
                              precision=precision)  # fmt: skip
    own = state.log_weights.reshape(-1)[:n]
    return lse - jnp.log1p(-jnp.exp(own))


@functools.partial(
    jax.jit,
    static_argnames=("n_resamples", "bandwidth", "kernel", "p", "batch", "precision"),
)
def bootstrap_log_density(
    X,
    queries,
    key: jax.Array,
    *,
    n_resamples: int = 1000,
    bandwidth: str = "scott",
    kernel: str = "gaussian",
    p=2,
    weights=None,
    batch: int = 25,
    precision: str = "highest",
) -> jax.Array:
    """Log densities ``(n_resamples, m)`` at ``queries`` of KDEs fitted to bootstrap resamples.

    Each resample draws ``n`` rows of ``X`` ``(n, d)`` with replacement (with probability
    proportional to ``weights`` when given) and is fitted by :func:`fit_state` with its own
    rule ``bandwidth`` (as ``scipy.stats.gaussian_kde`` on each resample); ``batch``
    resamples at a time run as one ``vmap`` (memory ``O(batch * m * chunk)``), the batches in
    a ``lax.map``. One compiled program per shape.
    """
    x = jnp.asarray(X)
    n = x.shape[0]
    keys = jax.random.split(key, n_resamples)
    probs = None if weights is None else jnp.asarray(weights, jnp.float32)

    def one(k):
        rows = jax.random.choice(k, n, (n,), replace=True, p=probs)
        state = fit_state(x[rows], bandwidth, kernel=kernel, p=p)
        return traced_log_density(state, queries, precision=precision)

    return lax.map(one, keys, batch_size=min(batch, n_resamples))


class BootstrapBand(NamedTuple):
    """Pointwise bootstrap band of a density on a set of points.

    Attributes
    ----------
    points : np.ndarray, shape (m, d)
    density : np.ndarray, shape (m,)
        The KDE of all the data.
    lower, upper : np.ndarray, shape (m,)
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the resamples' densities.
    level : float
    """

    points: np.ndarray
    density: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float


def bootstrap_band(
    X,
    points,
    *,
    level: float = 0.9,
    n_resamples: int = 1000,
    bandwidth: str = "scott",
    kernel: str = "gaussian",
    weights=None,
    seed: int | jax.Array = 0,
) -> BootstrapBand:
    """Pointwise percentile bootstrap band of the density of ``X`` ``(n, d)`` at ``points``.

    The percentiles are taken of the resamples' log densities (the same order statistics as
    of the densities; interpolation between two of them is geometric) and exponentiated.
    The band is of the KDE's spread under resampling; it does not cover the KDE's smoothing
    bias.

    Parameters
    ----------
    X : array-like, shape (n, d) or (n,)
    points : array-like, shape (m, d) or (m,)
    level : float
        Coverage of the band, in (0, 1).
    n_resamples, bandwidth, kernel, weights
        As :func:`bootstrap_log_density`.
    seed : int or JAX key
    """
    if check_real(level, "level", low=0.0, high=1.0, low_open=True) == 1.0:
        raise ValueError(f"level must be in (0, 1); got {level!r}.")
    n_resamples = check_positive_int(n_resamples, "n_resamples")
    x = np.asarray(X)
    x = x[:, None] if x.ndim == 1 else x
    q = np.asarray(points)
    q = q[:, None] if q.ndim == 1 else q
    dtype = working_dtype(x.dtype)
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    x, q = jnp.asarray(x, dtype), jnp.asarray(q, dtype)
    logs = bootstrap_log_density(x, q, key, n_resamples=n_resamples, bandwidth=bandwidth,
                                 kernel=kernel, weights=weights)  # fmt: skip
    pct = jnp.asarray([50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    low, high = jnp.percentile(logs, pct, axis=0)
    whole = traced_log_density(fit_state(x, bandwidth, weights=weights, kernel=kernel), q)
    return BootstrapBand(np.asarray(q), np.exp(np.asarray(whole, np.float64)),
                         np.exp(np.asarray(low, np.float64)),
                         np.exp(np.asarray(high, np.float64)), float(level))  # fmt: skip
