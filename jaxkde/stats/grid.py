"""Log densities on rectilinear grids: exact, binned (linear binning + FFT) and automatic.

A grid is a tuple of ``d`` increasing 1-D axes; its cells are their Cartesian product, and a
grid log density has shape ``(len(axes[0]), ..., len(axes[-1]))``.

* ``"exact"``: every cell by the fastest exact method that applies, each within the engine's
  stated bound (``1e-5 * s(q)`` in float32), except sum updating's near a compact kernel's edge:

  - 1-D, tophat / epanechnikov / linear / cosine / exponential: sum updating
    (:mod:`jaxkde.core.sum_updating`), ``O((n + cells) log n)``; its compact kernels' error is a
    few tens of eps of the window's weight, absolute in kernel units;
  - 2-D and 3-D, Gaussian with a diagonal H: the factorised sum, one matrix product of per-axis
    kernel factors per chunk of data, with cells whose factors underflow recomputed by the
    engine;
  - otherwise the blocked engine (:func:`jaxkde.log_density`), ``O(n cells)``.
* ``"binned"`` (``d <= 3``, equally spaced axes, the data inside the grid): the weighted data
  are linearly binned onto the grid (each point shared among its ``2^d`` neighbouring nodes)
  and convolved with the kernel sampled at the grid offsets by one zero-padded FFT. It costs
  ``O(n 2^d + P log P)`` for ``P`` padded cells, whatever ``n``. Its error has two parts: the
  binning (linear interpolation of each kernel term between nodes: relative error at most
  ``(dx / sigma)^2 |u^2 - 1| / 8`` for a Gaussian term at ``u`` standard deviations) and the
  float32 FFT, whose rounding (about ``1e-7`` of the peak) swamps every cell far below the
  peak. Cells the FFT leaves at or below zero get ``-inf``.
* ``"auto"`` (the rule, in order): exact throughout when the kernel is not Gaussian, when
  ``"binned"`` does not apply (``d > 3``, unequal spacing, data outside the grid, a subspace
  state, an FFT too large), when the grid is coarser than ``MAX_SPACING`` kernel standard
  deviations, or when the problem is small (``n * cells <= AUTO_EXACT_WORK``); otherwise
  ``"binned"`` where it is close and exact elsewhere. For the Gaussian kernel the
  binning error of every cell is estimated to second order (the interpolation error of each
  term, ``sum_k f_k (1 - f_k) dx_k^2 / 2 d2K/dx_k^2``, binned and convolved like the density
  itself), FFT rounding is added (``2 eps log2(P)`` of the peak), and every cell whose estimate
  exceeds ``AUTO_REL_TOL`` of its density is recomputed exactly, in log space: the tails are
  right. Other kernels go exact because their kinks and edges make linear binning first order
  (and the 1-D ones have exact sum updating).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from jaxkde.core.engine import direct_sq_distances, log_density_whitened, settled
from jaxkde.core.kernels import GaussianKernel
from jaxkde.core.state import (
    ClassConditionalState,
    KDEState,
    LazyState,
    host_whitening,
    split_double_word,
    whiten_checked_queries,
)
from jaxkde.core.sum_updating import (
    SUM_UPDATING_BLOCK,
    sort_data,
    sorted_log_density,
    supports_sum_updating,
)

__all__ = [
    "AUTO_EXACT_WORK",
    "AUTO_REL_TOL",
    "BINNED_MAX_DIM",
    "GRID_METHODS",
    "MAX_GRID_CELLS",
    "MAX_SPACING",
    "GridDensity",
    "binned_log_density",
    "check_axes",
    "default_axes",
    "grid_log_density",
]

GRID_METHODS = ("auto", "binned", "exact")
#: Largest dimension of the binned method.
BINNED_MAX_DIM = 3
#: ``"auto"`` recomputes exactly every cell whose estimated relative error (binning plus FFT
#: rounding) exceeds this.
AUTO_REL_TOL = 5e-3
#: FFT rounding, in units of ``eps * log2(padded cells)`` of the peak (float32: about 1e-6).
_FFT_NOISE_ULPS = 2.0
#: Largest grid spacing, in kernel standard deviations, at which the binned method is trusted:
#: ``"binned"`` warns above it and ``"auto"`` evaluates exactly.
MAX_SPACING = 0.5
#: ``"auto"`` evaluates exactly when ``n * cells`` is at most this (exact is cheap there).
AUTO_EXACT_WORK = 2**24
#: Most cells a grid may have (``256^3``): its float64 coordinates alone need 400 MB in 3-D.
MAX_GRID_CELLS = 2**24
#: Padded FFT cells the binned method may use.
_MAX_FFT_CELLS = 2**26
_SPACING_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class GridDensity:
    """Log density on a grid. Unpacks as ``axes, log_density = result``.

    Attributes
    ----------
    axes : tuple of arrays
        ``d`` increasing float64 axes.
    log_density : array, shape (len(axes[0]), ..., len(axes[-1]))
        Log density at each cell, float64 host array (computed in the working dtype).
    method : str
        What ran: ``"exact"``, ``"binned"``, or ``"binned+exact"`` (``"auto"`` recomputed some
        cells exactly).
    n_exact : int
        Number of cells evaluated exactly.
    """

    axes: tuple[np.ndarray, ...]
    log_density: np.ndarray
    method: str
    n_exact: int

    def __iter__(self):
        yield self.axes
        yield self.log_density


def _states(state) -> tuple[tuple[KDEState, ...], np.ndarray | None]:
    if isinstance(state, ClassConditionalState):
        return state.states, np.asarray(state.log_priors, np.float64)
    if isinstance(state, (KDEState, LazyState)):
        return (state,), None
    raise TypeError(f"state must be a KDEState or ClassConditionalState; got {type(state)}.")


def _laid_out(state: KDEState | LazyState) -> KDEState:
    """The engine's layout of ``state`` (a lazy fit's is built now, once)."""
    return state.state if isinstance(state, LazyState) else state


def _check_grid_size(grid_size, d: int) -> tuple[int, ...]:
    sizes = np.atleast_1d(np.asarray(grid_size))
    if sizes.dtype.kind not in "iu" or sizes.ndim != 1 or sizes.shape[0] not in (1, d):
        raise ValueError(
            f"grid_size must be an integer or {d} integers (one per dimension); got {grid_size!r}."
        )
    if np.any(sizes < 2):
        raise ValueError(f"grid_size must be at least 2 in every dimension; got {grid_size!r}.")
    sizes = tuple(int(s) for s in np.broadcast_to(sizes, (d,)))
    _check_cells(sizes, "grid_size")
    return sizes


def _check_cells(shape: tuple[int, ...], name: str) -> None:
    cells = math.prod(shape)
    if cells > MAX_GRID_CELLS:
        raise ValueError(
            f"{name} gives {cells} grid cells {shape}, more than MAX_GRID_CELLS = "
            f"{MAX_GRID_CELLS}; use fewer points per axis."
        )


def check_axes(axes, d: int) -> tuple[np.ndarray, ...]:
    """Validate user axes: ``d`` finite, strictly increasing 1-D arrays of 2 or more points."""
    if isinstance(axes, np.ndarray) and axes.ndim == 1 and d == 1:
        axes = (axes,)
    elif isinstance(axes, np.ndarray) and axes.ndim == 2:  # its rows are the axes
        axes = tuple(axes)
    try:
        axes = tuple(axes)
    except TypeError:
        raise ValueError(f"axes must be a sequence of {d} 1-D arrays (one per feature); got "
                         f"{type(axes).__name__}.") from None  # fmt: skip
    if len(axes) != d:
        raise ValueError(f"axes must be a sequence of {d} 1-D arrays (one per feature); got "
                         f"{len(axes)}.")  # fmt: skip
    out = []
    for k, axis in enumerate(axes):
        try:
            a = np.asarray(axis, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"axes[{k}] must be an array of numbers.") from None
        if a.ndim != 1 or a.shape[0] < 2:
            raise ValueError(f"axes[{k}] must be 1-D with at least 2 points; got shape {a.shape}.")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"axes[{k}] must be finite; it contains NaN or inf.")
        if not np.all(np.diff(a) > 0):
            raise ValueError(f"axes[{k}] must be strictly increasing.")
        out.append(a)
    _check_cells(tuple(a.shape[0] for a in out), "axes")
    return tuple(out)


def _equally_spaced(axes) -> bool:
    for a in axes:
        step = (a[-1] - a[0]) / (a.shape[0] - 1)
        if not np.allclose(np.diff(a), step, rtol=_SPACING_RTOL, atol=0.0):
            return False
    return True


@jax.jit
def _data_range(state: KDEState) -> tuple[jax.Array, jax.Array]:
    """Smallest and largest ``x - centre`` per feature over the weighted data (working dtype:
    relative error about ``eps`` of the spread, enough to place a grid)."""
    k = state.dim
    z = state.points.reshape(-1, k)
    if state.points_lo is not None:
        z = z + state.points_lo.reshape(-1, k)
    u = z * state.chol if state.chol.ndim == 1 else _matmul(z, state.chol.T)
    if state.basis is not None:
        u = _matmul(u, state.basis.T)
    keep = jnp.isfinite(state.log_weights.reshape(-1))[:, None]
    return jnp.min(jnp.where(keep, u, jnp.inf), 0), jnp.max(jnp.where(keep, u, -jnp.inf), 0)


def default_axes(
    state, grid_size=1024, cut: float = 3.0, *, data_range=None
) -> tuple[np.ndarray, ...]:
    """Axes spanning the data's range extended by ``cut`` kernel standard deviations.

    Parameters
    ----------
    state : KDEState or ClassConditionalState
    grid_size : int or sequence of int
        Points per axis (at least 2).
    cut : float
        Kernel standard deviations (per feature, ``sqrt(H_jj * coordinate_variance)``, times
        the largest adaptive factor) added beyond the data on each side, as KDEpy, seaborn and
        statsmodels do.
    data_range : pair of arrays of shape (d,), optional
        The data's per-feature minimum and maximum, when known (``KDE`` keeps them from the
        fit in float64); otherwise read from the state.

    Returns
    -------
    tuple of d float64 arrays
    """
    states, _ = _states(state)
    d = states[0].n_features
    sizes = _check_grid_size(grid_size, d)
    if not (isinstance(cut, (int, float)) and math.isfinite(cut) and cut >= 0):
        raise ValueError(f"cut must be a finite number >= 0; got {cut!r}.")
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    for s in states:
        std = np.sqrt(np.diag(s.bandwidth_matrix()) * s.kernel.coordinate_variance(s.dim))
        if s.log_factors is not None:  # adaptive: the widest centre's kernel
            std = std * math.exp(float(jnp.max(s.log_factors)))
        if data_range is not None:
            low, high = (np.asarray(v, np.float64).reshape(d) for v in data_range)
        else:
            s = _laid_out(s)
            low, high = (np.asarray(v, np.float64) for v in _data_range(s))
            if not np.all(low <= high):  # no weighted data (a class of weight 0)
                continue
            centre = host_whitening(s).centre
            low, high = centre + low, centre + high
        lo = np.minimum(lo, low - cut * std)
        hi = np.maximum(hi, high + cut * std)
    if not np.all(hi > lo):
        raise ValueError("the grid has no extent: the data and bandwidth span no interval.")
    return tuple(np.linspace(a, b, g) for a, b, g in zip(lo, hi, sizes, strict=True))


def _fft_size(n: int) -> int:
    """The smallest ``2^a 3^b 5^c >= n`` (sizes the FFT handles fastest)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """A true float32/float64 product: coordinates never go through TF32 on GPUs."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _whiten_offsets(chol: jax.Array, offsets: jax.Array) -> jax.Array:
    if chol.ndim == 1:
        return offsets / chol
    return solve_triangular(chol, offsets.T, lower=True).T


@jax.jit
def _device_coordinates(state: KDEState, origin, spacing) -> tuple[jax.Array, jax.Array]:
    """Fractional node index ``(n, d)`` of each point of a laid-out state and its weight."""
    d = origin.shape[0]
    z = state.points.reshape(-1, d)
    if state.points_lo is not None:
        z = z + state.points_lo.reshape(-1, d)
    u = z * state.chol if state.chol.ndim == 1 else _matmul(z, state.chol.T)
    return (u - origin) / spacing, jnp.exp(state.log_weights.reshape(-1))


def _host_coordinates(lazy: LazyState, start: np.ndarray, spacing: np.ndarray):
    """:func:`_device_coordinates` of a lazy fit's data, in float64 on the host: ``O(n d)``,
    exact whatever the data's offset, rounded once to the working dtype. Equal weights stay
    ``None``."""
    t = np.empty(lazy.data.shape, lazy.dtype)
    np.multiply(np.subtract(lazy.data, start), 1.0 / spacing, out=t, casting="same_kind")
    w = None if lazy.weights is None else jnp.asarray(lazy.weights.astype(lazy.dtype))
    return jnp.asarray(t), w


@functools.partial(jax.jit, static_argnames=("kernel", "shape", "fft_shape", "with_error"))
def _binned(t, w, spacing, chol, h_inv, log_normalizer, *, kernel, shape, fft_shape, with_error):
    """Binned log density ``shape`` of points at fractional node indices ``t`` ``(n, d)`` of
    weights ``w`` (``None``: equal), the weight of the data outside the grid, and
    (``with_error``, Gaussian kernel) the cells whose estimated error exceeds
    ``AUTO_REL_TOL`` (``False`` everywhere otherwise)."""
    d = len(shape)
    dtype = t.dtype
    if w is None:
        w = jnp.full(t.shape[:1], 1.0 / t.shape[0], dtype)
    size = jnp.asarray(shape, dtype)
    outside = jnp.any((t < -1e-3) | (t > size - 1 + 1e-3), axis=1)
    lost = jnp.sum(jnp.where(outside, w, 0.0))
    i0 = jnp.clip(jnp.floor(t), 0, size - 2)
    frac = jnp.clip(t - i0, 0.0, 1.0)
    i0 = i0.astype(jnp.int32)
    w = jnp.where(outside, 0.0, w)
    # Channels binned alike: the weights, and (for the error estimate) the weights times
    # f_k (1 - f_k), the factor of the interpolation error along axis k.
    channels = [w]
    if with_error:
        channels += [w * frac[:, k] * (1.0 - frac[:, k]) for k in range(d)]
    values = jnp.stack(channels, axis=1)
    strides = np.cumprod((1, *fft_shape[::-1]))[:-1][::-1]
    # Each scatter carries a pair of nodes along the last axis as one complex number (scatters
    # cost per index on the CPU); the imaginary parts are then shifted one node along it.
    ctype = jnp.complex128 if dtype == jnp.float64 else jnp.complex64
    paired = jnp.zeros((math.prod(fft_shape), len(channels)), ctype)
    last = frac[:, d - 1, None]
    for corner in range(2 ** (d - 1)):
        bits = [(corner >> k) & 1 for k in range(d - 1)] + [0]
        idx = sum((i0[:, k] + bits[k]) * int(strides[k]) for k in range(d))
        val = values
        for k in range(d - 1):
            val = val * (frac[:, k, None] if bits[k] else 1.0 - frac[:, k, None])
        paired = paired.at[idx].add(jax.lax.complex(val * (1.0 - last), val * last))
    counts = paired.real + jnp.roll(paired.imag, 1, axis=0)
    counts = counts.reshape((*fft_shape, len(channels)))

    # The kernel at every offset -(G-1)..(G-1) per axis, laid out circularly in fft_shape.
    grids = []
    valid = []
    for k in range(d):
        i = np.arange(fft_shape[k])
        off = np.where(i < shape[k], i, i - fft_shape[k])
        valid.append(np.abs(off) < shape[k])
        grids.append(jnp.asarray(off, dtype) * spacing[k])
    mesh = jnp.meshgrid(*grids, indexing="ij")
    offsets = jnp.stack([m.reshape(-1) for m in mesh], axis=1)
    ok = np.logical_and.reduce(np.meshgrid(*valid, indexing="ij")).reshape(-1)
    white = _whiten_offsets(chol, offsets)
    sq = direct_sq_distances(white, None, jnp.zeros((1, d), dtype), None, kernel.norm)
    log_k0 = kernel.log_profile(jnp.zeros((), dtype))
    table = jnp.exp(jnp.where(ok, kernel.log_profile(sq[:, 0]), -jnp.inf) - log_k0)

    axes = tuple(range(d))
    spectra = jnp.fft.rfftn(counts, axes=axes)
    crop = tuple(slice(0, g) for g in shape)

    def spectrum(kernel_table):
        return jnp.fft.rfftn(kernel_table.reshape(fft_shape))

    def inverse(spec):
        return jnp.fft.irfftn(spec, s=fft_shape, axes=axes)[crop]

    dens = inverse(spectra[..., 0] * spectrum(table))
    log_f = jnp.where(dens > 0, jnp.log(jnp.maximum(dens, jnp.finfo(dtype).tiny)), -jnp.inf)
    log_f = log_f + log_k0 + log_normalizer
    if not with_error:
        return log_f, lost, jnp.zeros(shape, bool)
    # Linear interpolation of a term between nodes errs by sum_k f_k (1 - f_k) dx_k^2 / 2
    # d2K/dx_k^2 (to second order); for the Gaussian d2K/dx_k^2 = ((H^-1 o)_k^2 - H^-1_kk) K.
    g = _matmul(offsets, h_inv)
    spec = 0.0
    for k in range(d):
        second = (g[:, k] ** 2 - h_inv[k, k]) * table
        spec = spec + 0.5 * spacing[k] ** 2 * spectra[..., k + 1] * spectrum(second)
    error = jnp.abs(inverse(spec))
    noise = _FFT_NOISE_ULPS * jnp.finfo(dtype).eps * math.log2(math.prod(fft_shape))
    unsure = error + noise * jnp.max(dens) > AUTO_REL_TOL * dens
    return log_f, lost, unsure


def _binned_state(state: KDEState | LazyState, axes, with_error: bool):
    """Binned log density of ``state`` on ``axes``: the data's node coordinates from the
    host's float64 data for a lazy fit (no layout built), else from the laid-out state."""
    dtype = np.dtype(state.dtype)
    start = np.array([a[0] for a in axes])
    spacing = np.array([(a[-1] - a[0]) / (a.shape[0] - 1) for a in axes])
    if isinstance(state, LazyState):
        t, w = _host_coordinates(state, start, spacing)
    else:
        origin = (start - host_whitening(state).centre).astype(dtype)
        t, w = _device_coordinates(state, origin, spacing.astype(dtype))
    shape = tuple(a.shape[0] for a in axes)
    log_f, lost, unsure = _binned(
        t, w, spacing.astype(dtype), state.chol,
        np.linalg.inv(state.bandwidth_matrix()).astype(dtype), state.log_normalizer,
        kernel=state.kernel, shape=shape, fft_shape=tuple(_fft_size(2 * g - 1) for g in shape),
        with_error=with_error,
    )  # fmt: skip
    return np.array(log_f, np.float64), float(lost), np.asarray(unsure)


