"""The geometry of a KDE: its score function (gradient of the log density) and mean shift.

For a radial kernel with log profile ``phi`` and whitened queries ``q``,

    grad_z log f(q) = sum_i p_i c_i (q - z_i),   c_i = 2 phi'(|q - z_i|^2 / l_i^2) / l_i^2,

where ``p_i`` are the posterior weights of the centres (the softmax of the log terms) and
``l_i`` the adaptive factors (1 without). The sums ``S = sum_i p_i c_i`` and
``V = sum_i p_i c_i z_i`` are accumulated with the engine's online log-sum-exp, chunk by chunk
and block by block, so memory stays ``O(block * chunk)``: ``V`` is one extra matrix product
per chunk (direct differences in 1-3 dimensions, where ``sum_i p_i c_i (q_j - z_ij)`` is
summed coordinate by coordinate from the double-word differences). Then

    grad_z log f(q) = S q - V,      mean shift:  q <- V / S,

the mean shift being the weighted mean of the centres under the kernel's "shadow" weights
``p_i (-c_i)`` (for the Gaussian with a fixed ``H``, the classic ``sum_i p_i x_i``). The
gradient in the data's coordinates is ``L^-T grad_z``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxkde.core.engine import DIRECT_MAX_DIM, log_density, map_query_blocks
from jaxkde.core.kernels import TophatKernel, UnivariateGaussianKernel
from jaxkde.core.state import KDEState, host_whitening, unwhiten_host, whiten_queries

__all__ = ["Modes", "mean_shift", "score_function"]


def _check(state: KDEState, what: str) -> None:
    if isinstance(state.kernel, UnivariateGaussianKernel):
        raise ValueError(f"{what} needs a normalised kernel; 'univariate_gaussian' is not one.")
    if state.kernel.norm != 2.0 and state.n_features > 1:
        raise ValueError(
            f"{what} needs the Euclidean norm (p = 2) in more than one dimension; the kernel "
            f"measures distances in the {state.kernel.norm:g}-norm."
        )
    if isinstance(state.kernel, TophatKernel):
        raise ValueError(
            f"{what} is 0 almost everywhere for the tophat kernel (its density is piecewise "
            "constant); use another kernel."
        )


def _slope(kernel, sq):
    """``phi'(sq)``, 0 where it is not finite (a kink of the profile, or outside a support)."""
    grad = jnp.vectorize(jax.grad(lambda s: kernel.log_profile(s)))(sq)
    return jnp.where(jnp.isfinite(grad), grad, 0.0)


def _block_sums(state: KDEState, q_hi, q_lo):
    """``(S, V, lse)`` of one block of whitened queries ``(b, k)``: ``(b,)``, ``(b, k)``, ``(b,)``
    (``S`` and ``V`` relative to ``exp(lse)``)."""
    kernel = state.kernel
    b, k = q_hi.shape
    dtype = q_hi.dtype
    direct = k <= DIRECT_MAX_DIM
    lo = state.points_lo if state.points_lo is not None else jnp.zeros(state.points.shape[:1])
    has_lo = state.points_lo is not None and q_lo is not None
    q_sq = jnp.sum(q_hi * q_hi, axis=1)

    def step(carry, chunk):
        run_max, run_s, run_v = carry
        z, z_lo, z_sq, log_w, log_f = chunk
        if direct:
            diffs = [q_hi[:, j, None] - z[None, :, j] for j in range(k)]
            if has_lo:
                diffs = [d + (q_lo[:, j, None] - z_lo[None, :, j]) for j, d in enumerate(diffs)]
            d2 = sum(d * d for d in diffs)
        else:
            cross = jnp.matmul(q_hi, z.T, precision=lax.Precision.HIGHEST)
            d2 = jnp.maximum(q_sq[:, None] + z_sq[None, :] - 2.0 * cross, 0.0)
        inv = 1.0 if log_f is None else jnp.exp(-2.0 * log_f)[None, :]
        sq = d2 * inv
        logits = log_w[None, :] + kernel.log_profile(sq)
        if log_f is not None:
            logits = logits - k * log_f[None, :]
        new_max = jnp.maximum(run_max, jnp.max(logits, axis=1))
        shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        e = jnp.where(jnp.isfinite(logits), jnp.exp(logits - shift[:, None]), 0.0)
        c = 2.0 * _slope(kernel, sq) * inv
        rescale = jnp.exp(jnp.where(jnp.isfinite(run_max), run_max, shift) - shift)
        ec = e * c
        run_s = run_s * rescale[:, None] + jnp.stack([jnp.sum(e, 1), jnp.sum(ec, 1)], axis=1)
        if direct:  # sum_i e_i c_i (q_j - z_ij), exact from the differences
            part = jnp.stack([jnp.sum(ec * d, axis=1) for d in diffs], axis=1)
        else:  # S q - V by one product
            part = (jnp.sum(ec, 1)[:, None] * q_hi
                    - jnp.matmul(ec, z, precision=lax.Precision.HIGHEST))  # fmt: skip
        run_v = run_v * rescale[:, None] + part
        return (new_max, run_s, run_v), None

    xs = (state.points, lo, state.sq_norms, state.log_weights, state.log_factors)
    init = (jnp.full((b,), -jnp.inf, dtype), jnp.zeros((b, 2), dtype), jnp.zeros((b, k), dtype))
    (_, run_s, grad), _ = lax.scan(step, init, xs)
    total = run_s[:, 0]
    safe = jnp.where(total > 0, total, 1.0)
    # grad_z = sum p c (q - z) (direct) or S q - V (product); S = sum p c
    return grad / safe[:, None], run_s[:, 1] / safe


