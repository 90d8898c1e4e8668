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

from jaxkde.core.kernels import GaussianKernel
from jaxkde.core.state import KDEState, unwhiten_host

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
    if state.kernel.norm != 2.0:
        raise ValueError(
            f"{what} needs the Euclidean norm (p = 2): a Gaussian profile in the "
            f"{state.kernel.norm:g}-norm is not a normal density."
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
        arr = np.asarray(dims)
    except (TypeError, ValueError):
        arr = np.asarray([], dtype=object)
    if arr.dtype.kind not in "iu":  # as NumPy's indexing: 1.5 or 1.0 is no dimension
        raise TypeError(f"{name} must be integers in [0, {d}); got {dims!r}.")
    idx = arr.astype(np.int64).reshape(-1)
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
    if r.ndim <= 1:  # variances: R^-1 is their reciprocal
        var = np.broadcast_to(r, (k,)) if r.ndim == 0 or r.shape == (k,) else None
        if var is None or not np.all(np.isfinite(var)):
            raise ValueError(f"noise must be a variance, {k} variances or a ({k}, {k}) matrix.")
        if not np.all(var > 0):
            raise ValueError("noise must be positive definite.")
        r_inv_a, r_inv_y = a / var[:, None], y / var
        log_det_r = float(np.sum(np.log(var)))
    else:
        if r.shape != (k, k) or not np.all(np.isfinite(r)):
            raise ValueError(f"noise must be a variance, {k} variances or a ({k}, {k}) matrix.")
        try:
            r_chol = np.linalg.cholesky(r)
        except np.linalg.LinAlgError:
            raise ValueError("noise must be positive definite.") from None
        r_inv_a = np.linalg.solve(r_chol.T, np.linalg.solve(r_chol, a))
        r_inv_y = np.linalg.solve(r_chol.T, np.linalg.solve(r_chol, y))
        log_det_r = 2.0 * float(np.log(np.diag(r_chol)).sum())
    if parts.log_factors is not None:
        raise ValueError("a linear observation of an adaptive KDE is not supported.")
    # The information form, every matrix d x d: P = (H^-1 + A^T R^-1 A)^-1 is the posterior
    # covariance, the mean P (H^-1 x_i + A^T R^-1 y); the evidence N(y; A x_i, A H A^T + R) by
    # Woodbury's identity and the determinant lemma (|S| = |R| |H| / |P|).
    h = parts.bandwidth
    h_inv = np.linalg.inv(h)
    m = a.T @ r_inv_a  # A^T R^-1 A
    b = a.T @ r_inv_y  # A^T R^-1 y
    p_chol = np.linalg.cholesky(h_inv + m)  # P^-1 = L L^T
    x = parts.centres
    t = b[None, :] - x @ m  # A^T R^-1 (y - A x_i)
    u = t @ np.linalg.inv(p_chol).T  # |u|^2 = t^T P t
    quad = (float(y @ r_inv_y) - 2.0 * x @ b + np.einsum("ij,ij->i", x @ m, x)
            - np.einsum("ij,ij->i", u, u))  # fmt: skip
    log_det_s = (log_det_r + float(np.linalg.slogdet(h)[1])
                 + 2.0 * float(np.log(np.diag(p_chol)).sum()))  # fmt: skip
    log_like = -0.5 * (np.maximum(quad, 0.0) + log_det_s + k * np.log(2.0 * np.pi))
    log_w = _normalised(parts.log_weights + log_like)
    cov = np.linalg.inv(h_inv + m)
    centres = (x @ h_inv.T + b[None, :]) @ cov.T
    return MixtureParts(centres, log_w, 0.5 * (cov + cov.T), None)
