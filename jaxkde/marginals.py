"""Marginals and conditionals of a Gaussian KDE, exact, as new mixtures (float64 on the host).

A Gaussian KDE is the mixture ``sum_i w_i N(x_i, lambda_i^2 H)`` (``lambda_i = 1`` without
adaptive bandwidths). Both operations below return the parts of another such mixture:

* **marginal** over dimensions ``B``: ``sum_i w_i N(x_iB, lambda_i^2 H_BB)``;
* **conditional** on ``x_B = v`` (the other dimensions ``A`` remain): weights
  ``w_i N(v; x_iB, lambda_i^2 H_BB)`` (normalised in log space), centres
  ``x_iA + H_AB H_BB^-1 (v - x_iB)`` and bandwidth ``H_AA - H_AB H_BB^-1 H_BA`` (times
  ``lambda_i^2``);
* **linear observation** ``y = A x + e``, ``e ~ N(0, R)``: a Kalman update per centre, weights
  ``w_i N(y; A x_i, A C_i A^T + R)``, centres ``x_i + K_i (y - A x_i)``, covariance
  ``C_i - K_i A C_i`` with ``K_i = C_i A^T (A C_i A^T + R)^-1`` and ``C_i = lambda_i^2 H``.

The compact kernels and the exponential kernel are not closed under these operations (a
marginal of a ball's uniform density is not uniform); they are refused with an error.
Everything is computed in float64 from the state's double-word centres.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels import GaussianKernel
from .state import KDEState, unwhiten_host

__all__ = ["MixtureParts", "condition", "condition_linear", "marginalize", "mixture_parts"]


def _logsumexp(a: np.ndarray) -> float:
    return float(np.logaddexp.reduce(a)) if a.size else -np.inf


class MixtureParts(NamedTuple):
    """A Gaussian mixture ``sum_i exp(log_weights_i) N(centres_i, exp(2 log_factors_i) H)``.

    Attributes
    ----------
    centres : np.ndarray, shape (n, d)
    log_weights : np.ndarray, shape (n,)
        Normalised (log-sum-exp 0), rows of zero weight removed.
    bandwidth : np.ndarray, shape (d, d)
    log_factors : np.ndarray of shape (n,), or None
    """

    centres: np.ndarray
    log_weights: np.ndarray
    bandwidth: np.ndarray
    log_factors: np.ndarray | None


def mixture_parts(state: KDEState, what: str = "this operation") -> MixtureParts:
    """The float64 mixture of a Gaussian ``state`` (any H, adaptive or not)."""
    if not isinstance(state.kernel, GaussianKernel):
        raise ValueError(
            f"{what} is exact for the gaussian kernel only (a mixture of normals stays one); "
            f"kernel {state.kernel.name!r} is not closed under it."
        )
    if state.basis is not None:
        raise ValueError(
            f"{what} is not available for a density on a subspace (zero_variance='subspace')."
        )
    k = state.dim
    log_w = np.asarray(state.log_weights, np.float64).reshape(-1)
    keep = np.isfinite(log_w)
    lo = None if state.points_lo is None else np.asarray(state.points_lo).reshape(-1, k)[keep]
    centres = unwhiten_host(state, np.asarray(state.points).reshape(-1, k)[keep], lo)
    factors = None
    if state.log_factors is not None:
        factors = np.asarray(state.log_factors, np.float64).reshape(-1)[keep]
    return MixtureParts(centres, log_w[keep] - _logsumexp(log_w[keep]), state.bandwidth_matrix(),
                        factors)  # fmt: skip


def _check_dims(dims, d: int, name: str = "dims") -> np.ndarray:
    try:
        idx = np.asarray(dims, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be integers in [0, {d}); got {dims!r}.") from None
    if idx.size == 0 or np.any((idx < 0) | (idx >= d)) or np.unique(idx).size != idx.size:
        raise ValueError(f"{name} must be distinct integers in [0, {d}); got {dims!r}.")
    return idx


def marginalize(parts: MixtureParts, dims) -> MixtureParts:
    """The marginal over ``dims`` (in that order)."""
    idx = _check_dims(dims, parts.centres.shape[1])
    return MixtureParts(parts.centres[:, idx], parts.log_weights,
                        parts.bandwidth[np.ix_(idx, idx)], parts.log_factors)  # fmt: skip


def _log_normal(resid: np.ndarray, cov: np.ndarray, scale2: np.ndarray | None) -> np.ndarray:
    """``log N(resid_i; 0, scale2_i * cov)`` for rows ``resid`` ``(n, k)``."""
    k = resid.shape[1]
    chol = np.linalg.cholesky(cov)
    u = np.linalg.solve(chol, resid.T).T
    quad = np.einsum("ij,ij->i", u, u)
    log_det = 2.0 * np.log(np.diag(chol)).sum()
    if scale2 is not None:
        quad = quad / scale2
        log_det = log_det + k * np.log(scale2)
    return -0.5 * (quad + log_det + k * np.log(2.0 * np.pi))


def _normalised(log_w: np.ndarray) -> np.ndarray:
    total = _logsumexp(log_w)
    if not np.isfinite(total):
        raise ValueError("the observation has probability 0 under every centre.")
    return log_w - total


def condition(parts: MixtureParts, dims, values) -> MixtureParts:
    """The conditional on ``x[dims] = values``, over the remaining dimensions (in order)."""
    d = parts.centres.shape[1]
    b = _check_dims(dims, d)
    if b.size == d:
        raise ValueError("dims must leave at least one dimension to condition the others on.")
    try:
        v = np.asarray(values, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"values must be numbers; got {values!r}.") from None
    if v.shape != b.shape or not np.all(np.isfinite(v)):
        raise ValueError(f"values must be {b.size} finite numbers, one per entry of dims.")
    a = np.setdiff1d(np.arange(d), b)
    h = parts.bandwidth
    h_bb, h_ab = h[np.ix_(b, b)], h[np.ix_(a, b)]
    gain = np.linalg.solve(h_bb, h_ab.T).T  # H_AB H_BB^-1
    resid = v[None, :] - parts.centres[:, b]
    scale2 = None if parts.log_factors is None else np.exp(2.0 * parts.log_factors)
    log_w = _normalised(parts.log_weights + _log_normal(resid, h_bb, scale2))
    centres = parts.centres[:, a] + resid @ gain.T
    cov = h[np.ix_(a, a)] - gain @ h_ab.T
    return MixtureParts(centres, log_w, 0.5 * (cov + cov.T), parts.log_factors)


def condition_linear(parts: MixtureParts, matrix, observation, noise) -> MixtureParts:
    """The posterior given ``observation = matrix @ x + e``, ``e ~ N(0, noise)`` (full space).

    ``matrix`` ``(k, d)``, ``observation`` ``(k,)``, ``noise`` ``(k, k)`` positive definite (or
    a scalar variance, or ``(k,)`` variances). With adaptive factors the posterior covariances
    are no longer multiples of one H, so adaptive states are refused here.
    """
    d = parts.centres.shape[1]
    a = np.atleast_2d(np.asarray(matrix, np.float64))
    if a.ndim != 2 or a.shape[1] != d or not np.all(np.isfinite(a)):
        raise ValueError(f"matrix must be a finite (k, {d}) array; got shape {a.shape}.")
    k = a.shape[0]
    y = np.asarray(observation, np.float64).reshape(-1)
    if y.shape != (k,) or not np.all(np.isfinite(y)):
        raise ValueError(f"observation must be {k} finite numbers (one per row of matrix).")
    r = np.asarray(noise, np.float64)
    r = np.eye(k) * r if r.ndim == 0 else (np.diag(r) if r.ndim == 1 else r)
    if r.shape != (k, k) or not np.all(np.isfinite(r)):
        raise ValueError(f"noise must be a variance, {k} variances or a ({k}, {k}) matrix.")
    try:
        np.linalg.cholesky(r)
    except np.linalg.LinAlgError:
        raise ValueError("noise must be positive definite.") from None
    if parts.log_factors is not None:
        raise ValueError("a linear observation of an adaptive KDE is not supported.")
    h = parts.bandwidth
    s_chol = np.linalg.cholesky(a @ h @ a.T + r)  # S = A H A^T + R = G G^T
    a_w = np.linalg.solve(s_chol, a)  # G^-1 A, (k, d)
    y_w = np.linalg.solve(s_chol, y)  # G^-1 y
    # |G^-1 (y - A x_i)|^2 in O(n d^2): the part of G^-1 y outside the span of G^-1 A is the
    # same for every centre; the rest is |Q^T G^-1 y - R_q x_i|^2 with G^-1 A = Q R_q.
    q, r_q = np.linalg.qr(a_w)
    inside = q.T @ y_w
    outside = max(float(y_w @ y_w - inside @ inside), 0.0)
    u = inside[None, :] - parts.centres @ r_q.T
    quad = outside + np.einsum("ij,ij->i", u, u)
    log_det = 2.0 * np.log(np.diag(s_chol)).sum()
    log_like = -0.5 * (quad + log_det + k * np.log(2.0 * np.pi))
    log_w = _normalised(parts.log_weights + log_like)
    gain = h @ a_w.T  # K = H A^T S^-1 = H (G^-1 A)^T G^-1, applied below to G^-1 (y - A x)
    gain_a = gain @ a_w  # K A, (d, d): every centre in O(d^2)
    centres = parts.centres + (gain @ y_w)[None, :] - parts.centres @ gain_a.T
    cov = h - gain_a @ h
    return MixtureParts(centres, log_w, 0.5 * (cov + cov.T), None)
