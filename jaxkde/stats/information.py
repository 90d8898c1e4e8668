"""Information measures of fitted KDEs: entropy, Kullback-Leibler divergence, mutual information.

Each is an average over the fitted rows ``x_i`` (weights ``w_i``, normalised) of log
densities, so it works in any dimension and never leaves log space:

* entropy ``H(f) = -sum_i w_i log f(x_i)``;
* ``KL(f || g) = sum_i w_i (log f(x_i) - log g(x_i))``, the rows of ``f``;
* mutual information ``I(A; B) = sum_i w_i (log f_AB - log f_A - log f_B)(x_i)``, with the
  marginal KDEs of the feature sets ``A`` and ``B``.

Two estimators of ``log f(x_i)`` (``method``):

* ``"resubstitution"``: the KDE itself. Each row's own kernel is in its density, which is
  therefore too high: the entropy is biased **down** (by about ``log(1 + K(0) / (n f))``
  per row, severe when ``h`` is small or ``d`` large), mutual information up.
* ``"loo"`` (leave one out): ``f_{-i}(x_i) = sum_{j != i} w_j K(x_i - x_j) / (1 - w_i)``.
  No own term, so the density is not inflated; the entropy estimate is then biased
  **up** by the kernel's smoothing (the entropy of ``f * K_H``), like any KDE. A row no
  other row reaches (a compact kernel) has ``f_{-i} = 0``: entropy ``inf``.

Both converge to the true values as ``n`` grows and ``H`` shrinks at the usual rates; the bias
of the leave-one-out entropy is ``O(tr H)``, that of resubstitution ``O(1 / (n |H|^{1/2}))``.
KL uses ``g`` as it is (``x_i`` are not ``g``'s rows), so ``KL(f || f)`` is 0 by
resubstitution and slightly negative leave-one-out. The sums are in float64 over log
densities from the exact engine (:mod:`jaxkde.core.engine`), blocked: memory
``O(block_size * chunk_size)``.
"""

from __future__ import annotations

import numpy as np

from jaxkde.core.engine import log_density, log_density_program
from jaxkde.core.state import KDEState, state_points

__all__ = ["ESTIMATORS", "entropy", "kl_divergence", "mutual_information", "row_log_density"]

#: The estimators of the log density at the fitted rows.
ESTIMATORS = ("resubstitution", "loo")


def _check_method(method) -> None:
    if not isinstance(method, str) or method not in ESTIMATORS:
        raise ValueError(f"method must be one of {list(ESTIMATORS)}; got {method!r}.")


def row_log_density(
    state: KDEState, method: str = "resubstitution", *, block_size: int = 1024,
    precision: str = "highest",
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Log density at each fitted row of ``state`` and the rows' log weights, float64 ``(n,)``
    each (rows of weight 0 and the padding left out; the weights normalised).

    ``method="loo"`` leaves each row's own term out and renormalises (see the module docstring).
    The rows are the state's own whitened points (exactly the fitted values), in blocks of
    ``block_size`` queries, one compiled program for every block.
    """
    _check_method(method)
    k = state.dim
    hi = np.asarray(state.points).reshape(-1, k)
    lo = None if state.points_lo is None else np.asarray(state.points_lo).reshape(-1, k)
    log_w = np.asarray(state.log_weights, np.float64).reshape(-1)
    total = hi.shape[0]
    block = max(1, min(block_size, total))
    pad = -total % block
    rows = np.concatenate([np.arange(total), np.zeros(pad, int)]).astype(np.int32)
    out = np.empty(total + pad)
    for start in range(0, total + pad, block):
        sel = rows[start : start + block]
        lse = log_density_program(state, hi[sel], None if lo is None else lo[sel],
                                  sel if method == "loo" else None, block_size=block,
                                  precision=precision)  # fmt: skip
        out[start : start + block] = np.asarray(lse, np.float64)
    log_f = out[:total]
    keep = np.isfinite(log_w)
    log_w = log_w[keep] - np.logaddexp.reduce(log_w[keep])
    log_f = log_f[keep]
    if method == "loo":
        with np.errstate(divide="ignore"):
            log_f = log_f - np.log1p(-np.exp(log_w))
    return log_f, log_w


def _average(log_w: np.ndarray, values: np.ndarray) -> float:
    """``sum_i w_i v_i``; ``inf`` terms give ``inf`` (never NaN for a finite sum's parts)."""
    return float(np.sum(np.exp(log_w) * values))


def entropy(state: KDEState, method: str = "resubstitution", **kwargs) -> float:
    """Differential entropy in nats, ``-sum_i w_i log f(x_i)`` (see the module docstring for
    the two estimators and their bias). ``kwargs`` go to :func:`row_log_density`."""
    log_f, log_w = row_log_density(state, method, **kwargs)
    return -_average(log_w, log_f)


def kl_divergence(
    state: KDEState, other: KDEState, method: str = "resubstitution", *,
    block_size: int = 1024, precision: str = "highest",
) -> float:  # fmt: skip
    """``KL(f || g)`` in nats, ``sum_i w_i (log f(x_i) - log g(x_i))`` over ``f``'s rows
    (``f`` = ``state``, ``g`` = ``other``, the same number of features). ``inf`` where ``g``
    is 0 at a row of ``f`` (a compact kernel)."""
    if other.n_features != state.n_features:
        raise ValueError(f"the two KDEs must have the same number of features; got "
                         f"{state.n_features} and {other.n_features}.")  # fmt: skip
    log_f, log_w = row_log_density(state, method, block_size=block_size, precision=precision)
    points = state_points(state)
    log_g = np.concatenate([
        np.asarray(log_density(other, points[i : i + block_size], precision=precision),
                   np.float64) for i in range(0, len(points), block_size)
    ])  # fmt: skip
    with np.errstate(invalid="ignore"):
        diff = np.where(np.isneginf(log_g), np.inf, log_f - log_g)
    return _average(log_w, diff)


def mutual_information(
    joint: KDEState, first: KDEState, second: KDEState, method: str = "resubstitution",
    **kwargs,
) -> float:  # fmt: skip
    """``I(A; B)`` in nats from the KDE of ``(A, B)`` and its two marginal KDEs, built from the
    same rows in the same order (:meth:`jaxkde.KDE.mutual_information` builds them)."""
    log_ab, log_w = row_log_density(joint, method, **kwargs)
    log_a = row_log_density(first, method, **kwargs)[0]
    log_b = row_log_density(second, method, **kwargs)[0]
    if not (log_a.shape == log_b.shape == log_ab.shape):
        raise ValueError("the joint and marginal KDEs must hold the same rows; got "
                         f"{log_ab.shape[0]}, {log_a.shape[0]} and {log_b.shape[0]}.")  # fmt: skip
    return _average(log_w, log_ab - log_a - log_b)
