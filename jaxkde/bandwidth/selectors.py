"""Data-driven bandwidth selectors: robust rule, Sheather-Jones, improved Sheather-Jones,
full-matrix plug-in and binned least-squares cross-validation.

Every selector is a pure function ``(data, weights=None) -> H`` like
:func:`jaxkde.scott_bandwidth`, returning the diagonal of ``H`` ``(d,)`` (per-dimension
selectors) or the full ``(d, d)`` matrix (:func:`plugin_bandwidth`). They are computed in
float64 on the host with NumPy, from data centred there: their sums of kernel derivatives
span more than float32's range (the improved Sheather-Jones series reaches ``k^14`` terms), and
they run before any cast to the working dtype. All of them are for the Gaussian kernel (its
``H``); other kernels receive the same ``H``, as with the rules of thumb.

One-dimensional selectors work on **linearly binned** data: ``n`` points are spread over
``grid_size`` equally spaced bins, and every pair sum ``sum_ij w_i w_j g(x_i - x_j)`` is read
from the bins' autocorrelation (one FFT), so a selector costs ``O(n + M log M)`` and runs on
10^6 points in well under a second. The binning error is ``O(delta^2 g'')`` per pair for bins
of width ``delta``, below 1e-3 relative for bandwidths of ``13 sqrt(order + 1)`` bins or more
(derivatives of that order; LSCV, a difference of two sums, asks 1e-4, and one binning for each
grid of bandwidths it compares). Where a bandwidth being evaluated is narrower (heavy tails or
a far outlier stretch the range over thousands of bandwidths), the data are binned again,
finer, only where they lie, and the pairs of sparse points are formed exactly
(:class:`_PairSums`), so every bandwidth keeps that many bins.

References
----------
* Silverman (1986), *Density Estimation*, eq. 3.31; R's ``bw.nrd0``.
* Sheather & Jones (1991), JRSS B 53, 683-690; R's ``bw.SJ(method="ste")``.
* Botev, Grotowski & Kroese (2010), Ann. Statist. 38, 2916-2957 (improved Sheather-Jones).
* Wand & Jones (1994), Comput. Statist. 9, 97-116; Duong & Hazelton (2003), J. Nonparametr.
  Stat. 15, 17-30 (full-matrix plug-in; ``ks::Hpi``).
* Rudemo (1982), Bowman (1984) (least-squares cross-validation; R's ``bw.ucv``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable

import numpy as np
from numpy.polynomial.hermite_e import hermeval

from jaxkde._validation import check_data, check_positive_int, check_weights
from jaxkde.bandwidth.scale_search import LATTICE_STEP, scale_search

__all__ = [
    "FULL_SELECTORS",
    "PER_DIMENSION_SELECTORS",
    "SELECTORS",
    "SelectorError",
    "isj_bandwidth",
    "plugin_bandwidth",
    "silverman_robust_bandwidth",
    "sj_bandwidth",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
#: Bins of the 1-D selectors (Botev's default grid of 2^14 points).
GRID_SIZE = 2**14
#: The largest dimension of the full-matrix plug-in (as ``ks::Hpi``).
PLUGIN_MAX_DIM = 6


class SelectorError(ValueError):
    """A selector found no bandwidth for these data (too few or too degenerate points)."""


# ----------------------------------------------------------------------------- statistics
def _prepare(data, weights) -> tuple[np.ndarray, np.ndarray, float]:
    """Float64 data ``(n, d)``, normalised weights ``(n,)`` and Kish's effective size."""
    x, _ = check_data(data, "data")
    w = check_weights(weights, x.shape[0])
    if w is None:
        w = np.full(x.shape[0], 1.0 / x.shape[0])
    else:
        keep = w > 0
        x, w = x[keep], w[keep] / w[keep].sum()
    if x.shape[0] < 2:
        raise SelectorError(
            f"a bandwidth selector needs at least 2 samples of positive weight; got {x.shape[0]}."
        )
    return x, w, float(1.0 / np.sum(w**2))


def _weighted_std(x: np.ndarray, w: np.ndarray) -> float:
    mean = w @ x
    return math.sqrt(max(w @ (x - mean) ** 2 / (1.0 - np.sum(w**2)), 0.0))


def _weighted_iqr(x: np.ndarray, w: np.ndarray, weighted: bool) -> float:
    """Interquartile range by R's default quantile (type 7), generalised to weights."""
    if not weighted:
        q1, q3 = np.percentile(x, [25.0, 75.0])
        return float(q3 - q1)
    order = np.argsort(x)
    xs, ws = x[order], w[order]
    # Type 7 with weights: the k-th point at (weight below it) / (weight below the last); with
    # equal weights (k - 1) / (n - 1), R's default.
    below = np.cumsum(ws) - ws
    q1, q3 = np.interp([0.25, 0.75], below / below[-1], xs)
    return float(q3 - q1)


def _robust_scale(x: np.ndarray, w: np.ndarray, weighted: bool, divisor: float) -> float:
    """``min(sd, IQR / divisor)``, or the one that is positive (R's ``bw.nrd0`` convention)."""
    sd = _weighted_std(x, w)
    iqr = _weighted_iqr(x, w, weighted) / divisor
    positive = [s for s in (sd, iqr) if s > 0]
    return min(positive) if positive else 0.0


def _bins(x: np.ndarray, w: np.ndarray, lo: float, hi: float, m: int) -> np.ndarray:
    """Linear binning of weighted points onto ``m`` grid points spanning ``[lo, hi]``."""
    pos = (x - lo) * ((m - 1) / (hi - lo))
    left = np.clip(np.floor(pos).astype(np.int64), 0, m - 2)
    frac = pos - left
    counts = np.bincount(left, weights=w * (1.0 - frac), minlength=m)
    counts += np.bincount(left + 1, weights=w * frac, minlength=m)
    return counts[:m]


