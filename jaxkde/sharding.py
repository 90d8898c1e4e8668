"""Evaluation over many devices: the data sharded along a mesh axis, partial sums combined exactly.

Each device runs the engine's blocked log-sum-exp over its own chunks of the data and returns
a partial ``(max, sum of exp(term - max))`` pair per query; the pairs are combined across the
mesh axis with ``pmax`` and ``psum``, which is exact (the same sum, regrouped). Chunks are
padded with empty ones (log weight -inf) so that every device holds the same number.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .engine import PRECISIONS, _block_logsumexp
from .state import KDEState, whiten

__all__ = ["shard_state", "sharded_log_density"]


def shard_state(state: KDEState, mesh: Mesh, axis: str | None = None) -> KDEState:
    """Place ``state``'s data chunks on the devices of ``mesh`` along ``axis`` (default: first).

    The chunk count is padded up to a multiple of the axis size with empty chunks; the other
    fields are replicated.
    """
    axis = mesh.axis_names[0] if axis is None else axis
    size = mesh.shape[axis]
    n_chunks = state.points.shape[0]
    pad = (-n_chunks) % size
    if pad:
        state = dataclasses.replace(
            state,
            points=jnp.pad(state.points, ((0, pad), (0, 0), (0, 0))),
            sq_norms=jnp.pad(state.sq_norms, ((0, pad), (0, 0))),
            log_weights=jnp.pad(state.log_weights, ((0, pad), (0, 0)), constant_values=-jnp.inf),
        )
    data = NamedSharding(mesh, P(axis))
    replicated = NamedSharding(mesh, P())
    return dataclasses.replace(
        state,
        points=jax.device_put(state.points, data),
        sq_norms=jax.device_put(state.sq_norms, data),
        log_weights=jax.device_put(state.log_weights, data),
        mean=jax.device_put(state.mean, replicated),
        chol=jax.device_put(state.chol, replicated),
        basis=None if state.basis is None else jax.device_put(state.basis, replicated),
        log_normalizer=jax.device_put(state.log_normalizer, replicated),
    )


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "precision"))
def sharded_log_density(
    state: KDEState,
    queries: jax.Array,
    *,
    mesh: Mesh,
    axis: str | None = None,
    precision: str = "highest",
) -> jax.Array:
    """:func:`jaxkde.log_density` of a state placed by :func:`shard_state`; shape ``(m,)``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}.")
    axis = mesh.axis_names[0] if axis is None else axis
    zq = whiten(state, jnp.asarray(queries, state.dtype))
    data_spec = dataclasses.replace(
        state,
        points=P(axis),
        sq_norms=P(axis),
        log_weights=P(axis),
        mean=P(),
        chol=P(),
        basis=None if state.basis is None else P(),
        log_normalizer=P(),
    )

    def local(shard: KDEState, zq: jax.Array) -> jax.Array:
        lse = _block_logsumexp(shard, zq, precision)  # this device's chunks
        top = lax.pmax(jnp.where(jnp.isfinite(lse), lse, -jnp.inf), axis)
        shift = jnp.where(jnp.isfinite(top), top, 0.0)
        total = lax.psum(jnp.exp(lse - shift), axis)
        return shift + jnp.log(total)

    # check_vma=False: the engine's scan carries start replicated and become per-device values.
    mapped = jax.shard_map(
        local, mesh=mesh, in_specs=(data_spec, P()), out_specs=P(), check_vma=False
    )
    lse = mapped(state, zq)
    return lse + state.log_normalizer