@functools.partial(jax.jit, static_argnames=("block_size",))
def _whitened_score(state, q_hi, q_lo, *, block_size):
    return map_query_blocks(lambda args: _block_sums(state, *args), (q_hi, q_lo), block_size)


def _to_data_gradient(state: KDEState, grad_z: np.ndarray) -> np.ndarray:
    """``B L^-T grad_z`` in float64."""
    hw = host_whitening(state)
    g = grad_z * hw.transform if hw.transform.ndim == 1 else grad_z @ hw.transform
    return g if hw.basis is None else g @ hw.basis.T


def score_function(state: KDEState, points, *, block_size: int = 1024) -> np.ndarray:
    """``grad log f`` at each row of ``points`` ``(m, d)``: float64 ``(m, d)``.

    Exact sums over the data in the working dtype (see the module docstring); 0 where the
    density is 0 (outside every compact kernel's support). At a kink of the kernel (the
    exponential and linear kernels at a data point) the kink's own term contributes 0.
    """
    _check(state, "the score function")
    q_hi, q_lo = whiten_queries(state, points)
    grad, _ = _whitened_score(state, q_hi, q_lo, block_size=block_size)
    return _to_data_gradient(state, np.asarray(grad, np.float64))


class Modes(NamedTuple):
    """Result of :func:`mean_shift`.

    Attributes
    ----------
    modes : np.ndarray, shape (n_modes, d)
        The distinct points the starts converged to, by decreasing density.
    labels : np.ndarray, shape (n_starts,)
        The mode each start reached (an index into ``modes``).
    points : np.ndarray, shape (n_starts, d)
        Where each start ended.
    converged : np.ndarray of bool, shape (n_starts,)
    n_iter : int
    """

    modes: np.ndarray
    labels: np.ndarray
    points: np.ndarray
    converged: np.ndarray
    n_iter: int


def mean_shift(
    state: KDEState,
    starts,
    *,
    max_iter: int = 500,
    tol: float = 1e-4,
    merge_tol: float = 0.1,
    block_size: int = 1024,
) -> Modes:
    """Mean shift from each row of ``starts`` to a mode of the density (clustering, as
    ``ks::kms``).

    Each step moves a point to the shadow-weighted mean of the centres (see the module
    docstring), in whitened coordinates; a point has converged when its step is below ``tol``
    (in units of the bandwidth). Converged points closer than ``merge_tol`` bandwidths are one
    mode. Points of density 0 (beyond a compact kernel's reach) do not move.
    """
    _check(state, "mean shift")
    q_hi, _ = whiten_queries(state, starts)
    z = np.asarray(q_hi, np.float64)
    m = z.shape[0]
    converged = np.zeros(m, bool)
    n_iter = 0
    dtype = np.dtype(state.dtype)
    while n_iter < max_iter:
        n_iter += 1
        active = np.flatnonzero(~converged)
        grad, s = _whitened_score(state, jnp.asarray(z.astype(dtype)), None,
                                  block_size=block_size)  # fmt: skip
        grad, s = np.asarray(grad, np.float64), np.asarray(s, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(s[:, None] < 0, -grad / s[:, None], 0.0)
        step[converged] = 0.0
        z = z + step
        size = np.sqrt(np.einsum("ij,ij->i", step, step))
        converged[active[size[active] <= tol]] = True
        if converged.all():
            break
    hw = host_whitening(state)
    points = unwhiten_host(state, z, whitening=hw)
    # merge: greedy, highest density first
    log_f = np.asarray(log_density(state, points, whitening=hw), np.float64)
    order = np.argsort(-log_f, kind="stable")
    labels = np.full(m, -1)
    reps: list[int] = []
    rep_z = np.empty((0, z.shape[1]))
    for i in order:
        near = np.flatnonzero(np.sum((rep_z - z[i]) ** 2, axis=1) <= merge_tol**2)
        if near.size:
            labels[i] = near[0]
        else:
            labels[i] = len(reps)
            reps.append(i)
            rep_z = np.vstack([rep_z, z[i]])
    return Modes(points[reps], labels, points, converged, n_iter)
