"""The evaluation engine: exact blocked log-sum-exp over the data at matrix-product speed.

For a block of whitened queries ``q`` (``(b, k)``) and each chunk of whitened data ``z``
(``(c, k)``), the chunk's log terms ``log w_i + log k(|q - z_i|^2)`` are folded into a running
maximum and a running sum of exponentials (an online log-sum-exp). Peak memory is
``O(b * c)`` whatever the number of queries and data points; nothing of shape
``(n_query, n_data, dim)`` or ``(n_query, n_data)`` exists.

Squared distances, and how they are kept right:

* **Direct differences** for ``k <= DIRECT_MAX_DIM`` (and for the p = 1 and infinity norms of
  the seed's kernel): ``sum_j ((q_j - z_j)_hi + (q_j - z_j)_lo)^2`` from the double-word
  coordinates of :mod:`jaxkde.core.state`. Each squared distance is right to a few units of
  rounding of *itself*, whatever the data's offset or the spread-to-bandwidth ratio.
* **One matrix product** above that: ``|q|^2 + |z|^2 - 2 q.z`` (clamped at 0). Its rounding
  error grows with the norms, not with the distance: about ``c_k eps (|q|^2 + |z|^2)`` with
  ``c_k = 2 + sqrt(k) / 2`` (:func:`gemm_error_bound`; measured on the CPU at 2.3 to 7.7 for
  k = 1 to 784). With ``precision="highest"`` (the default) every block keeps an account of
  what that error can do to its result: in ``k >= COMPENSATE_MIN_DIM`` dimensions the largest
  term of each chunk is recomputed by direct differences, and the possible change of all the
  other terms is summed (:meth:`jaxkde.core.kernels.Kernel.distance_error`). In well-scaled data
  (MNIST at sigma = 0.2, PCA-50) almost no query exceeds ``RTOL * s(q)``, with
  ``s(q) = max(|log f(q)|, |largest log term|, 1)``, and the account costs nothing
  measurable.

A query whose account is exceeded is settled by the cheapest of three tiers that can
(:func:`_recompute_rows`), so its cost follows what must be fixed:

1. its *worst chunk* (the one of largest error bound) again, with ``_REFINE_EXACT`` exact
   terms, the other chunks' sums kept: a fraction of one product row. This settles the usual
   case, several near-equal largest terms in one chunk (duplicated or near-duplicate rows);
2. every chunk again with ``_REFINE_EXACT`` exact terms: about two product rows;
3. direct differences over every chunk, where the product cannot order the terms at all (data
   whose spread is 10^4 bandwidths or more): tens to hundreds of product rows in high
   dimension, the price of an exact answer there.

Called with concrete arrays (:func:`log_density_whitened`), the first pass is one compiled
program and the tiers a second, compiled and run only when the first marks a query; inside a
trace (:func:`log_density_program`) both are one program, with a custom derivative.

``RTOL`` is 1e-5 in float32 and 1e-10 in float64: the bound the README states and the tests
check against float64 brute force. ``precision="high"`` and ``"default"`` (TF32 on GPUs) skip
the account and its recomputation: they trade that bound for speed.

Adaptive states (:mod:`jaxkde.variants.adaptive`) carry a factor ``lambda_i`` per centre: each
chunk's squared distances are scaled by ``lambda_i^-2`` and its log weights lowered by
``k log lambda_i``; the error account scales its distance error by the chunk's largest
``lambda_i^-2``.

Matrix products run at ``precision="highest"`` by default: true float32 (or float64) products,
also on GPUs whose float32 products default to TF32. ``"default"`` lets the backend choose.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxkde.core.kernels import Kernel
from jaxkde.core.state import HostWhitening, KDEState, whiten_queries

__all__ = [
    "BLOCK_SIZES",
    "COMPENSATE_MIN_DIM",
    "DIRECT_MAX_DIM",
    "DIRECT_TIER",
    "PRECISIONS",
    "RTOL",
    "TIERS",
    "PendingLogDensity",
    "combine_log_sums",
    "default_block_sizes",
    "direct_sq_distances",
    "gemm_error_bound",
    "log_density",
    "log_density_program",
    "log_density_whitened",
    "pairwise_sq_distances",
    "settled",
]

#: Default ``(query block, data chunk)`` sizes by backend. On 2 CPU cores (1024, 4096) keeps a
#: block's terms in cache and reached 1.00x to 1.12x of the matmul floor on MNIST pixels; on an
#: H200 GPU (4096, 16384) gave 1.67x of the one-product float32 floor against 1.74x for
#: (1024, 4096), measured side by side (benchmarks/results/gpu_check_h200_run1.log).
BLOCK_SIZES = {"cpu": (1024, 4096), "gpu": (4096, 16384)}

#: Whitened dimensions up to which every distance is a direct difference (in 1-3 dimensions the
#: exponentials, not the products, set the speed: 1.0x, 1.8x and 2.2x the product's time per
#: block on the CPU, measured side by side).
DIRECT_MAX_DIM = 3
#: From this dimension on, each chunk's largest term is recomputed exactly (free beside a
#: product of that length; 40% more time per block at k = 50, measured on the CPU).
COMPENSATE_MIN_DIM = 256
#: Relative error bound of a log density, against ``s(q)`` (see the module docstring).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
#: Exact terms per chunk when a query's first-pass account is exceeded, and the queries
#: recomputed together by each tier (1: the worst chunk, 2: every chunk, 3: direct
#: differences): groups of the first size while that many are left, then of the second.
_REFINE_EXACT = 16
_TIER_ROWS = {1: (16,), 2: (128, 16), 3: (8,)}
#: On the CPU the direct path sums sub-chunks whose terms (queries x centres x grid) fit in
#: about this many bytes, a core's L2 cache: its terms are written once and read twice (the
#: max, then the shifted sum). Default blocks, 2 CPU cores, medians of 4 alternating runs:
#: 2-D (2e5 points, 16,384 grid queries) 2.31 s against 2.77 s for whole chunks of 4,096;
#: 1-D (1e6 points, 1,024 queries) 0.60 s against 0.69 s.
DIRECT_CACHE_BYTES = 2**21
# A term whose log can move by more than this is not accounted for but recomputed.
_MAX_LOG_ERROR = 20.0
# Chunks whose every term lies this far (nats) below the running maximum cannot matter.
_WINDOW = 60.0


def default_block_sizes(platform: str | None = None) -> tuple[int, int]:
    """``(batch_size, chunk_size)`` for ``platform`` (``"cpu"``, ``"gpu"``, ``"cuda"``, ``"rocm"``,
    ``"tpu"``...; default the default backend). Accelerators share the GPU sizes."""
    platform = jax.default_backend() if platform is None else platform
    return BLOCK_SIZES["cpu" if platform == "cpu" else "gpu"]


PRECISIONS = {
    "highest": lax.Precision.HIGHEST,
    "high": lax.Precision.HIGH,
    "default": lax.Precision.DEFAULT,
}


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}.")


def gemm_error_bound(k: int, dtype) -> float:
    """``c_k eps``: the matrix-product distance ``|q|^2 + |z|^2 - 2 q.z`` in ``k`` dimensions is
    taken to be within ``c_k eps (|q|^2 + |z|^2)`` of the exact value, ``c_k = 2 + sqrt(k) / 2``.
    """
    return (2.0 + 0.5 * math.sqrt(k)) * float(np.finfo(dtype).eps)


def pairwise_sq_distances(
    q: jax.Array,
    q_sq: jax.Array,
    z: jax.Array,
    z_sq: jax.Array,
    norm: float = 2.0,
    precision: str = "highest",
) -> jax.Array:
    """Squared p-norm distances between rows of ``q`` ``(b, k)`` and ``z`` ``(c, k)``: ``(b, c)``.

    ``q_sq`` and ``z_sq`` are the squared Euclidean row norms, used by the p = 2 path only, a
    single matrix product (see the module docstring for its rounding error). For p = 1 or
    infinity the difference is formed per pair and reduced over features inside one fused
    loop: memory is ``O(b * c)`` as long as XLA fuses the reduction (it does on CPU and GPU).
    """
    if norm == 2.0:
        cross = jnp.matmul(q, z.T, precision=PRECISIONS[precision])
        return jnp.maximum(q_sq[:, None] + z_sq[None, :] - 2.0 * cross, 0.0)
    return direct_sq_distances(q, None, z, None, norm)


def direct_sq_distances(
    q_hi: jax.Array,
    q_lo: jax.Array | None,
    z_hi: jax.Array,
    z_lo: jax.Array | None,
    norm: float = 2.0,
    scale: jax.Array | None = None,
) -> jax.Array:
    """Squared p-norm distances ``(b, c)`` by direct differences of double-word coordinates.

    p = 2, 1 and infinity are sums and maxima; any other p is taken relative to the largest
    difference, ``max_j |a_j| (sum_j (|a_j| / max_j |a_j|)^p)^(1/p)``, so no power overflows.

    ``(q_hi - z_hi) + (q_lo - z_lo)`` is the difference of the two float64 values to about
    2^-48 of the coordinates (the first subtraction is exact for nearby points), so each
    squared distance is right to a few roundings of itself. ``scale`` whitens each difference
    first, for coordinates not yet whitened: a vector ``(k,)`` divides coordinate j by
    ``scale[j]`` (a diagonal ``L``); a lower-triangular ``L`` ``(k, k)`` is solved against each
    difference (up to ``DIRECT_MAX_DIM`` features). Up to ``DIRECT_MAX_DIM`` features the sum
    is unrolled; above, it is a reduction XLA fuses with the differences, so memory stays
    ``O(b * c)``.
    """
    k = q_hi.shape[1]
    if k <= DIRECT_MAX_DIM:
        diffs = []
        for j in range(k):
            diff = q_hi[:, j, None] - z_hi[None, :, j]
            if q_lo is not None:
                diff = diff + (q_lo[:, j, None] - z_lo[None, :, j])
            if scale is not None and scale.ndim == 2:  # forward substitution with L
                for i, prev in enumerate(diffs):
                    diff = diff - scale[j, i] * prev
                diff = diff / scale[j, j]
            elif scale is not None:
                diff = diff / scale[j]
            diffs.append(diff)
        if norm == 2.0:
            return functools.reduce(jnp.add, [d * d for d in diffs])
        parts = [jnp.abs(d) for d in diffs]
        if norm in (1.0, math.inf):
            r = functools.reduce(jnp.maximum if norm == math.inf else jnp.add, parts)
            return r * r
        top = functools.reduce(jnp.maximum, parts)
        powers = [(a / _nonzero(top)) ** norm for a in parts]
        return _scaled_p_norm_sq(top, functools.reduce(jnp.add, powers), norm)
    if scale is not None and scale.ndim != 1:
        raise ValueError("a full L is solved per pair only up to DIRECT_MAX_DIM features.")
    diff = q_hi[:, None, :] - z_hi[None, :, :]
    if q_lo is not None:
        diff = diff + (q_lo[:, None, :] - z_lo[None, :, :])
    if scale is not None:
        diff = diff / scale
    if norm == 2.0:
        return jnp.sum(diff * diff, axis=-1)
    a = jnp.abs(diff)
    if norm in (1.0, math.inf):
        r = jnp.sum(a, axis=-1) if norm == 1.0 else jnp.max(a, axis=-1)
        return r * r
    top = jnp.max(a, axis=-1)
    return _scaled_p_norm_sq(top, jnp.sum((a / _nonzero(top)[..., None]) ** norm, axis=-1), norm)


def _nonzero(top: jax.Array) -> jax.Array:
    return jnp.where(top > 0, top, 1.0)


def _scaled_p_norm_sq(top: jax.Array, power_sum: jax.Array, norm: float) -> jax.Array:
    """``||a||_p^2`` from ``top = max |a_j|`` and ``sum (|a_j| / top)^p`` (in [1, k]): no
    overflow or underflow of ``|a_j|^p`` whatever p and the scale of ``a``."""
    r = top * power_sum ** (1.0 / norm)
    return r * r


def lse_update(
    run_max: jax.Array, run_sum: jax.Array, logits: jax.Array, axis: int = -1
) -> tuple[jax.Array, jax.Array]:
    """Fold ``logits`` into a running (max, sum of exp(logit - max)) pair, reducing ``axis``.

    The max is a constant shift (no gradient flows through it), so the result is exactly
    differentiable; a row whose terms are all -inf so far keeps a finite shift (no inf - inf).
    """
    new_max = jnp.maximum(run_max, lax.stop_gradient(jnp.max(logits, axis=axis)))
    shift = _finite_or_zero(new_max)
    old = jnp.where(jnp.isfinite(run_max), run_max, shift)
    terms = jnp.exp(logits - jnp.expand_dims(shift, axis))
    return new_max, run_sum * jnp.exp(old - shift) + jnp.sum(terms, axis=axis)


def _finite_or_zero(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def lse_finish(run_max: jax.Array, run_sum: jax.Array) -> jax.Array:
    """``log`` of the accumulated sum: ``max + log(sum)`` (-inf when every term was -inf).

    An empty sum gives -inf with a zero (not NaN) gradient, so a shard or chunk holding only
    padding does not poison the gradient of a combined result.
    """
    shift = _finite_or_zero(run_max)
    empty = run_sum <= 0
    return jnp.where(empty, -jnp.inf, shift + jnp.log(jnp.where(empty, 1.0, run_sum)))


def combine_log_sums(parts: jax.Array) -> jax.Array:
    """Exact log-sum-exp over the leading axis of partial results ``(n_parts, m)``: ``(m,)``.

    Used to merge the per-device partial log-sum-exps of sharded evaluation.
    """
    m = parts.shape[1]
    init = (jnp.full((m,), -jnp.inf, parts.dtype), jnp.zeros((m,), parts.dtype))
    return lse_finish(*lse_update(*init, parts, axis=0))


def map_query_blocks(fn, args: tuple, block_size: int):
    """``fn(block_args)`` over ``block_size`` rows of ``args`` at a time, in one ``lax.map``;
    the last block is padded with copies of the first row (real, harmless queries) and every
    output leaf is cut back to the ``m`` rows. ``None`` entries of ``args`` pass through."""
    m = args[0].shape[0]
    if block_size >= m:
        return fn(args)
    n_blocks = -(-m // block_size)
    pad = n_blocks * block_size - m

    def blocks(a):
        if a is None:
            return None
        a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
        return a.reshape(n_blocks, block_size, *a.shape[1:])

    out = lax.map(fn, tuple(blocks(a) for a in args))
    return jax.tree.map(lambda o: o.reshape(n_blocks * block_size, *o.shape[2:])[:m], out)


def _own_mask(query_rows, first, chunk):
    """``(c, b)``: whether centre ``first + i`` is query ``j``'s own row."""
    return (first + jnp.arange(chunk))[:, None] == query_rows[None, :]


