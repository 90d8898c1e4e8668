"""Sampling from a fitted KDE: a centre drawn by weight plus kernel noise shaped by H."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .state import KDEState, unwhiten

__all__ = ["as_key", "sample", "sample_with_centres"]


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


@functools.partial(jax.jit, static_argnames=("num_samples",))
def sample_with_centres(
    state: KDEState, key: jax.Array, num_samples: int, scaling_factor: float | jax.Array = 1.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw ``num_samples`` points and report the data point each was drawn around.

    A centre ``x_r`` is drawn with probability equal to its weight, and the sample is
    ``x_r + sqrt(scaling_factor) * L u`` with ``u`` drawn from the kernel in whitened space, so
    for the Gaussian kernel the sample follows ``N(x_r, scaling_factor * H)``.

    Returns
    -------
    indices : int array, shape (num_samples,)
        Row of the training data used as centre.
    centres : array, shape (num_samples, d)
        Those rows, reconstructed from the whitened state (exact up to rounding).
    samples : array, shape (num_samples, d)
    """
    key_centre, key_noise = jax.random.split(key)
    k = state.dim
    idx = jax.random.categorical(key_centre, state.log_weights.reshape(-1), shape=(num_samples,))
    z = state.points.reshape(-1, k)[idx]
    noise = state.kernel.sample_unit(key_noise, (num_samples, k), state.dtype)
    scale = jnp.sqrt(jnp.asarray(scaling_factor, state.dtype))
    return idx, unwhiten(state, z), unwhiten(state, z + scale * noise)


def sample(
    state: KDEState, key: jax.Array, num_samples: int, scaling_factor: float | jax.Array = 1.0
) -> jax.Array:
    """Draw ``num_samples`` points, shape ``(num_samples, d)`` (see :func:`sample_with_centres`)."""
    return sample_with_centres(state, key, num_samples, scaling_factor)[2]