def _spacing_over_std(state: KDEState, axes) -> float:
    """The largest grid spacing over the kernel's conditional standard deviation along that
    axis (``sqrt(var / (H^-1)_kk)``: the scale of the kernel's curvature along the axis)."""
    h_inv_diag = np.diag(np.linalg.inv(state.bandwidth_matrix()))
    std = np.sqrt(state.kernel.coordinate_variance(state.dim) / h_inv_diag)
    spacing = np.array([(a[-1] - a[0]) / (a.shape[0] - 1) for a in axes])
    return float(np.max(spacing / std))


def _binned_refusal(state: KDEState, axes) -> str | None:
    """Why the binned method cannot serve ``state`` on ``axes`` (``None`` if it can)."""
    if len(axes) > BINNED_MAX_DIM:
        return f"it needs d <= {BINNED_MAX_DIM} (got d = {len(axes)})"
    if state.basis is not None:
        return "the state lives on a subspace (zero_variance='subspace')"
    if state.log_factors is not None:
        return "the state has adaptive bandwidths (one kernel per centre)"
    if not _equally_spaced(axes):
        return "it needs equally spaced axes"
    fft_cells = math.prod(_fft_size(2 * a.shape[0] - 1) for a in axes)
    if fft_cells > _MAX_FFT_CELLS:
        return (
            f"axes of shape {tuple(a.shape[0] for a in axes)} need {fft_cells} padded FFT "
            f"cells, more than {_MAX_FFT_CELLS}; use fewer grid points"
        )
    return None