def _lag_sums(counts: np.ndarray) -> np.ndarray:
    """``c_k = sum_a counts_a counts_{a+k}`` for lags ``k = 0..m-1`` (by FFT)."""
    m = counts.shape[0]
    size = 1 << (2 * m - 1).bit_length()
    spectrum = np.fft.rfft(counts, size)
    return np.fft.irfft(spectrum * np.conj(spectrum), size)[:m]


#: Relative error of a pair sum. Linear binning adds about ``delta^2 / 6`` to the kernel's
#: variance: a relative error near ``(order + 1) delta^2 / (6 h^2)`` for a derivative of that
#: order, so bins of width ``h sqrt(6 rtol / (order + 1))`` keep it; where the bins over the
#: range are wider, the pair sums are binned again more finely.
PAIR_SUM_RTOL = 1e-3
#: The most bins of one fine binning, and the most point pairs summed exactly where the fine
#: bins would exceed that; beyond both a selector raises :class:`SelectorError`.
MAX_FINE_BINS = 2**22
MAX_EXACT_PAIRS = 10**7
#: A point whose cell of the kernel's reach holds more others than this is binned; the pairs
#: of the others are formed exactly (their differences binned onto the lags).
_DENSE_NEIGHBOURS = 32
#: Pairs further apart than this many bandwidths are left out: a Gaussian derivative of order
#: up to 14 there is below 1e-21 of its value at 0.
_REACH = 12.0
_MAX_LEVEL = 60


class _TooCostly(SelectorError):
    """A pair sum would exceed ``MAX_FINE_BINS`` bins and ``MAX_EXACT_PAIRS`` pairs."""


