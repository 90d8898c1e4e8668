"""Weighted data statistics merged from parts: the rules' inputs without the rows in one place.

The parts are the processes of a fit across processes (:mod:`jaxkde.scale.distributed`) or the
blocks
of a file streamed from disk (:mod:`jaxkde.scale.streaming`). Each part is summarised in float64 by
:func:`part_statistics` (count, total weight, sum of squared weights, weighted mean, centred
second moments, per-column range of the rows of positive weight: ``d^2 + 3 d + 3`` numbers);
:func:`merge_statistics` combines parts exactly by Chan's parallel formulas, so the result does
not depend on how the rows were split, up to float64 rounding.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "Moments",
    "merge_statistics",
    "moments",
    "part_statistics",
]


class Moments(NamedTuple):
    """Weighted statistics of rows held in parts, merged (float64).

    Attributes
    ----------
    counts : np.ndarray, shape (n_parts,)
        Rows of each part.
    part_weights : np.ndarray, shape (n_parts,)
        Total weight of each part.
    total_weight : float
    n_eff : float
        Kish's effective sample size ``(sum w)^2 / sum w^2``.
    mean : np.ndarray, shape (d,)
    cov : np.ndarray, shape (d, d)
        Weighted, bias-corrected covariance (``numpy.cov(..., aweights=w)``); NaN when fewer
        than two rows carry weight.
    low, high : np.ndarray, shape (d,)
        Smallest and largest value of each column over the rows of positive weight.
    """

    counts: np.ndarray
    part_weights: np.ndarray
    total_weight: float
    n_eff: float
    mean: np.ndarray
    cov: np.ndarray
    low: np.ndarray
    high: np.ndarray


def part_statistics(x: np.ndarray, w: np.ndarray | None, full: bool = True) -> np.ndarray:
    """The packed statistics ``(d^2 + 3 d + 3,)`` of rows ``x`` ``(n, d)`` with weights ``w``
    (``None``: ones), in float64. Without ``full`` only the diagonal of the second moments is
    computed (``O(n d)`` instead of ``O(n d^2)``); the merged covariance is then diagonal."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    total = float(w.sum())
    mean = (w @ x) / total if total > 0 else np.zeros(d)
    centred = x - mean
    if full:
        m2 = (centred * w[:, None]).T @ centred
    else:
        m2 = np.diag(w @ (centred * centred))
    live = x if w.all() else x[w > 0]
    low = live.min(axis=0) if live.size else np.full(d, np.inf)
    high = live.max(axis=0) if live.size else np.full(d, -np.inf)
    return np.concatenate([[n, total, float(w @ w)], mean, m2.reshape(-1), low, high])


def _unpack(parts: np.ndarray, d: int):
    parts = np.atleast_2d(parts)
    mean = parts[:, 3 : 3 + d]
    m2 = parts[:, 3 + d : 3 + d + d * d].reshape(-1, d, d)
    low = parts[:, 3 + d + d * d : 3 + 2 * d + d * d]
    high = parts[:, 3 + 2 * d + d * d :]
    return parts[:, 0], parts[:, 1], parts[:, 2], mean, m2, low, high


def merge_statistics(parts: np.ndarray, d: int, full: bool = True) -> np.ndarray:
    """Packed statistics of the union of ``parts`` ``(n_parts, d^2 + 3 d + 3)`` (Chan);
    ``full=False`` for parts of diagonal second moments."""
    counts, weights, squares, means, m2s, lows, highs = _unpack(parts, d)
    big_w = float(weights.sum())
    grand = (weights @ means) / big_w if big_w > 0 else np.zeros(d)
    spread = means - grand
    if full:
        m2 = m2s.sum(axis=0) + (spread * weights[:, None]).T @ spread
    else:
        m2 = m2s.sum(axis=0) + np.diag(weights @ (spread * spread))
    return np.concatenate([[counts.sum(), big_w, squares.sum()], grand, m2.reshape(-1),
                           lows.min(axis=0), highs.max(axis=0)])  # fmt: skip


def moments(parts: np.ndarray, d: int, full: bool = True) -> Moments:
    """:class:`Moments` of the union of ``parts`` (each :func:`part_statistics`, of the same
    ``full``).

    Raises ``ValueError`` when the total weight is not positive and finite.
    """
    parts = np.atleast_2d(parts)
    merged = merge_statistics(parts, d, full)
    _, big_w, s2, grand, m2, low, high = (a[0] for a in _unpack(merged, d))
    big_w, s2 = float(big_w), float(s2)
    if not (big_w > 0 and math.isfinite(big_w)):
        raise ValueError("the weights of X must have a positive, finite total.")
    scale = 1.0 - s2 / big_w**2
    cov = m2 / big_w / scale if scale > 0 else np.full((d, d), np.nan)
    return Moments(
        counts=parts[:, 0].astype(np.int64),
        part_weights=parts[:, 1].copy(),
        total_weight=big_w,
        n_eff=big_w**2 / s2,
        mean=grand,
        cov=(cov + cov.T) / 2,
        low=low,
        high=high,
    )
