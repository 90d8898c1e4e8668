"""Class-conditional KDE: one KDE per class, evaluated together, and the Bayes posterior.

A class may have zero total weight (every row of it weighted 0): it keeps its place in
``classes_`` with prior 0 and log density ``-inf`` everywhere, so it is never predicted and its
posterior is 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxkde._validation import check_data
from jaxkde.core.engine import _check_precision, log_density_whitened, settled
from jaxkde.core.sampling import _host_points, choose_by_weight, draw, sample_with_centres
from jaxkde.core.sharding import replicate, sharded_log_density_whitened
from jaxkde.core.state import (
    ClassConditionalState,
    HostWhitening,
    whiten_checked_queries,
    whiten_queries,
)

__all__ = [
    "class_log_density",
    "class_log_posterior",
    "mixture_log_density",
    "sample_classes",
    "sample_classes_host",
]


@functools.partial(jax.jit, static_argnames=("output",))
def _combine(dens, log_priors, *, output):
    if output == "class":
        return dens
    joint = dens + log_priors
    if output == "mixture":
        return jax.scipy.special.logsumexp(joint, axis=1)
    # A query outside the support of every class (compact kernels) has no defined posterior:
    # its row falls back to the log priors.
    anywhere = jnp.any(jnp.isfinite(joint), axis=1, keepdims=True)
    return jax.nn.log_softmax(jnp.where(anywhere, joint, log_priors), axis=1)


def _evaluate(cstate, queries, precision, mesh, whitenings, output):
    _check_precision(precision)
    if whitenings is None:
        whitenings = (None,) * cstate.n_classes
    # One compiled call per class (not one program inlining every class): classes laid out
    # alike (see ``shared_row_counts``) share a single compilation.
    if not isinstance(queries, jax.core.Tracer):  # checked once, whitened per class
        d = cstate.states[0].n_features
        queries, _ = check_data(queries, "queries", n_features=d, owner="the state")
    parts = []
    for state, whitening in zip(cstate.states, whitenings, strict=True):
        if isinstance(queries, jax.core.Tracer):
            hi, lo = whiten_queries(state, queries, whitening)
        else:
            hi, lo = whiten_checked_queries(state, queries, whitening)
        if mesh is None:
            parts.append(log_density_whitened(state, hi, lo, precision=precision, defer=True))
        else:
            if jax.process_count() > 1:  # a global program takes global arrays
                hi, lo = replicate(mesh, hi, lo)
            parts.append(
                sharded_log_density_whitened(state, hi, lo, mesh=mesh, precision=precision)
            )
    # Every class dispatched before any is waited on.
    parts = [settled(p) for p in parts]
    return _combine(jnp.stack(parts, axis=1), cstate.log_priors, output=output)


def class_log_density(
    cstate: ClassConditionalState,
    queries,
    *,
    precision: str = "highest",
    mesh: Mesh | None = None,
    whitenings: tuple[HostWhitening, ...] | None = None,
) -> jax.Array:
    """``log f_c(q)`` of every query under every class's KDE, shape ``(m, n_classes)``.

    All classes are evaluated in one compiled program; each data point is visited once per
    query block, as in :func:`jaxkde.log_density` (the classes partition the data). Queries are
    whitened per class as :func:`jaxkde.whiten_queries` does (``whitenings``: each class's
    :func:`jaxkde.host_whitening`, to reuse across calls). With a ``mesh``, every class's state
    was placed by :func:`jaxkde.shard_state` and is evaluated by
    :func:`jaxkde.sharded_log_density`.
    """
    return _evaluate(cstate, queries, precision, mesh, whitenings, "class")


def mixture_log_density(
    cstate: ClassConditionalState,
    queries,
    *,
    precision: str = "highest",
    mesh: Mesh | None = None,
    whitenings: tuple[HostWhitening, ...] | None = None,
) -> jax.Array:
    """``log sum_c P(c) f_c(q)``, the density of the whole data, shape ``(m,)``."""
    return _evaluate(cstate, queries, precision, mesh, whitenings, "mixture")


def class_log_posterior(
    cstate: ClassConditionalState,
    queries,
    *,
    precision: str = "highest",
    mesh: Mesh | None = None,
    whitenings: tuple[HostWhitening, ...] | None = None,
) -> jax.Array:
    """Bayes rule ``log P(c | q)`` by a log-softmax, shape ``(m, n_classes)``.

    A query outside the support of every class (compact kernels) has no defined posterior:
    its row falls back to the log priors. A class of prior 0 has posterior 0.
    """
    return _evaluate(cstate, queries, precision, mesh, whitenings, "posterior")


@functools.partial(jax.jit, static_argnames=("num_samples", "label"))
def _class_draws(cstate, key, num_samples, label):
    """Labels, and ``num_samples`` draws from every class (or from ``label`` alone)."""
    if label is not None:
        drawn = draw(cstate.states[label], key, num_samples)
        return jnp.full((num_samples,), label), {label: drawn}
    key_class, *keys = jax.random.split(key, cstate.n_classes + 1)
    labels = choose_by_weight(key_class, cstate.log_priors, num_samples)
    return labels, {c: draw(s, k, num_samples)
                    for c, (s, k) in enumerate(zip(cstate.states, keys, strict=True))}  # fmt: skip


@functools.partial(jax.jit, static_argnames=("num_samples", "label"))
def sample_classes(
    cstate: ClassConditionalState,
    key: jax.Array,
    num_samples: int,
    scaling_factor: float | jax.Array = 1.0,
    label: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Draw from one class (``label``, an index) or from the mixture of classes by prior
    (device, working dtype; see :func:`sample_classes_host` for float64 results).

    Returns
    -------
    labels : int array, shape (num_samples,)
        Class index of each draw.
    indices : int array, shape (num_samples,)
        Row of that class's training data used as centre.
    centres, samples : arrays, shape (num_samples, d)
    """
    if label is not None:
        idx, centres, samples = sample_with_centres(
            cstate.states[label], key, num_samples, scaling_factor
        )
        return jnp.full((num_samples,), label), idx, centres, samples
    key_class, *keys = jax.random.split(key, cstate.n_classes + 1)
    labels = choose_by_weight(key_class, cstate.log_priors, num_samples)
    drawn = [
        sample_with_centres(s, k, num_samples, scaling_factor)
        for s, k in zip(cstate.states, keys, strict=True)
    ]
    idx, centres, samples = (jnp.stack(parts)[labels, jnp.arange(num_samples)]
                             for parts in zip(*drawn, strict=True))  # fmt: skip
    return labels, idx, centres, samples


def sample_classes_host(
    cstate: ClassConditionalState,
    key: jax.Array,
    num_samples: int,
    scaling_factor: float = 1.0,
    label: int | None = None,
    whitenings: tuple[HostWhitening, ...] | None = None,
    centres: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """:func:`sample_classes` with the centres and samples formed in float64 on the host
    (``centres`` is ``None`` when not asked for)."""
    labels, drawn = _class_draws(cstate, key, num_samples, label)
    labels = np.asarray(labels)
    if whitenings is None:
        whitenings = (None,) * cstate.n_classes
    d = cstate.states[0].n_features
    idx = np.empty(num_samples, np.int64)
    out_centres = np.empty((num_samples, d)) if centres else None
    samples = np.empty((num_samples, d))
    for c in np.unique(labels).tolist():
        rows = labels == c
        c_idx, z, lo, noise = (None if a is None else np.asarray(a)[rows] for a in drawn[c])
        idx[rows] = c_idx
        c_centres, samples[rows] = _host_points(
            cstate.states[c], z, lo, noise, scaling_factor, whitenings[c], centres
        )
        if centres:
            out_centres[rows] = c_centres
    return labels, idx, out_centres, samples