def _chunk_inputs(state: KDEState, row_offset):
    chunk = state.points.shape[1]
    starts = row_offset + jnp.arange(state.points.shape[0]) * chunk
    lo = state.points_lo if state.points_lo is not None else jnp.zeros((state.points.shape[0],))
    return (state.points, lo, state.sq_norms, state.log_weights, starts, state.log_factors)


def _centre_terms(log_w, log_factors, k):
    """Per-centre ``(log w_i - k log lambda_i, lambda_i^-2)`` of a chunk: the weight with the
    kernel's normaliser at ``lambda_i^2 H``, and the scale of its squared distances (``None``
    for a fixed bandwidth, every ``lambda_i = 1``)."""
    if log_factors is None:
        return log_w, None
    return log_w - k * log_factors, jnp.exp(-2.0 * log_factors)


def _log_terms(kernel, d2, log_w, grid, query_rows, first, inv_sq=None, axis=0):
    """Log terms and scaled squared distances ``(c, g, b)`` from squared distances ``(c, b)``
    (``axis=0``: centres lead), or ``(b, g, c)`` from ``(b, c)`` (``axis=-1``), each centre's
    scaled by its ``inv_sq`` ``(c,)`` (adaptive bandwidths) and by each of the grid's ``g``
    inverse squared bandwidths (``g = 1``, unscaled, without a grid); a query's own row
    (``query_rows``, leave-one-out) gets -inf.

    With centres leading, the max and the sum over centres are elementwise maxima and sums of
    query vectors: the online log-sum-exp's two passes ran 1.9-2.8x faster so in four runs of
    ``benchmarks/direct_path.py`` on a 2-core CPU. Each query's sum over a chunk is then
    sequential, though, where a row reduction keeps several partial sums: the product paths,
    whose speed did not change with the layout on the CPU (W2, side by side), keep rows for
    their smaller rounding error (W2's largest error from float64 was 2.8e-5 nats with centres
    leading, 1.4e-5 with rows).
    """
    lead = axis == 0
    if inv_sq is not None:
        d2 = d2 * (inv_sq[:, None] if lead else inv_sq[None, :])
    sq = d2[:, None, :] if grid is None else d2[:, None, :] * grid[None, :, None]
    logits = (log_w[:, None, None] if lead else log_w[None, None, :]) + kernel.log_profile(sq)
    if query_rows is not None:
        own = _own_mask(query_rows, first, d2.shape[0 if lead else 1])
        logits = jnp.where((own if lead else own.T)[:, None, :], -jnp.inf, logits)
    return logits, sq


