"""Fitting across processes (``jax.distributed``): every process holds only its own rows.

A user who outgrows one machine starts the same program in several processes, calls
``jax.distributed.initialize()`` in each, builds a mesh over ``jax.devices()`` (the devices of
every process) and a global ``jax.Array`` of the data with
``jax.make_array_from_process_local_data``, each process having read only its part. Then
``KDE(mesh=mesh).fit(X)`` builds the state without gathering the data anywhere:

* the statistics the rules need are computed per process in float64 on the host (count, total
  weight, sum of squared weights, weighted mean and centred second moments) and merged exactly
  by Chan's parallel formulas from one small all-gather of those statistics (``d^2 + d + 3``
  numbers per process; float64 travels bit for bit as pairs of 32-bit words);
* each process whitens and chunks its own rows around the global centre, its log weights
  shifted by its share of the total weight, with a chunk layout that every process shares;
* the chunks become global arrays sharded along the mesh axis, the rest is replicated, and
  scoring is the sharded engine of :mod:`jaxkde.core.sharding`: each device reduces its own chunks,
  and only ``(devices, m)`` partial log-sum-exps cross the network.

Queries are replicated: every process passes the same query rows and receives every result.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxkde.core.moments import Moments, moments, part_statistics
from jaxkde.core.sampling import sample_parts, uniform53
from jaxkde.core.sharding import replicate
from jaxkde.core.state import (
    HostWhitening,
    KDEState,
    build_state,
    chunk_layout,
    unwhiten_host,
)

__all__ = [
    "allgather_float64",
    "class_moments",
    "gather_rows",
    "global_classes",
    "global_moments",
    "global_sample",
    "global_sample_classes",
    "global_state",
    "is_global",
    "like_rows",
    "local_rows",
    "process_rows",
]


def is_global(x) -> bool:
    """Whether ``x`` is a ``jax.Array`` with rows in other processes (not fully addressable)."""
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def process_rows(x: jax.Array, name: str = "X") -> np.ndarray:
    """This process's rows of a global array ``(n, ...)`` sharded along its first axis, in
    float64 and in global order; other axes must not be split."""
    rows = {}
    for shard in x.addressable_shards:
        index = shard.index
        for axis, part in enumerate(index[1:], start=1):
            if (part.start or 0) != 0 or (part.stop is not None and part.stop != x.shape[axis]):
                raise ValueError(
                    f"{name} must be sharded along its rows only (PartitionSpec(axis)); its "
                    f"axis {axis} is split."
                )
        rows.setdefault(index[0].start or 0, shard.data)  # replicas of a row block: one copy
    if not rows:
        return np.empty((0, *x.shape[1:]), np.float64)
    return np.concatenate([np.asarray(rows[k], np.float64) for k in sorted(rows)])


def gather_rows(x: jax.Array, name: str = "X") -> tuple[np.ndarray, slice]:
    """Every row of a global array ``(m, ...)`` in every process, float64, in process order
    (sharded queries, to be scored against every process's rows), and the slice of them this
    process holds. Shares may be uneven; two all-gathers (the counts, then the padded rows)."""
    mine = process_rows(x, name)
    counts = allgather_float64(np.array([mine.shape[0]], np.float64))[:, 0].astype(int)
    padded = np.zeros((int(counts.max()), *mine.shape[1:]))
    padded[: mine.shape[0]] = mine
    every = allgather_float64(padded)
    rows = np.concatenate([every[p, : counts[p]] for p in range(counts.shape[0])])
    start = int(counts[: jax.process_index()].sum())
    return rows, slice(start, start + mine.shape[0])


def like_rows(values: np.ndarray, x: jax.Array) -> jax.Array:
    """This process's ``values`` (one per row it holds of ``x``) as a global array placed as
    the rows of the global array ``x``."""
    spec = x.sharding.spec if isinstance(x.sharding, NamedSharding) else None
    if spec is None:
        raise ValueError("the queries must be a global jax.Array with a NamedSharding.")
    sharding = NamedSharding(x.sharding.mesh, P(spec[0] if len(spec) else None))
    return jax.make_array_from_process_local_data(sharding, np.asarray(values))


def allgather_float64(values: np.ndarray) -> np.ndarray:
    """Every process's ``values`` (same shape everywhere), stacked: ``(n_processes, ...)``.

    float64 travels as pairs of uint32 words, so it arrives bit for bit whether or not x64 is
    enabled. A single process returns ``values[None]``.
    """
    values = np.ascontiguousarray(values, np.float64)
    if jax.process_count() == 1:
        return values[None]
    words = values.reshape(-1).view(np.uint32)
    out = np.asarray(multihost_utils.process_allgather(words))
    return out.reshape(jax.process_count(), -1).view(np.float64).reshape(-1, *values.shape)


def global_moments(x: np.ndarray, w: np.ndarray | None) -> Moments:
    """:class:`jaxkde.core.moments.Moments` of every process's rows (one part per process), from
    this process's rows ``x`` ``(n_p, d)`` and weights ``w`` (``None``: ones) and one
    all-gather of per-process statistics.

    Raises ``ValueError`` in every process alike (no process waits on another) when a process
    holds no rows or the processes disagree on ``d``.
    """
    n, d = x.shape
    head = allgather_float64(np.array([n, d], np.float64))
    if np.any(head[:, 1] != head[0, 1]):
        raise ValueError(f"the processes hold rows of different widths: {head[:, 1].astype(int)}.")
    empty = np.flatnonzero(head[:, 0] == 0)
    if empty.size:
        raise ValueError(f"process {int(empty[0])} holds no rows of X; every process needs some.")
    return moments(allgather_float64(part_statistics(x, w)), d)


def global_classes(labels: np.ndarray) -> np.ndarray:
    """The sorted union of every process's ``labels`` (numbers, float64), from two
    all-gathers (the counts, then the labels padded to the largest count)."""
    mine = np.unique(labels)
    if not np.all(np.isfinite(mine)):
        raise ValueError("y must be finite numbers (class labels) for a fit across processes.")
    width = int(allgather_float64(np.array([mine.size], np.float64)).max())
    padded = np.full(width, np.nan)
    padded[: mine.size] = mine
    every = allgather_float64(padded).reshape(-1)
    return np.unique(every[np.isfinite(every)])


def class_moments(
    x: np.ndarray, w: np.ndarray | None, codes: np.ndarray, n_classes: int, full: bool = True
) -> list[Moments]:
    """:class:`jaxkde.core.moments.Moments` of each class over every process (a process may hold no
    row of a class), from one all-gather; a class of zero total weight is an error."""
    d = x.shape[1]
    w = np.ones(x.shape[0]) if w is None else w
    mine = np.stack([part_statistics(x[codes == c], w[codes == c], full) for c in range(n_classes)])
    every = allgather_float64(mine)  # (processes, classes, statistics)
    out = []
    for c in range(n_classes):
        if not every[:, c, 1].sum() > 0:
            raise ValueError(f"class {c} (of the sorted labels) has zero total sample_weight "
                             "over all processes; drop its rows.")  # fmt: skip
        out.append(moments(every[:, c], d, full))
    return out


def global_state(
    x: np.ndarray,
    w: np.ndarray | None,
    bandwidth: np.ndarray,
    kernel,
    stats: Moments,
    mesh: Mesh,
    *,
    chunk_size: int,
    dtype,
) -> tuple[KDEState, KDEState]:
    """The state of all processes' rows as global arrays on ``mesh`` (chunks along its first
    axis, the rest replicated), and this process's part of it as a host-side state (whose
    centre, ``H`` and normaliser every process shares).

    Every process lays out the same number of chunks (for the largest process's rows, padded
    with weight 0, then up to a multiple of its devices on the axis).
    """
    axis = mesh.axis_names[0]
    if len(mesh.axis_names) != 1:
        raise ValueError("a KDE across processes needs a 1-D mesh (one axis for the data).")
    local_devices = sum(dev.process_index == jax.process_index() for dev in mesh.devices.flat)
    if local_devices == 0 or mesh.devices.size != local_devices * jax.process_count():
        raise ValueError(
            "the mesh must hold the same number of devices from every process; build it "
            "from jax.devices()."
        )
    n_rows = max(1, int(stats.counts.max()))
    if x.shape[0] == 0:  # this process holds none of these rows: one row of weight 0
        x, w = np.zeros((1, x.shape[1])), np.zeros(1)
    n_chunks, size = chunk_layout(n_rows, chunk_size)
    n_chunks = -(-n_chunks // local_devices) * local_devices
    mine = float(stats.part_weights[jax.process_index()])
    log_mass = math.log(mine / stats.total_weight) if mine > 0 else -math.inf
    local = build_state(x, w, bandwidth, kernel, chunk_size=size, dtype=dtype,
                        n_rows=n_chunks * size, centre=stats.mean,
                        log_mass=log_mass)  # fmt: skip
    rows = NamedSharding(mesh, P(axis))

    def spread(a):
        return None if a is None else jax.make_array_from_process_local_data(rows, np.asarray(a))

    mean, chol, basis, log_normalizer = replicate(mesh, local.mean, local.chol, local.basis,
                                                  local.log_normalizer)  # fmt: skip
    state = dataclasses.replace(
        local,
        points=spread(local.points),
        points_lo=spread(local.points_lo),
        sq_norms=spread(local.sq_norms),
        log_weights=spread(local.log_weights),
        log_factors=spread(local.log_factors),
        mean=mean,
        chol=chol,
        basis=basis,
        log_normalizer=log_normalizer,
    )
    return state, local


@jax.jit
def _gather(points: jax.Array, chunks: jax.Array, slots: jax.Array) -> jax.Array:
    return points[chunks, slots]


def local_rows(state: KDEState, whitening: HostWhitening, rows: np.ndarray) -> np.ndarray:
    """This process's rows ``rows`` (indices in its own order) of a global state, read from
    its devices' shards and mapped back to the original coordinates in float64 (exact to
    about 2^-48 relative, as the state's double words)."""
    size = state.points.shape[1]
    chunk, slot = np.divmod(np.asarray(rows, np.int64), size)
    z = np.zeros((chunk.shape[0], state.points.shape[2]))
    pairs = [state.points] + ([] if state.points_lo is None else [state.points_lo])
    first = 0
    for shards in zip(*(_ordered_shards(a) for a in pairs), strict=True):
        count = shards[0].shape[0]
        mine = (chunk >= first) & (chunk < first + count)
        if mine.any():  # fixed-shape gathers (every row, clipped), one program per sample size
            c = jnp.asarray(np.clip(chunk - first, 0, count - 1))
            for words in shards:
                z[mine] += np.asarray(_gather(words, c, jnp.asarray(slot)), np.float64)[mine]
        first += count
    return unwhiten_host(None, z, whitening=whitening)