def binned_log_density(state, axes) -> np.ndarray:
    """Binned log density on ``axes`` (see the module docstring), float64 host array.

    Raises ``ValueError`` where the method does not apply: ``d > 3``, unequal spacing, a state
    on a subspace, or weighted data outside the grid (linear binning would lose their mass).
    """
    return grid_log_density(state, axes, method="binned").log_density


def _exact_cells(state: KDEState, points: np.ndarray) -> np.ndarray:
    """Exact log density at ``points`` ``(m, d)``, padded to power-of-two counts (few programs):
    by sum updating for the 1-D kernels that have it, else by the blocked engine."""
    m = points.shape[0]
    out = np.empty(m)
    hw = host_whitening(state)
    if supports_sum_updating(state):
        sorted_data, block = sort_data(state), SUM_UPDATING_BLOCK
    else:
        sorted_data, block = None, 4096
    results = []
    for start in range(0, m, block):
        rows = points[start : start + block]
        r = rows.shape[0]
        padded = max(64, 1 << (r - 1).bit_length())
        if padded != r:
            rows = np.concatenate([rows, np.repeat(rows[:1], padded - r, axis=0)])
        hi, lo = whiten_checked_queries(state, rows, hw)
        if sorted_data is None:
            res = log_density_whitened(state, hi, lo, block_size=min(padded, 1024), defer=True)
        else:
            res = sorted_log_density(sorted_data, hi, lo)
        results.append((start, r, res))
    for start, r, res in results:  # every block dispatched before any is waited on
        out[start : start + r] = np.asarray(settled(res), np.float64)[:r]
    return out


