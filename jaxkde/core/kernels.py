"""Kernels: log profiles, normalisers and unit samplers.

Every kernel is evaluated on *whitened* differences ``u = L^{-1} (x - x_i)``, where
``H = L L^T`` is the bandwidth matrix. A kernel provides

* ``log_profile(sq_dist)``: ``log k(r)`` as a function of the squared distance ``r^2``
  (shape-preserving, elementwise);
* ``log_normalizer(dim, log_det_chol)``: the log of the constant that makes the kernel a
  density (``log_det_chol = log |det L|``);
* ``sample_unit(key, shape, dtype)``: draws from the normalised kernel in whitened space;
* ``norm``: the p of the p-norm in which distances are measured (2 for every kernel except
  the seed's extended univariate Gaussian, which also takes 1 and infinity);
* ``distance_error(sq_dist, delta)``: how far a term can move when its squared distance is off
  by at most ``delta`` (the engine's rounding-error account, see :mod:`jaxkde.core.engine`): in log
  space for kernels with full support, in the kernel's value (its peak is 1) for compact ones.

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
    "CosineKernel",
    "EpanechnikovKernel",
    "ExponentialKernel",
    "GaussianKernel",
    "Kernel",
    "LinearKernel",
    "TophatKernel",
    "UnivariateGaussianKernel",
    "get_kernel",
    "log_unit_ball_volume",
]

_LOG_2PI = math.log(2.0 * math.pi)


def log_unit_ball_volume(dim: int) -> float:
    """``log V_d`` with ``V_d = pi^{d/2} / Gamma(d/2 + 1)`` the volume of the unit d-ball."""
    return 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1.0)


def _log_radial_mass(dim: int, log_moment: float) -> float:
    """``log(S_{d-1} M)`` with ``S_{d-1} = d V_d`` and ``M = int k(r) r^{d-1} dr``."""
    return math.log(dim) + log_unit_ball_volume(dim) + log_moment


def _uniform_direction(key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
    g = jax.random.normal(key, shape, dtype)
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with a finite gradient at 0 (taken as 0 there)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _radial_sample(key, shape, dtype, radius_fn) -> jax.Array:
    """A radius from ``radius_fn(key, batch_shape, dim, dtype)`` times a uniform direction."""
    key_dir, key_rad = jax.random.split(key)
    radius = radius_fn(key_rad, shape[:-1], shape[-1], dtype)
    return radius[..., None] * _uniform_direction(key_dir, shape, dtype)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """Base class of a radial kernel evaluated on whitened differences."""

    name: str = "kernel"
    norm: float = 2.0
    #: Whether the kernel vanishes outside the unit ball (log density -inf there).
    compact: bool = False

    def log_profile(self, sq_dist: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_normalizer(self, dim: int, log_det_chol: jax.Array) -> jax.Array:  # pragma: no cover
        raise NotImplementedError

    def sample_unit(
        self, key: jax.Array, shape: tuple[int, int], dtype
    ) -> jax.Array:  # pragma: no cover
        raise NotImplementedError

    def coordinate_variance(self, dim: int) -> float:  # pragma: no cover - abstract
        """Variance of each coordinate of the unit kernel in ``dim`` dimensions (``H = I``).

        With a scalar bandwidth ``h`` a coordinate's standard deviation is
        ``h * sqrt(coordinate_variance(dim))``: ``h`` scales the kernel's radius, and is the
        standard deviation for the Gaussian kernel only.
        """
        raise NotImplementedError

    def distance_error(self, sq_dist: jax.Array, delta: jax.Array) -> jax.Array:
        """Bound on a term's change when its squared distance moves by at most ``delta``.

        Kernels with full support: ``|log k(r'^2) - log k(r^2)|`` for every ``r^2 >= sq_dist``.
        Compact kernels: ``|k(r'^2) - k(r^2)|`` at ``r^2 = sq_dist`` (the peak ``k(0)`` is 1).
        """
        return 0.5 * delta  # the Gaussian's log profile -r^2/2

    def lower_log_cdf(self, u: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        """``log F(u)`` of the 1-D unit kernel for ``u <= 0`` (its lower tail, stable there)."""
        raise NotImplementedError

    def log_cdf_1d(self, u: jax.Array) -> jax.Array:
        """``log F(u)`` of the 1-D unit kernel (the kernel in one dimension with ``H = 1``),
        accurate in both tails: the lower tail directly, the upper as ``log1p(-F(-u))`` (the
        kernel is symmetric)."""
        low = jnp.minimum(u, 0.0)
        high = jnp.minimum(-u, 0.0)
        return jnp.where(
            u <= 0, self.lower_log_cdf(low), jnp.log1p(-jnp.exp(self.lower_log_cdf(high)))
        )


def _log_where(inside, value_fn, u):
    """``value_fn(u)`` where ``inside``, else -inf, with the argument kept valid elsewhere."""
    safe = jnp.where(inside, u, -0.5)
    return jnp.where(inside, value_fn(safe), -jnp.inf)


def _sqrt_error(sq_dist, delta):
    """Bound on ``|sqrt(a) - sqrt(b)|`` for ``|a - b| <= delta``, ``a >= sq_dist``."""
    return jnp.minimum(jnp.sqrt(delta), delta / jnp.sqrt(jnp.maximum(sq_dist, 1e-30)))


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

    def coordinate_variance(self, dim: int) -> float:
        return 1.0

    def sample_unit(self, key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
        return jax.random.normal(key, shape, dtype)

    def lower_log_cdf(self, u):
        return jax.scipy.special.log_ndtr(u)


@dataclasses.dataclass(frozen=True)
class TophatKernel(Kernel):
    """Uniform on the unit ball: ``k(r) = 1`` for ``r < 1``."""

    name: str = "tophat"
    compact: bool = True

    def log_profile(self, sq_dist):
        return jnp.where(sq_dist < 1.0, 0.0, -jnp.inf).astype(sq_dist.dtype)

    def distance_error(self, sq_dist, delta):
        # A term flips in or out of the ball only within delta of its edge.
        return jnp.where(jnp.abs(sq_dist - 1.0) <= delta, 1.0, 0.0).astype(sq_dist.dtype)

    def log_normalizer(self, dim, log_det_chol):
        return -log_unit_ball_volume(dim) - log_det_chol

    def coordinate_variance(self, dim):
        return 1.0 / (dim + 2.0)  # E r^2 = d / (d + 2)

    def lower_log_cdf(self, u):  # (1 + u) / 2 on [-1, 0]
        return _log_where(u > -1.0, lambda v: jnp.log1p(v) - math.log(2.0), u)

    def sample_unit(self, key, shape, dtype):
        # density r^{d-1} on [0, 1): r = U^{1/d}
        return _radial_sample(
            key, shape, dtype, lambda k, s, d, t: jax.random.uniform(k, s, t) ** (1.0 / d)
        )


@dataclasses.dataclass(frozen=True)
class EpanechnikovKernel(Kernel):
    """``k(r) = 1 - r^2`` for ``r < 1``."""

    name: str = "epanechnikov"
    compact: bool = True

    def log_profile(self, sq_dist):
        inside = sq_dist < 1.0
        # The inner where keeps log1p away from -1, so gradients stay finite (no 0 * inf).
        return jnp.where(inside, jnp.log1p(-jnp.where(inside, sq_dist, 0.0)), -jnp.inf)

    def distance_error(self, sq_dist, delta):
        return jnp.where(sq_dist < 1.0 + delta, delta, 0.0)  # |dk / dr^2| = 1

    def log_normalizer(self, dim, log_det_chol):
        # int_0^1 (1 - r^2) r^{d-1} dr = 2 / (d (d + 2))
        return -_log_radial_mass(dim, math.log(2.0 / (dim * (dim + 2.0)))) - log_det_chol

    def coordinate_variance(self, dim):
        return 1.0 / (dim + 4.0)  # r^2 ~ Beta(d/2, 2)

    def lower_log_cdf(self, u):  # (1 + u)^2 (2 - u) / 4 on [-1, 0]
        return _log_where(u > -1.0, lambda v: 2.0 * jnp.log1p(v) + jnp.log(2.0 - v)
                          - math.log(4.0), u)  # fmt: skip

    def sample_unit(self, key, shape, dtype):
        # r^2 ~ Beta(d/2, 2)
        return _radial_sample(
            key, shape, dtype,
            lambda k, s, d, t: jnp.sqrt(jax.random.beta(k, d / 2.0, 2.0, s, t)),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ExponentialKernel(Kernel):
    """``k(r) = exp(-r)``."""

    name: str = "exponential"

    def log_profile(self, sq_dist):
        return -_safe_sqrt(sq_dist)

    def distance_error(self, sq_dist, delta):
        return _sqrt_error(sq_dist, delta)

    def log_normalizer(self, dim, log_det_chol):
        # int_0^inf exp(-r) r^{d-1} dr = Gamma(d)
        return -_log_radial_mass(dim, math.lgamma(dim)) - log_det_chol

    def coordinate_variance(self, dim):
        return dim + 1.0  # r ~ Gamma(d, 1)

    def lower_log_cdf(self, u):  # exp(u) / 2
        return u - math.log(2.0)

    def sample_unit(self, key, shape, dtype):
        # r ~ Gamma(d, 1)
        return _radial_sample(
            key, shape, dtype, lambda k, s, d, t: jax.random.gamma(k, float(d), s, t)
        )


@dataclasses.dataclass(frozen=True)
class LinearKernel(Kernel):
    """``k(r) = 1 - r`` for ``r < 1``."""

    name: str = "linear"
    compact: bool = True

    def log_profile(self, sq_dist):
        r = _safe_sqrt(sq_dist)
        inside = r < 1.0
        return jnp.where(inside, jnp.log1p(-jnp.where(inside, r, 0.0)), -jnp.inf)

    def distance_error(self, sq_dist, delta):
        return jnp.where(sq_dist < 1.0 + delta, _sqrt_error(sq_dist, delta), 0.0)

    def log_normalizer(self, dim, log_det_chol):
        # int_0^1 (1 - r) r^{d-1} dr = 1 / (d (d + 1))
        return -_log_radial_mass(dim, -math.log(dim * (dim + 1.0))) - log_det_chol

    def coordinate_variance(self, dim):
        return (dim + 1.0) / ((dim + 2.0) * (dim + 3.0))  # r ~ Beta(d, 2)

    def lower_log_cdf(self, u):  # (1 + u)^2 / 2 on [-1, 0]
        return _log_where(u > -1.0, lambda v: 2.0 * jnp.log1p(v) - math.log(2.0), u)

    def sample_unit(self, key, shape, dtype):
        # r ~ Beta(d, 2)
        return _radial_sample(
            key, shape, dtype, lambda k, s, d, t: jax.random.beta(k, float(d), 2.0, s, t)
        )


def _cosine_moment(dim: int) -> float:
    """``int_0^1 cos(pi r / 2) r^{d-1} dr`` by its alternating series, in float64.

    ``sum_k (-1)^k (pi/2)^{2k} / ((2k)! (d + 2k))``: the terms are at most 1.3, so the absolute
    error is ~1e-16 and the relative error ~1e-16 d^2 (1e-10 at d = 784).
    """
    a = math.pi / 2.0
    terms = [
        (-1) ** k * math.exp(2 * k * math.log(a) - math.lgamma(2 * k + 1) - math.log(dim + 2 * k))
        for k in range(60)
    ]
    return math.fsum(terms)


def _cosine_radius(key, shape, dim, dtype):
    """Exact rejection sampling from ``cos(pi r / 2) r^{d-1}`` on [0, 1].

    Proposals come from ``(1 - r) r^{d-1}`` (Beta(d, 2)); since ``cos(pi r / 2) <= (pi/2)(1 - r)``
    a proposal is accepted with probability ``sin(pi (1 - r) / 2) / ((pi / 2)(1 - r)) >= 2 / pi``.
    Rounds repeat until every draw is accepted.
    """

    def cond(state):
        return ~jnp.all(state[1])

    def body(state):
        r, done, key = state
        key, k_prop, k_acc = jax.random.split(key, 3)
        prop = jax.random.beta(k_prop, float(dim), 2.0, shape, dtype)
        gap = 0.5 * jnp.pi * (1.0 - prop)
        ratio = jnp.where(gap > 0, jnp.sin(gap) / jnp.where(gap > 0, gap, 1.0), 1.0)
        accept = jax.random.uniform(k_acc, shape, dtype) < ratio
        return jnp.where(accept & ~done, prop, r), done | accept, key

    init = (jnp.zeros(shape, dtype), jnp.zeros(shape, bool), key)
    return jax.lax.while_loop(cond, body, init)[0]


@dataclasses.dataclass(frozen=True)
class CosineKernel(Kernel):
    """``k(r) = cos(pi r / 2)`` for ``r < 1``."""

    name: str = "cosine"
    compact: bool = True

    def log_profile(self, sq_dist):
        r = _safe_sqrt(sq_dist)
        inside = r < 1.0
        cos = jnp.cos(0.5 * jnp.pi * jnp.where(inside, r, 0.0))
        return jnp.where(inside, jnp.log(cos), -jnp.inf)

    def distance_error(self, sq_dist, delta):
        # |dk / dr^2| = (pi / 4) sin(pi r / 2) / r <= pi^2 / 8
        return jnp.where(sq_dist < 1.0 + delta, (math.pi**2 / 8.0) * delta, 0.0)

    def log_normalizer(self, dim, log_det_chol):
        return -_log_radial_mass(dim, math.log(_cosine_moment(dim))) - log_det_chol

    def coordinate_variance(self, dim):
        return _cosine_moment(dim + 2) / (_cosine_moment(dim) * dim)

    def lower_log_cdf(self, u):  # (1 + sin(pi u / 2)) / 2 = sin^2(pi (1 + u) / 4) on [-1, 0]
        return _log_where(u > -1.0, lambda v: 2.0 * jnp.log(jnp.sin(0.25 * jnp.pi * (1.0 + v))),
                          u)  # fmt: skip

    def sample_unit(self, key, shape, dtype):
        return _radial_sample(key, shape, dtype, _cosine_radius)


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

    def coordinate_variance(self, dim: int) -> float:
        # Of the normalised kernel it samples from; for p = 2 exactly N(0, h^2 I).
        if self.norm == 2.0:
            return 1.0
        # u = r * direction, E r^2 = d (r ~ chi_d), direction from the norm's cone measure:
        if self.norm == 1.0:  # Dirichlet(1, ..., 1) magnitudes: E dir_j^2 = 2 / (d (d + 1))
            return 2.0 / (dim + 1.0)
        return (dim + 2.0) / 3.0  # cube surface: E dir_j^2 = 1/d + (d - 1) / (3 d)

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
    "tophat": TophatKernel,
    "epanechnikov": EpanechnikovKernel,
    "exponential": ExponentialKernel,
    "linear": LinearKernel,
    "cosine": CosineKernel,
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
        scikit-learn's ``"gaussian"``, ``"tophat"``, ``"epanechnikov"``, ``"exponential"``,
        ``"linear"``, ``"cosine"``; the seed's ``"multivariate_gaussian"`` (an alias of
        ``"gaussian"``) and ``"univariate_gaussian"``.
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