class _PairSums:
    """Pair sums ``sum_ij w_i w_j g(x_i - x_j)`` of 1-D data (self pairs included), for ``g`` a
    Gaussian derivative of bandwidth ``h`` (left out beyond ``12 h``).

    Level 0 bins the data's whole range on ``m`` points (the linear binning of Wand 1994, one
    FFT). A bandwidth that needs finer bins (heavy tails, a far outlier: the range is then many
    bandwidths) is served by a finer level ``k``, bins ``2^k`` times narrower, laid only where
    the data are: points with many neighbours within the kernel's reach are binned piece by
    piece, and the pairs of the others are formed exactly, their differences binned onto the
    lags (:meth:`_fine_bins`). Either way a derivative of order ``r`` at bandwidth ``h`` is
    evaluated with bins at most ``h sqrt(6 rtol / (r + 1))`` wide; a level whose bins or pairs
    would exceed ``MAX_FINE_BINS`` or ``MAX_EXACT_PAIRS`` raises :class:`SelectorError`.
    """

    def __init__(self, x: np.ndarray, w: np.ndarray, m: int):
        self._rows = (x, w)
        lo, hi = float(x.min()), float(x.max())
        self.delta = (hi - lo) / (m - 1)
        lags = _lag_sums(_bins(x, w, lo, hi, m))
        # FFT rounding below 0 where no pair exists
        self._levels: dict[tuple[int, int], tuple[np.ndarray, float]] = {
            (0, 0): (np.maximum(lags, 0.0), self.delta)
        }
        self.self_weight = float(np.sum(w**2))  # of the rows, for the leave-one-out sums
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def _distinct(self) -> tuple[np.ndarray, np.ndarray]:
        """The sorted distinct values and their summed weights, for the fine levels: exact ties
        are one point (every pair sum is unchanged, self pairs included), so however small the
        bandwidth, tied rows cost nothing."""
        if self._sorted is None:
            x, where = np.unique(self._rows[0], return_inverse=True)
            w = np.bincount(where.reshape(-1), weights=self._rows[1], minlength=x.shape[0])
            self._sorted = (x, w)
        return self._sorted

    def __call__(
        self,
        order: int,
        h: float,
        rtol: float = PAIR_SUM_RTOL,
        band: tuple[float, float] | None = None,
    ) -> float:
        """``sum_ij w_i w_j phi_h^{(order)}(x_i - x_j)`` for an even ``order <= 14``, to about
        ``rtol`` relative. With ``band = (h_min, h_max)`` around ``h``, on the one binning that
        serves every bandwidth of the band (so that a curve over it has no steps between
        binnings, each of the binning's error)."""
        if not h > 0:
            raise SelectorError(f"a pair sum at bandwidth {h!r} was asked for.")
        g = _gauss_derivative(order, h)
        bins = math.sqrt((order + 1) / (6.0 * rtol))  # per bandwidth
        h_min, h_max = (h, h) if band is None else (min(band[0], h), max(band[1], h))
        need = bins * self.delta / h_min
        level = 0 if need <= 1.0 else math.ceil(math.log2(need))
        if level > _MAX_LEVEL:
            raise SelectorError(
                f"a bandwidth of {h_min:.3g} is below 2^-{_MAX_LEVEL} of the data's range."
            )
        delta = self.delta * 0.5**level
        # Fine levels hold the lags within reach of their largest bandwidth: twice the
        # smallest's (one level's range), or the band's.
        lags = 0 if level == 0 else int(_REACH * max(h_max, 2.0 * bins * delta) / delta) + 2
        if (level, lags) not in self._levels:
            self._levels[(level, lags)] = self._fine_bins(delta, lags)
        lag_sums, delta = self._levels[(level, lags)]
        k = min(int(_REACH * h / delta) + 2, lag_sums.shape[0])
        values = g(np.arange(k) * delta)
        return float(lag_sums[0] * values[0] + 2.0 * np.dot(lag_sums[1:k], values[1:]))

    def _fine_bins(self, delta: float, n_lags: int) -> tuple[np.ndarray, float]:
        """Lag sums ``(n_lags,)`` at bins of width ``delta``, for pairs within
        ``(n_lags - 2) delta``. Points in a cell of that width holding more than
        ``_DENSE_NEIGHBOURS`` others are binned, piece by piece where they lie (one FFT); the
        pairs of every other point are formed exactly and their differences binned onto the
        lags, so sparse tails cost their pairs and dense bodies their bins.
        :class:`_TooCostly` where either exceeds its limit."""
        x, w = self._distinct()
        reach = (n_lags - 2) * delta
        # Dense: more than _DENSE_NEIGHBOURS others within reach. A cell of width ``reach``
        # holding more than half as many (all within reach of each other) settles it in O(n);
        # the others are counted exactly. Either side is exact: this only sets the cost.
        cell = np.floor((x - x[0]) / reach)
        starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
        run = np.diff(np.r_[starts, x.shape[0]])
        dense = np.repeat(run - 1 > _DENSE_NEIGHBOURS // 2, run)
        sparse = np.flatnonzero(~dense)
        below = np.searchsorted(x, x[sparse] - reach, side="left")
        above = np.searchsorted(x, x[sparse] + reach, side="right")
        crowded = above - below - 1 > _DENSE_NEIGHBOURS
        dense[sparse[crowded]] = True
        sparse, below, above = sparse[~crowded], below[~crowded], above[~crowded]
        counts = above - below - 1  # partners of each sparse point
        if float(np.sum(counts)) > MAX_EXACT_PAIRS:  # before any binning: fail at no cost
            raise _TooCostly(
                f"the data span too many bandwidths: {float(np.sum(counts)):.3g} pairs of sparse "
                f"points lie within {reach:.3g} of each other."
            )
        lags = np.zeros(n_lags)
        lags[0] += float(np.sum(w[sparse] ** 2))  # the sparse points' self pairs
        if dense.any():
            lags += self._dense_lags(x[dense], w[dense], delta, n_lags)
        first = np.concatenate([[0], np.cumsum(counts)])
        i = 0
        while i < sparse.size:  # about 2^20 pairs at a time
            j = int(np.searchsorted(first, first[i] + 2**20, side="right")) - 1
            j = min(max(j, i + 1), sparse.size)
            rows = np.repeat(sparse[i:j], counts[i:j])
            step = np.arange(rows.size) - np.repeat(first[i:j] - first[i], counts[i:j])
            partners = np.repeat(below[i:j], counts[i:j]) + step
            partners = partners + (partners >= rows)  # skip the point itself
            # Each unordered pair once at lags k >= 1 (the sum doubles them) and twice at lag 0,
            # as the lag sums of bins count them; a pair of two sparse points is met from
            # both ends, with a dense one once.
            weight = w[rows] * w[partners] * np.where(dense[partners], 1.0, 0.5)
            pos = np.abs(x[partners] - x[rows]) / delta
            left = np.minimum(np.floor(pos).astype(np.int64), n_lags - 2)
            frac = pos - left
            near = weight * (1.0 - frac) * np.where(left == 0, 2.0, 1.0)
            lags += np.bincount(left, weights=near, minlength=n_lags)[:n_lags]
            lags += np.bincount(left + 1, weights=weight * frac, minlength=n_lags)[:n_lags]
            i = j
        return lags, delta

    @staticmethod
    def _dense_lags(x: np.ndarray, w: np.ndarray, delta: float, n_lags: int) -> np.ndarray:
        """Lag sums of sorted points, linearly binned at width ``delta`` in pieces cut where two
        neighbours lie more than ``n_lags`` bins apart (empty bins between pieces, one FFT)."""
        cut = np.flatnonzero(np.diff(x) > n_lags * delta) + 1
        starts = np.concatenate([[0], cut])
        ends = np.concatenate([cut, [x.shape[0]]])
        sizes = np.floor((x[ends - 1] - x[starts]) / delta).astype(np.int64) + 2
        total = int(np.sum(sizes + n_lags))
        if total > MAX_FINE_BINS:
            raise _TooCostly(
                f"the data span too many bandwidths: their dense parts need {total} bins of "
                f"{delta:.3g} (at most {MAX_FINE_BINS})."
            )
        offsets = np.concatenate([[0], np.cumsum(sizes + n_lags)[:-1]])
        piece = np.repeat(np.arange(starts.size), ends - starts)
        pos = (x - x[starts][piece]) / delta
        left = np.minimum(np.floor(pos).astype(np.int64), sizes[piece] - 2)
        frac = pos - left
        index = offsets[piece] + left
        counts = np.bincount(index, weights=w * (1.0 - frac), minlength=total)
        counts += np.bincount(index + 1, weights=w * frac, minlength=total)
        return np.maximum(_lag_sums(counts[:total])[:n_lags], 0.0)


def _gauss_derivative(order: int, h: float) -> Callable[[np.ndarray], np.ndarray]:
    """``u -> phi_h^{(order)}(u)`` for an even ``order``, ``phi_h`` the N(0, h^2) density:
    ``He_order(u / h) phi(u / h) / h^(order + 1)``."""
    coeffs = np.zeros(order + 1)
    coeffs[order] = 1.0

    def g(u):
        z = u / h
        return hermeval(z, coeffs) * np.exp(-0.5 * z * z) / (_SQRT_2PI * h ** (order + 1))

    return g


def _columns(x: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(x[:, j]) for j in range(x.shape[1])]


def _per_dimension(name: str, fn, data, weights, **kwargs) -> np.ndarray:
    x, w, n_eff = _prepare(data, weights)
    # Equal weights (zero-weight rows dropped) are no weights: every rule gives the same H.
    weighted = weights is not None and bool(np.ptp(w) > 1e-12 * np.max(w))
    out = []
    for j, col in enumerate(_columns(x)):
        try:
            out.append(fn(col, w, n_eff, weighted, **kwargs))
        except SelectorError as exc:
            where = f" (feature {j})" if x.shape[1] > 1 else ""
            raise SelectorError(f"{name}{where}: {exc}") from None
    return np.asarray(out)


def _check_varies(col: np.ndarray) -> None:
    if not col.max() > col.min():
        raise SelectorError("the data are constant; there is no spread to select a bandwidth.")


# ------------------------------------------------------------------------ robust rule
def _silverman_robust_1d(col, w, n_eff, weighted):
    scale = _robust_scale(col, w, weighted, 1.34)
    if not scale > 0:
        raise SelectorError("the data are constant; there is no spread to select a bandwidth.")
    return (0.9 * scale * n_eff ** (-0.2)) ** 2


def silverman_robust_bandwidth(data, weights=None) -> np.ndarray:
    """Silverman's robust rule per dimension, R's ``bw.nrd0``: ``h = 0.9 min(sd, IQR / 1.34)
    n^{-1/5}`` (the positive one when either is 0; Kish's ``n_eff`` for weighted data).

    Parameters
    ----------
    data : array-like, shape (n, d)
    weights : array-like of shape (n,), optional

    Returns
    -------
    np.ndarray, shape (d,)
        The diagonal of ``H`` (``h^2`` per feature).
    """
    return _per_dimension("silverman_robust", _silverman_robust_1d, data, weights)


# ----------------------------------------------------------------- improved Sheather-Jones
def _isj_fixed_point(t: float, n: float, norm: Callable[[int, float], float]) -> float:
    """``t - xi gamma^[l](t)`` of Botev et al. (2010), eq. (29), with ``l = 7``;
    ``norm(s, t)`` estimates ``||f^{(s)}||^2`` of the density smoothed to time ``t``."""
    ell = 7
    value = norm(ell, t)
    if not value > 0:
        return -1.0
    for s in range(ell - 1, 1, -1):
        k0 = float(np.prod(np.arange(1, 2 * s, 2, dtype=np.float64))) / _SQRT_2PI
        const = (1.0 + 0.5 ** (s + 0.5)) / 3.0
        time = (2.0 * const * k0 / (n * value)) ** (2.0 / (3.0 + 2.0 * s))
        value = norm(s, time)
        if not value > 0:  # every term damped away: no root beyond this t
            return -1.0
    return t - (2.0 * n * math.sqrt(math.pi) * value) ** (-0.4)


def _root(fn, lo: float, hi: float, f_lo: float, f_hi: float, rtol: float = 1e-12) -> float:
    """A root of ``fn`` in ``[lo, hi]``, where ``f_lo`` and ``f_hi`` differ in sign: the
    Illinois variant of regula falsi (the end that stays twice has its value halved),
    bisecting where a step leaves the bracket; at most 200 evaluations, until the bracket is
    ``rtol`` of its end wide."""
    side = 0
    for _ in range(200):
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo) if f_hi != f_lo else 0.5 * (lo + hi)
        if not lo < x < hi:
            x = 0.5 * (lo + hi)
        f_x = fn(x)
        if f_x == 0:
            return x
        if (f_x > 0) == (f_hi > 0):
            hi, f_hi = x, f_x
            f_lo = 0.5 * f_lo if side == -1 else f_lo
            side = -1
        else:
            lo, f_lo = x, f_x
            f_hi = 0.5 * f_hi if side == 1 else f_hi
            side = 1
        if hi - lo <= rtol * max(abs(lo), abs(hi)):
            break
    return 0.5 * (lo + hi)


