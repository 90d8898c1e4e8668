"""The evaluation engine: exact blocked log-sum-exp over the data at matrix-product speed.

For a block of whitened queries ``q`` (``(b, k)``) and each chunk of whitened data ``z``
(``(c, k)``), squared distances come from one matrix product,
``|q - z|^2 = |q|^2 + |z|^2 - 2 q.z`` (data centred at fit time, clamped at 0), and the chunk's
log terms ``log w_i + log k(|q - z_i|^2)`` are folded into a running maximum and a running sum of
exponentials (an online log-sum-exp). Peak memory is ``O(b * c)`` whatever the number of queries
and data points; nothing of shape ``(n_query, n_data, dim)`` or ``(n_query, n_data)`` exists.

Matrix products run at ``precision="highest"`` by default: true float32 (or float64) products,
also on GPUs whose float32 products default to TF32. ``"default"`` lets the backend choose.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .state import KDEState, whiten

__all__ = [
    "BLOCK_SIZES",
    "PRECISIONS",
    "combine_log_sums",
    "default_block_sizes",
    "log_density",
    "pairwise_sq_distances",
]

#: Default ``(query block, data chunk)`` sizes by backend. On 2 CPU cores (1024, 4096) keeps a
#: block's terms in cache and reached 1.00x to 1.12x of the matmul floor on MNIST pixels; on an
#: H200 GPU (4096, 16384) gave 1.67x of the one-product float32 floor against 1.74x for
#: (1024, 4096), measured side by side (benchmarks/results/gpu_check_h200_run1.log).
BLOCK_SIZES = {"cpu": (1024, 4096), "gpu": (4096, 16384)}


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


def pairwise_sq_distances(
    q: jax.Array,
    q_sq: jax.Array,
    z: jax.Array,
    z_sq: jax.Array,
    norm: float = 2.0,
    precision: str = "highest",
) -> jax.Array:
    """Squared p-norm distances between rows of ``q`` ``(b, k)`` and ``z`` ``(c, k)``: ``(b, c)``.

    ``q_sq`` and ``z_sq`` are the squared Euclidean row norms, used by the p = 2 path only.
    For p = 1 or infinity the difference is formed per pair and reduced over features inside one
    fused loop: memory is ``O(b * c)`` as long as XLA fuses the reduction (it does on CPU and GPU).
    """
    if norm == 2.0:
        cross = jnp.matmul(q, z.T, precision=PRECISIONS[precision])
        return jnp.maximum(q_sq[:, None] + z_sq[None, :] - 2.0 * cross, 0.0)
    diff = jnp.abs(q[:, None, :] - z[None, :, :])
    r = jnp.sum(diff, axis=-1) if norm == 1.0 else jnp.max(diff, axis=-1)
    return r * r


def lse_update(
    run_max: jax.Array, run_sum: jax.Array, logits: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Fold ``logits`` (``(..., c)``) into a running (max, sum of exp(logit - max)) pair.

    The max is a constant shift (no gradient flows through it), so the result is exactly
    differentiable; a row whose terms are all -inf so far keeps a finite shift (no inf - inf).
    """
    new_max = jnp.maximum(run_max, lax.stop_gradient(jnp.max(logits, axis=-1)))
    shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    old = jnp.where(jnp.isfinite(run_max), run_max, shift)
    run_sum = run_sum * jnp.exp(old - shift) + jnp.sum(jnp.exp(logits - shift[..., None]), axis=-1)
    return new_max, run_sum


def lse_finish(run_max: jax.Array, run_sum: jax.Array) -> jax.Array:
    """``log`` of the accumulated sum: ``max + log(sum)`` (-inf when every term was -inf).

    An empty sum gives -inf with a zero (not NaN) gradient, so a shard or chunk holding only
    padding does not poison the gradient of a combined result.
    """
    shift = jnp.where(jnp.isfinite(run_max), run_max, 0.0)
    empty = run_sum <= 0
    return jnp.where(empty, -jnp.inf, shift + jnp.log(jnp.where(empty, 1.0, run_sum)))


