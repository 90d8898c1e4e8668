"""Adaptive (variable) bandwidths: Abramson's sample-point estimator.

Each centre ``x_i`` gets its own bandwidth ``lambda_i^2 H``:

    f(y) = sum_i w_i |lambda_i^2 H|^(-1/2) k(|L^-1 (y - x_i)|^2 / lambda_i^2),

with ``lambda_i = (f_pilot(x_i) / g)^(-alpha)``, ``f_pilot`` the fixed-bandwidth KDE with the
same kernel and ``H``, and ``g`` the weighted geometric mean of the ``f_pilot(x_i)``
(Abramson 1982; ``alpha = 1/2`` is his square-root law). Kernels widen where data are sparse
(tails) and narrow where they are dense. The factors enter the engine as per-centre terms,
``-k log lambda_i`` in the log weight and ``lambda_i^-2`` on the squared distance
(:attr:`jaxkde.KDEState.log_factors`), so the matrix-product engine, its rounding-error
account, sharding and sampling serve adaptive states unchanged; nothing of shape
``(m, n, d)`` appears.

The pilot is evaluated exactly at every data point by the engine: ``O(n^2 d)`` work, the cost
of scoring the data once.
"""

from __future__ import annotations

import numbers

import numpy as np

from jaxkde.core.engine import log_density
from jaxkde.core.sharding import sharded_log_density
from jaxkde.core.state import HostWhitening, KDEState

__all__ = ["MAX_LOG_FACTOR", "abramson_log_factors", "check_alpha", "pilot_log_density"]

#: Largest ``|log lambda_i|`` accepted: ``lambda_i^-2`` must stay well inside float32's range
#: (``e^60 ~ 1e26``); factors beyond ``e^30`` are refused rather than clipped.
MAX_LOG_FACTOR = 30.0


def check_alpha(alpha) -> float:
    """``alpha`` as a float in ``[0, 1]``, else a ``ValueError`` naming it."""
    ok = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    if not ok or not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"alpha must be a number in [0, 1]; got {alpha!r}.")
    return float(alpha)


def abramson_log_factors(log_pilot, weights=None, alpha: float = 0.5) -> np.ndarray:
    """Abramson's ``log lambda_i = -alpha (log f_pilot(x_i) - log g)``, float64, shape ``(n,)``.

    Parameters
    ----------
    log_pilot : array-like, shape (n,)
        The pilot's log density at each data point (its own term included).
    weights : array-like of shape (n,), optional
        Non-negative weights; ``log g`` is the weighted mean of ``log_pilot`` over the rows of
        positive weight. Rows of zero weight contribute nothing and get ``lambda = 1``.
    alpha : float in [0, 1]
        Sensitivity: 0 is the fixed KDE, 1/2 Abramson's law.

    Raises
    ------
    ValueError
        If a pilot value of a weighted row is not finite, or the factors span beyond
        ``exp(+-MAX_LOG_FACTOR)`` (reduce ``alpha``: the pilot's densities differ by more than
        ``exp(2 MAX_LOG_FACTOR / alpha)`` over the data, as in hundreds of dimensions).
    """
    alpha = check_alpha(alpha)
    log_f = np.asarray(log_pilot, np.float64).reshape(-1)
    w = np.ones_like(log_f) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    used = w > 0
    if not np.all(np.isfinite(log_f[used])):
        raise ValueError(
            "the pilot density is 0 or not finite at a data point; adaptive bandwidths need "
            "a pilot that covers every point (a kernel of unbounded support, or a wider H)."
        )
    log_g = float(np.sum(w[used] * log_f[used]) / np.sum(w[used]))
    out = np.zeros_like(log_f)
    out[used] = -alpha * (log_f[used] - log_g)
    span = float(np.max(np.abs(out))) if out.size else 0.0
    if span > MAX_LOG_FACTOR:
        raise ValueError(
            f"alpha={alpha!r} gives adaptive factors up to exp({span:.3g}) (the pilot's log "
            f"densities span {span / alpha:.3g} nats); the limit is exp({MAX_LOG_FACTOR:g}). "
            "Use a smaller alpha, or reduce the dimension (e.g. PCA) first."
        )
    return out


def pilot_log_density(
    parts: list[tuple[KDEState, HostWhitening]],
    data: np.ndarray,
    *,
    block_size: int,
    precision: str = "highest",
    mesh=None,
) -> np.ndarray:
    """The fixed-bandwidth pilot's log density at ``data`` ``(n, d)``, float64 ``(n,)``.

    ``parts`` holds the states whose densities add up to the pilot (one, or the reflection
    images of a bounded KDE) with their host whitenings; they are evaluated by the engine
    (sharded over ``mesh`` when given) ``block_size`` rows at a time, the last block padded,
    so one program serves every block.
    """
    n = data.shape[0]
    total = None
    for state, whitening in parts:
        out = np.empty(n)
        for start in range(0, n, block_size):
            block = data[start : start + block_size]
            rows = block.shape[0]
            if rows < block_size and n > block_size:
                block = np.concatenate([block, np.repeat(block[:1], block_size - rows, axis=0)])
            if mesh is None:
                values = log_density(state, block, precision=precision, whitening=whitening)
            else:
                values = sharded_log_density(state, block, mesh=mesh, precision=precision,
                                             whitening=whitening)  # fmt: skip
            out[start : start + rows] = np.asarray(values, np.float64)[:rows]
        total = out if total is None else np.logaddexp(total, out)
    if total is None:
        raise ValueError("pilot_log_density needs at least one state.")
    return total