#: Points per chunk of the factorised exact method (the inner dimension of its products).
_FACTOR_CHUNK = 1024


def _factorisable(state: KDEState, d: int) -> bool:
    """Gaussian kernel, diagonal H, full space, d = 2 or 3: the kernel is a product over axes."""
    return (
        isinstance(state.kernel, GaussianKernel)
        and state.kernel.norm == 2.0
        and state.chol.ndim == 1
        and state.basis is None
        and state.log_factors is None
        and d in (2, 3)
    )


def _tiles(z: np.ndarray, chunk: int) -> np.ndarray:
    """An order of the rows of ``z`` ``(n, d)`` whose consecutive ``chunk``-row runs are compact
    boxes: sorted into slabs along axis 0, each slab along axis 1, and so on."""
    n, d = z.shape
    order = np.arange(n)
    groups = [order]
    chunks = max(1, math.ceil(n / chunk))
    for k in range(d - 1):
        parts = max(1, round(chunks ** (1.0 / (d - k))))
        new_groups = []
        for g in groups:
            g = g[np.argsort(z[g, k], kind="stable")]
            new_groups.extend(np.array_split(g, min(parts, max(1, g.size))))
        groups = new_groups
        chunks = max(1, math.ceil(chunks / parts))
    return np.concatenate([g[np.argsort(z[g, d - 1], kind="stable")] for g in groups])


