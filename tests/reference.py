"""float64 references and tolerances shared by the tests: brute-force densities, scales."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp

# Tolerances on |relative error| of log densities against float64 brute force.
RTOL = {"float32": 1e-5, "float64": 1e-10}


def assert_float32_close(got, want, exponent_scale, rtol=1e-5):
    """float32 check in high dimensions: error relative to the size of the exponent.

    A float32 squared distance carries a rounding error of order eps32 times its size, so in
    784-d, where ``0.5 |z_q - z_i|^2`` is hundreds of nats, the absolute error of ``log f`` is a
    fixed fraction of that scale even when ``log f`` itself is near zero. Demand
    ``|got - want| <= rtol * max(|want|, exponent_scale)`` per query.
    """
    scale = np.maximum(np.abs(want), exponent_scale)
    err = np.abs(np.asarray(got, np.float64) - want)
    assert np.all(err <= rtol * scale), f"max scaled error {np.max(err / scale):.3g} > {rtol}"


def half_min_sq_distance(x, queries, h):
    """0.5 min_i |q - x_i|^2 / h^2 per query: the exponent scale of an isotropic KDE."""
    x = np.asarray(x, np.float64)
    q = np.asarray(queries, np.float64)
    d2 = (q**2).sum(1)[:, None] + (x**2).sum(1)[None, :] - 2 * q @ x.T
    return 0.5 * np.maximum(d2.min(axis=1), 0) / h**2


def brute_log_density(x, queries, h_matrix, weights=None):
    """float64 brute force of log sum_i w_i N(q; x_i, H) with H of shape (d,) or (d, d)."""
    x = np.asarray(x, np.float64)
    q = np.asarray(queries, np.float64)
    n, d = x.shape
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    h = np.asarray(h_matrix, np.float64)
    h = np.diag(h) if h.ndim == 1 else h
    chol = np.linalg.cholesky(h)
    diagonal = np.allclose(h, np.diag(np.diag(h)), rtol=0, atol=0)
    d2 = np.empty((q.shape[0], n))
    for start in range(0, q.shape[0], 16):  # direct differences, 16 queries at a time
        diff = q[start : start + 16, None, :] - x[None, :, :]
        if diagonal:
            u = diff / np.sqrt(np.diag(h))
        else:
            u = np.linalg.solve(chol, diff.reshape(-1, d).T).T.reshape(diff.shape)
        d2[start : start + 16] = np.einsum("qnd,qnd->qn", u, u)
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    log_norm = -0.5 * d * math.log(2 * math.pi) - np.sum(np.log(np.diag(chol)))
    return logsumexp(log_w[None, :] - 0.5 * d2, axis=1) + log_norm


def brute_univariate_log_density(x, queries, h, p):
    """float64 brute force of the seed's log( 1/(n h) sum phi(||q - x_i||_p / h) )."""
    diff = np.abs(np.asarray(queries, np.float64)[:, None, :] - np.asarray(x, np.float64)[None])
    r = diff.sum(-1) if p == 1 else (diff.max(-1) if p == np.inf else np.sqrt((diff**2).sum(-1)))
    n = x.shape[0]
    return logsumexp(-0.5 * (r / h) ** 2, axis=1) - math.log(n * h) - 0.5 * math.log(2 * math.pi)


def mnist_like(rng: np.random.Generator, n: int, d: int = 784) -> np.ndarray:
    """Sparse uint8 'images': a few bright blobs per row on a zero background, constant borders."""
    side = math.isqrt(d)
    img = np.zeros((n, side, side), np.float64)
    yy, xx = np.mgrid[0:side, 0:side]
    for _ in range(3):
        cy = rng.uniform(8, side - 8, size=(n, 1, 1))
        cx = rng.uniform(8, side - 8, size=(n, 1, 1))
        img += np.exp(
            -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(1.5, 3, (n, 1, 1)) ** 2)
        )
    img = np.clip(img * 255, 0, 255).astype(np.uint8)
    return img.reshape(n, d)


def tiered(cases, fast: int = 1) -> list:
    """Parametrize cases, the first ``fast`` in the fast tier and the rest marked ``slow``."""
    out = []
    for i, case in enumerate(cases):
        values = case if isinstance(case, tuple) else (case,)
        out.append(case if i < fast else pytest.param(*values, marks=pytest.mark.slow))
    return out