def _isj_1d(col, w, n_eff, weighted, grid_size):
    _check_varies(col)
    # Botev's unit: the range extended by half of it on each side (his grid), so that his
    # bracket for t applies; the functionals are pair sums and do not depend on the unit.
    span = 2.0 * float(col.max() - col.min())
    sums = _PairSums(col / span, w, grid_size)
    # Botev et al. count distinct values (ties carry no information on the roughness).
    n = n_eff if weighted else float(np.unique(col).size)
    clipped = max(min(1050.0, n), 50.0)
    top = 1e-11 + 0.01 * (clipped - 50.0) / 1000.0

    def norm(order, t):  # ||f_t^{(s)}||^2 = (-1)^s sum_ij w_i w_j phi^{(2s)}_{sqrt(2t)}(x_i - x_j)
        h = math.sqrt(2.0 * t)
        return (-1.0) ** order * sums(2 * order, h)

    def fixed(t):
        return _isj_fixed_point(t, n, norm)

    f_top = fixed(top)
    while not f_top > 0:  # widen the bracket [0, top] until it holds a root (< 40 doublings)
        top *= 2.0
        if top >= 1.0:
            raise SelectorError(
                "the improved Sheather-Jones fixed-point equation has no root in (0, 1): too "
                "few or too clustered points."
            )
        f_top = fixed(top)
    # Solved in log t (the root may lie decades below top): a lower end where the equation
    # is negative (it is 0 minus a positive number at t = 0), decades down at a time.
    low, f_low = top, f_top
    for _ in range(60):
        low *= 0.01
        f_low = fixed(low)
        if not f_low > 0:
            break
    if not f_low <= 0:
        raise SelectorError("the improved Sheather-Jones root is not positive.")
    if f_low == 0:
        return low * span**2
    log_t = _root(lambda s: fixed(math.exp(s)), math.log(low), math.log(top), f_low, f_top,
                  rtol=1e-13)  # fmt: skip
    return math.exp(log_t) * span**2


