"""A bounded search for the maximum of a function of one log scale.

The learned bandwidths (:func:`jaxkde.fit_bandwidth`) and the 1-D least-squares
cross-validation (:func:`jaxkde.lscv_bandwidth`) both maximise an objective over
``log h - log h_start``. Grids of 17 points on a lattice of 0.25 decades are evaluated at a
time (one batched call each); the window is re-centred on the best point seen so far until that
point's two lattice neighbours have been evaluated (a bracket), then the bracket is refined by
17-point grids until it is narrower than ``xtol``. The best value seen only grows, so no window
is evaluated twice and the coarse stage ends within one pass over the lattice; the refinement
ends within ``MAX_REFINEMENTS`` grids.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["LATTICE_STEP", "MAX_REFINEMENTS", "SCALE_LIMITS", "scale_search"]

#: Spacing of the coarse lattice in ``log h`` (a quarter of a decade).
LATTICE_STEP = 0.25 * math.log(10.0)
#: Default limits of the search in ``log(h / h_start)``: 1e-12 to 1e6 times the start.
SCALE_LIMITS = (-12.0 * math.log(10.0), 6.0 * math.log(10.0))
#: Points per evaluated grid, and the first window's lattice indices (1e-3 to 10 times the start).
GRID_POINTS = 17
_FIRST_WINDOW = (-12, 4)
#: Bound on the refinement grids (each narrows the bracket 8-fold).
MAX_REFINEMENTS = 60


def scale_search(
    evaluate: Callable[[np.ndarray], np.ndarray],
    xtol: float,
    lowest: float = SCALE_LIMITS[0],
    highest: float = SCALE_LIMITS[1],
    first: int = _FIRST_WINDOW[0],
) -> tuple[str, float, float, float]:
    """Maximise ``evaluate(log_scales (17,)) -> values (17,)`` over ``[lowest, highest]``.

    ``first`` is the lattice index (in quarter decades) of the first window's lowest point;
    by default the first window spans 1e-3 to 10 times the start.

    Returns
    -------
    tuple
        ``(status, best_log_scale, best_value, width)``. ``status`` is ``"converged"`` when the
        maximum is bracketed (``width`` the final bracket, at most ``xtol`` unless rounding
        noise stopped the refinement first), ``"unbounded"`` when the best value sits at
        ``lowest`` (the objective keeps growing as the scale shrinks), ``"nonfinite"`` when no
        value is finite or the best sits at ``highest``.
    """
    k_lo = math.ceil(lowest / LATTICE_STEP - 1e-9)
    k_hi = math.floor(highest / LATTICE_STEP + 1e-9)
    if k_hi - k_lo < GRID_POINTS - 1:
        raise ValueError("the scale limits must span at least 16 lattice steps.")
    seen: dict[int, float] = {}

    def window(first: int) -> np.ndarray:
        first = min(max(first, k_lo), k_hi - GRID_POINTS + 1)
        return np.arange(first, first + GRID_POINTS)

    ks = window(first)
    for _ in range(k_hi - k_lo + 2):  # every pass moves the best point or ends
        values = np.asarray(evaluate(ks * LATTICE_STEP), np.float64).reshape(-1)
        for k, v in zip(ks.tolist(), values.tolist(), strict=True):
            seen[k] = v if math.isfinite(v) else -math.inf
        best = max(seen, key=lambda k: (seen[k], -k))  # ties: the smaller scale
        if seen[best] == -math.inf:  # nothing finite yet: larger bandwidths reach further
            if ks[-1] >= k_hi:
                return ("nonfinite", 0.0, -math.inf, math.inf)
            ks = window(int(ks[-1]) + 1)
            continue
        if best - 1 in seen and best + 1 in seen:
            break
        if best <= k_lo:
            return ("unbounded", best * LATTICE_STEP, seen[best], math.inf)
        if best >= k_hi:
            return ("nonfinite", best * LATTICE_STEP, seen[best], math.inf)
        ks = window(best - GRID_POINTS // 2)
    else:  # pragma: no cover - the best value only grows, so the lattice is never exhausted
        raise RuntimeError("the scale search did not bracket its maximum.")
    lo, mid, hi = (best - 1) * LATTICE_STEP, best * LATTICE_STEP, (best + 1) * LATTICE_STEP
    value = seen[best]
    for _ in range(MAX_REFINEMENTS):
        if hi - lo <= xtol:
            break
        grid = np.linspace(lo, hi, GRID_POINTS)
        values = np.asarray(evaluate(grid), np.float64).reshape(-1)
        i = int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))
        if i in (0, GRID_POINTS - 1):
            break  # rounding noise at this width: the bracket [lo, hi] stands
        lo, mid, hi, value = grid[i - 1], grid[i], grid[i + 1], float(values[i])
    return ("converged", float(mid), float(value), float(hi - lo))
