"""The fitted state of a KDE: an immutable pytree holding what evaluation and sampling need."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

from .kernels import Kernel

__all__ = ["KDEState", "build_state", "chunk_layout", "unwhiten", "whiten"]

# Whitening is a change of coordinates every result depends on: always true float32/float64
# products, never TF32, whatever the engine's distance precision.
_HIGHEST = lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class KDEState:
    """Fitted KDE as data (a JAX pytree; ``kernel`` is static metadata).

    With ``H = L L^T`` the bandwidth (in the coordinates of ``basis``), a point ``x`` is
    whitened as ``z = L^{-1} B^T (x - mean)`` (``B = basis``, or the identity), so that
    ``log f(y) = log_normalizer + logsumexp_i [log_weights_i + kernel.log_profile(|z_y - z_i|^2)]``.

    Attributes
    ----------
    points : array, shape (n_chunks, chunk_size, k)
        Whitened, centred data split into equal chunks; padding rows are zero.
    sq_norms : array, shape (n_chunks, chunk_size)
        ``|z_i|^2`` of each point (0 on padding).
    log_weights : array, shape (n_chunks, chunk_size)
        Normalised log weights (they log-sum-exp to 0); ``-inf`` on padding.
    mean : array, shape (d,)
        Weighted mean of the data, subtracted before whitening.
    chol : array, shape (k,) or (k, k)
        Cholesky factor ``L`` of the bandwidth: its diagonal when ``H`` is diagonal.
    basis : array of shape (d, k), or None
        Orthonormal basis of the subspace the density lives in; ``None`` for the whole space.
    log_normalizer : array, shape ()
        ``kernel.log_normalizer(k, log |det L|)``.
    n_samples : int
        Number of data points (rows before padding). Static.
    kernel : Kernel
        The kernel. Static.
    """

    points: jax.Array
    sq_norms: jax.Array
    log_weights: jax.Array
    mean: jax.Array
    chol: jax.Array
    basis: jax.Array | None
    log_normalizer: jax.Array
    n_samples: int
    kernel: Kernel

    @property
    def dim(self) -> int:
        """Dimension ``k`` of the whitened space."""
        return self.points.shape[-1]

    @property
    def n_features(self) -> int:
        """Number of features ``d`` of the original data."""
        return self.mean.shape[0]

    @property
    def dtype(self):
        return self.points.dtype

    def bandwidth_matrix(self) -> np.ndarray:
        """``H`` in the original coordinates, shape ``(d, d)`` (``B H B^T`` on a subspace)."""
        chol = np.asarray(self.chol, np.float64)
        h = np.diag(chol**2) if chol.ndim == 1 else chol @ chol.T
        if self.basis is not None:
            basis = np.asarray(self.basis, np.float64)
            h = basis @ h @ basis.T
        return h


jax.tree_util.register_dataclass(
    KDEState,
    data_fields=["points", "sq_norms", "log_weights", "mean", "chol", "basis", "log_normalizer"],
    meta_fields=["n_samples", "kernel"],
)


def whiten(state: KDEState, x: jax.Array) -> jax.Array:
    """Map points ``(m, d)`` to the whitened coordinates ``(m, k)`` of ``state``."""
    u = x - state.mean
    if state.basis is not None:
        u = jnp.matmul(u, state.basis, precision=_HIGHEST)
    if state.chol.ndim == 1:
        return u / state.chol
    return solve_triangular(state.chol, u.T, lower=True).T


def unwhiten(state: KDEState, z: jax.Array) -> jax.Array:
    """Inverse of :func:`whiten`: whitened ``(m, k)`` back to original coordinates ``(m, d)``."""
    u = z * state.chol if state.chol.ndim == 1 else jnp.matmul(z, state.chol.T, precision=_HIGHEST)
    if state.basis is not None:
        u = jnp.matmul(u, state.basis.T, precision=_HIGHEST)
    return u + state.mean


def chunk_layout(n: int, max_chunk: int) -> tuple[int, int]:
    """Split ``n`` rows into ``n_chunks`` equal chunks of at most ``max_chunk`` rows.

    The chunk size is rounded up to a multiple of 8, so padding is below ``8 * n_chunks`` rows.
    """
    n_chunks = max(1, math.ceil(n / max_chunk))
    size = math.ceil(n / n_chunks)
    size = min(max_chunk, 8 * math.ceil(size / 8)) if max_chunk >= 8 else size
    n_chunks = math.ceil(n / size)
    return n_chunks, size


def build_state(
    data: jax.Array,
    weights: jax.Array | None,
    bandwidth: np.ndarray,
    kernel: Kernel,
    *,
    basis: np.ndarray | None = None,
    chunk_size: int = 4096,
) -> KDEState:
    """Whiten, centre and chunk ``data`` for evaluation.

    Parameters
    ----------
    data : array, shape (n, d)
        Training points, already in the working dtype.
    weights : array, shape (n,), or None
        Non-negative weights, not all zero (``None``: equal weights).
    bandwidth : array, shape (k,) or (k, k)
        Diagonal or full bandwidth matrix ``H`` in the coordinates of ``basis``.
    kernel : Kernel
    basis : array of shape (d, k), or None
    chunk_size : int
        Maximum number of data points reduced per step.
    """
    dtype = data.dtype
    n, _ = data.shape
    w = jnp.ones((n,), dtype) if weights is None else jnp.asarray(weights, dtype)
    w = w / jnp.sum(w)
    # The centre is computed in float64 on the host: a constant feature stays exactly constant.
    mean = jnp.asarray(
        np.average(np.asarray(data, np.float64), axis=0, weights=np.asarray(w)), dtype
    )
    h = np.asarray(bandwidth, np.float64)
    chol64 = np.sqrt(h) if h.ndim == 1 else np.linalg.cholesky(h)
    log_det = float(np.sum(np.log(chol64 if h.ndim == 1 else np.diag(chol64))))
    basis_j = None if basis is None else jnp.asarray(basis, dtype)
    partial = KDEState(
        points=None, sq_norms=None, log_weights=None, mean=mean,
        chol=jnp.asarray(chol64, dtype), basis=basis_j, log_normalizer=None,
        n_samples=n, kernel=kernel,
    )  # fmt: skip
    z = whiten(partial, data)
    k = z.shape[1]
    n_chunks, size = chunk_layout(n, chunk_size)
    pad = n_chunks * size - n
    z = jnp.pad(z, ((0, pad), (0, 0)))
    log_w = jnp.pad(jnp.log(w), (0, pad), constant_values=-jnp.inf)
    return dataclasses.replace(
        partial,
        points=z.reshape(n_chunks, size, k),
        sq_norms=jnp.sum(z * z, axis=1).reshape(n_chunks, size),
        log_weights=log_w.reshape(n_chunks, size),
        log_normalizer=jnp.asarray(kernel.log_normalizer(k, log_det), dtype),
    )
