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
  scoring is the sharded engine of :mod:`jaxkde.sharding`: each device reduces its own chunks,
  and only ``(devices, m)`` partial log-sum-exps cross the network.

Queries are replicated: every process passes the same query rows and receives every result.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .bandwidths import rule_from_statistics
from .state import KDEState, build_state, chunk_layout

__all__ = [
    "GlobalMoments",
    "allgather_float64",
    "global_moments",
    "global_state",
    "is_global",
    "process_rows",
    "replicate",
    "rule_bandwidth",
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


def allgather_float64(values: np.ndarray) -> np.ndarray:
    """Every process's ``values`` (same shape everywhere), stacked: ``(n_processes, ...)``.

    float64 travels as pairs of uint32 words, so it arrives bit for bit whether or not x64 is
    enabled. A single process returns ``values[None]``.
    """
    values = np.ascontiguousarray(values, np.float64)
    if jax.process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    words = values.reshape(-1).view(np.uint32)
    out = np.asarray(multihost_utils.process_allgather(words))
    return out.reshape(jax.process_count(), -1).view(np.float64).reshape(-1, *values.shape)


class GlobalMoments(NamedTuple):
    """Weighted statistics of rows spread over processes, merged exactly (float64).

    Attributes
    ----------
    counts : np.ndarray, shape (n_processes,)
        Rows held by each process.
    total_weight : float
    n_eff : float
        Kish's effective sample size ``(sum w)^2 / sum w^2``.
    mean : np.ndarray, shape (d,)
    cov : np.ndarray, shape (d, d)
        Weighted, bias-corrected covariance (``numpy.cov(..., aweights=w)``).
    local_weight : float
        This process's total weight.
    low, high : np.ndarray, shape (d,)
        Smallest and largest value of each column over the rows of positive weight.
    """

    counts: np.ndarray
    total_weight: float
    n_eff: float
    mean: np.ndarray
    cov: np.ndarray
    local_weight: float
    low: np.ndarray
    high: np.ndarray


def global_moments(x: np.ndarray, w: np.ndarray | None) -> GlobalMoments:
    """:class:`GlobalMoments` of this process's rows ``x`` ``(n_p, d)`` and weights ``w``
    (``None``: ones), from one all-gather of per-process statistics.

    Raises ``ValueError`` in every process alike (no process waits on another) when a process
    holds no rows or the processes disagree on ``d``.
    """
    n, d = x.shape
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    head = allgather_float64(np.array([n, d], np.float64))
    if np.any(head[:, 1] != head[0, 1]):
        raise ValueError(f"the processes hold rows of different widths: {head[:, 1].astype(int)}.")
    empty = np.flatnonzero(head[:, 0] == 0)
    if empty.size:
        raise ValueError(f"process {int(empty[0])} holds no rows of X; every process needs some.")
    total = float(w.sum())
    mean = (w @ x) / total if total > 0 else np.zeros(d)
    centred = x - mean
    m2 = (centred * w[:, None]).T @ centred
    live = x[w > 0]
    low = live.min(axis=0) if live.size else np.full(d, np.inf)
    high = live.max(axis=0) if live.size else np.full(d, -np.inf)
    mine = np.concatenate([[n, total, float(w @ w)], mean, m2.reshape(-1), low, high])
    every = allgather_float64(mine)
    counts, weights, squares = every[:, 0], every[:, 1], every[:, 2]
    means = every[:, 3 : 3 + d]
    m2s = every[:, 3 + d : 3 + d + d * d].reshape(-1, d, d)
    big_w = float(weights.sum())
    if not (big_w > 0 and math.isfinite(big_w)):
        raise ValueError("the weights of X must have a positive, finite total over all processes.")
    grand = (weights @ means) / big_w
    spread = means - grand
    m2_all = m2s.sum(axis=0) + (spread * weights[:, None]).T @ spread
    s2 = float(squares.sum())
    scale = 1.0 - s2 / big_w**2
    cov = m2_all / big_w / scale if scale > 0 else np.full((d, d), np.nan)
    return GlobalMoments(
        counts=counts.astype(np.int64),
        total_weight=big_w,
        n_eff=big_w**2 / s2,
        mean=grand,
        cov=(cov + cov.T) / 2,
        local_weight=total,
        low=every[:, 3 + d + d * d : 3 + 2 * d + d * d].min(axis=0),
        high=every[:, 3 + 2 * d + d * d :].max(axis=0),
    )


def rule_bandwidth(name: str, moments: GlobalMoments) -> np.ndarray:
    """``H`` of the rule ``name`` (``"scott"``, ``"silverman"``, their ``_full`` forms or
    ``"identity"``) from merged statistics: the same formulas as
    :func:`jaxkde.bandwidths.resolve_bandwidth` on the whole data."""
    d = moments.mean.shape[0]
    if name == "identity":
        return np.ones(d)
    if not np.all(np.isfinite(moments.cov)):
        raise ValueError(f"bandwidth rule {name!r} needs at least 2 rows of positive weight.")
    full = name.endswith("_full")
    spread = moments.cov if full else np.diag(moments.cov)
    if not np.all((np.linalg.eigvalsh(spread) if full else spread) > 0):
        raise ValueError(
            f"bandwidth rule {name!r}: the data have zero variance along some direction; under "
            "jax.distributed pass an explicit bandwidth (zero_variance is not applied there)."
        )
    return rule_from_statistics(name, spread, moments.n_eff)


def global_state(
    x: np.ndarray,
    w: np.ndarray | None,
    bandwidth: np.ndarray,
    kernel,
    moments: GlobalMoments,
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
    n_rows = int(moments.counts.max())
    n_chunks, size = chunk_layout(n_rows, chunk_size)
    n_chunks = -(-n_chunks // local_devices) * local_devices
    log_mass = (
        math.log(moments.local_weight / moments.total_weight)
        if moments.local_weight > 0
        else -math.inf
    )
    local = build_state(x, w, bandwidth, kernel, chunk_size=size, dtype=dtype,
                        n_rows=n_chunks * size, centre=moments.mean,
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


def replicate(mesh: Mesh, *arrays) -> tuple:
    """Host arrays (equal in every process; ``None`` kept) placed on every device of ``mesh``."""
    same = NamedSharding(mesh, P())
    return tuple(None if a is None else jax.device_put(np.asarray(a), same) for a in arrays)
