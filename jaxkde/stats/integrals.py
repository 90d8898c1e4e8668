"""Closed-form integrals of Gaussian KDEs (SciPy's ``integrate_gaussian`` and ``integrate_kde``).

A Gaussian KDE is the mixture ``f = sum_i w_i N(c_i, lambda_i^2 H)``. Products of normals
integrate in closed form:

* ``int f(x) N(x; m, S) dx = sum_i w_i N(m; c_i, lambda_i^2 H + S)``;
* ``int f(x) g(x) dx = sum_{i,j} w_i v_j N(c_i; e_j, H + G)`` for ``g = sum_j v_j N(e_j, G)``:
  the KDE of ``f``'s centres with bandwidth ``H + G``, evaluated at ``g``'s centres.

Both are computed as logs. The first in float64 on the host, ``O(n d^2)``, with ``H`` and
``S`` diagonalised together (``L^-1 S L^-T = V diag(s) V^T``, ``H = L L^T``), so an adaptive
factor per centre costs nothing more; the second by the exact blocked engine
(:mod:`jaxkde.core.engine`) in the states' working dtype, memory bounded by its blocks.
"""

from __future__ import annotations

import math

import numpy as np

from jaxkde._validation import check_data
from jaxkde.core.engine import log_density
from jaxkde.core.kernels import GaussianKernel
from jaxkde.core.state import build_state
from jaxkde.stats.marginals import MixtureParts

__all__ = ["log_integrate_gaussian", "log_integrate_kde"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_covariance(cov, d: int) -> np.ndarray:
    """``cov`` as a symmetric positive semi-definite float64 ``(d, d)`` matrix (a scalar or a
    vector of variances is taken as ``c I`` or ``diag(v)``)."""
    try:
        c = np.asarray(cov, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"cov must be a real number, vector or matrix; got {cov!r}.") from None
    if c.ndim == 0:
        c = c * np.eye(d)
    elif c.ndim == 1 and c.shape == (d,):
        c = np.diag(c)
    if c.shape != (d, d):
        raise ValueError(f"cov must have shape ({d}, {d}) (or be a scalar or ({d},)); "
                         f"got shape {np.shape(cov)}.")  # fmt: skip
    if not np.all(np.isfinite(c)):
        raise ValueError("cov must be finite.")
    if not np.allclose(c, c.T, rtol=1e-10, atol=1e-300):
        raise ValueError("cov must be symmetric.")
    c = (c + c.T) / 2
    low = np.linalg.eigvalsh(c).min()
    if low < -1e-10 * max(np.abs(c).max(), 1e-300):
        raise ValueError(
            f"cov must be positive semi-definite; its smallest eigenvalue is {low:.3g}."
        )
    return c


def log_integrate_gaussian(parts: MixtureParts, mean, cov) -> float:
    """``log int f(x) N(x; mean, cov) dx`` for the Gaussian mixture ``parts``.

    Parameters
    ----------
    parts : MixtureParts
        The KDE as a mixture (:func:`jaxkde.stats.mixture_parts`).
    mean : array-like, shape (d,)
    cov : float, array of shape (d,) or (d, d)
        Positive semi-definite (``cov = 0`` gives ``log f(mean)``).

    Returns
    -------
    float
        In float64; ``-inf`` only where every term underflows float64's logarithm range
        (never for finite input: the terms are summed as logs).
    """
    centres, log_w, h, log_factors = parts
    d = centres.shape[1]
    m, _ = check_data(np.reshape(mean, (1, -1)) if np.ndim(mean) <= 1 else mean, "mean",
                      n_features=d)  # fmt: skip
    if m.shape[0] != 1:
        raise ValueError(f"mean must have shape ({d},); got {np.shape(mean)}.")
    s = _check_covariance(cov, d)
    chol = np.linalg.cholesky(h)
    inner = np.linalg.solve(chol, np.linalg.solve(chol, s).T)  # L^-1 S L^-T
    eig, vec = np.linalg.eigh((inner + inner.T) / 2)
    eig = np.maximum(eig, 0.0)
    y = np.linalg.solve(chol, (centres - m[0]).T).T @ vec  # (n, d): V^T L^-1 (c_i - m)
    scale2 = np.ones(len(centres)) if log_factors is None else np.exp(2.0 * log_factors)
    var = scale2[:, None] + eig[None, :]  # eigenvalues of L^-1 (lambda^2 H + S) L^-T
    log_det = np.sum(np.log(np.diag(chol))) + 0.5 * np.sum(np.log(var), axis=1)
    log_normal = -0.5 * d * _LOG_2PI - log_det - 0.5 * np.sum(y * y / var, axis=1)
    return float(np.logaddexp.reduce(log_w + log_normal))


def log_integrate_kde(
    first: MixtureParts, second: MixtureParts, *, dtype=np.float32, chunk_size: int = 4096,
    block_size: int = 1024,
) -> float:  # fmt: skip
    """``log int f(x) g(x) dx`` for two Gaussian mixtures without adaptive factors.

    The KDE of ``first``'s centres and weights with bandwidth ``H + G``, evaluated at
    ``second``'s centres by the exact engine in ``dtype`` (within its stated error, ``1e-5``
    relative in float32) and summed with ``second``'s weights in float64.
    """
    if first.log_factors is not None or second.log_factors is not None:
        raise ValueError("integrate_kde needs fixed bandwidths; a KDE with adaptive=True has "
                         "one bandwidth per centre.")  # fmt: skip
    d = first.centres.shape[1]
    if second.centres.shape[1] != d:
        raise ValueError(f"the two KDEs must have the same number of features; got {d} and "
                         f"{second.centres.shape[1]}.")  # fmt: skip
    # The larger set as data, the smaller as queries: the engine's work is the same, its
    # compiled query blocks fewer.
    data, queries = (
        (first, second) if len(first.centres) >= len(second.centres) else (second, first)
    )
    state = build_state(data.centres, np.exp(data.log_weights), first.bandwidth +
                        second.bandwidth, GaussianKernel(), chunk_size=chunk_size,
                        dtype=dtype)  # fmt: skip
    log_f = np.concatenate([
        np.asarray(log_density(state, queries.centres[i : i + block_size]), np.float64)
        for i in range(0, len(queries.centres), block_size)
    ])  # fmt: skip
    return float(np.logaddexp.reduce(queries.log_weights + log_f))
