"""The estimator's evaluation: query blocks, the scoring dispatch, bounds, classes, grids.

Pure functions of a fitted state; :class:`jaxkde.KDE` gathers its attributes and calls them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from jaxkde.core.engine import log_density, settled
from jaxkde.core.sharding import sharded_log_density
from jaxkde.core.state import ClassConditionalState, KDEState
from jaxkde.core.sum_updating import (
    SUM_UPDATING_BLOCK,
    sort_data,
    sum_updating_log_density,
    supports_sum_updating,
)
from jaxkde.scale import distributed
from jaxkde.scale.streaming import StreamedState
from jaxkde.stats.grid import GridDensity, _equally_spaced, default_axes, grid_log_density
from jaxkde.variants.bounds import (
    Bounds,
    _covering_axes,
    _log_jacobian_column,
    _transform_column,
    from_transformed,
    inside,
    log_jacobian,
    to_transformed,
)
from jaxkde.variants.classes import mixture_log_density

__all__ = [
    "bounded_grid",
    "bounded_score",
    "check_local",
    "evaluate_blocks",
    "over_classes",
    "query_block_rows",
    "score_program",
]

#: The engine on one block of a block loop: its first pass dispatched, settled at the gather.
deferred_log_density = functools.partial(log_density, defer=True)


def check_local(state, what: str) -> None:
    """Refuse ``what``, which reads the whole state on the host, for a state fitted across
    processes (:mod:`jaxkde.scale.distributed`), whose rows no single process holds, or
    streamed from a file (:mod:`jaxkde.scale.streaming`), whose rows stay on disk."""
    if isinstance(state, StreamedState):
        raise ValueError(f"{what} is not available for a KDE streamed from a file (X was a "
                         "numpy.memmap; its rows stay on disk): it offers score_samples, "
                         "predict, score and sample. Fit in memory on the rows you need "
                         "(np.asarray(X[rows])) for the rest.")  # fmt: skip
    if isinstance(state, KDEState) and distributed.is_global(state.points):
        raise ValueError(f"{what} is not available for a KDE fitted across processes (its rows "
                         "are in several processes); fit one process's KDE on the rows it "
                         "needs.")  # fmt: skip


def query_block_rows(rows: int, block: int) -> int:
    """Padded size of a block of ``rows`` queries, from a small fixed set of shapes.

    Full blocks stay ``block``; a partial block is padded to the next multiple of ``block / 8``
    (waste below 1/8 of a block), or to a power of two >= 8 when it is smaller than that, so
    any number of queries compiles at most about ``8 + log2(block / 8)`` programs.
    """
    if rows >= block:
        return block
    step = max(8, block // 8)
    if rows > step:
        return min(block, step * -(-rows // step))
    return min(block, max(8, 1 << (rows - 1).bit_length()))


def evaluate_blocks(fn: Callable, queries: np.ndarray, state, whitening, *, block: int,
                    precision: str, mesh=None) -> np.ndarray:  # fmt: skip
    """``fn(state, block, precision=..., [mesh=...], whitening(s)=...)`` on checked
    ``queries`` ``(m, d)`` by blocks of ``block`` rows, each padded to
    :func:`query_block_rows` so one compiled program per block shape serves every call."""
    kwargs = {"precision": precision}
    if mesh is not None:
        kwargs["mesh"] = mesh
    kwargs["whitenings" if isinstance(state, ClassConditionalState) else "whitening"] = whitening
    out = []
    for start in range(0, queries.shape[0], block):
        chunk = queries[start : start + block]
        rows = chunk.shape[0]
        padded = query_block_rows(rows, block)
        if padded != rows:  # padded with copies of the first row: a real, harmless query
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], padded - rows, axis=0)])
        out.append((fn(state, chunk, **kwargs), rows))
    # Blocks were dispatched asynchronously (first passes deferred: settled only now, so
    # the device never waits for the host between blocks); slicing on the host adds no
    # compiled programs.
    return np.concatenate([np.asarray(settled(block_out))[:rows] for block_out, rows in out])


def score_program(state, *, labelled: bool, mesh, sorted_data):
    """``(fn, default_block, sorted_data)``: the log density program of a fitted state for
    :func:`evaluate_blocks`, its own default query block (``None``: the engine's), and the
    sort of sum updating (given ``None`` before the first call and decided then; ``False``:
    the engine runs)."""
    if labelled:
        return mixture_log_density, None, sorted_data
    if mesh is not None:
        return sharded_log_density, None, sorted_data
    if sorted_data is None:  # decided once per fit
        sorted_data = supports_sum_updating(state) and sort_data(state)
    if sorted_data is not False:
        fn = functools.partial(sum_updating_log_density, sorted_data)
        return fn, SUM_UPDATING_BLOCK, sorted_data
    return deferred_log_density, None, sorted_data


def bounded_score(evaluate: Callable, queries: np.ndarray, bounds: Bounds, images, dtype):
    """Log density with bounds: -inf outside; the images' sum (reflection; ``images`` their
    ``(state, whitening)`` pairs) or the transformed density plus its log Jacobian
    (transform; ``images`` ``None``). ``evaluate(x, state=None, whitening=None)`` scores
    rows on the fitted state, or on an image."""
    transform = images is None
    keep = inside(queries, bounds, strict=transform)
    out = np.full(queries.shape[0], -np.inf)
    if keep.any():
        x = queries[keep]
        if transform:
            out[keep] = evaluate(to_transformed(x, bounds)) + log_jacobian(x, bounds)
        else:
            parts = [evaluate(x)] + [evaluate(x, state=s, whitening=w) for s, w in images]
            out[keep] = np.logaddexp.reduce(np.stack(parts).astype(np.float64), axis=0)
    return out.astype(dtype)


def over_classes(state, fn: Callable) -> np.ndarray:
    """``fn(state)`` for an unlabelled state; the prior-weighted mixture over classes."""
    if not isinstance(state, ClassConditionalState):
        return fn(state)
    priors = np.asarray(state.log_priors, np.float64)
    parts = [p + fn(s) for s, p in zip(state.states, priors, strict=True) if p > -np.inf]
    return np.logaddexp.reduce(np.stack(parts), axis=0)


def bounded_grid(state, images, bounds, data_range, grid_size, cut: float, method: str, *,
                 axes=None) -> GridDensity:  # fmt: skip
    """``KDE.score_grid`` of a bounded KDE: the default axes clipped to the bounds; reflection
    sums the grids of the image states (same ``method``), the transform evaluates the grid of
    ``z`` (exactly: its axes are not equally spaced) and adds the log Jacobian. Cells outside
    the bounds (on them, for the transform) are ``-inf``. ``images`` is ``None`` for the
    transform, else the reflection images' ``(state, whitening)`` pairs."""
    transform = images is None
    if axes is None:
        axes = default_axes(state, grid_size, cut, data_range=data_range)
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
            grid_axes, cut_back = _covering_axes(axes, data_range, bounds)
        grids = [grid_log_density(state, grid_axes, method)]
        grids += [grid_log_density(s, grid_axes, method) for s, _ in images]
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
            grid = grid_log_density(state, z_axes, "exact" if method == "auto" else method)
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