@functools.partial(jax.jit, static_argnames=("shape",))
def _factorised(z_hi, z_lo, log_w, axes_hi, axes_lo, *, shape):
    """Exact log-sum ``shape`` of a diagonal Gaussian on a grid: per chunk of points, the
    product of per-axis factors as one matrix product, each factor shifted by its maximum.

    Returns the log-sums and the cells some chunk's product underflowed for, unless that
    chunk's bound is negligible (those cells need another method)."""
    d = len(shape)
    dtype = z_hi.dtype
    # exp(x) of x below this is subnormal or zero: a product sum smaller than exp(-floor)
    # may have lost its terms.
    floor = 60.0 if dtype == jnp.float32 else 600.0

    def log_factor(k, z, z_lo):
        diff = axes_hi[k][:, None] - z[None, :, k]
        if z_lo is not None:
            diff = diff + (axes_lo[k][:, None] - z_lo[None, :, k])
        return -0.5 * diff * diff  # (G_k, c)

    def step(carry, xs):
        run, doubt = carry
        z, z_lo, lw = xs
        factors = [log_factor(k, z, z_lo) for k in range(d)]
        factors[0] = factors[0] + lw[None, :]
        shifts = [jax.lax.stop_gradient(jnp.max(f, axis=1)) for f in factors]
        shifts = [jnp.where(jnp.isfinite(m), m, 0.0) for m in shifts]
        exps = [jnp.exp(f - m[:, None]) for f, m in zip(factors, shifts, strict=True)]
        left = exps[0]
        left_shift = shifts[0]
        for k in range(1, d - 1):
            left = (left[:, None, :] * exps[k][None, :, :]).reshape(-1, left.shape[1])
            left_shift = (left_shift[:, None] + shifts[k][None, :]).reshape(-1)
        prod = _matmul(left, exps[d - 1].T)
        shift = left_shift[:, None] + shifts[d - 1][None, :]
        tiny = prod < jnp.exp(jnp.asarray(-floor, dtype))
        part = jnp.where(prod > 0, shift + jnp.log(jnp.where(prod > 0, prod, 1.0)), -jnp.inf)
        run = jnp.logaddexp(run, part)
        bound = jnp.where(tiny, shift - floor + jnp.log(2.0), -jnp.inf)
        return (run, jnp.maximum(doubt, bound)), None

    cells = (math.prod(shape[:-1]), shape[-1])
    init = (jnp.full(cells, -jnp.inf, dtype), jnp.full(cells, -jnp.inf, dtype))
    xs = (z_hi, z_lo, log_w)
    (run, doubt), _ = jax.lax.scan(step, init, xs)
    unsure = doubt > run - 25.0  # an underflowed chunk may hold more than e^-25 of the sum
    return run.reshape(shape), unsure.reshape(shape)