def _ordered_shards(a: jax.Array) -> list[jax.Array]:
    """This process's blocks of ``a`` along its first axis, in global order (one per block)."""
    blocks = {}
    for shard in a.addressable_shards:
        blocks.setdefault(shard.index[0].start or 0, shard.data)
    return [blocks[k] for k in sorted(blocks)]


def global_sample(
    state: KDEState,
    whitening: HostWhitening,
    part_weights: np.ndarray,
    cumulative: np.ndarray,
    key: jax.Array,
    num_samples: int,
    scaling_factor: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(centres, samples)`` in float64, the same in every process and for any number of
    processes (:func:`jaxkde.core.sampling.sample_parts`): each process reads the centres it owns,
    and one all-gather of ``(n_processes, num_samples, d)`` float64 puts them together."""
    _, _, centres, shift = sample_parts(
        key, num_samples, part_weights, jax.process_index(), cumulative,
        lambda rows: local_rows(state, whitening, rows), state.kernel, whitening, scaling_factor,
    )  # fmt: skip
    centres = allgather_float64(centres).sum(axis=0)  # one owner per row: the others add 0
    return centres, centres + shift


def global_sample_classes(
    states: tuple[KDEState, ...],
    whitenings: tuple[HostWhitening, ...],
    parts: list[tuple[np.ndarray, np.ndarray]],
    priors: np.ndarray,
    key: jax.Array,
    num_samples: int,
    scaling_factor: float = 1.0,
    label: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes, centres, samples)`` of a labelled KDE across processes: a class by prior (or
    ``label``), then :func:`global_sample` within it; the same for any number of processes."""
    key_class, *keys = jax.random.split(key, len(states) + 1)
    if label is None:
        ends = np.cumsum(priors)
        target = uniform53(key_class, num_samples) * ends[-1]
        codes = np.minimum(np.searchsorted(ends, target, side="right"),
                           np.flatnonzero(priors > 0)[-1])  # fmt: skip
    else:
        codes = np.full(num_samples, label)
    centres = np.empty((num_samples, whitenings[0].centre.shape[0]))
    samples = np.empty_like(centres)
    for c in np.unique(codes).tolist():  # the same classes in every process
        rows = codes == c
        drawn = global_sample(states[c], whitenings[c], *parts[c], keys[c], num_samples,
                              scaling_factor)  # fmt: skip
        centres[rows], samples[rows] = drawn[0][rows], drawn[1][rows]
    return codes, centres, samples