def isj_bandwidth(data, weights=None, *, grid_size: int = GRID_SIZE) -> np.ndarray:
    """Improved Sheather-Jones (Botev, Grotowski & Kroese 2010), per dimension.

    The fixed-point equation ``t = xi gamma^[7](t)`` is solved inside Botev's bracket
    ``[0, t_max]`` (``t_max`` doubled until it holds a root) by regula falsi in ``log t``, in his
    unit (the data's range extended by half of it on each side), and ``h = sqrt(t*)`` in that
    unit. Each functional ``||f_t^{(s)}||^2`` is the pair sum ``(-1)^s sum_ij w_i w_j
    phi^{(2s)}_{sqrt(2t)}(x_i - x_j)``, on ``grid_size`` linear bins refined wherever they are
    coarser than the bandwidth being evaluated needs (:class:`_PairSums`); Botev's cosine
    transform of the binned data computes the same sums on a fixed grid, which a far outlier
    makes coarser than the bandwidth. The number of points is the number of distinct values
    (as Botev's code), Kish's ``n_eff`` for weighted data.

    KDEpy (1.1.12) scales ``sqrt(t*)`` by the data range instead of the grid's, which gives
    half this bandwidth when the range exceeds 12 (KDEpy issues #199 and #201); on such data
    this function is twice KDEpy's value, up to KDEpy's coarser grid.

    Returns
    -------
    np.ndarray, shape (d,)
        The diagonal of ``H``.

    Raises
    ------
    SelectorError
        When the equation has no root (tiny or degenerate samples); :func:`jaxkde.KDE` then
        falls back to :func:`silverman_robust_bandwidth` with a warning.
    """
    grid_size = check_positive_int(grid_size, "grid_size")
    if grid_size < 64:
        raise ValueError(f"grid_size must be at least 64; got {grid_size}.")
    return _per_dimension("isj", _isj_1d, data, weights, grid_size=grid_size)


# ------------------------------------------------------------------------ Sheather-Jones
def _root_expanding(fn, lower: float, upper: float) -> float:
    """Root of ``fn`` in ``[lower, upper]``, the interval widened as R's ``bw.SJ`` does."""
    for attempt in range(100):
        f_lo, f_hi = fn(lower), fn(upper)
        if not (math.isfinite(f_lo) and math.isfinite(f_hi)):
            break
        if f_lo * f_hi <= 0:
            return _root(fn, lower, upper, f_lo, f_hi)
        if attempt % 2 == 0:
            upper *= 1.2
        else:
            lower /= 1.2
    raise SelectorError("the Sheather-Jones equation has no root near the normal-scale value.")


def _sj_1d(col, w, n_eff, weighted, grid_size):
    _check_varies(col)
    scale = _robust_scale(col, w, weighted, 1.349)
    sums = _PairSums(col, w, grid_size)
    denom = 1.0 - sums.self_weight  # pairs i != j: n (n - 1) / n^2 without weights

    def psi(order, h):  # R's bw_phi4 / bw_phi6: the self pairs included, over n (n - 1)
        return sums(order, h) / denom

    n = n_eff
    a = 1.24 * scale * n ** (-1.0 / 7.0)
    b = 1.23 * scale * n ** (-1.0 / 9.0)
    c1 = 1.0 / (2.0 * math.sqrt(math.pi) * n)
    td = -psi(6, b)
    if not (math.isfinite(td) and td > 0):
        raise SelectorError("the sample is too sparse to estimate the sixth-derivative term.")
    alpha2 = 1.357 * (psi(4, a) / td) ** (1.0 / 7.0)
    if not math.isfinite(alpha2):
        raise SelectorError("the sample is too sparse to estimate the pilot ratio.")

    def equation(h):
        sd = psi(4, alpha2 * h ** (5.0 / 7.0))
        return (c1 / sd) ** 0.2 - h if sd > 0 else math.inf

    hmax = 1.144 * scale * n ** (-0.2)
    return _root_expanding(equation, 0.1 * hmax, hmax) ** 2


def sj_bandwidth(data, weights=None, *, grid_size: int = GRID_SIZE) -> np.ndarray:
    """Sheather & Jones (1991) solve-the-equation plug-in, per dimension (R's ``bw.SJ``).

    The equations of R's ``bw.SJ(method="ste")``: scale ``min(sd, IQR / 1.349)``, pilots
    ``1.24 scale n^{-1/7}`` and ``1.23 scale n^{-1/9}``, the functionals over ``n (n - 1)``
    with the self pairs included, and the root searched from ``[0.1, 1] * 1.144 scale
    n^{-1/5}`` outwards. Two differences, both towards the exact value: pair sums on
    ``grid_size`` linear bins (R truncates to 1000 bins), and the root solved to 1e-12
    relative (R's ``uniroot`` stops at ``0.01 * 1.144 scale n^{-1/5}``).

    Returns
    -------
    np.ndarray, shape (d,)
        The diagonal of ``H``.
    """
    grid_size = check_positive_int(grid_size, "grid_size")
    return _per_dimension("sj", _sj_1d, data, weights, grid_size=grid_size)


# ------------------------------------------------------------------ binned 1-D LSCV
_LSCV_RTOL = 1e-4


def _lscv_1d_curve(sums: _PairSums, n_eff: float, log_h: np.ndarray,
                   one_binning: bool = True) -> np.ndarray:  # fmt: skip
    """``LSCV(h) = int f^2 - 2 mean_i f_{-i}(x_i)`` on a grid of ``log h`` (weighted), every
    point on the bins of the smallest ``h`` (``one_binning``) or each on its own."""
    out = np.empty(log_h.shape)
    s2 = sums.self_weight
    band = None
    if one_binning:
        band = (math.exp(float(np.min(log_h))), math.sqrt(2.0) * math.exp(float(np.max(log_h))))
    for i, lh in enumerate(log_h):
        h = math.exp(lh)
        # LSCV is a difference of two close sums, and near its minimum a flat curve: each sum
        # is asked for 1e-4, and a grid is evaluated on one binning (a step of the binning's
        # error between two bandwidths would make a minimum of its own).
        all_pairs = sums(0, h, _LSCV_RTOL, band)
        conv = sums(0, math.sqrt(2.0) * h, _LSCV_RTOL, band)
        # sum_{i != j} w_i w_j phi_h = all pairs - self pairs; f_{-i} renormalised by 1 - w_i.
        loo = (all_pairs - s2 / (_SQRT_2PI * h)) / (1.0 - s2)
        out[i] = conv - 2.0 * loo
    return out