def _factorised_state(state: KDEState, axes) -> tuple[np.ndarray, np.ndarray]:
    """Exact grid log density of a factorisable state; ``unsure`` cells need the engine."""
    d = len(axes)
    dtype = np.dtype(state.dtype)
    hw = host_whitening(state)
    z_hi = np.asarray(state.points).reshape(-1, d)
    z_lo = None if state.points_lo is None else np.asarray(state.points_lo).reshape(-1, d)
    log_w = np.asarray(state.log_weights).reshape(-1)
    keep = np.isfinite(log_w)
    z_hi, log_w = z_hi[keep], log_w[keep]
    z_lo = None if z_lo is None else z_lo[keep]
    z64 = z_hi.astype(np.float64) + (0.0 if z_lo is None else z_lo)
    order = _tiles(z64, _FACTOR_CHUNK)
    n = order.size
    chunks = max(1, math.ceil(n / _FACTOR_CHUNK))
    pad = chunks * _FACTOR_CHUNK - n

    def chunked(a, fill=0.0):
        a = np.pad(a[order], [(0, pad)] + [(0, 0)] * (a.ndim - 1), constant_values=fill)
        return jnp.asarray(a.reshape((chunks, _FACTOR_CHUNK, *a.shape[1:])))

    words = [split_double_word((a - hw.centre[k]) * hw.transform[k], dtype) for k, a in
             enumerate(axes)]  # fmt: skip
    axes_hi = tuple(jnp.asarray(hi) for hi, _ in words)
    axes_lo = None if z_lo is None else tuple(jnp.asarray(lo) for _, lo in words)
    shape = tuple(a.shape[0] for a in axes)
    run, unsure = _factorised(
        chunked(z_hi), None if z_lo is None else chunked(z_lo), chunked(log_w, -np.inf),
        axes_hi, axes_lo, shape=shape,
    )  # fmt: skip
    log_f = np.array(run, np.float64) + float(state.log_normalizer)
    return log_f, np.asarray(unsure)


