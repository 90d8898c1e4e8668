"""Kernels: log profiles, normalisers and unit samplers.

Every kernel is evaluated on *whitened* differences ``u = L^{-1} (x - x_i)``, where
``H = L L^T`` is the bandwidth matrix. A kernel provides

* ``log_profile(sq_dist)``: ``log k(r)`` as a function of the squared distance ``r^2``
  (shape-preserving, elementwise);
* ``log_normalizer(dim, log_det_chol)``: the log of the constant that makes the kernel a
  density (``log_det_chol = log |det L|``);
* ``sample_unit(key, shape, dtype)``: draws from the normalised kernel in whitened space;
* ``norm``: the p of the p-norm in which distances are measured (2 for every kernel except
  the seed's extended univariate Gaussian, which also takes 1 and infinity).

Kernels are frozen dataclasses, hashable, and travel as static metadata of the fitted state,
so switching kernels compiles a new program while refitting the same kernel does not.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = [
    "KERNEL_NAMES",
    "GaussianKernel",
    "Kernel",
    "UnivariateGaussianKernel",
    "get_kernel",
]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """Base class of a radial kernel evaluated on whitened differences."""

    name: str = "kernel"
    norm: float = 2.0

    def log_profile(self, sq_dist: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_normalizer(self, dim: int, log_det_chol: jax.Array) -> jax.Array:  # pragma: no cover
        raise NotImplementedError

    def sample_unit(
        self, key: jax.Array, shape: tuple[int, int], dtype
    ) -> jax.Array:  # pragma: no cover
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class GaussianKernel(Kernel):
    """Multivariate Gaussian kernel ``K_H(u) = (2 pi)^{-d/2} |H|^{-1/2} exp(-u^T H^{-1} u / 2)``.

    The bandwidth matrix ``H`` may be isotropic (``h^2 I``), diagonal or full.
    """

    name: str = "gaussian"
    norm: float = 2.0

    def log_profile(self, sq_dist: jax.Array) -> jax.Array:
        return -0.5 * sq_dist

    def log_normalizer(self, dim: int, log_det_chol: jax.Array) -> jax.Array:
        return -0.5 * dim * _LOG_2PI - log_det_chol

    def sample_unit(self, key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
        return jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class UnivariateGaussianKernel(Kernel):
    """The seed's "extended univariate" Gaussian kernel on a p-norm.

    ``f(x) = 1/(n h) * sum_i phi(||x - x_i||_p / h)`` with ``phi`` the standard normal density
    and a scalar bandwidth ``h``. In ``d > 1`` dimensions this is **not** a normalised density
    (it integrates to ``(2 pi)^{(d-1)/2} h^{d-1}`` times a constant for p = 2); it is kept for
    compatibility with KDE.py. For a normalised isotropic kernel use ``kernel="gaussian"`` with a
    scalar ``bandwidth=h``, which differs from this one (p = 2) by exactly
    ``-(d - 1) * (log h + log(2 pi) / 2)`` in log density.

    Sampling draws from the *normalised* version of the kernel, the density proportional to
    ``exp(-||u||_p^2 / (2 h^2))``: exactly ``N(0, h^2 I)`` for p = 2, and for p = 1 or infinity a
    radius ``h * sqrt(chi^2_d)`` times a direction uniform in the p-norm's cone measure.
    """

    name: str = "univariate_gaussian"
    norm: float = 2.0

    def log_profile(self, sq_dist: jax.Array) -> jax.Array:
        return -0.5 * sq_dist

    def log_normalizer(self, dim: int, log_det_chol: jax.Array) -> jax.Array:
        # Bandwidth is h^2 I, so log |det L| = dim * log h.
        return -0.5 * _LOG_2PI - log_det_chol / dim

    def sample_unit(self, key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
        if self.norm == 2.0:
            return jax.random.normal(key, shape, dtype)
        key_dir, key_rad = jax.random.split(key)
        if self.norm == 1.0:
            direction = jax.random.laplace(key_dir, shape, dtype)
            direction = direction / jnp.sum(jnp.abs(direction), axis=-1, keepdims=True)
        else:
            direction = jax.random.uniform(key_dir, shape, dtype, minval=-1.0, maxval=1.0)
            direction = direction / jnp.max(jnp.abs(direction), axis=-1, keepdims=True)
        # The radius r = ||u||_p has density proportional to r^{d-1} exp(-r^2 / 2).
        radius = jnp.sqrt(2.0 * jax.random.gamma(key_rad, shape[-1] / 2.0, shape[:-1], dtype))
        return radius[..., None] * direction


_KERNELS = {
    "gaussian": GaussianKernel,
    "multivariate_gaussian": GaussianKernel,
    "univariate_gaussian": UnivariateGaussianKernel,
}
KERNEL_NAMES: tuple[str, ...] = tuple(_KERNELS)
_NORMS = {1: 1.0, 2: 2.0, "inf": math.inf, math.inf: math.inf}


def get_kernel(name: str, p: float | str = 2) -> Kernel:
    """Return the kernel called ``name`` (see ``KERNEL_NAMES``), measuring distances in the p-norm.

    Parameters
    ----------
    name : str
        ``"gaussian"`` (alias ``"multivariate_gaussian"``) or ``"univariate_gaussian"``.
    p : {1, 2, inf}
        Norm of the univariate kernel; the multivariate kernels require ``p = 2``.
    """
    if not isinstance(name, str) or name not in _KERNELS:
        raise ValueError(f"kernel must be one of {list(KERNEL_NAMES)}; got {name!r}.")
    if isinstance(p, str):
        p = p.lower()
    if p not in _NORMS:
        raise ValueError(f"p must be 1, 2 or inf (also 'inf'); got {p!r}.")
    norm = _NORMS[p]
    cls = _KERNELS[name]
    if cls is not UnivariateGaussianKernel and norm != 2.0:
        raise ValueError(
            f"p={p!r} is only available for kernel='univariate_gaussian'; kernel {name!r} "
            "measures distances in the bandwidth's Mahalanobis (p = 2) norm."
        )
    return cls(norm=norm)
