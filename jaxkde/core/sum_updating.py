"""Exact 1-D kernel sums by fast sum updating (Langrené & Warin 2019; Hofmeyr 2019).

For the kernels whose profile is a short sum of separable terms in ``z - z_i``, a 1-D kernel
sum over a window is a combination of a few windowed sums of functions of the data alone:

* ``tophat`` ``1``; ``epanechnikov`` ``1 - (v - u)^2 = (1 - v^2) + 2 v u - u^2``;
* ``linear`` ``1 - |v - u|``, split at ``u = v`` into ``(1 - v) + u`` and ``(1 + v) - u``;
* ``cosine`` ``cos(pi (v - u) / 2) = cos(pi v / 2) cos(pi u / 2) + sin(pi v / 2) sin(pi u / 2)``;
* ``exponential`` ``exp(-|v - u|)``, split at ``u = v`` into ``e^{u - v}`` and ``e^{v - u}``,
  over all the data (its support is unbounded).

The data are sorted once (:func:`sort_data`, ``O(n log n)``); any ``m`` query points then cost
``O(m log n)``: a few binary searches and gathers each, whatever the bandwidth. A brute force
costs ``O(m n)``.

**Stability.** Prefix sums of ``u^2`` over a million float32 points cancel when differenced.
Here nothing is differenced. Whitened coordinates ``z`` (bandwidth 1; compact kernels vanish
for ``|z - z_i| >= 1``) are split into a cell ``a = floor(z)`` and a local offset
``u = z - a`` in ``[0, 1)``, computed from the state's double words, so ``u`` is exact to
float32 rounding whatever the data's offset or spread. A query's window ``(q - 1, q + 1)``
meets at most three cells; each part of it is a prefix or a suffix of one cell, read from
in-cell prefix and suffix sums whose terms are all non-negative, accumulated with compensation
(Kahan) in two levels of ``O(sqrt(n))`` sequential steps. The compact kernels' sums are
therefore within a few tens of eps of the window's weight (in kernel units, peak 1; the tests
allow ``(16 + log2 n) eps``), the form of bound :mod:`jaxkde.core.engine` states for compact
kernels. The exponential kernel's sums ``sum_{j <= i} w_j exp(z_j - a_i)`` are taken relative
to each point's own cell and carried from cell to cell with the factor ``exp(a_{i-1} - a_i)``;
their logs are stored, so its log tails are right far below float32's smallest number. (A
carried sum that underflows is below ``1e-38`` of the current point's own term as long as the
weights' ratio stays below about ``1e30``; points of zero weight are sorted last and carry
nothing.)

Leave-one-out sums at the data (:func:`loo_log_sums`) split the query's own cell at its own
sorted position instead of subtracting its term, so an isolated point gets ``-inf``, not
rounding noise.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxkde.core.kernels import Kernel
from jaxkde.core.state import HostWhitening, KDEState, whiten_checked_queries

__all__ = [
    "SUM_UPDATING_BLOCK",
    "SUM_UPDATING_KERNELS",
    "SortedData",
    "loo_log_sums",
    "sort_data",
    "sorted_log_density",
    "sum_updating_log_density",
    "supports_sum_updating",
]

#: Kernels with exact 1-D sum updating.
SUM_UPDATING_KERNELS = ("tophat", "epanechnikov", "linear", "cosine", "exponential")

#: Queries per compiled call of :func:`sum_updating_log_density` from ``KDE.score_samples``
#: (memory O(block): a few numbers per query).
SUM_UPDATING_BLOCK = 1 << 16

_HALF_PI = 0.5 * math.pi


@dataclasses.dataclass(frozen=True)
class SortedData:
    """1-D whitened data sorted for sum updating (a JAX pytree; ``kernel`` is static).

    Attributes
    ----------
    anchor : array, shape (n,)
        The cell ``floor(z_i)`` of each point (integer-valued), ascending.
    local : array, shape (n,)
        ``z_i - anchor_i`` in ``[0, 1)``, ascending within a cell.
    prefix, suffix : arrays, shape (n, K)
        Compact kernels: inclusive in-cell prefix and suffix sums of the weighted features
        ``w_i phi_k(u_i)`` (weights scaled by ``exp(-log_scale)``). Exponential (``K = 1``):
        ``log sum_{j <= i} w_j exp(z_j - anchor_i)`` and
        ``log sum_{j >= i} w_j exp(anchor_i - z_j)``.
    log_scale : array, shape ()
        The largest log weight, factored out of the compact kernels' sums.
    log_normalizer : array, shape ()
        The state's kernel normaliser.
    kernel : Kernel
        Static.
    """

    anchor: jax.Array
    local: jax.Array
    prefix: jax.Array
    suffix: jax.Array
    log_scale: jax.Array
    log_normalizer: jax.Array
    kernel: Kernel


jax.tree_util.register_dataclass(
    SortedData,
    data_fields=["anchor", "local", "prefix", "suffix", "log_scale", "log_normalizer"],
    meta_fields=["kernel"],
)


#: Largest whitened distance of the data from their centre for sum updating, per dtype: the
#: cell of a point must be an exact integer in the working dtype with room to spare.
_MAX_WHITENED = {np.dtype(np.float32): 2.0**22, np.dtype(np.float64): 2.0**50}


def supports_sum_updating(state) -> bool:
    """Whether :func:`sort_data` applies: a :class:`KDEState` of 1-D data (no subspace basis)
    with one of ``SUM_UPDATING_KERNELS``, spanning less than ``2^22`` bandwidths from its
    centre in float32 (``2^50`` in float64; one reduction on the device)."""
    if not (
        isinstance(state, KDEState)
        and state.dim == 1
        and state.n_features == 1
        and state.basis is None
        and state.log_factors is None
        and state.kernel.name in SUM_UPDATING_KERNELS
    ):
        return False
    limit = _MAX_WHITENED.get(np.dtype(state.dtype), 0.0)
    return bool(jnp.max(jnp.abs(state.points)) < limit)


def _cells(hi: jax.Array, lo: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Cell ``floor(hi + lo)`` and offset in ``[0, 1)`` of double-word coordinates."""
    anchor = jnp.floor(hi)
    if lo is None:
        local = hi - anchor
    else:  # hi integral and lo < 0: the point lies just below hi, in the cell before
        anchor = anchor - ((hi == anchor) & (lo < 0)).astype(hi.dtype)
        local = (hi - anchor) + lo
    below_one = jnp.asarray(np.nextafter(np.ones((), hi.dtype), 0), hi.dtype)
    return anchor, jnp.clip(local, 0.0, below_one)