def _exact_grid(state: KDEState, axes, flat=None) -> np.ndarray:
    """Exact log density at the cells ``flat`` of the grid (all cells when None), flat."""
    if _factorisable(state, len(axes)):
        size = math.prod(a.shape[0] for a in axes)
        if flat is None or flat.size * 8 > size:  # the whole grid at once costs less
            log_f, unsure = _factorised_state(state, axes)
            log_f = log_f.reshape(-1)
            redo = np.flatnonzero(unsure.reshape(-1))
            if redo.size:
                log_f[redo] = _exact_cells(state, _cells(axes, redo))
            return log_f if flat is None else log_f[flat]
    return _exact_cells(state, _cells(axes, flat))


def _cells(axes, flat_index=None) -> np.ndarray:
    shape = tuple(a.shape[0] for a in axes)
    if flat_index is None:
        flat_index = np.arange(math.prod(shape))
    idx = np.unravel_index(flat_index, shape)
    return np.stack([a[i] for a, i in zip(axes, idx, strict=True)], axis=1)


def _one_state(state: KDEState | LazyState, axes, method: str) -> tuple[np.ndarray, str, int]:
    shape = tuple(a.shape[0] for a in axes)
    cells = math.prod(shape)
    if isinstance(state, LazyState):
        n = state.data.shape[0]
    else:
        n = math.prod(state.log_weights.shape)  # padded count: enough to choose a method
    refusal = _binned_refusal(state, axes)
    if method == "binned" and refusal is not None:
        raise ValueError(f"method='binned' does not apply: {refusal}.")
    gaussian = isinstance(state.kernel, GaussianKernel)
    coarse = refusal is None and _spacing_over_std(state, axes) > MAX_SPACING
    if method == "auto" and (
        refusal is not None or not gaussian or coarse or n * cells <= AUTO_EXACT_WORK
    ):
        method = "exact"
    if method == "binned" and coarse:
        warnings.warn(
            f"the grid spacing is {_spacing_over_std(state, axes):.3g} kernel standard "
            f"deviations (above {MAX_SPACING}): binned densities may be off by several "
            "percent; use more grid points or method='auto'.",
            RuntimeWarning,
            stacklevel=4,
        )
    if method == "exact":
        return _exact_grid(_laid_out(state), axes).reshape(shape), "exact", cells
    log_f, lost, unsure = _binned_state(state, axes, with_error=method == "auto")
    if lost > 0:
        if method == "binned":
            raise ValueError(
                f"method='binned' needs the data inside the grid: {lost:.3g} of the weight "
                "lies outside axes; widen them or use method='exact'."
            )
        return _exact_grid(_laid_out(state), axes).reshape(shape), "exact", cells
    if method == "binned":
        return log_f, "binned", 0
    flat = np.flatnonzero(unsure.reshape(-1))
    if flat.size:
        log_f.reshape(-1)[flat] = _exact_grid(_laid_out(state), axes, flat)
    return log_f, "binned+exact" if flat.size else "binned", int(flat.size)