def _scan_logsumexp(state, b, dtype, query_rows, row_offset, remat, grid, distances, axis=0):
    """The online log-sum-exp ``(b, g)`` over the chunks of ``state``, the squared distances of
    each chunk given by ``distances(z, z_lo, z_sq)``: ``(c, b)`` with ``axis=0`` (centres
    lead), ``(b, c)`` with ``axis=-1`` (see :func:`_log_terms`)."""
    kernel = state.kernel

    def step(carry, xs):
        z, z_lo, z_sq, log_w, first, log_factors = xs
        log_w, inv_sq = _centre_terms(log_w, log_factors, state.dim)
        d2 = distances(z, z_lo, z_sq)
        logits = _log_terms(kernel, d2, log_w, grid, query_rows, first, inv_sq, axis)[0]
        return lse_update(*carry, logits, axis=axis), None

    if remat:
        step = jax.checkpoint(step)
    g = 1 if grid is None else grid.shape[0]
    shape = (g, b) if axis == 0 else (b, g)
    init = (jnp.full(shape, -jnp.inf, dtype), jnp.zeros(shape, dtype))
    (run_max, run_sum), _ = lax.scan(step, init, _chunk_inputs(state, row_offset))
    lse = lse_finish(run_max, run_sum)
    return lse.T if axis == 0 else lse