def _features(kernel: Kernel, u: jax.Array) -> jax.Array:
    """The separable terms ``phi_k(u)`` of a compact kernel, shape ``(n, K)``; all >= 0."""
    name = kernel.name
    if name == "tophat":
        return jnp.ones_like(u)[:, None]
    if name == "epanechnikov":
        return jnp.stack([jnp.ones_like(u), u, u * u], axis=1)
    if name == "linear":
        return jnp.stack([jnp.ones_like(u), u], axis=1)
    if name == "cosine":
        return jnp.stack([jnp.cos(_HALF_PI * u), jnp.sin(_HALF_PI * u)], axis=1)
    raise ValueError(f"kernel {name!r} has no sum updating; use one of {SUM_UPDATING_KERNELS}.")


def _combine(kernel: Kernel, moments: jax.Array, v: jax.Array, left: bool) -> jax.Array:
    """``sum_i w_i k(v - u_i)`` from a part's moments ``(m, K)``; ``left``: every ``u_i <= v``
    (else every ``u_i >= v``), which only the linear kernel needs."""
    m0 = moments[:, 0]
    name = kernel.name
    if name == "tophat":
        return m0
    if name == "epanechnikov":
        return (1.0 - v * v) * m0 + 2.0 * v * moments[:, 1] - moments[:, 2]
    if name == "linear":
        return (1.0 - v) * m0 + moments[:, 1] if left else (1.0 + v) * m0 - moments[:, 1]
    return jnp.cos(_HALF_PI * v) * m0 + jnp.sin(_HALF_PI * v) * moments[:, 1]  # cosine


