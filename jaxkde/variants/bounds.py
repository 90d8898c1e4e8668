"""Densities of bounded data: reflection at the bounds, or a log / logit transform.

Bounds are axis-aligned, one ``(lo, hi)`` pair per feature with ``None`` (or an infinity) for
an open end. Two methods:

* **Reflection** (any kernel, any bandwidth). Each bounded feature contributes the images
  ``2 lo - x`` and ``2 hi - x`` of the data; the estimate inside the box is the sum of the
  kernels centred at the data and at every combination of images (``3^k`` sets for ``k``
  doubly bounded features), each image set a state of its own with the reflected bandwidth
  ``S H S`` (``S`` the sign flips), so a full ``H`` reflects correctly too. Outside the box the
  log density is ``-inf``. The mass a kernel puts beyond a bound comes back inside; what is
  lost is only what a once-reflected kernel puts beyond the *opposite* bound (nothing for a
  one-sided bound; below ``1e-12`` once the interval is 7 kernel standard deviations wide).
  Samples are drawn from the unbounded estimate and folded back across the bounds, which is
  the exact law of the reflected estimate with all its images.
* **Transform** (any kernel). A feature on ``(lo, inf)`` is mapped by ``z = log(x - lo)``,
  on ``(-inf, hi)`` by ``z = log(hi - x)``, on ``(lo, hi)`` by
  ``z = logit((x - lo) / (hi - lo))``; the KDE is fitted to ``z`` (rules apply there) and
  ``log f(x) = log f_Z(z(x)) + sum_j log |dz_j/dx_j|``. Samples are drawn in ``z`` and mapped
  back. The data must lie strictly inside the bounds.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "BOUNDARY_METHODS",
    "Bounds",
    "check_bounds",
    "check_inside",
    "fold",
    "from_transformed",
    "inside",
    "log_jacobian",
    "reflection_images",
    "to_transformed",
]

BOUNDARY_METHODS = ("reflect", "transform")
#: Reflection builds one state per image set; beyond this many, the cost is refused.
MAX_IMAGES = 729


class Bounds(NamedTuple):
    """Per-feature bounds ``lo`` and ``hi`` ``(d,)`` (float64, ``-inf`` / ``inf`` when open)."""

    lo: np.ndarray
    hi: np.ndarray

    @property
    def bounded(self) -> np.ndarray:
        """Which features have at least one finite bound ``(d,)``."""
        return np.isfinite(self.lo) | np.isfinite(self.hi)


def check_bounds(bounds, d: int) -> Bounds:
    """Validate ``bounds``: ``d`` pairs ``(lo, hi)``, ``None`` for an open end, ``lo < hi``."""
    try:
        pairs = list(bounds)
    except TypeError:
        raise TypeError(
            f"bounds must be a sequence of (lo, hi) pairs, one per feature; got {bounds!r}."
        ) from None
    if len(pairs) != d:
        raise ValueError(
            f"bounds must have one (lo, hi) pair per feature ({d}); got {len(pairs)} pairs."
        )
    lo = np.full(d, -np.inf)
    hi = np.full(d, np.inf)
    for j, pair in enumerate(pairs):
        try:
            a, b = pair
        except (TypeError, ValueError):
            raise ValueError(
                f"bounds[{j}] must be a pair (lo, hi) with None for an open end; got {pair!r}."
            ) from None
        for value, out, side in ((a, lo, "lo"), (b, hi, "hi")):
            if value is None:
                continue
            number = isinstance(value, (int, float, np.number))
            if isinstance(value, (bool, np.bool_)) or not number:
                raise TypeError(f"bounds[{j}] {side} must be a number or None; got {value!r}.")
            if math.isnan(float(value)):
                raise ValueError(f"bounds[{j}] {side} is NaN.")
            out[j] = float(value)
        if not lo[j] < hi[j]:
            raise ValueError(f"bounds[{j}] needs lo < hi; got lo={lo[j]!r}, hi={hi[j]!r}.")
    return Bounds(lo, hi)


def check_inside(x: np.ndarray, bounds: Bounds, name: str = "X", strict: bool = False) -> None:
    """Raise a ``ValueError`` naming ``name`` when a row of ``x`` lies outside the bounds
    (or on them, with ``strict``)."""
    for j in np.flatnonzero(bounds.bounded):
        col = x[:, j]
        low = col <= bounds.lo[j] if strict else col < bounds.lo[j]
        high = col >= bounds.hi[j] if strict else col > bounds.hi[j]
        bad = low | high
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            where = "on or outside" if strict else "outside"
            raise ValueError(
                f"{name} has {int(bad.sum())} values {where} bounds[{j}] = "
                f"({bounds.lo[j]:g}, {bounds.hi[j]:g}) in feature {j} (first: row {i}, value "
                f"{float(col[i])!r})"
                + ("; the transform needs them strictly inside." if strict else ".")
            )


def reflection_images(bounds: Bounds) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image maps ``x -> signs * x + offsets`` (each ``(d,)``), the identity first."""
    per_feature = []
    for a, b in zip(bounds.lo, bounds.hi, strict=True):
        options = [(1.0, 0.0)]
        if math.isfinite(a):
            options.append((-1.0, 2.0 * a))
        if math.isfinite(b):
            options.append((-1.0, 2.0 * b))
        per_feature.append(options)
    images = []
    for combo in itertools.product(*per_feature):
        images.append((np.array([c[0] for c in combo]), np.array([c[1] for c in combo])))
    if len(images) > MAX_IMAGES:
        raise ValueError(
            f"reflection at these bounds needs {len(images)} image sets (3 per doubly bounded "
            f"feature, 2 per one-sided); at most {MAX_IMAGES} are supported. Use "
            "boundary='transform'."
        )
    return images