def combine_log_sums(parts: jax.Array) -> jax.Array:
    """Exact log-sum-exp over the leading axis of partial results ``(n_parts, m)``: ``(m,)``.

    Used to merge the per-device partial log-sum-exps of sharded evaluation.
    """
    m = parts.shape[1]
    init = (jnp.full((m,), -jnp.inf, parts.dtype), jnp.zeros((m,), parts.dtype))
    return lse_finish(*lse_update(*init, parts.T))


def _block_logsumexp(
    state: KDEState,
    zq: jax.Array,
    precision: str,
    query_rows: jax.Array | None = None,
    remat: bool = False,
    row_offset: jax.Array | int = 0,
) -> jax.Array:
    """``logsumexp_i [log w_i + log k(|zq - z_i|^2)]`` for one block of whitened queries.

    ``query_rows`` (``(b,)`` ints) marks each query as a row of the data, whose own term is
    left out (leave-one-out); ``row_offset`` is the global row of ``state``'s first point (a
    shard's position in the whole data). ``remat`` recomputes each step in the backward pass, so a
    gradient needs memory for the carries only, not for every step's ``(b, chunk)`` terms.
    """
    kernel = state.kernel
    q_sq = jnp.sum(zq * zq, axis=1)
    chunk = state.points.shape[1]

    def step(carry, xs):
        z, z_sq, log_w, first = xs
        d2 = pairwise_sq_distances(zq, q_sq, z, z_sq, kernel.norm, precision)
        logits = log_w[None, :] + kernel.log_profile(d2)
        if query_rows is not None:
            own = query_rows[:, None] == first + jnp.arange(chunk)[None, :]
            logits = jnp.where(own, -jnp.inf, logits)
        return lse_update(*carry, logits), None

    if remat:
        step = jax.checkpoint(step)
    b = zq.shape[0]
    init = (jnp.full((b,), -jnp.inf, zq.dtype), jnp.zeros((b,), zq.dtype))
    starts = row_offset + jnp.arange(state.points.shape[0]) * chunk
    xs = (state.points, state.sq_norms, state.log_weights, starts)
    (run_max, run_sum), _ = lax.scan(step, init, xs)
    return lse_finish(run_max, run_sum)


@functools.partial(jax.jit, static_argnames=("block_size", "precision"))
def log_density(
    state: KDEState,
    queries: jax.Array,
    *,
    block_size: int | None = None,
    precision: str = "highest",
) -> jax.Array:
    """Log density of the KDE ``state`` at each query.

    Parameters
    ----------
    state : KDEState
        Fitted state (see :func:`jaxkde.build_state`).
    queries : array, shape (m, d)
        Query points in the original coordinates; cast to the state's dtype.
    block_size : int, optional
        Queries evaluated together; ``None`` evaluates all ``m`` at once. Peak memory is
        ``O(block_size * chunk_size)``.
    precision : {"highest", "high", "default"}
        Precision of the distance matrix products (see module docstring).

    Returns
    -------
    array, shape (m,)
        ``log f(queries)``; ``-inf`` only where every kernel term underflows to exactly zero,
        which the Gaussian kernel never does for finite inputs.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}.")
    queries = jnp.asarray(queries, state.dtype)
    m = queries.shape[0]
    zq = whiten(state, queries)
    if block_size is None or block_size >= m:
        lse = _block_logsumexp(state, zq, precision)
    else:
        n_blocks = -(-m // block_size)
        zq = jnp.pad(zq, ((0, n_blocks * block_size - m), (0, 0)))
        blocks = zq.reshape(n_blocks, block_size, zq.shape[1])
        lse = lax.map(lambda blk: _block_logsumexp(state, blk, precision), blocks).reshape(-1)[:m]
    return lse + state.log_normalizer