def _lscv_1d_value(data, weights, h2: float, grid_size: int = GRID_SIZE) -> float:
    """``LSCV`` of 1-D ``data`` at the bandwidth ``h^2 = h2``, on bins."""
    x, w, n_eff = _prepare(data, weights)
    sums = _PairSums(x[:, 0], w, grid_size)
    return float(_lscv_1d_curve(sums, n_eff, np.array([0.5 * math.log(h2)]))[0])


def _lscv_1d(col, w, n_eff, weighted, grid_size):
    _check_varies(col)
    sums = _PairSums(col, w, grid_size)
    scale = _robust_scale(col, w, weighted, 1.349)
    start = math.log(1.06 * scale * n_eff ** (-0.2))  # the normal-scale bandwidth

    skipped = []  # log scales whose pair sums would exceed the limits

    def minus_lscv(log_scales):
        scales = np.asarray(log_scales, np.float64)
        if np.ptp(scales) <= 2.0 * LATTICE_STEP * (1.0 + 1e-9):  # a bracket being refined
            with contextlib.suppress(_TooCostly):
                return -_lscv_1d_curve(sums, n_eff, start + scales)
        out = np.empty(scales.shape)  # each bandwidth on its own bins, within the limits
        for i, s in enumerate(scales):
            try:
                out[i] = -_lscv_1d_curve(sums, n_eff, np.array([start + s]), one_binning=False)[0]
            except _TooCostly:
                out[i] = math.nan
                skipped.append(s)
        return out

    # From 1e-2 to 1e2 times the rule first: far below it, dense data cost the most.
    status, log_c, _, _ = scale_search(minus_lscv, 1e-7, first=-8)
    if any(abs(s - log_c) < 1.5 * LATTICE_STEP for s in skipped):
        raise SelectorError(
            "least-squares cross-validation has its smallest value next to bandwidths too "
            f"narrow to evaluate within the limits ({MAX_FINE_BINS} bins, {MAX_EXACT_PAIRS} "
            "pairs)."
        )
    if status == "unbounded":
        raise SelectorError(
            "least-squares cross-validation keeps decreasing down to 1e-12 times the "
            "normal-scale bandwidth: the data have exact duplicates, whose leave-one-out "
            "density grows without bound as h shrinks (LSCV has no minimum)."
        )
    if status != "converged":
        raise SelectorError(
            "least-squares cross-validation is not finite, or keeps decreasing up to 1e6 times "
            "the normal-scale bandwidth."
        )
    return math.exp(2.0 * (start + log_c))


# ---------------------------------------------------------------------------- plug-in
def _dpik_1d(col, w, n_eff, weighted, grid_size):
    """Wand & Jones (1994) two-stage direct plug-in (KernSmooth's ``dpik``)."""
    _check_varies(col)
    scale = _robust_scale(col, w, weighted, 1.349)
    sums = _PairSums(col, w, grid_size)
    n = n_eff
    psi8 = 105.0 / (32.0 * math.sqrt(math.pi) * scale**9)
    k6_0 = -15.0 / _SQRT_2PI
    k4_0 = 3.0 / _SQRT_2PI
    g1 = (-2.0 * k6_0 / (psi8 * n)) ** (1.0 / 9.0)
    psi6 = sums(6, g1)
    if not psi6 < 0:
        raise SelectorError("the estimated sixth-derivative functional is not negative.")
    g2 = (-2.0 * k4_0 / (psi6 * n)) ** (1.0 / 7.0)
    psi4 = sums(4, g2)
    if not psi4 > 0:
        raise SelectorError("the estimated fourth-derivative functional is not positive.")
    return (1.0 / (2.0 * math.sqrt(math.pi) * psi4 * n)) ** 0.4