def fold(x: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Fold points back into the box by repeated reflection at the bounds (in place-safe)."""
    out = np.array(x, np.float64, copy=True)
    for j in np.flatnonzero(bounds.bounded):
        a, b = bounds.lo[j], bounds.hi[j]
        col = out[:, j]
        if math.isfinite(a) and math.isfinite(b):
            width = b - a
            t = np.mod(col - a, 2.0 * width)  # a full period of reflections is 2 (b - a)
            col[:] = a + np.where(t > width, 2.0 * width - t, t)
        elif math.isfinite(a):
            col[:] = np.where(col < a, 2.0 * a - col, col)
        else:
            col[:] = np.where(col > b, 2.0 * b - col, col)
    return out


def _transform_column(col: np.ndarray, a: float, b: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if math.isfinite(a) and math.isfinite(b):
            u = (col - a) / (b - a)
            return np.log(u) - np.log1p(-u)
        if math.isfinite(a):
            return np.log(col - a)
        return np.log(b - col)


def _log_jacobian_column(col: np.ndarray, a: float, b: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if math.isfinite(a) and math.isfinite(b):
            return math.log(b - a) - np.log(col - a) - np.log(b - col)
        if math.isfinite(a):
            return -np.log(col - a)
        return -np.log(b - col)


def to_transformed(x: np.ndarray, bounds: Bounds) -> np.ndarray:
    """``z(x)`` feature by feature (log for one-sided bounds, logit for two-sided)."""
    z = np.array(x, np.float64, copy=True)
    for j in np.flatnonzero(bounds.bounded):
        z[:, j] = _transform_column(x[:, j], bounds.lo[j], bounds.hi[j])
    return z


def from_transformed(z: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Inverse of :func:`to_transformed`."""
    x = np.array(z, np.float64, copy=True)
    for j in np.flatnonzero(bounds.bounded):
        a, b = bounds.lo[j], bounds.hi[j]
        col = z[:, j]
        if math.isfinite(a) and math.isfinite(b):
            x[:, j] = a + (b - a) / (1.0 + np.exp(-col))
        elif math.isfinite(a):
            x[:, j] = a + np.exp(col)
        else:
            x[:, j] = b - np.exp(col)
    return x


def log_jacobian(x: np.ndarray, bounds: Bounds) -> np.ndarray:
    """``sum_j log |dz_j / dx_j|`` at each row of ``x`` ``(m,)``."""
    out = np.zeros(x.shape[0])
    for j in np.flatnonzero(bounds.bounded):
        out += _log_jacobian_column(x[:, j], bounds.lo[j], bounds.hi[j])
    return out


def inside(x: np.ndarray, bounds: Bounds, strict: bool = False) -> np.ndarray:
    """Rows of ``x`` inside the closed box (the open one with ``strict``) ``(m,)``."""
    if strict:
        return np.all((x > bounds.lo) & (x < bounds.hi), axis=1)
    return np.all((x >= bounds.lo) & (x <= bounds.hi), axis=1)


def _covering_axes(axes, data_range, bounds: Bounds):
    """Equally spaced ``axes`` extended on their own spacing until they hold the data and
    all of their reflection images; returns ``(extended axes, the slices of the original)``."""
    low, high = (np.asarray(v, np.float64) for v in data_range)
    out, cut_back = [], []
    for j, a in enumerate(axes):
        step = (a[-1] - a[0]) / (a.shape[0] - 1)
        ends = [low[j], high[j]]
        for bound in (bounds.lo[j], bounds.hi[j]):
            if math.isfinite(bound):  # x -> 2 bound - x
                ends += [2.0 * bound - high[j], 2.0 * bound - low[j]]
        below = max(0, math.ceil((a[0] - min(ends)) / step))
        above = max(0, math.ceil((max(ends) - a[-1]) / step))
        out.append(a[0] + step * np.arange(-below, a.shape[0] + above, dtype=np.float64))
        cut_back.append(slice(below, below + a.shape[0]))
    return tuple(out), tuple(cut_back)
