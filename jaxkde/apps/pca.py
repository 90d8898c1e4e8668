"""Principal component analysis as pure JAX functions (SVD based), with optional whitening."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxkde._validation import check_data

__all__ = ["PCAState", "pca_fit", "pca_inverse_transform", "pca_transform"]

_HIGHEST = lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class PCAState:
    """A fitted PCA (a JAX pytree).

    Attributes
    ----------
    mean : array, shape (d,)
    components : array, shape (k, d)
        Orthonormal principal axes, by decreasing variance (signs fixed so that each axis'
        largest-magnitude loading is positive).
    scale : array, shape (k,)
        Divisor of each score: the component's standard deviation when whitening, else ones.
    explained_variance : array, shape (k,)
        Variance of the data along each axis (``ddof=1``).
    """

    mean: jax.Array
    components: jax.Array
    scale: jax.Array
    explained_variance: jax.Array


jax.tree_util.register_dataclass(
    PCAState,
    data_fields=["mean", "components", "scale", "explained_variance"],
    meta_fields=[],
)


def pca_fit(x: jax.Array, n_components: int, whiten: bool = False) -> PCAState:
    """Fit a PCA with ``n_components`` axes to ``x`` of shape ``(n, d)``.

    With ``whiten=True`` the scores are divided by their standard deviations, so each component
    has unit variance: the seed's "PCA, then standard scaling" workflow in one step.
    """
    data, dtype = check_data(x, "x")
    n, d = data.shape
    if isinstance(n_components, bool) or not isinstance(n_components, int):
        raise TypeError(f"n_components must be an int; got {n_components!r}.")
    if not 1 <= n_components <= min(n, d):
        raise ValueError(
            f"n_components must be between 1 and min(n_samples, n_features) = {min(n, d)}; "
            f"got {n_components}."
        )
    # Centred in float64 on the host, on the mean as the state keeps it (working dtype).
    mean = data.mean(axis=0).astype(dtype)
    state = _pca_fit(jnp.asarray((data - mean.astype(np.float64)).astype(dtype)), n_components,
                     whiten)  # fmt: skip
    return dataclasses.replace(state, mean=jnp.asarray(mean))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _pca_fit(x: jax.Array, n_components: int, whiten: bool) -> PCAState:
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)  # ~0: x arrives centred
    _, s, vt = jnp.linalg.svd(x - mean, full_matrices=False)
    vt = vt[:n_components]
    pivot = jnp.argmax(jnp.abs(vt), axis=1)
    signs = jnp.sign(vt[jnp.arange(n_components), pivot])
    vt = vt * jnp.where(signs == 0, 1.0, signs)[:, None]
    var = s[:n_components] ** 2 / max(n - 1, 1)
    scale = jnp.sqrt(var) if whiten else jnp.ones_like(var)
    return PCAState(mean=mean, components=vt, scale=jnp.where(scale > 0, scale, 1.0),
                    explained_variance=var)  # fmt: skip


def _check_shape(a, name: str, width: int, what: str) -> None:
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{name} must have shape (m, {width}) ({what}); got {a.shape}.")


def pca_transform(state: PCAState, x) -> jax.Array:
    """Scores of ``x`` ``(m, d)`` on the principal axes, shape ``(m, k)``.

    Host data (NumPy arrays, lists) are centred in float64 before the cast to the working
    dtype; inside a JAX trace the centring runs on the device.
    """
    if isinstance(x, jax.core.Tracer):
        _check_shape(x, "x", state.components.shape[1], "one column per feature")
        return _project(state, x - state.mean)
    data, _ = check_data(x, "x")
    _check_shape(data, "x", state.components.shape[1], "one column per feature")
    centred = data - np.asarray(state.mean, np.float64)
    return _project(state, jnp.asarray(centred.astype(state.mean.dtype)))


@jax.jit
def _project(state: PCAState, centred: jax.Array) -> jax.Array:
    return jnp.matmul(centred, state.components.T, precision=_HIGHEST) / state.scale


@jax.jit
def pca_inverse_transform(state: PCAState, z: jax.Array) -> jax.Array:
    """Map scores ``(m, k)`` back to the data space, shape ``(m, d)``."""
    _check_shape(z, "z", state.components.shape[0], "one column per component")
    return jnp.matmul(z * state.scale, state.components, precision=_HIGHEST) + state.mean
