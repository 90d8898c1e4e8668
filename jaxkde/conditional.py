"""Class-conditional KDE: one KDE per class, evaluated together, and the Bayes posterior."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from .engine import log_density
from .sampling import choose_by_weight, sample_with_centres
from .sharding import sharded_log_density
from .state import KDEState

__all__ = [
    "ClassConditionalState",
    "class_log_density",
    "class_log_posterior",
    "mixture_log_density",
    "sample_classes",
]


@dataclasses.dataclass(frozen=True)
class ClassConditionalState:
    """Per-class fitted KDEs and class log priors (a JAX pytree).

    Attributes
    ----------
    states : tuple of KDEState
        One per class, each with its own data, weights and bandwidth (same kernel).
    log_priors : array, shape (n_classes,)
        ``log P(class)``; they log-sum-exp to 0.
    """

    states: tuple[KDEState, ...]
    log_priors: jax.Array

    @property
    def n_classes(self) -> int:
        return len(self.states)


jax.tree_util.register_dataclass(
    ClassConditionalState, data_fields=["states", "log_priors"], meta_fields=[]
)


@functools.partial(jax.jit, static_argnames=("precision", "mesh"))
def class_log_density(
    cstate: ClassConditionalState,
    queries: jax.Array,
    *,
    precision: str = "highest",
    mesh: Mesh | None = None,
) -> jax.Array:
    """``log f_c(q)`` of every query under every class's KDE, shape ``(m, n_classes)``.

    All classes are evaluated in one compiled program; each data point is visited once per
    query block, as in :func:`jaxkde.log_density` (the classes partition the data). With a
    ``mesh``, every class's state was placed by :func:`jaxkde.shard_state` and is evaluated by
    :func:`jaxkde.sharded_log_density`.
    """
    if mesh is None:
        parts = [log_density(s, queries, precision=precision) for s in cstate.states]
    else:
        parts = [sharded_log_density(s, queries, mesh=mesh, precision=precision)
                 for s in cstate.states]  # fmt: skip
    return jnp.stack(parts, axis=1)


@functools.partial(jax.jit, static_argnames=("precision", "mesh"))
def mixture_log_density(
    cstate: ClassConditionalState,
    queries: jax.Array,
    *,
    precision: str = "highest",
    mesh: Mesh | None = None,
) -> jax.Array:
    """``log sum_c P(c) f_c(q)``, the density of the whole data, shape ``(m,)``."""
    joint = class_log_density(cstate, queries, precision=precision, mesh=mesh) + cstate.log_priors
    return jax.scipy.special.logsumexp(joint, axis=1)


@functools.partial(jax.jit, static_argnames=("precision", "mesh"))
def class_log_posterior(
    cstate: ClassConditionalState,
    queries: jax.Array,
    *,
    precision: str = "highest",
    mesh: Mesh | None = None,
) -> jax.Array:
    """Bayes rule ``log P(c | q)`` by a log-softmax, shape ``(m, n_classes)``.

    A query outside the support of every class (compact kernels) has no defined posterior:
    its row falls back to the log priors.
    """
    joint = class_log_density(cstate, queries, precision=precision, mesh=mesh) + cstate.log_priors
    anywhere = jnp.any(jnp.isfinite(joint), axis=1, keepdims=True)
    joint = jnp.where(anywhere, joint, cstate.log_priors)
    return jax.nn.log_softmax(joint, axis=1)


@functools.partial(jax.jit, static_argnames=("num_samples", "label"))
def sample_classes(
    cstate: ClassConditionalState,
    key: jax.Array,
    num_samples: int,
    scaling_factor: float | jax.Array = 1.0,
    label: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Draw from one class (``label``, an index) or from the mixture of classes by prior.

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
    # Draw num_samples from every class, then keep for each draw the one of its class.
    drawn = [
        sample_with_centres(s, k, num_samples, scaling_factor)
        for s, k in zip(cstate.states, keys, strict=True)
    ]
    idx, centres, samples = (jnp.stack(parts)[labels, jnp.arange(num_samples)]
                             for parts in zip(*drawn, strict=True))  # fmt: skip
    return labels, idx, centres, samples
