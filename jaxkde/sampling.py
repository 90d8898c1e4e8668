"""Sampling from a fitted KDE: a centre drawn by weight plus kernel noise shaped by H."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .state import KDEState, unwhiten

__all__ = ["as_key", "choose_by_weight", "sample", "sample_around", "sample_with_centres"]


def as_key(key: jax.Array | int | None) -> jax.Array:
    """Return a JAX PRNG key from a key, an integer seed, or ``None`` (fresh OS entropy)."""
    if key is None:
        return jax.random.key(int(np.random.SeedSequence().generate_state(1, np.uint32)[0]))
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not 0 <= int(key) < 2**63:
            raise ValueError(f"key must be a non-negative integer seed below 2**63; got {key}.")
        return jax.random.key(int(key))
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (
            key.dtype == jnp.uint32 and key.shape == (2,)
        ):
            return key
    raise TypeError(f"key must be a JAX PRNG key, an integer seed or None; got {key!r}.")


def choose_by_weight(key: jax.Array, log_weights: jax.Array, num: int) -> jax.Array:
    """``num`` indices drawn with probability ``exp(log_weights)`` (normalised), by inverse CDF.

    ``O(n + num log n)`` time and ``O(n + num)`` memory, unlike a Gumbel-max over a
    ``(num, n)`` array; zero weights (``-inf``) are never drawn.
    """
    w = jnp.exp(log_weights - jnp.max(log_weights))
    cdf = jnp.cumsum(w)
    u = jax.random.uniform(key, (num,), cdf.dtype) * cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right")
    return jnp.minimum(idx, log_weights.shape[0] - 1)


@jax.jit
def sample_around(
    state: KDEState, key: jax.Array, indices: jax.Array, scaling_factor: float | jax.Array = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Draw one point around each given data point: ``x_r + sqrt(scaling_factor) * L u``.

    ``u`` is drawn from the kernel in whitened space, so for the Gaussian kernel the draw
    follows ``N(x_r, scaling_factor * H)``.

    Parameters
    ----------
    state : KDEState
    key : PRNG key
    indices : int array, shape (m,)
        Rows of the training data to draw around.
    scaling_factor : float
        ``k`` in ``N(x_r, k H)``.

    Returns
    -------
    centres : array, shape (m, d)
        The rows ``x_r``, reconstructed from the whitened state (exact up to rounding).
    samples : array, shape (m, d)
    """
    k = state.dim
    z = state.points.reshape(-1, k)[indices]
    noise = state.kernel.sample_unit(key, (indices.shape[0], k), state.dtype)
    scale = jnp.sqrt(jnp.asarray(scaling_factor, state.dtype))
    return unwhiten(state, z), unwhiten(state, z + scale * noise)


@functools.partial(jax.jit, static_argnames=("num_samples",))
def sample_with_centres(
    state: KDEState, key: jax.Array, num_samples: int, scaling_factor: float | jax.Array = 1.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw ``num_samples`` points and report the data point each was drawn around.

    A centre ``x_r`` is drawn with probability equal to its weight, then a point around it by
    :func:`sample_around`.

    Returns
    -------
    indices : int array, shape (num_samples,)
        Row of the training data used as centre.
    centres : array, shape (num_samples, d)
    samples : array, shape (num_samples, d)
    """
    key_centre, key_noise = jax.random.split(key)
    idx = choose_by_weight(key_centre, state.log_weights.reshape(-1), num_samples)
    centres, samples = sample_around(state, key_noise, idx, scaling_factor)
    return idx, centres, samples


def sample(
    state: KDEState, key: jax.Array, num_samples: int, scaling_factor: float | jax.Array = 1.0
) -> jax.Array:
    """Draw ``num_samples`` points, shape ``(num_samples, d)`` (see :func:`sample_with_centres`)."""
    return sample_with_centres(state, key, num_samples, scaling_factor)[2]