def grid_log_density(state, axes, method: str = "auto") -> GridDensity:
    """Log density of a fitted state at every cell of a rectilinear grid.

    Parameters
    ----------
    state : KDEState or ClassConditionalState
        For a class-conditional state, the prior-weighted mixture of its classes.
    axes : sequence of d 1-D arrays
        Increasing coordinates per feature (:func:`default_axes` builds the usual ones).
    method : {"auto", "binned", "exact"}
        See the module docstring. ``"binned"`` raises where it does not apply.

    Returns
    -------
    GridDensity
        ``axes, log_density`` (shape ``(len(axes[0]), ..., len(axes[-1]))``), with the method
        that ran and the number of exactly evaluated cells.
    """
    if not isinstance(method, str) or method not in GRID_METHODS:
        raise ValueError(f"method must be one of {list(GRID_METHODS)}; got {method!r}.")
    states, log_priors = _states(state)
    axes = check_axes(axes, states[0].n_features)
    parts = []
    ran = set()
    n_exact = 0
    for s in states:
        log_f, what, count = _one_state(s, axes, method)
        parts.append(log_f)
        ran.add(what)
        n_exact += count
    if log_priors is None:
        log_f = parts[0]
    else:
        stacked = np.stack(parts) + log_priors.reshape((-1,) + (1,) * len(axes))
        top = np.max(stacked, axis=0)
        safe = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            log_f = safe + np.log(np.sum(np.exp(stacked - safe), axis=0))
        log_f = np.where(np.isneginf(top), -np.inf, log_f)
    what = "binned+exact" if len(ran) > 1 else ran.pop()
    return GridDensity(axes, log_f, what, n_exact)