def _cache_sized(state: KDEState, terms_per_centre: int, itemsize: int) -> KDEState:
    """``state`` with its chunks cut into equal sub-chunks whose ``terms_per_centre`` terms
    per centre take at most :data:`DIRECT_CACHE_BYTES`, on the CPU (unchanged elsewhere, or
    when no divisor of the chunk gives sub-chunks of at least a quarter of that)."""
    c = state.points.shape[1]
    limit = DIRECT_CACHE_BYTES // (terms_per_centre * itemsize)
    if jax.default_backend() != "cpu" or c <= limit:
        return state
    parts = next((p for p in range(2, c + 1) if c % p == 0 and c // p <= limit), c)
    if c // parts < limit // 4:
        return state

    def split(a):
        return None if a is None else a.reshape(a.shape[0] * parts, c // parts, *a.shape[2:])

    return dataclasses.replace(
        state, points=split(state.points), points_lo=split(state.points_lo),
        sq_norms=split(state.sq_norms), log_weights=split(state.log_weights),
        log_factors=split(state.log_factors),
    )  # fmt: skip


def _direct_logsumexp(state, q_hi, q_lo, query_rows, row_offset, remat, scale, grid):
    """The log-sum-exp ``(b, g)`` of one query block, every distance a direct difference."""
    g = 1 if grid is None else grid.shape[0]
    state = _cache_sized(state, q_hi.shape[0] * g, q_hi.dtype.itemsize)
    has_lo = state.points_lo is not None and q_lo is not None

    def distances(z, z_lo, _):  # (c, b): the difference is symmetric in its two sides
        return direct_sq_distances(z, z_lo if has_lo else None, q_hi,
                                   q_lo if has_lo else None, state.kernel.norm, scale)  # fmt: skip

    return _scan_logsumexp(state, q_hi.shape[0], q_hi.dtype, query_rows, row_offset, remat,
                           grid, distances)  # fmt: skip


def _gemm_logsumexp(state, zq_hi, precision, query_rows, row_offset, remat, grid):
    """Matrix-product distances without an error account (``precision`` other than highest)."""
    q_sq = jnp.sum(zq_hi * zq_hi, axis=1)

    def distances(z, _, z_sq):
        d2 = pairwise_sq_distances(zq_hi, q_sq, z, z_sq, 2.0, precision)
        return jnp.where(jnp.isnan(d2), jnp.inf, d2)  # inf - inf of overflowing norms

    return _scan_logsumexp(state, zq_hi.shape[0], zq_hi.dtype, query_rows, row_offset, remat,
                           grid, distances, axis=-1)  # fmt: skip


def _argmax_in_blocks(sub_max, chunk_max, sub, logits_at):
    """Position ``(b, g)`` of a largest of ``c`` log terms, from the maxima ``sub_max``
    ``(b, g, c / sub)`` of their sub-blocks of ``sub``: the first sub-block holding the maximum,
    then the largest entry within it, whose terms ``logits_at(cols)`` recomputes from the
    matrix product's output (``b * g * sub`` values, not another pass over all)."""
    n_sub = sub_max.shape[-1]
    iota = lax.broadcasted_iota(jnp.int32, sub_max.shape, sub_max.ndim - 1)
    block = jnp.min(jnp.where(sub_max >= chunk_max[..., None], iota, n_sub - 1), axis=-1)
    cols = block[..., None] * sub + jnp.arange(sub)
    within = jnp.argmax(logits_at(cols), axis=-1).astype(jnp.int32)
    return block * sub + within


def _top_columns(sub_max, chunk_max, sub, n_exact, logits_at):
    """Positions ``(b, g, K)`` of ``K = n_exact`` largest log terms of a chunk (distinct).

    They lie in the ``K`` sub-blocks of largest maximum: only those ``K * sub`` terms are
    recomputed (``logits_at``) and ranked. Which terms are chosen never decides the result's
    accuracy, only how much of it the account still has to bound.
    """
    if n_exact == 1:
        return _argmax_in_blocks(sub_max, chunk_max, sub, logits_at)[..., None]
    n_blocks = min(n_exact, sub_max.shape[-1])
    blocks = lax.top_k(sub_max, n_blocks)[1]
    cols = (blocks[..., None] * sub + jnp.arange(sub)).reshape(*blocks.shape[:-1], -1)
    within = lax.top_k(logits_at(cols), min(n_exact, cols.shape[-1]))[1]
    return jnp.take_along_axis(cols, within, axis=-1)


#: Codes of a query after a checked pass: its account holds; it is exceeded and more exact
#: terms can settle it (the matrix product's error moves each term by at most
#: ``_MAX_LOG_ERROR`` nats); or only direct differences can (the terms' order is unknown).
_SETTLED, _REFINE, _DIRECT = 0, 1, 2


def _checked_chunk(state, zq_hi, zq_lo, query_rows, grid, n_exact):
    """The checked matrix-product pass over one chunk, as ``chunk(run_max, xs)``.

    ``xs`` is one chunk's slice of :func:`_chunk_inputs`; ``run_max`` ``(b, g)`` the running
    maximum so far. Returns ``(new_max, total, err, unsafe)``, each ``(b, g)``: the new running
    maximum, the chunk's sum of ``exp(term - shift)`` and its error bound, both relative to
    ``shift = new_max``, and whether the chunk's terms may be out of order (see the module
    docstring). ``n_exact`` largest terms of the chunk are recomputed by direct differences
    (never for compact kernels, whose account is about the support's edge, not the largest
    terms).
    """
    kernel = state.kernel
    b, k = zq_hi.shape
    chunk = state.points.shape[1]
    dtype = zq_hi.dtype
    has_lo = state.points_lo is not None and zq_lo is not None
    n_exact = 0 if kernel.compact else min(n_exact, chunk)
    # Kernels whose log profile is steeper near r = 0 (exponential) need the nearest distance.
    needs_min = type(kernel).distance_error is not Kernel.distance_error and not kernel.compact
    factor = gemm_error_bound(k, dtype)
    q_sq = jnp.sum(zq_hi * zq_hi, axis=1)
    g = 1 if grid is None else grid.shape[0]
    # Sub-blocks in which the largest terms are sought: few and long for one term, short for
    # several (each chosen sub-block is recomputed whole).
    sub = math.gcd(chunk, 128 if n_exact <= 1 else 16)

    def scaled(x):  # (b,) squared distances or errors -> (b, g)
        return x[:, None] if grid is None else x[:, None] * grid[None, :]

    def chunk_pass(run_max, xs):
        z, z_lo, z_sq, log_w, first, log_factors = xs
        log_w, inv_sq = _centre_terms(log_w, log_factors, k)
        # Overflowing norms give NaN (inf - inf): such a row ends NaN and is recomputed.
        cross = jnp.matmul(zq_hi, z.T, precision=PRECISIONS["highest"])

        def terms_at(cols):  # the log terms at columns cols (b, g, s), from the product
            d2 = jnp.maximum(
                q_sq[:, None, None]
                + z_sq[cols]
                - 2.0 * jnp.take_along_axis(cross[:, None, :], cols, axis=-1),
                0.0,
            )
            if inv_sq is not None:
                d2 = d2 * inv_sq[cols]
            sq = d2 if grid is None else d2 * grid[None, :, None]
            out = log_w[cols] + kernel.log_profile(sq)
            if query_rows is not None:
                out = jnp.where(query_rows[:, None, None] == first + cols, -jnp.inf, out)
            return out

        d2 = jnp.maximum(q_sq[:, None] + z_sq[None, :] - 2.0 * cross, 0.0)
        logits, sq = _log_terms(kernel, d2, log_w, grid, query_rows, first, inv_sq, axis=-1)
        if n_exact:  # the maximum by sub-blocks, to find the largest terms without another pass
            sub_max = jnp.max(logits.reshape(b, g, chunk // sub, sub), axis=-1)
            chunk_max = lax.stop_gradient(jnp.max(sub_max, axis=-1))
        else:
            chunk_max = lax.stop_gradient(jnp.max(logits, axis=-1))
        z_max = jnp.max(jnp.where(jnp.isfinite(log_w), z_sq, 0.0))
        delta = factor * (q_sq + z_max)
        if inv_sq is not None:  # the largest change of a scaled squared distance of the chunk
            delta = delta * jnp.max(jnp.where(jnp.isfinite(log_w), inv_sq, 0.0))
        delta = lax.stop_gradient(scaled(delta))
        new_max = jnp.maximum(run_max, chunk_max)
        if n_exact:  # the chunk's largest terms, again by direct differences
            top = _top_columns(sub_max, chunk_max, sub, n_exact, terms_at)  # (b, g, K)
            top_approx = terms_at(top)

            def exact_sq(cols):  # (b, g) direct squared distances to the centres cols
                diff = zq_hi[:, None, :] - z[cols]
                if has_lo:
                    diff = diff + (zq_lo[:, None, :] - z_lo[cols])
                return jnp.sum(diff * diff, axis=-1)

            # One term at a time: memory (b, g, k), not (b, g, K, k).
            d2_top = jnp.moveaxis(lax.map(exact_sq, jnp.moveaxis(top, -1, 0)), 0, -1)
            if inv_sq is not None:
                d2_top = d2_top * inv_sq[top]
            top_exact = log_w[top] + kernel.log_profile(
                d2_top if grid is None else d2_top * grid[None, :, None]
            )
            if query_rows is not None:
                top_exact = jnp.where(query_rows[:, None, None] == first + top, -jnp.inf,
                                      top_exact)  # fmt: skip
            new_max = jnp.maximum(new_max, lax.stop_gradient(jnp.max(top_exact, axis=-1)))
        shift = _finite_or_zero(new_max)
        total = jnp.sum(jnp.exp(logits - shift[..., None]), axis=-1)
        rest = total
        if n_exact:
            exact_part = jnp.exp(top_approx - shift[..., None])
            rest = jnp.maximum(total - jnp.sum(exact_part, axis=-1), 0.0)
            total = rest + jnp.sum(jnp.exp(top_exact - shift[..., None]), axis=-1)
        if kernel.compact:  # each term's possible change, in the kernel's value
            err = jnp.sum(jnp.exp(log_w[None, None, :] - shift[..., None])
                          * kernel.distance_error(sq, delta[..., None]), axis=-1)  # fmt: skip
            # Errors of a whole unit of squared distance leave nothing of the support known.
            unsafe = ~(delta < 1.0)
        else:
            sq_min = jnp.min(sq, axis=-1) if needs_min else jnp.zeros_like(delta)
            move = kernel.distance_error(sq_min, delta)
            err = lax.stop_gradient(rest) * jnp.expm1(jnp.minimum(move, _MAX_LOG_ERROR))
            # Past _MAX_LOG_ERROR the terms' order is unknown: a chunk that might hold the
            # largest term is recomputed (NaN-safe: a NaN comparison counts as unsafe).
            unsafe = ~(move <= _MAX_LOG_ERROR) & ~(chunk_max + move < shift - _WINDOW)
        return new_max, total, lax.stop_gradient(err), unsafe

    return chunk_pass


def _rescale(run_max, new_max):
    """``exp(old shift - new shift)``, the factor that moves running sums to the new shift."""
    shift = _finite_or_zero(new_max)
    old = jnp.where(jnp.isfinite(run_max), run_max, shift)
    return lax.stop_gradient(jnp.exp(old - shift))


def _account_code(run_max, run_sum, run_err, unsafe, log_normalizer, compact):
    """The log-sum-exp ``(b, g)`` of a checked pass and each query's code ``(b,)`` int8:
    ``_SETTLED`` where the error bound ``run_err`` is within ``RTOL * s(q)`` of ``run_sum``
    for every bandwidth of the grid, else ``_REFINE``, or ``_DIRECT`` where a chunk was unsafe,
    the result NaN, or the kernel compact (more exact terms cannot settle it)."""
    lse = lse_finish(run_max, run_sum)
    positive = run_sum > 0
    ratio = jnp.where(positive, run_err / jnp.where(positive, run_sum, 1.0),
                      jnp.where(run_err > 0, jnp.inf, 0.0))  # fmt: skip
    log_f = lax.stop_gradient(lse + log_normalizer)
    scale = jnp.maximum(jnp.maximum(jnp.abs(_finite_or_zero(log_f)),
                                    jnp.abs(_finite_or_zero(run_max))), 1.0)  # fmt: skip
    exceeded = ~(jnp.log1p(ratio) <= RTOL[np.dtype(run_sum.dtype)] * scale)
    direct = unsafe | jnp.isnan(log_f)
    refine = _DIRECT if compact else _REFINE
    code = jnp.where(direct, _DIRECT, jnp.where(exceeded, refine, _SETTLED))
    return lse, jnp.max(code, axis=1).astype(jnp.int8)


class _Partial(NamedTuple):
    """What a refinement of one chunk needs of a first pass, per query: the running maximum,
    the sums and error bounds of every chunk but the worst (relative to that maximum), each
    ``(m, g)``, and the worst chunk, the one of largest error bound ``(m,)``."""

    run_max: jax.Array
    others_sum: jax.Array
    others_err: jax.Array
    worst: jax.Array


def _checked_gemm_logsumexp(state, zq_hi, zq_lo, query_rows, row_offset, remat, grid,
                            log_normalizer, n_exact=None):  # fmt: skip
    """Matrix-product distances with the rounding-error account (see the module docstring).

    ``n_exact`` largest terms of each chunk are recomputed by direct differences (default:
    one from ``COMPENSATE_MIN_DIM`` dimensions on, none below).

    Returns the block's log-sum-exp ``(b, g)``, each query's code ``(b,)`` (``_SETTLED``,
    ``_REFINE`` or ``_DIRECT``) and its :class:`_Partial`, whose worst chunk a refinement
    recomputes alone.
    """
    b, k = zq_hi.shape
    if n_exact is None:
        n_exact = 1 if k >= COMPENSATE_MIN_DIM else 0
    chunk_pass = _checked_chunk(state, zq_hi, zq_lo, query_rows, grid, n_exact)

    def step(carry, xs):
        run_max, others_sum, others_err, worst_sum, worst_err, worst, unsafe = carry
        index, chunk_xs = xs
        new_max, total, err, chunk_unsafe = chunk_pass(run_max, chunk_xs)
        rescale = _rescale(run_max, new_max)
        others_sum, others_err = others_sum * rescale, others_err * rescale
        worst_sum, worst_err = worst_sum * rescale, worst_err * rescale
        # The chunk of largest error bound so far is kept apart (the first one to begin with).
        swap = (index == 0) | (jnp.max(err, axis=1) > jnp.max(worst_err, axis=1))
        keep = swap[:, None]
        others_sum = others_sum + jnp.where(keep, worst_sum, total)
        others_err = others_err + jnp.where(keep, worst_err, err)
        worst_sum = jnp.where(keep, total, worst_sum)
        worst_err = jnp.where(keep, err, worst_err)
        worst = jnp.where(swap, index, worst)
        carry = (new_max, others_sum, others_err, worst_sum, worst_err, worst,
                 unsafe | chunk_unsafe)  # fmt: skip
        return carry, None

    if remat:
        step = jax.checkpoint(step)
    g = 1 if grid is None else grid.shape[0]
    dtype = zq_hi.dtype
    zeros = jnp.zeros((b, g), dtype)
    init = (jnp.full((b, g), -jnp.inf, dtype), zeros, zeros, zeros, zeros,
            jnp.zeros((b,), jnp.int32), jnp.zeros((b, g), bool))  # fmt: skip
    xs = (jnp.arange(state.points.shape[0], dtype=jnp.int32), _chunk_inputs(state, row_offset))
    carry, _ = lax.scan(step, init, xs)
    run_max, others_sum, others_err, worst_sum, worst_err, worst, unsafe = carry
    lse, code = _account_code(run_max, others_sum + worst_sum, others_err + worst_err, unsafe,
                              log_normalizer, state.kernel.compact)  # fmt: skip
    return lse, code, _Partial(run_max, others_sum, others_err, worst)


def _worst_chunk_rows(remat, args, ints, rows, index):
    """Second tier: the queries ``rows``, whose worst chunk is ``index``, with that chunk
    recomputed by the checked product with ``_REFINE_EXACT`` exact terms and the other chunks
    taken from the first pass. Returns their log-sum-exps ``(len(rows), g)`` and whether each
    is still unsettled."""
    state, q_hi, q_lo, grid, norm, partial = args
    query_rows, row_offset = ints
    chunk_pass = _checked_chunk(
        state, q_hi[rows], None if q_lo is None else q_lo[rows],
        None if query_rows is None else query_rows[rows], grid, _REFINE_EXACT,
    )  # fmt: skip
    if remat:
        chunk_pass = jax.checkpoint(chunk_pass)
    xs = jax.tree.map(lambda a: a[index], _chunk_inputs(state, row_offset))
    run_max = partial.run_max[rows]
    new_max, total, err, unsafe = chunk_pass(run_max, xs)
    rescale = _rescale(run_max, new_max)
    run_sum = partial.others_sum[rows] * rescale + total
    run_err = partial.others_err[rows] * rescale + err
    lse, code = _account_code(new_max, run_sum, run_err, unsafe, norm, state.kernel.compact)
    return lse, code != _SETTLED


def _refined_rows(remat, args, ints, rows):
    """Third tier: the queries ``rows`` by the checked product with ``_REFINE_EXACT`` exact
    terms in every chunk: their log-sum-exps ``(len(rows), g)`` and whether each still needs
    direct differences."""
    state, q_hi, q_lo, grid, norm, _ = args
    query_rows, row_offset = ints
    lse, code, _ = _checked_gemm_logsumexp(
        state, q_hi[rows], None if q_lo is None else q_lo[rows],
        None if query_rows is None else query_rows[rows], row_offset, remat, grid, norm,
        n_exact=_REFINE_EXACT,
    )  # fmt: skip
    return lse, code != _SETTLED


def _direct_rows(remat, args, ints, rows):
    """Last tier: exact log-sum-exps ``(len(rows), g)`` of the queries ``rows`` by direct
    differences."""
    state, q_hi, q_lo, scale, grid = args
    query_rows, row_offset = ints
    lse = _direct_logsumexp(
        state, q_hi[rows], None if q_lo is None else q_lo[rows],
        None if query_rows is None else query_rows[rows], row_offset, remat, scale, grid,
    )  # fmt: skip
    return lse, None


def _over_groups(marked, sizes, body, carry):
    """``carry = body(rows, carry)`` for the marked rows of ``marked`` ``(m,)``, in groups: of
    ``sizes[0]`` rows while that many are left, then of ``sizes[-1]`` (the last group padded
    with ``m``), each size in a loop of as many steps as it has groups. Many marked rows go in
    large groups (products near full speed); a few in small ones (little padding)."""
    m = marked.shape[0]
    sizes = sorted({min(m, s) for s in sizes}, reverse=True)
    count = jnp.sum(marked)

    def run(carry):
        idx = jnp.nonzero(marked, size=m + sizes[0], fill_value=m)[0]
        start = jnp.zeros((), count.dtype)
        for i, size in enumerate(sizes):
            last = i == len(sizes) - 1
            n_groups = (count - start + size - 1) // size if last else (count - start) // size

            def step(j, carry, size=size, start=start):
                return body(lax.dynamic_slice_in_dim(idx, start + j * size, size), carry)

            carry = lax.fori_loop(0, n_groups, step, carry)
            start = start + n_groups * size
        return carry

    # Behind a branch: XLA hoists a loop's invariant work (a chunk's slice of the data, say)
    # out of it, which would then run even for no group at all.
    return lax.cond(count > 0, run, lambda carry: carry, carry)


def _tier_rows(tier, remat, args, ints, rows, index):
    """The rows function of ``tier`` (1: worst chunk, 2: every chunk, 3: direct)."""
    if tier == 1:
        return _worst_chunk_rows(remat, args[0], ints, rows, index)
    if tier == 2:
        return _refined_rows(remat, args[0], ints, rows)
    return _direct_rows(remat, args[1], ints, rows)


def _run_tier(tier, marked, worst, n_chunks, body, carry):
    """``body(rows, index, carry)`` over groups of the rows ``marked`` for ``tier``: by worst
    chunk ``index`` for tier 1 (each group shares one chunk), else all together."""
    sizes = _TIER_ROWS[tier]
    if tier != 1:
        return _over_groups(marked, sizes, lambda rows, c: body(rows, None, c), carry)

    def per_chunk(index, carry):
        return _over_groups(marked & (worst == index), sizes,
                            lambda rows, c: body(rows, index, c), carry)  # fmt: skip

    return lax.fori_loop(0, n_chunks, per_chunk, carry)


#: Every tier, and the direct one alone: what programs that differentiate through the engine
#: (the learned bandwidths) use, since the product tiers and their derivatives tripled their
#: compile time (fit_bandwidth on W5: 7.3 s to 21.6 s, of which 0.2 s is running).
TIERS = (1, 2, 3)
DIRECT_TIER = (3,)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _recompute_rows(remat, tiers, lse, code, worst, gemm_args, direct_args, ints):
    """Replace the rows of ``lse`` ``(m, g)`` that the first pass could not settle, by the
    ``tiers`` given (:data:`TIERS`, or :data:`DIRECT_TIER`).

    ``code`` ``(m,)`` says which. Rows ``_REFINE`` first have their worst chunk (``worst``,
    that of the largest error bound) recomputed with ``_REFINE_EXACT`` exact terms, the other
    chunks' sums kept from the first pass: a fraction of one product row each. Rows still
    unsettled go through every chunk so; rows ``_DIRECT``, and those the product cannot
    settle, through direct differences. Each tier loops over groups of its rows, as many steps
    as there are groups (none when no row is marked), so the cost follows the rows to fix.
    A loop of dynamic length has no reverse-mode derivative of its own, so this function has
    a custom one, looping the same way.
    """
    return _recompute_fwd(remat, tiers, lse, code, worst, gemm_args, direct_args, ints)[0]


def _recompute_fwd(remat, tiers, lse, code, worst, gemm_args, direct_args, ints):
    m = lse.shape[0]
    n_chunks = gemm_args[0].points.shape[0]
    args = (gemm_args, direct_args)

    def body(tier):
        def run(rows, index, carry):
            lse, unsettled = carry
            values, left = _tier_rows(tier, remat, args, ints, jnp.minimum(rows, m - 1), index)
            lse = lse.at[rows].set(values, mode="drop")
            if left is not None:
                unsettled = unsettled.at[rows].set(left, mode="drop")
            return lse, unsettled

        return run

    pending = code == _REFINE
    settled_by = []
    for tier in (1, 2):
        if tier not in tiers:
            settled_by.append(jnp.zeros_like(pending))
            continue
        carry = (lse, jnp.zeros_like(pending))
        lse, unsettled = _run_tier(tier, pending, worst, n_chunks, body(tier), carry)
        settled_by.append(pending & ~unsettled)
        pending = unsettled
    pending = pending | (code == _DIRECT)
    lse, _ = _run_tier(3, pending, worst, n_chunks, body(3), (lse, pending))
    settled_by.append(pending)
    return lse, (code, worst, tuple(settled_by), gemm_args, direct_args, ints)


def _recompute_bwd(remat, tiers, residuals, cotangent):
    code, worst, settled_by, gemm_args, direct_args, ints = residuals
    m = cotangent.shape[0]
    n_chunks = gemm_args[0].points.shape[0]
    args = (gemm_args, direct_args)
    grads = [jax.tree.map(jnp.zeros_like, a) for a in args]
    for tier, mine in zip((1, 2, 3), settled_by, strict=True):
        if tier not in tiers:
            continue
        which = 1 if tier == 3 else 0

        def body(rows, index, acc, tier=tier, which=which):
            safe = jnp.minimum(rows, m - 1)

            def value(a):
                full = list(args)
                full[which] = a
                return _tier_rows(tier, remat, full, ints, safe, index)[0]

            _, pull = jax.vjp(value, args[which])
            weight = jnp.where((rows < m)[:, None], cotangent[safe], 0.0)
            return jax.tree.map(jnp.add, acc, pull(weight)[0])

        grads[which] = _run_tier(tier, mine, worst, n_chunks, body, grads[which])
    # Recomputed rows were overwritten: their first-pass values receive nothing.
    return (jnp.where((code != _SETTLED)[:, None], 0.0, cotangent), None, None, *grads, None)


_recompute_rows.defvjp(_recompute_fwd, _recompute_bwd)


class DirectCoordinates(NamedTuple):
    """Coordinates for direct differences when they are not the whitened ones of the state.

    Learned bandwidths keep the centred data unwhitened (whitening is the parameter): the
    differences are whitened per pair by ``scale`` (see :func:`direct_sq_distances`).
    """

    q_hi: jax.Array
    q_lo: jax.Array | None
    points: jax.Array
    points_lo: jax.Array | None
    scale: jax.Array


def _first_pass(
    state: KDEState,
    zq_hi: jax.Array,
    zq_lo: jax.Array | None,
    precision: str,
    query_rows: jax.Array | None = None,
    remat: bool = False,
    row_offset: jax.Array | int = 0,
    *,
    block_size: int | None = None,
    grid: jax.Array | None = None,
    direct: DirectCoordinates | None = None,
    log_normalizer: jax.Array | None = None,
) -> tuple:
    """The first pass of ``logsumexp_i [log w_i + log k(|zq - z_i|^2)]`` for whitened queries
    ``(m, k)``, ``block_size`` at a time (all at once by default).

    Returns ``(lse, code, partial, settle)``: the log-sum-exps ``(m, g)`` (``g = 1`` without a
    grid), and for the checked product the queries' codes ``(m,)``, their :class:`_Partial`
    and the arguments with which :func:`_recompute_rows` settles the marked ones (``None``
    for the other paths, whose first pass is final).

    ``query_rows`` (``(m,)`` ints) marks each query as a row of the data, whose own term is
    left out (leave-one-out); ``row_offset`` is the global row of ``state``'s first point (a
    shard's position in the whole data). ``remat`` recomputes each step in the backward pass, so a
    gradient needs memory for the carries only, not for every step's ``(b, chunk)`` terms.
    ``grid`` ``(g,)`` scales every squared distance by each of ``g`` factors (a grid of
    bandwidths sharing one distance computation): the result is then ``(m, g)``, else ``(m,)``.
    ``direct`` gives the coordinates of direct differences when they are not the whitened ones;
    ``log_normalizer`` (default the state's; ``(g,)`` with a grid) sizes the error account.
    """
    m, k = zq_hi.shape
    if direct is None:
        direct_state, dq_hi, dq_lo, scale = state, zq_hi, zq_lo, None
    else:
        direct_state = dataclasses.replace(state, points=direct.points,
                                           points_lo=direct.points_lo)  # fmt: skip
        dq_hi, dq_lo, scale = direct.q_hi, direct.q_lo, direct.scale
    if state.kernel.norm != 2.0 or k <= DIRECT_MAX_DIM:
        mode = "direct"
    else:
        mode = "checked" if precision == "highest" else "unchecked"
    norm = state.log_normalizer if log_normalizer is None else log_normalizer

    def first_pass(args):
        zh, zl, dh, dl, rows = args
        if mode == "checked":
            return _checked_gemm_logsumexp(state, zh, zl, rows, row_offset, remat, grid, norm)
        if mode == "direct":
            lse = _direct_logsumexp(direct_state, dh, dl, rows, row_offset, remat, scale, grid)
        else:
            lse = _gemm_logsumexp(state, zh, precision, rows, row_offset, remat, grid)
        return lse, None, None

    args = (zq_hi, zq_lo, dq_hi, dq_lo, query_rows)
    if block_size is None or block_size >= m:
        lse, code, partial = first_pass(args)
    else:
        n_blocks = -(-m // block_size)
        pad = n_blocks * block_size - m

        def blocks(a, fill=None):
            if a is None:
                return None
            if fill is None:  # pad with copies of the first query: real, harmless queries
                a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
            else:
                a = jnp.pad(a, (0, pad), constant_values=fill)
            return a.reshape(n_blocks, block_size, *a.shape[1:])

        blocked = (*(blocks(a) for a in args[:4]), blocks(query_rows, -1))
        lse, code, partial = jax.tree.map(
            lambda a: a.reshape(n_blocks * block_size, *a.shape[2:])[:m],
            lax.map(first_pass, blocked),
        )
    if mode != "checked":
        return lse, None, None, None
    settle = ((state, zq_hi, zq_lo, grid, norm, partial._replace(worst=None)),
              (direct_state, dq_hi, dq_lo, scale, grid), (query_rows, row_offset))  # fmt: skip
    return lse, code, partial, settle


def _logsumexp(state, zq_hi, zq_lo, precision, query_rows=None, remat=False, row_offset=0,
               tiers=TIERS, **options) -> jax.Array:  # fmt: skip
    """``logsumexp_i [log w_i + log k(|zq - z_i|^2)]`` for whitened queries ``(m, k)``: the
    first pass of :func:`_first_pass` (same arguments), then every query it marked settled by
    :func:`_recompute_rows` (by ``tiers``), in one traceable computation. Returns ``(m,)``,
    or ``(m, g)`` with a ``grid``."""
    lse, code, partial, settle = _first_pass(state, zq_hi, zq_lo, precision, query_rows, remat,
                                             row_offset, **options)  # fmt: skip
    if code is not None:
        lse = _recompute_rows(remat, tiers, lse, code, partial.worst, *settle)
    return lse[:, 0] if options.get("grid") is None else lse


@functools.partial(jax.jit, static_argnames=("block_size", "precision"))
def log_density_program(
    state: KDEState,
    zq_hi: jax.Array,
    zq_lo: jax.Array | None,
    query_rows: jax.Array | None = None,
    *,
    block_size: int | None = None,
    precision: str = "highest",
) -> jax.Array:
    """:func:`log_density_whitened` as one compiled program, the recomputation tiers inside:
    what runs within a trace (``jit``, ``grad``, ``vmap``). One per query count, block size and
    precision, reused for every state of the same shapes.

    ``query_rows`` ``(m,)`` (ints, optional) makes query ``j`` the data row ``query_rows[j]``
    of ``state`` (its position in the chunks, read row by row), whose own term is left out:
    the leave-one-out sums, not renormalised (see :func:`jaxkde.loo_log_density`)."""
    _check_precision(precision)
    lse = _logsumexp(state, zq_hi, zq_lo, precision, query_rows, block_size=block_size)
    return lse + state.log_normalizer


@functools.partial(jax.jit, static_argnames=("block_size", "precision"))
def _first_pass_program(state, zq_hi, zq_lo, *, block_size=None, precision="highest"):
    """The first pass alone: ``(log f (m,), code, partial)`` (``None`` for the paths without
    an error account)."""
    lse, code, partial, _ = _first_pass(state, zq_hi, zq_lo, precision, block_size=block_size)
    return lse[:, 0] + state.log_normalizer, code, partial


@jax.jit
def _settle_program(state, zq_hi, zq_lo, log_f, code, partial):
    """``log_f`` with the queries its first pass marked settled by :func:`_recompute_rows`;
    the other rows are returned as they are."""
    norm = state.log_normalizer
    settle = ((state, zq_hi, zq_lo, None, norm, partial._replace(worst=None)),
              (state, zq_hi, zq_lo, None, None), (None, 0))  # fmt: skip
    lse = _recompute_rows(False, TIERS, (log_f - norm)[:, None], code, partial.worst, *settle)
    return jnp.where(code != _SETTLED, lse[:, 0] + norm, log_f)


class PendingLogDensity(NamedTuple):
    """A block's dispatched first pass, settled on demand (:meth:`result`): a caller that
    scores many blocks dispatches every first pass before it waits on any, so the device is
    never idle between blocks (see :func:`log_density_whitened`'s ``defer``)."""

    state: KDEState
    zq_hi: jax.Array
    zq_lo: jax.Array | None
    log_f: jax.Array
    code: jax.Array | None
    partial: _Partial | None

    def result(self) -> jax.Array:
        """The settled log density ``(m,)``: waits for the first pass, and runs the tiers only
        where it marked a query."""
        if self.code is None or not np.any(np.asarray(self.code)):
            return self.log_f
        return _settle_program(self.state, self.zq_hi, self.zq_lo, self.log_f, self.code,
                               self.partial)  # fmt: skip


def settled(result: jax.Array | PendingLogDensity) -> jax.Array:
    """``result`` itself, or a :class:`PendingLogDensity`'s :meth:`~PendingLogDensity.result`."""
    return result.result() if isinstance(result, PendingLogDensity) else result


def log_density_whitened(
    state: KDEState,
    zq_hi: jax.Array,
    zq_lo: jax.Array | None,
    *,
    block_size: int | None = None,
    precision: str = "highest",
    defer: bool = False,
) -> jax.Array | PendingLogDensity:
    """:func:`log_density` of queries already whitened by :func:`jaxkde.whiten_queries`.

    Called with concrete arrays, the first pass runs as one compiled program; only when it
    marks a query (its rounding-error account exceeded) do the recomputation tiers run, as a
    second program compiled at its first use, so well-scaled data never compile them. Inside a
    trace it is :func:`log_density_program`, the tiers inside. Either way the programs are
    reused for every state of the same shapes. With ``defer`` (concrete arrays only), the
    first pass is dispatched and a :class:`PendingLogDensity` returned without waiting for it
    (pass results through :func:`settled`).
    """
    _check_precision(precision)
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((state, zq_hi, zq_lo))):
        return log_density_program(state, zq_hi, zq_lo, block_size=block_size,
                                   precision=precision)  # fmt: skip
    first = _first_pass_program(state, zq_hi, zq_lo, block_size=block_size, precision=precision)
    pending = PendingLogDensity(state, zq_hi, zq_lo, *first)
    return pending if defer else pending.result()


def log_density(
    state: KDEState,
    queries,
    *,
    block_size: int | None = None,
    precision: str = "highest",
    whitening: HostWhitening | None = None,
    defer: bool = False,
) -> jax.Array | PendingLogDensity:
    """Log density of the KDE ``state`` at each query.

    Parameters
    ----------
    state : KDEState
        Fitted state (see :func:`jaxkde.build_state`).
    queries : array, shape (m, d)
        Query points in the original coordinates. Host arrays (NumPy, lists) are centred and
        whitened in float64 before the cast to the working dtype; inside ``jit`` or ``grad``
        they are whitened on the device (see :func:`jaxkde.whiten_queries`).
    block_size : int, optional
        Queries evaluated together; ``None`` evaluates all ``m`` at once. Peak memory is
        ``O(block_size * chunk_size)``.
    precision : {"highest", "high", "default"}
        Precision of the distance matrix products (see module docstring).
    whitening : HostWhitening, optional
        ``jaxkde.host_whitening(state)``, to reuse across calls (computed here otherwise).
    defer : bool
        Return a :class:`PendingLogDensity` without waiting for the first pass (see
        :func:`log_density_whitened`); a block loop settles them after dispatching all.

    Returns
    -------
    array, shape (m,)
        ``log f(queries)``, within ``RTOL * s(q)`` of the exact value at
        ``precision="highest"``; ``-inf`` where every kernel term underflows to exactly zero
        (outside a compact kernel's support, or so far away that the squared whitened distance
        overflows the working dtype), never NaN for finite input.
    """
    _check_precision(precision)
    zq_hi, zq_lo = whiten_queries(state, queries, whitening)
    return log_density_whitened(state, zq_hi, zq_lo, block_size=block_size, precision=precision,
                                defer=defer)  # fmt: skip