def _hermite_at_zero(orders: np.ndarray) -> np.ndarray:
    """``prod_m He_{r_m}(0)`` for multi-indices ``orders`` ``(..., d)`` (0 for odd orders)."""
    out = np.ones(orders.shape[:-1])
    for r in range(int(orders.max()) + 1):
        if r % 2:
            value = 0.0
        else:
            value = (-1.0) ** (r // 2) * float(np.prod(np.arange(1, r, 2, dtype=np.float64)))
        out = out * np.where(orders == r, value, 1.0).prod(axis=-1)
    return out


def _derivative_tensor_at_zero(d: int, extra: int, variance: float) -> np.ndarray:
    """``D^{4} (sum_m d^2/dx_m^2)^{extra/2} phi_{s^2 I}(0)`` as a ``(d, d, d, d)`` tensor."""
    idx = np.stack(np.meshgrid(*[np.arange(d)] * 4, indexing="ij"), axis=-1)  # (d,d,d,d,4)
    orders = np.zeros((*idx.shape[:-1], d), np.int64)
    for p in range(4):
        orders += np.eye(d, dtype=np.int64)[idx[..., p]]
    s = math.sqrt(variance)
    total = np.zeros(idx.shape[:-1])
    extras = [np.zeros(d, np.int64)] if extra == 0 else [2 * np.eye(d, dtype=np.int64)[m]
                                                         for m in range(d)]  # fmt: skip
    for e in extras:
        r = orders + e
        total += _hermite_at_zero(r) * s ** (-r.sum(axis=-1).astype(np.float64))
    return total * (2.0 * math.pi * variance) ** (-0.5 * d)


def _samse_pilot(d: int, n: float) -> float:
    """Scalar pilot ``g`` for the fourth-order functionals of sphered data: minimises the sum
    of squared leading biases ``|A / (n g^{d+4}) + g^2 B / 2|^2`` (Duong & Hazelton 2003), with
    ``A = D^4 phi(0)`` and ``B`` the normal-reference sixth-order term."""
    a = _derivative_tensor_at_zero(d, 0, 1.0).ravel()
    b = _derivative_tensor_at_zero(d, 2, 2.0).ravel()  # E D^6 phi(X) = D^6 phi_{2I}(0)
    c1, c2 = 1.0 / n, 0.5
    ab, aa, bb = a @ b, a @ a, b @ b
    lin = 2.0 * (d + 2) * c1 * c2 * ab
    s = (lin + math.sqrt(lin**2 + 32.0 * (d + 4) * c1**2 * c2**2 * aa * bb)) / (8.0 * c2**2 * bb)
    return s ** (1.0 / (d + 6))


def _pair_moments(z: np.ndarray, w: np.ndarray, g: float, block: int = 512):
    """``S0, S2, S4``: ``sum_ij w_i w_j phi_g(u) u^{(x)k}`` over all pairs ``u = z_i - z_j``,
    for k = 0, 2, 4 (float64, blocked: memory ``O(block^2 d^2)``)."""
    n, d = z.shape
    s0 = 0.0
    s2 = np.zeros((d, d))
    s4 = np.zeros((d * d, d * d))
    norm = (2.0 * math.pi) ** (-0.5 * d) * g ** (-d)
    for i in range(0, n, block):
        zi, wi = z[i : i + block], w[i : i + block]
        for j in range(0, n, block):
            u = zi[:, None, :] - z[None, j : j + block, :]
            phi = norm * np.exp(-0.5 * np.einsum("abk,abk->ab", u, u) / g**2)
            phi *= wi[:, None] * w[None, j : j + block]
            keep = phi > 0
            if not keep.any():
                continue
            uu = (u[..., :, None] * u[..., None, :]).reshape(-1, d * d)
            pw = phi.reshape(-1)
            s0 += pw.sum()
            s2 += (pw @ uu).reshape(d, d)
            s4 += (uu * pw[:, None]).T @ uu
    return s0, s2, s4.reshape(d, d, d, d)


#: Bins per dimension of the binned plug-in functionals (d = 2, 3); above, exact pair sums.
PLUGIN_BINS = {2: 401, 3: 81}


def _grid_bins(z: np.ndarray, w: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear binning of ``(n, d)`` points onto ``m^d`` grid points spanning their range;
    returns the counts ``(m,) * d`` and the bin widths ``(d,)``."""
    n, d = z.shape
    lo = np.array([c.min() for c in _columns(z)])
    hi = np.array([c.max() for c in _columns(z)])
    width = (hi - lo) / (m - 1)
    pos = (z - lo) / width
    left = np.clip(np.floor(pos).astype(np.int64), 0, m - 2)
    frac = pos - left
    counts = np.zeros(m**d)
    for corner in range(2**d):  # each point shares its weight among 2^d grid corners
        index = np.zeros(n, np.int64)
        share = w.copy()
        for k in range(d):
            up = (corner >> k) & 1
            index = index * m + left[:, k] + up
            share = share * (frac[:, k] if up else 1.0 - frac[:, k])
        counts += np.bincount(index, weights=share, minlength=m**d)
    return counts.reshape((m,) * d), width


def _binned_pair_moments(z: np.ndarray, w: np.ndarray, g: float, m: int):
    """:func:`_pair_moments` from binned data: each pair sum ``sum_ab C_a C_b K(a - b)`` is
    ``P^{-d} sum_f |C^(f)|^2 K^(f)`` (Parseval, zero-padded to ``P = 2m``), and every kernel
    ``phi_g(u) u^p`` factorises over dimensions, so one FFT of the counts serves them all."""
    d = z.shape[1]
    counts, width = _grid_bins(z, w, m)
    size = 2 * m
    power = np.abs(np.fft.fftn(counts, s=(size,) * d, axes=tuple(range(d)))) ** 2
    lags = np.fft.fftfreq(size, 1.0 / size)  # 0, 1, ..., m - 1, -m, ..., -1 (bins)
    spectra = {}  # (dimension, power of u) -> FFT of phi_g(u) u^p along that dimension

    def spectrum(k, p):
        if (k, p) not in spectra:
            u = lags * width[k]
            values = np.exp(-0.5 * (u / g) ** 2) / (_SQRT_2PI * g) * u**p
            spectra[(k, p)] = np.fft.fft(values)
        return spectra[(k, p)]

    letters = "abcdef"[:d]
    expr = letters + "," + ",".join(letters) + "->"

    def pair_sum(powers):
        factors = [spectrum(k, int(p)) for k, p in enumerate(powers)]
        return float(np.real(np.einsum(expr, power, *factors, optimize=True))) / size**d

    def moment(order):
        out = np.zeros((d,) * order)
        for idx in np.ndindex(*out.shape):
            if list(idx) != sorted(idx):
                continue
            value = pair_sum(np.bincount(np.array(idx, dtype=np.int64), minlength=d))
            for perm in set(itertools.permutations(idx)):
                out[perm] = value
        return out

    return pair_sum(np.zeros(d, np.int64)), moment(2), moment(4)


def _plugin_full(x: np.ndarray, w: np.ndarray, n_eff: float) -> np.ndarray:
    """Full-matrix plug-in ``H`` of data ``(n, d)``, ``d >= 2``, in float64."""
    d = x.shape[1]
    mean = w @ x
    centred = x - mean
    cov = (centred * w[:, None]).T @ centred / (1.0 - np.sum(w**2))
    val, vec = np.linalg.eigh((cov + cov.T) / 2)
    if not val.min() > 1e-12 * val.max():
        raise SelectorError("the covariance is singular; the data do not span all dimensions.")
    root = (vec * np.sqrt(val)) @ vec.T
    inv_root = (vec / np.sqrt(val)) @ vec.T
    z = centred @ inv_root  # sphered: identity covariance
    g = _samse_pilot(d, n_eff)
    if d in PLUGIN_BINS:
        s0, s2, s4 = _binned_pair_moments(z, w, g, PLUGIN_BINS[d])
    else:
        s0, s2, s4 = _pair_moments(z, w, g)
    g4, g6, g8 = g**4, g**6, g**8

    def amise_and_grad(h):
        # Q(H) = sum_ijkl H_ij H_kl psi_ijkl from (tr(H D^2))^2 phi_g (sphered, G = g^2 I).
        tr = np.trace(h)
        s4h = np.einsum("ijkl,kl->ij", s4, h)
        s2h = float(np.sum(s2 * h))
        h2 = h @ h
        q = (np.sum(s4h * h) / g8 - 2.0 * tr * s2h / g6 + s0 * tr**2 / g4
             - 4.0 * np.sum(s2 * h2) / g6 + 2.0 * s0 * np.trace(h2) / g4)  # fmt: skip
        dq = (2.0 * s4h / g8 - 2.0 * (s2h * np.eye(d) + tr * s2) / g6
              + 2.0 * s0 * tr * np.eye(d) / g4 - 4.0 * (s2 @ h + h @ s2) / g6
              + 4.0 * s0 * h / g4)  # fmt: skip
        det = np.linalg.det(h)
        var = (4.0 * math.pi) ** (-0.5 * d) / (n_eff * math.sqrt(det))
        value = var + 0.25 * q
        grad = -0.5 * var * np.linalg.inv(h) + 0.25 * dq
        return value, grad

    h = _minimise_over_spd(amise_and_grad, (4.0 / (d + 2)) ** (2.0 / (d + 4))
                           * n_eff ** (-2.0 / (d + 4)) * np.eye(d))  # fmt: skip
    return root @ h @ root


def _minimise_over_spd(fn, h0: np.ndarray, steps: int = 500) -> np.ndarray:
    """Minimise ``fn(H) -> (value, dvalue/dH)`` over positive-definite ``H`` by gradient steps
    on ``L`` (``H = L L^T``) with a backtracking line search; stops at 1e-12 relative change."""
    chol = np.linalg.cholesky(h0)
    value, grad = fn(h0)
    step = 1.0
    for _ in range(steps):
        g_l = 2.0 * np.tril(grad @ chol)  # d value / d L for symmetric grad
        scale = np.sum(g_l * g_l)
        if not scale > 0:
            break
        while step > 1e-20:
            trial = chol - step * g_l * (np.linalg.norm(chol) / math.sqrt(scale))
            h = trial @ trial.T
            if np.all(np.linalg.eigvalsh(h) > 0):
                new_value, new_grad = fn(h)
                if new_value < value:
                    break
            step *= 0.5
        else:
            break
        improvement = value - new_value
        chol, value, grad = trial, new_value, new_grad
        step *= 2.0
        if improvement <= 1e-12 * abs(value):
            break
    if not value > 0:
        raise SelectorError("the estimated AMISE is not positive (fourth-order functionals "
                            "estimated with the wrong sign).")  # fmt: skip
    return chol @ chol.T


def plugin_bandwidth(data, weights=None, *, grid_size: int = GRID_SIZE) -> np.ndarray:
    """Full-matrix plug-in bandwidth (Wand & Jones 1994; Duong & Hazelton 2003), ``d <= 6``.

    In 1-D, Wand & Jones' two-stage direct plug-in (KernSmooth's ``dpik``: scale
    ``min(sd, IQR / 1.349)``, normal-reference ``psi_8``, kernel estimates of ``psi_6`` then
    ``psi_4`` with AMSE-optimal pilots) on ``grid_size`` linear bins. For ``d >= 2`` the data
    are sphered by their covariance, the fourth-order functionals ``psi_ijkl`` are estimated
    exactly over all ``n^2`` pairs (float64, blocked) with one scalar SAMSE pilot (the normal
    reference for the sixth-order term, one stage), and the AMISE
    ``R(K) / (n |H|^{1/2}) + (1/4) sum H_ij H_kl psi_ijkl`` is minimised over positive-definite
    ``H``, then mapped back. Cost ``O(n^2 d^4)`` for ``d >= 2``.

    Returns
    -------
    np.ndarray, shape (d, d)
        The full bandwidth matrix ``H``.
    """
    grid_size = check_positive_int(grid_size, "grid_size")
    d = np.shape(data)[1] if np.ndim(data) == 2 else None
    if d == 1:
        return _per_dimension("plugin", _dpik_1d, data, weights, grid_size=grid_size).reshape(1, 1)
    x, w, n_eff = _prepare(data, weights)
    d = x.shape[1]
    if d > PLUGIN_MAX_DIM:
        raise ValueError(
            f"the plug-in selector supports up to {PLUGIN_MAX_DIM} dimensions (as ks::Hpi); the "
            f"data have {d}. Use 'scott_full' or 'cv_full'."
        )
    try:
        return _plugin_full(x, w, n_eff)
    except SelectorError as exc:
        raise SelectorError(f"plugin: {exc}") from None


#: Selectors by name, for ``KDE(bandwidth=name)`` (see :func:`jaxkde.resolve_bandwidth`).
SELECTORS = {
    "silverman_robust": silverman_robust_bandwidth,
    "isj": isj_bandwidth,
    "sj": sj_bandwidth,
    "plugin": plugin_bandwidth,
}
#: Selectors defined one feature at a time (a diagonal ``H``); they have no full version.
PER_DIMENSION_SELECTORS = ("silverman_robust", "isj", "sj", "lscv")
#: Selectors that return a full ``(d, d)`` matrix.
FULL_SELECTORS = ("plugin",)


def select_with_fallback(name: str, data: np.ndarray, weights) -> np.ndarray:
    """``SELECTORS[name](data, weights)``; where it finds no bandwidth, Silverman's robust rule
    with a ``RuntimeWarning`` that says so (the robust rule itself can only fail on constant
    data, which callers reject before)."""
    try:
        return SELECTORS[name](data, weights)
    except SelectorError as exc:
        if name == "silverman_robust":
            raise
        warnings.warn(
            f"bandwidth={name!r} found no bandwidth ({exc}); falling back to "
            "'silverman_robust' (0.9 min(sd, IQR/1.34) n^-1/5 per feature).",
            RuntimeWarning,
            stacklevel=4,
        )
        fallback = silverman_robust_bandwidth(data, weights)
        return np.diag(fallback) if name == "plugin" else fallback