def _scan_block(n: int) -> int:
    """Block length of the two-level scans: a power of two near sqrt(n)."""
    return 1 << max(0, (max(n, 1).bit_length() + 1) // 2)


def _decayed_prefix_sums(values: jax.Array, decay: jax.Array) -> jax.Array:
    """``s_i = decay_i s_{i-1} + values_i`` (``s_{-1} = 0``, ``decay_i`` in ``[0, 1]``, 0 restarts),
    for ``values >= 0`` of shape ``(n, K)``; compensated (Kahan), so the error is a few eps of
    ``s_i`` whatever ``n``.

    Two levels: one sequential scan over the ``B`` positions of every block of ``B ~ sqrt(n)``
    at once (vectorised over blocks), then one over the blocks' ends; ``O(sqrt(n))`` steps
    each, cheap to compile and to run on CPUs and GPUs alike.
    """
    n, k = values.shape
    block = _scan_block(n)
    blocks = -(-n // block)
    pad = blocks * block - n
    v = jnp.pad(values, ((0, pad), (0, 0))).reshape(blocks, block, k).transpose(1, 0, 2)
    d = jnp.pad(decay, (0, pad)).reshape(blocks, block).T

    def kahan(carry, xs):
        total, comp, product = carry
        value, dec = xs
        total, comp, product = total * dec[..., None], comp * dec[..., None], product * dec
        y = value - comp
        t = total + y
        return (t, (t - total) - y, product), (t - ((t - total) - y), product)

    zeros = jnp.zeros((blocks, k), values.dtype)
    ones = jnp.ones((blocks,), values.dtype)
    _, (inner, product) = lax.scan(kahan, (zeros, zeros, ones), (v, d))  # (block, blocks, ...)
    # Carry into each block: the running sum at the previous block's end.
    ends, end_decay = inner[-1], product[-1]
    one = jnp.ones((), values.dtype)

    def across(carry, xs):  # s_end[b] = ends[b] + end_decay[b] * s_end[b - 1]
        total, comp = carry
        (total_b, comp_b, _), _ = kahan((total, comp, one), xs)
        return (total_b, comp_b), total

    _, carry_in = lax.scan(across, (zeros[0], zeros[0]), (ends, end_decay))
    out = inner + product[..., None] * carry_in[None]
    return out.transpose(1, 0, 2).reshape(blocks * block, k)[:n]


def _order(hi: jax.Array, lo: jax.Array | None, log_weights: jax.Array) -> jax.Array:
    """Sort order of the coordinates, points of zero weight (padding) last."""
    key = jnp.where(jnp.isfinite(log_weights), hi, jnp.inf)
    return jnp.lexsort((key,) if lo is None else (lo, key))


def _sorted_from_coordinates(z_hi, z_lo, log_weights, log_normalizer, kernel, order):
    """:class:`SortedData` of whitened 1-D coordinates ``(n,)`` in the sorted ``order`` of
    :func:`_order` (traceable). Points of zero weight get the cell ``+inf``, after every other.
    """
    hi = z_hi[order]
    lo = None if z_lo is None else z_lo[order]
    lw = log_weights[order]
    real = jnp.isfinite(lw)
    anchor, u = _cells(hi, lo)
    anchor = jnp.where(real, anchor, jnp.inf)
    u = jnp.where(real, u, 0.0)
    scale = jnp.max(jnp.where(real, lw, -jnp.inf))
    w = jnp.where(real, jnp.exp(lw - scale), 0.0)
    new_cell = jnp.concatenate([jnp.ones((1,), bool), anchor[1:] != anchor[:-1]])
    if kernel.name == "exponential":
        # Left sums relative to each point's cell decay by exp(a_{i-1} - a_i) from cell to cell
        # (0 into and within the zero-weight tail), right sums by exp(a_i - a_{i+1}).
        gap = anchor[:-1] - anchor[1:]
        step = jnp.where(jnp.isfinite(gap), jnp.exp(gap), 0.0)
        one = jnp.ones((1,), hi.dtype)
        left = _decayed_prefix_sums((w * jnp.exp(u))[:, None], jnp.concatenate([one, step]))
        back = jnp.concatenate([one, step[::-1]])
        right = _decayed_prefix_sums((w * jnp.exp(-u))[::-1, None], back)[::-1]
        return SortedData(anchor, u, jnp.log(left), jnp.log(right), scale, log_normalizer, kernel)
    values = w[:, None] * _features(kernel, u)
    prefix = _decayed_prefix_sums(values, (~new_cell).astype(hi.dtype))
    last = jnp.concatenate([new_cell[1:], jnp.ones((1,), bool)])
    suffix = _decayed_prefix_sums(values[::-1], (~last[::-1]).astype(hi.dtype))[::-1]
    return SortedData(anchor, u, prefix, suffix, scale, log_normalizer, kernel)


@jax.jit
def sort_data(state: KDEState) -> SortedData:
    """Sort a 1-D state's data for sum updating: ``O(n log n)``, once per fit.

    Parameters
    ----------
    state : KDEState
        A state for which :func:`supports_sum_updating` holds (its shape and kernel are
        checked here; its span is the caller's to check, outside ``jit``).
    """
    if not (state.dim == 1 and state.basis is None and state.kernel.name in SUM_UPDATING_KERNELS):
        raise ValueError(
            "sum updating needs a 1-D state (no subspace basis) with kernel in "
            f"{SUM_UPDATING_KERNELS}; got dim {state.dim}, kernel {state.kernel.name!r}."
        )
    hi = state.points.reshape(-1)
    lo = None if state.points_lo is None else state.points_lo.reshape(-1)
    log_w = state.log_weights.reshape(-1)
    return _sorted_from_coordinates(
        hi, lo, log_w, state.log_normalizer, state.kernel, _order(hi, lo, log_w)
    )


def _search(sd: SortedData, target_anchor: jax.Array, target_local: jax.Array) -> jax.Array:
    """First index ``j`` in ``[0, n]`` with ``(anchor_j, local_j) > target`` (lexicographic),
    for targets of any shape."""
    n = sd.anchor.shape[0]
    lo = jnp.zeros(target_anchor.shape, jnp.int32)
    hi = jnp.full(target_anchor.shape, n, jnp.int32)

    def body(_, bounds):
        lo, hi = bounds
        mid = jnp.minimum((lo + hi) // 2, n - 1)
        a, u = sd.anchor[mid], sd.local[mid]
        above = (a > target_anchor) | ((a == target_anchor) & (u > target_local))
        active = lo < hi
        return jnp.where(active & ~above, mid + 1, lo), jnp.where(active & above, mid, hi)

    return lax.fori_loop(0, n.bit_length(), body, (lo, hi))[0]


def _take(a: jax.Array, index: jax.Array) -> jax.Array:
    return a[jnp.clip(index, 0, a.shape[0] - 1)]


def _log_sum(sd, q_anchor, v, first, cell_start, split_end, split_start, cell_end, last):
    """log of ``sum_i w_i k(q - z_i)`` (without the normaliser) from the index bounds:

    ``[first, cell_start)`` the window's part in the cell before the query's,
    ``[cell_start, split_end)`` and ``[split_start, cell_end)`` the query's cell left and right
    of the query, ``[cell_end, last)`` the part in the cell after. (Exponential: everything
    left of ``split_end`` and right of ``split_start``.)
    """
    kernel = sd.kernel
    if kernel.name == "exponential":
        n = sd.anchor.shape[0]
        left = _take(sd.prefix[:, 0], split_end - 1) + (_take(sd.anchor, split_end - 1) - q_anchor)
        right = _take(sd.suffix[:, 0], split_start) + (q_anchor - _take(sd.anchor, split_start))
        left = jnp.where(split_end > 0, left - v, -jnp.inf)
        right = jnp.where(split_start < n, right + v, -jnp.inf)
        return jnp.logaddexp(left, right) + sd.log_scale
    parts = [
        (first < cell_start, sd.suffix, first, v + 1.0, True),
        (split_end > cell_start, sd.prefix, split_end - 1, v, True),
        (split_start < cell_end, sd.suffix, split_start, v, False),
        (last > cell_end, sd.prefix, last - 1, v - 1.0, False),
    ]
    total = jnp.zeros_like(v)
    for valid, table, index, at, left in parts:
        value = _combine(kernel, _take(table, index), at, left)
        total = total + jnp.where(valid, value, 0.0)
    # Rounding can leave a tiny negative where the true sum is ~0 (points at the window's edge).
    return jnp.log(jnp.maximum(total, 0.0)) + sd.log_scale


def _targets(q_anchor, v):
    """Search targets: the window's start, the query cell's start, the query, the cell's end,
    the window's end (each search returns the first index above its target)."""
    q_anchor, v = lax.stop_gradient(q_anchor), lax.stop_gradient(v)  # indices only
    past = jnp.full_like(v, 2.0)  # above every offset in [0, 1): the cell's end
    # The window's end q + 1 is open: search just below it (below offset 0: the cell before's end).
    zero = v <= 0
    end_anchor = jnp.where(zero, q_anchor, q_anchor + 1.0)
    end_local = jnp.where(zero, past, jnp.nextafter(v, jnp.full_like(v, -jnp.inf)))
    anchors = jnp.stack([q_anchor - 1.0, q_anchor - 1.0, q_anchor, q_anchor, end_anchor])
    return anchors, jnp.stack([v, past, v, past, end_local])


@jax.jit
def sorted_log_density(sd: SortedData, q_hi: jax.Array, q_lo: jax.Array | None) -> jax.Array:
    """Exact log density at whitened 1-D queries by sum updating, ``O(m log n)``.

    Parameters
    ----------
    sd : SortedData
        From :func:`sort_data`.
    q_hi, q_lo : arrays, shape (m, 1) or (m,)
        Whitened double-word queries (:func:`jaxkde.whiten_queries`); ``q_lo`` None in float64.

    Returns
    -------
    array, shape (m,)
        ``log f``; ``-inf`` where no kernel reaches and for non-finite queries.
    """
    q_hi = q_hi.reshape(-1)
    q_lo = None if q_lo is None else q_lo.reshape(-1)
    finite = jnp.isfinite(q_hi)
    q_hi = jnp.where(finite, q_hi, 0.0)
    q_anchor, v = _cells(q_hi, q_lo)
    first, cell_start, split, cell_end, last = _search(sd, *_targets(q_anchor, v))
    log_sum = _log_sum(sd, q_anchor, v, first, cell_start, split, split, cell_end, last)
    return jnp.where(finite, log_sum + sd.log_normalizer, -jnp.inf)


def sum_updating_log_density(
    sd: SortedData,
    state: KDEState,
    queries: np.ndarray,
    *,
    whitening: HostWhitening | None = None,
    precision: str | None = None,
) -> jax.Array:
    """:func:`sorted_log_density` at host queries ``(m, 1)`` (validated float64), whitened in
    float64 on the host like the engine's; ``precision`` is accepted for a uniform signature
    and unused (no matrix products)."""
    del precision
    q_hi, q_lo = whiten_checked_queries(state, queries, whitening)
    return sorted_log_density(sd, q_hi, q_lo)


def _two_product(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a * b = p + e`` exactly (Dekker's product with Veltkamp splitting, no FMA needed)."""
    split = 4097.0 if a.dtype == jnp.float32 else 134217729.0

    def halves(x):
        c = split * x
        high = c - (c - x)
        return high, x - high

    p = a * b
    ah, al = halves(a)
    bh, bl = halves(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _divide_double_word(x_hi, x_lo, h):
    """``(x_hi + x_lo) / h`` as a double word (to about eps^2 relative)."""
    q1 = x_hi / h
    if x_lo is None:
        return q1, None
    p, e = _two_product(q1, h)
    q2 = (((x_hi - p) - e) + x_lo) / h
    s = q1 + q2
    return s, q2 - (s - q1)


@functools.partial(jax.jit, static_argnames=("kernel",))
def loo_log_sums(x_hi, x_lo, log_weights, rows, bandwidth, *, kernel: Kernel) -> jax.Array:
    """``log sum_{j != i} w_j k((x_i - x_j) / h)`` at the data rows ``rows``, by sum updating.

    Differentiable in ``bandwidth``. The sorted order of ``x / h`` does not depend on ``h``:
    under ``jax.vmap`` over bandwidths the data are sorted once.

    Parameters
    ----------
    x_hi, x_lo : arrays, shape (n,) or (n, 1)
        Centred 1-D data as double words (``x_lo`` None in float64).
    log_weights : array, shape (n,)
        Log weights (``-inf`` on padding rows).
    rows : int array, shape (m,)
        The evaluation rows.
    bandwidth : array, shape ()
        The kernel's scale ``h`` (the Cholesky factor of the 1 x 1 bandwidth).
    kernel : Kernel
        One of ``SUM_UPDATING_KERNELS``.

    Returns
    -------
    array, shape (m,)
        The log-sums, without the kernel's normaliser.
    """
    x_hi = x_hi.reshape(-1)
    x_lo = None if x_lo is None else x_lo.reshape(-1)
    log_weights = log_weights.reshape(-1)
    order = _order(x_hi, x_lo, log_weights)
    z_hi, z_lo = _divide_double_word(x_hi, x_lo, bandwidth)
    zero = jnp.zeros((), z_hi.dtype)
    sd = _sorted_from_coordinates(z_hi, z_lo, log_weights, zero, kernel, order)
    # Each row as a query; a row of positive weight is excluded by splitting its cell at its own
    # sorted position (the sort's inverse permutation), not by subtracting its term.
    q_anchor, v = _cells(z_hi[rows], None if z_lo is None else z_lo[rows])
    first, cell_start, split, cell_end, last = _search(sd, *_targets(q_anchor, v))
    position = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    own = jnp.isfinite(log_weights[rows])
    split_end = jnp.where(own, position[rows], split)
    split_start = jnp.where(own, position[rows] + 1, split)
    return _log_sum(sd, q_anchor, v, first, cell_start, split_end, split_start, cell_end, last)
