"""Pictures of a fitted KDE: a 1-D density curve, filled 2-D density contours, and a 1-D
bootstrap band (:func:`jaxkde.bootstrap_band`).

The first two evaluate the density on a grid with :meth:`jaxkde.KDE.score_grid` (exact tails with
``method="auto"``) and draw it with matplotlib, which comes from the ``plot`` extra
(``pip install 'jaxkde[plot]'``) and is imported only when a function here is called.
"""

from __future__ import annotations

import numpy as np

from jaxkde.estimator.traced import BootstrapBand
from jaxkde.stats.grid import GridDensity

__all__ = ["density_band", "density_contours", "density_curve"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        msg = "jaxkde.apps.plot needs matplotlib: pip install 'jaxkde[plot]'."
        raise ImportError(msg) from None
    return plt


def _grid(kde, dim: int, grid_size, cut: float, method: str) -> GridDensity:
    n_features = getattr(kde, "n_features_in_", None)
    if n_features is None:
        kde._check_fitted()  # the not-fitted error
    if n_features != dim:
        raise ValueError(f"this plot needs a KDE fitted to {dim}-D data; got {n_features}-D.")
    return kde.score_grid(grid_size, cut=cut, method=method)


def density_curve(kde, ax=None, *, grid_size: int = 1024, cut: float = 3.0,
                  method: str = "auto", **line_kwargs):  # fmt: skip
    """Draw the density of a KDE fitted to 1-D data as a curve.

    Parameters
    ----------
    kde : KDE
        Fitted to data of shape ``(n, 1)``.
    ax : matplotlib Axes, optional
        Where to draw (default: the current axes).
    grid_size, cut, method
        Passed to :meth:`jaxkde.KDE.score_grid`.
    **line_kwargs
        Passed to ``ax.plot``.

    Returns
    -------
    matplotlib Axes
    """
    res = _grid(kde, 1, grid_size, cut, method)
    ax = _pyplot().gca() if ax is None else ax
    ax.plot(res.axes[0], np.exp(res.log_density), **line_kwargs)
    ax.set_ylabel("density")
    ax.set_ylim(bottom=0.0)
    return ax


def density_contours(kde, ax=None, *, grid_size: int = 256, levels: int = 10,
                     cut: float = 3.0, method: str = "auto", cmap: str = "viridis",
                     colorbar: bool = True, probs=None, n_samples: int = 100_000,
                     **contour_kwargs):  # fmt: skip
    """Draw the density of a KDE fitted to 2-D data as filled contours.

    Parameters
    ----------
    kde : KDE
        Fitted to data of shape ``(n, 2)``.
    ax : matplotlib Axes, optional
        Where to draw (default: the current axes).
    grid_size, cut, method
        Passed to :meth:`jaxkde.KDE.score_grid` (``grid_size`` points per axis).
    levels : int or sequence of float
        Number of contour levels, or the density values of the levels.
    cmap : str
        Colour map.
    colorbar : bool
        Add a colour bar labelled "density".
    probs : sequence of float in (0, 1), optional
        Also draw, as labelled black lines, the density levels whose superlevel sets hold
        these probability masses (:meth:`jaxkde.KDE.density_levels`, from ``n_samples`` draws).
    **contour_kwargs
        Passed to ``ax.contourf``.

    Returns
    -------
    matplotlib Axes
    """
    res = _grid(kde, 2, grid_size, cut, method)
    found = None if probs is None else kde.density_levels(probs, n_samples=n_samples)
    plt = _pyplot()
    ax = plt.gca() if ax is None else ax
    x, y = res.axes
    # score_grid's first index is the first axis: transpose to contourf's (y, x) rows.
    filled = ax.contourf(x, y, np.exp(res.log_density).T, levels=levels, cmap=cmap,
                         **contour_kwargs)  # fmt: skip
    if colorbar:
        ax.figure.colorbar(filled, ax=ax, label="density")
    if found is not None:  # computed first: bad probs raise before anything is drawn
        order = np.argsort(found.levels)  # contour wants increasing levels: decreasing mass
        lines = ax.contour(x, y, np.exp(res.log_density).T, levels=found.levels[order],
                           colors="k", linewidths=1.0)  # fmt: skip
        names = {lv: f"{p:.0%}" for lv, p in zip(found.levels[order], found.probs[order],
                                                   strict=True)}  # fmt: skip
        ax.clabel(lines, fmt=names, fontsize=8)
    return ax


def density_band(band: BootstrapBand, ax=None, *, color: str = "C0", alpha: float = 0.3,
                 label: str | None = None):  # fmt: skip
    """Draw a 1-D bootstrap band: the density as a line, the band filled around it.

    Parameters
    ----------
    band : BootstrapBand
        From :func:`jaxkde.bootstrap_band` on 1-D points (sorted or not).
    ax : matplotlib Axes, optional
        Where to draw (default: the current axes).
    color, alpha
        Of the line and of the filled band.
    label : str, optional
        Legend label of the line; the band is labelled with its level.

    Returns
    -------
    matplotlib Axes
    """
    if band.points.ndim != 2 or band.points.shape[1] != 1:
        raise ValueError(f"density_band draws a band on 1-D points; got points of shape "
                         f"{band.points.shape}.")  # fmt: skip
    order = np.argsort(band.points[:, 0])
    x = band.points[order, 0]
    ax = _pyplot().gca() if ax is None else ax
    ax.fill_between(x, band.lower[order], band.upper[order], color=color, alpha=alpha,
                    linewidth=0, label=f"{band.level:.0%} bootstrap band")  # fmt: skip
    ax.plot(x, band.density[order], color=color, label=label)
    ax.set_ylabel("density")
    ax.set_ylim(bottom=0.0)
    return ax
