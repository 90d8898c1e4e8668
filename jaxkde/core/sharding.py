"""Evaluation over many devices: the data sharded along a mesh axis, partial sums combined exactly.

Each device runs the engine's blocked log-sum-exp over its own chunks of the data and returns
one partial log-sum-exp per query; the partials are merged with one more log-sum-exp, which is
exact (the same sum, regrouped) and, having no collective inside the mapped function,
differentiable as the plain sum is (learned bandwidths use it). Chunks are padded with empty ones
(log weight -inf) so that every device holds the same number.

Several processes: with ``jax.distributed`` initialised, :mod:`jaxkde.scale.distributed` builds the
state from a global array whose rows each process holds only in part; the queries are then
replicated onto the mesh here, and every process receives every result.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxkde.core.engine import _check_precision, _logsumexp, combine_log_sums
from jaxkde.core.state import HostWhitening, KDEState, whiten_queries

__all__ = [
    "reduce_shards",
    "replicate",
    "shard_state",
    "sharded_log_density",
    "sharded_log_density_whitened",
]


def shard_state(state: KDEState, mesh: Mesh, axis: str | None = None) -> KDEState:
    """Place ``state``'s data chunks on the devices of ``mesh`` along ``axis`` (default: first).

    The chunk count is padded up to a multiple of the axis size with empty chunks; the other
    fields are replicated.
    """
    axis = mesh.axis_names[0] if axis is None else axis
    size = mesh.shape[axis]
    n_chunks = state.points.shape[0]
    pad = (-n_chunks) % size
    lo = state.points_lo
    if pad:
        state = dataclasses.replace(
            state,
            points=jnp.pad(state.points, ((0, pad), (0, 0), (0, 0))),
            points_lo=None if lo is None else jnp.pad(lo, ((0, pad), (0, 0), (0, 0))),
            sq_norms=jnp.pad(state.sq_norms, ((0, pad), (0, 0))),
            log_weights=jnp.pad(state.log_weights, ((0, pad), (0, 0)), constant_values=-jnp.inf),
            log_factors=None if state.log_factors is None
            else jnp.pad(state.log_factors, ((0, pad), (0, 0))),
        )  # fmt: skip
    data = NamedSharding(mesh, P(axis))
    replicated = NamedSharding(mesh, P())
    return dataclasses.replace(
        state,
        points=jax.device_put(state.points, data),
        points_lo=None if lo is None else jax.device_put(state.points_lo, data),
        sq_norms=jax.device_put(state.sq_norms, data),
        log_weights=jax.device_put(state.log_weights, data),
        log_factors=None if state.log_factors is None else jax.device_put(state.log_factors, data),
        mean=jax.device_put(state.mean, replicated),
        chol=jax.device_put(state.chol, replicated),
        basis=None if state.basis is None else jax.device_put(state.basis, replicated),
        log_normalizer=jax.device_put(state.log_normalizer, replicated),
    )


def _state_specs(state: KDEState, axis: str) -> KDEState:
    """PartitionSpecs of a sharded state: data chunks along ``axis``, the rest replicated."""
    return dataclasses.replace(
        state,
        points=P(axis),
        points_lo=None if state.points_lo is None else P(axis),
        sq_norms=P(axis),
        log_weights=P(axis),
        log_factors=None if state.log_factors is None else P(axis),
        mean=P(),
        chol=P(),
        basis=None if state.basis is None else P(),
        log_normalizer=P(),
    )


def reduce_shards(
    local_log_sum: Callable[..., jax.Array],
    mesh: Mesh,
    axis: str,
    args: tuple,
    in_specs: tuple,
) -> jax.Array:
    """Run ``local_log_sum(*shards, index)`` on every device of ``axis``; merge the results.

    ``local_log_sum`` returns, for one device's shard of the data, a log-sum-exp ``(m,)`` over
    that shard; ``index`` is the device's position along ``axis``. The per-device results leave
    the mapped function as a ``(devices, m)`` array and are merged by
    :func:`jaxkde.core.engine.combine_log_sums`, an exact regrouping of the same sum. No collective
    runs inside the mapped function, so reverse-mode gradients are those of the plain sum.
    """

    def local(*shards):
        return local_log_sum(*shards, lax.axis_index(axis))[None]

    parts = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(axis), check_vma=False)(
        *args
    )
    return combine_log_sums(parts)


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "precision"))
def sharded_log_density_whitened(
    state: KDEState,
    zq_hi: jax.Array,
    zq_lo: jax.Array | None,
    *,
    mesh: Mesh,
    axis: str | None = None,
    precision: str = "highest",
) -> jax.Array:
    """:func:`sharded_log_density` of queries already whitened by :func:`jaxkde.whiten_queries`.

    The queries are replicated; each device reduces its own chunks of the data (with the
    engine's rounding-error account and recomputation, per device).
    """
    _check_precision(precision)
    axis = mesh.axis_names[0] if axis is None else axis

    def local(shard: KDEState, zq_hi, zq_lo, index: jax.Array) -> jax.Array:
        return _logsumexp(shard, zq_hi, zq_lo, precision)

    specs = (_state_specs(state, axis), P(), None if zq_lo is None else P())
    lse = reduce_shards(local, mesh, axis, (state, zq_hi, zq_lo), specs)
    return lse + state.log_normalizer


def sharded_log_density(
    state: KDEState,
    queries,
    *,
    mesh: Mesh,
    axis: str | None = None,
    precision: str = "highest",
    whitening: HostWhitening | None = None,
) -> jax.Array:
    """:func:`jaxkde.log_density` of a state placed by :func:`shard_state`; shape ``(m,)``.

    The queries are whitened as :func:`jaxkde.whiten_queries` does and replicated; each device
    reduces its own chunks of the data.
    """
    _check_precision(precision)
    zq_hi, zq_lo = whiten_queries(state, queries, whitening)
    if jax.process_count() > 1:  # a global program takes global arrays: replicate the queries
        zq_hi, zq_lo = replicate(mesh, zq_hi, zq_lo)
    return sharded_log_density_whitened(state, zq_hi, zq_lo, mesh=mesh, axis=axis,
                                        precision=precision)  # fmt: skip


def replicate(mesh: Mesh, *arrays) -> tuple:
    """Host arrays (equal in every process; ``None`` kept) placed on every device of ``mesh``."""
    same = NamedSharding(mesh, P())
    return tuple(None if a is None else jax.device_put(np.asarray(a), same) for a in arrays)
