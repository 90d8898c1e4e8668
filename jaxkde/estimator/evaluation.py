"""Evaluation helpers of the estimator: bounded grids over reflected or transformed data."""

from __future__ import annotations

import numpy as np

from jaxkde.stats.grid import GridDensity, _equally_spaced, default_axes, grid_log_density
from jaxkde.variants.bounds import (
    _covering_axes,
    _log_jacobian_column,
    _transform_column,
    from_transformed,
)

__all__ = [
    "bounded_grid",
]


def bounded_grid(kde, grid_size, cut: float, method: str, *, axes=None):
    """``KDE.score_grid`` of a bounded KDE: the default axes clipped to the bounds; reflection
    sums the grids of the image states (same ``method``), the transform evaluates the grid of
    ``z`` (exactly: its axes are not equally spaced) and adds the log Jacobian. Cells outside
    the bounds (on them, for the transform) are ``-inf``."""

    bounds = kde._bounds
    transform = kde._images is None
    if axes is None:
        axes = default_axes(kde.state_, grid_size, cut, data_range=kde._data_range)
        if transform:  # the data range is that of z: map it back to x
            corners = from_transformed(np.array([[a[0] for a in axes], [a[-1] for a in axes]]),
                                       bounds)  # fmt: skip
            axes = [np.linspace(lo, hi, a.size) for lo, hi, a in zip(*corners, axes, strict=True)]
        else:
            axes = [np.linspace(max(a[0], lo), min(a[-1], hi), a.size)
                    for a, lo, hi in zip(axes, bounds.lo, bounds.hi, strict=True)]  # fmt: skip
    axes = tuple(np.asarray(a, np.float64) for a in axes)
    if not transform:
        # Every image is evaluated on one grid: the axes, extended on the same spacing over
        # the images' data where the binned method may run (it bins each set of points on the
        # grid, and the images lie beyond the bounds), then cut back to the axes.
        grid_axes, cut_back = axes, tuple(slice(None) for _ in axes)
        if method != "exact" and _equally_spaced(axes):
            grid_axes, cut_back = _covering_axes(axes, kde._data_range, bounds)
        grids = [grid_log_density(kde.state_, grid_axes, method)]
        grids += [grid_log_density(s, grid_axes, method) for s, _ in kde._images]
        log_density = np.logaddexp.reduce(np.stack([g.log_density for g in grids]), axis=0)
        log_density = log_density[cut_back]
        ran, n_exact = grids[0].method, sum(g.n_exact for g in grids)
        keep = [(a >= lo) & (a <= hi) for a, lo, hi in zip(axes, bounds.lo, bounds.hi,
                                                              strict=True)]  # fmt: skip
    else:
        keep = [(a > lo) & (a < hi) for a, lo, hi in zip(axes, bounds.lo, bounds.hi,
                                                             strict=True)]  # fmt: skip
        inner = [a[k] for a, k in zip(axes, keep, strict=True)]
        log_density = np.full(tuple(a.size for a in axes), -np.inf)
        if all(a.size for a in inner):
            ends = zip(inner, bounds.lo, bounds.hi, bounds.bounded, strict=True)
            z_axes, jac = [], []
            for a, lo, hi, bounded in ends:
                z_axes.append(_transform_column(a, lo, hi) if bounded else a)
                jac.append(_log_jacobian_column(a, lo, hi) if bounded else np.zeros(a.size))
            grid = grid_log_density(kde.state_, z_axes, "exact" if method == "auto" else method)
            values = grid.log_density
            for j, part in enumerate(jac):
                shape = [1] * len(axes)
                shape[j] = -1
                values = values + part.reshape(shape)
            log_density[np.ix_(*keep)] = values
            ran, n_exact = grid.method, grid.n_exact
        else:
            ran, n_exact = "exact", 0
    mask = np.ix_(*keep)
    out = np.full_like(log_density, -np.inf)
    out[mask] = log_density[mask]
    return GridDensity(axes, out, ran, n_exact)
