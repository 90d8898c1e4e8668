"""Kernels: log profiles, normalisers and unit samplers.

Every kernel is evaluated on *whitened* differences ``u = L^{-1} (x - x_i)``, where
``H = L L^T`` is the bandwidth matrix. A kernel provides

* ``log_profile(sq_dist)``: ``log k(r)`` as a function of the squared distance ``r^2``
  (shape-preserving, elementwise);
* ``log_normalizer(dim, log_det_chol)``: the log of the constant that makes the kernel a
  density (``log_det_chol = log |det L|``);
* ``sample_unit(key, shape, dtype)``: draws from the normalised kernel in whitened space;
* ``norm``: the p of the p-norm in which whitened distances are measured, any ``p >= 1`` or
  infinity (2 by default); the normaliser uses the volume of the unit p-ball and the sampler a
  direction from the p-sphere's cone measure, so every kernel is a density in every p-norm;
* ``distance_error(sq_dist, delta)``: how far a term can move when its squared distance is off
  by at most ``delta`` (the engine's rounding-error account, see :mod:`jaxkde.core.engine`): in log
  space for kernels with full support, in the kernel's value (its peak is 1) for compact ones.

Kernels are frozen dataclasses, hashable, and travel as static metadata of the fitted state,
so switching kernels compiles a new program while refitting the same kernel does not.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "KERNEL_NAMES",
    "BiweightKernel",
    "Cosine2Kernel",
    "CosineKernel",
    "EpanechnikovKernel",
    "ExponentialKernel",
    "GaussianKernel",
    "Kernel",
    "LinearKernel",
    "TophatKernel",
    "TricubeKernel",
    "TriweightKernel",
    "UnivariateGaussianKernel",
    "get_kernel",
    "log_unit_ball_volume",
]

_LOG_2PI = math.log(2.0 * math.pi)


def log_unit_ball_volume(dim: int, p: float = 2.0) -> float:
    """``log V_{d,p}``: the volume of the unit ball of the p-norm in ``dim`` dimensions,
    ``(2 Gamma(1 + 1/p))^d / Gamma(1 + d/p)`` (``pi^{d/2} / Gamma(d/2 + 1)`` for p = 2, ``2^d``
    for p = infinity)."""
    if p == 2.0:
        return 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1.0)
    if math.isinf(p):
        return dim * math.log(2.0)
    return dim * (math.log(2.0) + math.lgamma(1.0 + 1.0 / p)) - math.lgamma(1.0 + dim / p)


def _log_radial_mass(dim: int, log_moment: float, p: float = 2.0) -> float:
    """``log(d V_{d,p} M)`` with ``M = int k(r) r^{d-1} dr``: the integral of ``k(||u||_p)``."""
    return math.log(dim) + log_unit_ball_volume(dim, p) + log_moment


def _direction_second_moment(dim: int, p: float) -> float:
    """``d E[theta_j^2]`` for ``theta`` from the cone measure of the unit p-sphere (1 for p = 2).

    With ``G_j`` i.i.d. of density ``~ exp(-|g|^p)``, ``theta = G / ||G||_p`` is independent of
    ``||G||_p`` (Schechtman and Zinn 1990), so ``E theta_j^2 = E G_j^2 / E ||G||_p^2``
    ``= Gamma(3/p) Gamma(d/p) / (Gamma(1/p) Gamma((d+2)/p))``.
    """
    if p == 2.0:
        return 1.0
    if math.isinf(p):
        return (dim + 2.0) / 3.0
    log = (math.lgamma(3.0 / p) + math.lgamma(dim / p) - math.lgamma(1.0 / p)
           - math.lgamma((dim + 2.0) / p))  # fmt: skip
    return dim * math.exp(log)


def _cone_direction(key: jax.Array, shape: tuple[int, int], dtype, p: float) -> jax.Array:
    """Directions ``(..., d)`` on the unit p-sphere, distributed by its cone measure.

    ``G / ||G||_p`` with ``G_j`` of density ``~ exp(-|g|^p)``: normal for p = 2, Laplace for
    p = 1, uniform on ``[-1, 1]`` for p = infinity, ``sign * Gamma(1/p)^{1/p}`` otherwise.
    """
    if p == 2.0:
        g = jax.random.normal(key, shape, dtype)
        return g / jnp.linalg.norm(g, axis=-1, keepdims=True)
    if p == 1.0:
        g = jax.random.laplace(key, shape, dtype)
        return g / jnp.sum(jnp.abs(g), axis=-1, keepdims=True)
    if math.isinf(p):
        g = jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)
        return g / jnp.max(jnp.abs(g), axis=-1, keepdims=True)
    key_sign, key_mag = jax.random.split(key)
    magnitude = jax.random.gamma(key_mag, 1.0 / p, shape, dtype) ** (1.0 / p)
    g = jnp.where(jax.random.bernoulli(key_sign, 0.5, shape), magnitude, -magnitude)
    scale = jnp.max(jnp.abs(g), axis=-1, keepdims=True)  # ||g||_p without overflow
    scale = jnp.where(scale > 0, scale, 1.0)
    norm = scale * jnp.sum((jnp.abs(g) / scale) ** p, axis=-1, keepdims=True) ** (1.0 / p)
    return g / norm


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with a finite gradient at 0 (taken as 0 there)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _radial_sample(key, shape, dtype, radius_fn, p: float = 2.0) -> jax.Array:
    """A radius from ``radius_fn(key, batch_shape, dim, dtype)`` times a direction from the
    p-sphere's cone measure: a draw from the density ``~ k(||u||_p)`` whose radius
    ``||u||_p`` has the density ``~ k(r) r^{d-1}`` in every p-norm."""
    key_dir, key_rad = jax.random.split(key)
    radius = radius_fn(key_rad, shape[:-1], shape[-1], dtype)
    return radius[..., None] * _cone_direction(key_dir, shape, dtype, p)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """Base class of a radial kernel ``k(||u||_p)`` evaluated on whitened differences ``u``.

    A subclass gives its log profile, :meth:`log_radial_moment` (``log int_0^R k(r) r^{d-1}
    dr``), :meth:`sample_radius` (a draw from the density ``~ k(r) r^{d-1}``) and
    :meth:`lower_log_cdf` (its 1-D CDF); the normaliser, the coordinates' variance and the
    sampler in any p-norm follow from these.
    """

    name: str = "kernel"
    norm: float = 2.0
    #: Whether the kernel vanishes outside the unit ball (log density -inf there).
    compact: bool = False

    def log_profile(self, sq_dist: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        """``log k(r)`` as a function of ``r^2 = ||u||_p^2`` (elementwise)."""
        raise NotImplementedError

    def log_radial_moment(self, dim: int) -> float:  # pragma: no cover - abstract
        """``log int_0^R k(r) r^{dim-1} dr`` (``R`` = 1 for compact kernels, else infinity)."""
        raise NotImplementedError

    def sample_radius(self, key: jax.Array, shape, dim: int, dtype) -> jax.Array:
        """Radii of shape ``shape`` from the density ``~ k(r) r^{dim-1}``.

        The default (user kernels) inverts the radial CDF tabulated in float64 on 2^16
        intervals of the profile's reach (:func:`_radial_table`), linearly between nodes: a
        draw is off by at most a node spacing where the CDF is flat, far below float32's
        resolution of a radius elsewhere. The built-in kernels draw exactly.
        """
        radii, cdf, _ = _radial_table(self, dim)
        u = jax.random.uniform(key, shape, dtype)
        return jnp.interp(u, jnp.asarray(cdf, dtype), jnp.asarray(radii, dtype))

    def log_normalizer(self, dim: int, log_det_chol: jax.Array) -> jax.Array:
        """``-log int k(||L^{-1} x||_p) dx``: the log of the constant that makes the kernel a
        density (``log_det_chol = log |det L|``)."""
        mass = _log_radial_mass(dim, self.log_radial_moment(dim), self.norm)
        return -mass - log_det_chol

    def sample_unit(self, key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
        """Draws ``shape = (..., d)`` from the normalised kernel with ``H = I``."""
        return _radial_sample(key, shape, dtype, self.sample_radius, self.norm)

    def coordinate_variance(self, dim: int) -> float:
        """Variance of each coordinate of the unit kernel in ``dim`` dimensions (``H = I``).

        With a scalar bandwidth ``h`` a coordinate's standard deviation is
        ``h * sqrt(coordinate_variance(dim))``: ``h`` scales the kernel's radius, and is the
        standard deviation for the Gaussian kernel (p = 2) only.
        """
        radius_sq = math.exp(self.log_radial_moment(dim + 2) - self.log_radial_moment(dim))
        return radius_sq / dim * _direction_second_moment(dim, self.norm)

    def distance_error(self, sq_dist: jax.Array, delta: jax.Array) -> jax.Array:
        """Bound on a term's change when its squared distance moves by at most ``delta``.

        Kernels with full support: ``|log k(r'^2) - log k(r^2)|`` for every ``r^2 >= sq_dist``.
        Compact kernels: ``|k(r'^2) - k(r^2)|`` at ``r^2 = sq_dist`` (the peak ``k(0)`` is 1).
        The default, for user kernels, is twice the slope of the log profile at ``sq_dist``
        times ``delta`` (of the profile itself for compact kernels), by automatic
        differentiation: right for profiles whose slope varies slowly on the scale of
        ``delta``; a kernel with a kink or a steeper tail should give its own bound.
        """
        s = jnp.asarray(sq_dist)
        slope = jnp.vectorize(jax.grad(lambda v: self.log_profile(v)))(s)
        slope = jnp.where(jnp.isfinite(slope), jnp.abs(slope), 0.0)
        if self.compact:
            value = jnp.exp(self.log_profile(s))
            return 2.0 * slope * jnp.where(jnp.isfinite(value), value, 0.0) * delta
        return 2.0 * slope * delta

    def lower_log_cdf(self, u: jax.Array) -> jax.Array:
        """``log F(u)`` of the 1-D unit kernel for ``u <= 0`` (its lower tail, stable there).

        The default (user kernels) interpolates the logarithm of the tail integral
        ``int_{|u|}^R k``, tabulated in float64 (:func:`_radial_table`), so tails keep their
        digits down to where the profile itself underflows.
        """
        radii, _, log_tail = _radial_table(self, 1)
        a = jnp.abs(u)
        value = jnp.interp(a, jnp.asarray(radii, u.dtype), jnp.asarray(log_tail, u.dtype))
        return jnp.where(a >= radii[-1], -jnp.inf, value - math.log(2.0))

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


def _log_beta_half(dim: int, b: float) -> float:
    """``log int_0^1 (1 - r^2)^(b-1) r^{d-1} dr = log B(d/2, b) - log 2``."""
    return (math.lgamma(0.5 * dim) + math.lgamma(b) - math.lgamma(0.5 * dim + b)
            - math.log(2.0))  # fmt: skip


def _beta_sq_radius(b: float):
    """Radii with ``r^2 ~ Beta(d/2, b)``: the density ``~ (1 - r^2)^(b-1) r^{d-1}`` on [0, 1]."""
    return lambda k, s, d, t: jnp.sqrt(jax.random.beta(k, d / 2.0, b, s, t))


def _compact_log_profile(sq_dist, log_inside):
    """``log_inside(r^2)`` for ``r^2 < 1``, -inf outside, with finite gradients at the edge."""
    inside = sq_dist < 1.0
    return jnp.where(inside, log_inside(jnp.where(inside, sq_dist, 0.0)), -jnp.inf)


def _compact_radius_log_profile(sq_dist, log_inside):
    """``log_inside(r)`` of the radius ``r = sqrt(r^2) < 1``, -inf outside, with finite
    gradients at 0 and at the edge."""
    r = _safe_sqrt(sq_dist)
    inside = r < 1.0
    return jnp.where(inside, log_inside(jnp.where(inside, r, 0.0)), -jnp.inf)


@dataclasses.dataclass(frozen=True)
class GaussianKernel(Kernel):
    """Multivariate Gaussian kernel ``K_H(u) = (2 pi)^{-d/2} |H|^{-1/2} exp(-u^T H^{-1} u / 2)``.

    The bandwidth matrix ``H`` may be isotropic (``h^2 I``), diagonal or full. In another
    p-norm the profile is ``exp(-||u||_p^2 / 2)``, normalised in that norm.
    """

    name: str = "gaussian"
    norm: float = 2.0

    def log_profile(self, sq_dist: jax.Array) -> jax.Array:
        return -0.5 * sq_dist

    def distance_error(self, sq_dist, delta):
        return 0.5 * delta  # the log profile -r^2/2

    def log_radial_moment(self, dim):
        # int exp(-r^2 / 2) r^{d-1} dr = 2^{d/2 - 1} Gamma(d/2)
        return (0.5 * dim - 1.0) * math.log(2.0) + math.lgamma(0.5 * dim)

    def sample_radius(self, key, shape, dim, dtype):  # chi_d
        return jnp.sqrt(2.0 * jax.random.gamma(key, dim / 2.0, shape, dtype))

    def log_normalizer(self, dim: int, log_det_chol: jax.Array) -> jax.Array:
        if self.norm != 2.0:
            return super().log_normalizer(dim, log_det_chol)
        return -0.5 * dim * _LOG_2PI - log_det_chol

    def coordinate_variance(self, dim: int) -> float:
        return _direction_second_moment(dim, self.norm)

    def sample_unit(self, key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
        if self.norm != 2.0:
            return super().sample_unit(key, shape, dtype)
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

    def log_radial_moment(self, dim):
        return -math.log(dim)

    def sample_radius(self, key, shape, dim, dtype):  # density r^{d-1} on [0, 1): U^{1/d}
        return jax.random.uniform(key, shape, dtype) ** (1.0 / dim)

    def lower_log_cdf(self, u):  # (1 + u) / 2 on [-1, 0]
        return _log_where(u > -1.0, lambda v: jnp.log1p(v) - math.log(2.0), u)


@dataclasses.dataclass(frozen=True)
class EpanechnikovKernel(Kernel):
    """``k(r) = 1 - r^2`` for ``r < 1``."""

    name: str = "epanechnikov"
    compact: bool = True

    def log_profile(self, sq_dist):
        # The inner where keeps log1p away from -1, so gradients stay finite (no 0 * inf).
        return _compact_log_profile(sq_dist, lambda s: jnp.log1p(-s))

    def distance_error(self, sq_dist, delta):
        return jnp.where(sq_dist < 1.0 + delta, delta, 0.0)  # |dk / dr^2| = 1

    def log_radial_moment(self, dim):  # 2 / (d (d + 2))
        return _log_beta_half(dim, 2.0)

    def sample_radius(self, key, shape, dim, dtype):  # r^2 ~ Beta(d/2, 2)
        return _beta_sq_radius(2.0)(key, shape, dim, dtype)

    def lower_log_cdf(self, u):  # (1 + u)^2 (2 - u) / 4 on [-1, 0]
        return _log_where(u > -1.0, lambda v: 2.0 * jnp.log1p(v) + jnp.log(2.0 - v)
                          - math.log(4.0), u)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BiweightKernel(Kernel):
    """The biweight (quartic) kernel ``k(r) = (1 - r^2)^2`` for ``r < 1`` (KDEpy's
    ``"biweight"``, statsmodels' ``"biw"``)."""

    name: str = "biweight"
    compact: bool = True

    def log_profile(self, sq_dist):
        return _compact_log_profile(sq_dist, lambda s: 2.0 * jnp.log1p(-s))

    def distance_error(self, sq_dist, delta):
        return jnp.where(sq_dist < 1.0 + delta, 2.0 * delta, 0.0)  # |dk / dr^2| <= 2

    def log_radial_moment(self, dim):  # 8 / (d (d + 2) (d + 4))
        return _log_beta_half(dim, 3.0)

    def sample_radius(self, key, shape, dim, dtype):  # r^2 ~ Beta(d/2, 3)
        return _beta_sq_radius(3.0)(key, shape, dim, dtype)

    def lower_log_cdf(self, u):  # (1 + u)^3 (3 u^2 - 9 u + 8) / 16 on [-1, 0]: no cancellation
        return _log_where(u > -1.0, lambda v: 3.0 * jnp.log1p(v)
                          + jnp.log((3.0 * v - 9.0) * v + 8.0) - math.log(16.0), u)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TriweightKernel(Kernel):
    """The triweight kernel ``k(r) = (1 - r^2)^3`` for ``r < 1`` (KDEpy's ``"triweight"``,
    statsmodels' ``"triw"``)."""

    name: str = "triweight"
    compact: bool = True

    def log_profile(self, sq_dist):
        return _compact_log_profile(sq_dist, lambda s: 3.0 * jnp.log1p(-s))

    def distance_error(self, sq_dist, delta):
        return jnp.where(sq_dist < 1.0 + delta, 3.0 * delta, 0.0)  # |dk / dr^2| <= 3

    def log_radial_moment(self, dim):  # 48 / (d (d + 2) (d + 4) (d + 6))
        return _log_beta_half(dim, 4.0)

    def sample_radius(self, key, shape, dim, dtype):  # r^2 ~ Beta(d/2, 4)
        return _beta_sq_radius(4.0)(key, shape, dim, dtype)

    def lower_log_cdf(self, u):  # (1 + u)^4 (-5 u^3 + 20 u^2 - 29 u + 16) / 32 on [-1, 0]
        return _log_where(u > -1.0, lambda v: 4.0 * jnp.log1p(v)
                          + jnp.log(((-5.0 * v + 20.0) * v - 29.0) * v + 16.0)
                          - math.log(32.0), u)  # fmt: skip


#: Gauss-Legendre rule with 5 nodes on [0, 1]: exact for polynomials of degree 9.
_GL5_NODES = (np.polynomial.legendre.leggauss(5)[0] + 1.0) / 2.0
_GL5_WEIGHTS = np.polynomial.legendre.leggauss(5)[1] / 2.0


def _tricube_lower_log_cdf(v):
    """``log F(v)`` of the 1-D tricube kernel ``(70/81) (1 - |u|^3)^3`` for ``v`` in (-1, 0].

    ``F(v) = (70/81) int_0^e s^3 q(s)^3 ds`` with ``e = 1 + v`` and ``q(s) = 3 - 3 s + s^2``
    (``1 - (1 - s)^3 = s q(s)``), a polynomial of degree 9 integrated exactly by 5-point
    Gauss-Legendre; every term is positive (``q >= 1`` on [0, 1]), so nothing cancels, and the
    sum is taken in log space (no underflow deep in the tail).
    """
    e = 1.0 + v
    log_e = jnp.log(e)
    nodes = jnp.asarray(_GL5_NODES, v.dtype)
    s = e[..., None] * nodes
    log_terms = (jnp.log(jnp.asarray(_GL5_WEIGHTS, v.dtype)) + 3.0 * (log_e[..., None]
                 + jnp.log(nodes)) + 3.0 * jnp.log((s - 3.0) * s + 3.0))  # fmt: skip
    return math.log(70.0 / 81.0) + log_e + jax.scipy.special.logsumexp(log_terms, axis=-1)


@dataclasses.dataclass(frozen=True)
class TricubeKernel(Kernel):
    """The tricube kernel ``k(r) = (1 - r^3)^3`` for ``r < 1`` (KDEpy's ``"tricube"``)."""

    name: str = "tricube"
    compact: bool = True

    def log_profile(self, sq_dist):
        return _compact_radius_log_profile(sq_dist, lambda r: 3.0 * jnp.log1p(-(r**3)))

    def distance_error(self, sq_dist, delta):
        # |dk / dr| = 9 r^2 (1 - r^3)^2 <= 9 r^2, times |dr| <= _sqrt_error
        r = jnp.sqrt(jnp.maximum(sq_dist, 0.0)) + _sqrt_error(sq_dist, delta)
        return jnp.where(
            sq_dist < 1.0 + delta, 9.0 * jnp.minimum(r * r, 1.0) * _sqrt_error(sq_dist, delta), 0.0
        )

    def log_radial_moment(self, dim):  # 162 / (d (d + 3) (d + 6) (d + 9))
        return math.log(162.0) - math.log(dim * (dim + 3.0) * (dim + 6.0) * (dim + 9.0))

    def sample_radius(self, key, shape, dim, dtype):  # r^3 ~ Beta(d/3, 4)
        return jax.random.beta(key, dim / 3.0, 4.0, shape, dtype) ** (1.0 / 3.0)

    def lower_log_cdf(self, u):
        return _log_where(u > -1.0, _tricube_lower_log_cdf, u)


@dataclasses.dataclass(frozen=True)
class ExponentialKernel(Kernel):
    """``k(r) = exp(-r)``."""

    name: str = "exponential"

    def log_profile(self, sq_dist):
        return -_safe_sqrt(sq_dist)

    def distance_error(self, sq_dist, delta):
        return _sqrt_error(sq_dist, delta)

    def log_radial_moment(self, dim):  # Gamma(d)
        return math.lgamma(dim)

    def sample_radius(self, key, shape, dim, dtype):  # r ~ Gamma(d, 1)
        return jax.random.gamma(key, float(dim), shape, dtype)

    def lower_log_cdf(self, u):  # exp(u) / 2
        return u - math.log(2.0)


@dataclasses.dataclass(frozen=True)
class LinearKernel(Kernel):
    """``k(r) = 1 - r`` for ``r < 1``."""

    name: str = "linear"
    compact: bool = True

    def log_profile(self, sq_dist):
        return _compact_radius_log_profile(sq_dist, lambda r: jnp.log1p(-r))

    def distance_error(self, sq_dist, delta):
        return jnp.where(sq_dist < 1.0 + delta, _sqrt_error(sq_dist, delta), 0.0)

    def log_radial_moment(self, dim):  # 1 / (d (d + 1))
        return -math.log(dim * (dim + 1.0))

    def sample_radius(self, key, shape, dim, dtype):  # r ~ Beta(d, 2)
        return jax.random.beta(key, float(dim), 2.0, shape, dtype)

    def lower_log_cdf(self, u):  # (1 + u)^2 / 2 on [-1, 0]
        return _log_where(u > -1.0, lambda v: 2.0 * jnp.log1p(v) - math.log(2.0), u)


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


def _cosine_power_radius(key, shape, dim, dtype, power: int):
    """Exact rejection sampling from ``cos(pi r / 2)^power r^{d-1}`` on [0, 1] (power 1 or 2).

    Proposals come from ``(1 - r)^power r^{d-1}`` (Beta(d, power + 1)); since
    ``cos(pi r / 2) = sin(x) <= x`` with ``x = pi (1 - r) / 2``, a proposal is accepted with
    probability ``(sin(x) / x)^power >= (2 / pi)^power``. Rounds repeat until every draw is
    accepted.
    """

    def cond(state):
        return ~jnp.all(state[1])

    def body(state):
        r, done, key = state
        key, k_prop, k_acc = jax.random.split(key, 3)
        prop = jax.random.beta(k_prop, float(dim), power + 1.0, shape, dtype)
        gap = 0.5 * jnp.pi * (1.0 - prop)
        ratio = jnp.where(gap > 0, jnp.sin(gap) / jnp.where(gap > 0, gap, 1.0), 1.0) ** power
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
        return _compact_radius_log_profile(sq_dist, lambda r: jnp.log(jnp.cos(0.5 * jnp.pi * r)))

    def distance_error(self, sq_dist, delta):
        # |dk / dr^2| = (pi / 4) sin(pi r / 2) / r <= pi^2 / 8
        return jnp.where(sq_dist < 1.0 + delta, (math.pi**2 / 8.0) * delta, 0.0)

    def log_radial_moment(self, dim):
        return math.log(_cosine_moment(dim))

    def sample_radius(self, key, shape, dim, dtype):
        return _cosine_power_radius(key, shape, dim, dtype, 1)

    def lower_log_cdf(self, u):  # (1 + sin(pi u / 2)) / 2 = sin^2(pi (1 + u) / 4) on [-1, 0]
        return _log_where(u > -1.0, lambda v: 2.0 * jnp.log(jnp.sin(0.25 * jnp.pi * (1.0 + v))),
                          u)  # fmt: skip


def _cosine2_moment(dim: int) -> float:
    """``int_0^1 cos(pi r / 2)^2 r^{d-1} dr`` in float64, as ``int_0^1 sin(pi t / 2)^2
    (1 - t)^{d-1} dt`` by the series ``sin(x)^2 = sum_k (-1)^(k+1) 2^(2k-1) x^(2k) / (2k)!``
    against ``B(2k + 1, d)``: alternating terms that shrink like ``(pi / d)^2`` per step, so
    no cancellation at any ``d`` (the two halves ``1/(2d) +- ...`` of the direct form cancel
    to ``pi^2 / (2 d^3)`` in high dimensions)."""
    terms = []
    for k in range(1, 60):
        log_beta = math.lgamma(2 * k + 1) + math.lgamma(dim) - math.lgamma(2 * k + 1 + dim)
        log_term = ((2 * k - 1) * math.log(2.0) + 2 * k * math.log(math.pi / 2.0)
                    - math.lgamma(2 * k + 1) + log_beta)  # fmt: skip
        terms.append((-1) ** (k + 1) * math.exp(log_term))
    return math.fsum(terms)


def _x_minus_sin(x):
    """``x - sin(x)`` for ``x`` in [0, pi], without cancellation near 0 (its series below 1)."""
    y = x * x
    series = x * y / 6.0 * (1 - y / 20 * (1 - y / 42 * (1 - y / 72 * (1 - y / 110
                            * (1 - y / 156)))))  # fmt: skip
    return jnp.where(x < 1.0, series, x - jnp.sin(x))


@dataclasses.dataclass(frozen=True)
class Cosine2Kernel(Kernel):
    """``k(r) = cos(pi r / 2)^2 = (1 + cos(pi r)) / 2`` for ``r < 1``: statsmodels' ``"cos2"``
    (Stata's cosine, ``1 + cos(2 pi u)`` on ``[-1/2, 1/2]``: statsmodels' ``h`` is twice
    jaxkde's)."""

    name: str = "cosine2"
    compact: bool = True

    def log_profile(self, sq_dist):
        return _compact_radius_log_profile(
            sq_dist, lambda r: 2.0 * jnp.log(jnp.cos(0.5 * jnp.pi * r))
        )

    def distance_error(self, sq_dist, delta):
        # |dk / dr^2| = (pi / 4) sin(pi r) / r <= pi^2 / 4
        return jnp.where(sq_dist < 1.0 + delta, (math.pi**2 / 4.0) * delta, 0.0)

    def log_radial_moment(self, dim):
        return math.log(_cosine2_moment(dim))

    def sample_radius(self, key, shape, dim, dtype):
        return _cosine_power_radius(key, shape, dim, dtype, 2)

    def lower_log_cdf(self, u):  # (pi e - sin(pi e)) / (2 pi) with e = 1 + u, on [-1, 0]
        return _log_where(u > -1.0, lambda v: jnp.log(_x_minus_sin(jnp.pi * (1.0 + v)))
                          - math.log(2.0 * math.pi), u)  # fmt: skip


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
    radius ``h * sqrt(chi^2_d)`` times a direction from the p-sphere's cone measure.
    """

    name: str = "univariate_gaussian"
    norm: float = 2.0

    def log_profile(self, sq_dist: jax.Array) -> jax.Array:
        return -0.5 * sq_dist

    def distance_error(self, sq_dist, delta):
        return 0.5 * delta  # the log profile -r^2/2

    def lower_log_cdf(self, u):
        return jax.scipy.special.log_ndtr(u)

    def log_normalizer(self, dim: int, log_det_chol: jax.Array) -> jax.Array:
        # Bandwidth is h^2 I, so log |det L| = dim * log h.
        return -0.5 * _LOG_2PI - log_det_chol / dim

    def log_radial_moment(self, dim):
        return GaussianKernel.log_radial_moment(self, dim)

    def sample_radius(self, key, shape, dim, dtype):
        return GaussianKernel.sample_radius(self, key, shape, dim, dtype)

    def coordinate_variance(self, dim: int) -> float:
        # Of the normalised kernel it samples from; for p = 2 exactly N(0, h^2 I).
        return _direction_second_moment(dim, self.norm)

    def sample_unit(self, key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
        if self.norm == 2.0:
            return jax.random.normal(key, shape, dtype)
        return _radial_sample(key, shape, dtype, self.sample_radius, self.norm)


_KERNELS = {
    "gaussian": GaussianKernel,
    "tophat": TophatKernel,
    "epanechnikov": EpanechnikovKernel,
    "exponential": ExponentialKernel,
    "linear": LinearKernel,
    "cosine": CosineKernel,
    "cosine2": Cosine2Kernel,
    "biweight": BiweightKernel,
    "triweight": TriweightKernel,
    "tricube": TricubeKernel,
    "multivariate_gaussian": GaussianKernel,
    "univariate_gaussian": UnivariateGaussianKernel,
}
KERNEL_NAMES: tuple[str, ...] = tuple(_KERNELS)


def check_norm(p) -> float:
    """``p`` as the float of a norm: a real ``p >= 1``, or infinity (also ``"inf"``)."""
    if isinstance(p, str) and p.lower() == "inf":
        return math.inf
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise ValueError(f"p must be a real number >= 1 or inf (also 'inf'); got {p!r}.")
    norm = float(p)
    if not norm >= 1.0:  # NaN too
        raise ValueError(f"p must be a real number >= 1 or inf (also 'inf'); got {p!r}.")
    return norm


def _profile_reach(kernel: Kernel) -> float:
    """1 for compact kernels; else the radius (a power of 2 up to 1e4) where the profile has
    fallen 80 nats (1e-35) below its peak."""
    if kernel.compact:
        return 1.0
    peak = float(kernel.log_profile(jnp.float32(0.0)))
    radius = 1.0
    while radius < 1e4 and float(kernel.log_profile(jnp.float32(radius**2))) > peak - 80.0:
        radius *= 2.0
    return radius


@functools.lru_cache(maxsize=128)
def _radial_table(kernel: Kernel, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(radii, cdf, log_tail)``: float64 nodes on ``[0, reach]``, the normalised CDF of
    ``k(r) r^{dim-1}`` there, and ``log int_r^reach k(t) t^{dim-1} dt`` normalised by its value
    at 0 (trapezoids on 2^16 intervals). Evaluated eagerly, also when first asked for
    inside a trace (``jit``)."""
    with jax.ensure_compile_time_eval():
        radii = np.linspace(0.0, _profile_reach(kernel), (1 << 16) + 1)
        log_k = np.asarray(kernel.log_profile(jnp.asarray(radii * radii, jnp.float32)),
                           np.float64)  # fmt: skip
    with np.errstate(divide="ignore"):
        log_f = log_k - log_k[0] + (dim - 1) * np.log(np.where(radii > 0, radii, 1.0))
    if dim > 1:
        log_f[0] = -np.inf
    f = np.exp(log_f)
    pieces = 0.5 * (f[1:] + f[:-1]) * np.diff(radii)
    cdf = np.concatenate([[0.0], np.cumsum(pieces)])
    tail = np.concatenate([np.cumsum(pieces[::-1])[::-1], [0.0]])
    with np.errstate(divide="ignore"):
        log_tail = np.log(tail) - np.log(tail[0])
    # The last nodes' tail underflows to 0: continue the log steeply from the last finite one.
    finite = np.isfinite(log_tail)
    log_tail[~finite] = log_tail[np.flatnonzero(finite)[-1]] - 1e3
    return radii, cdf / cdf[-1], log_tail


#: The dimensions in which :func:`check_kernel` integrates a user kernel.
_CHECK_DIMS = (1, 2, 5)


def check_kernel(kernel: Kernel) -> Kernel:
    """Check a user :class:`Kernel` once: hashable (a frozen dataclass) with a name, whose log
    profile keeps its input's shape, is never NaN nor above its value at 0, and whose
    :meth:`Kernel.log_radial_moment` agrees with the profile integrated numerically (to 1e-3)
    in 1, 2 and 5 dimensions; ``TypeError``/``ValueError`` saying what is wrong.
    """
    try:
        hash(kernel)
    except TypeError:
        raise TypeError(f"a user kernel must be hashable, as a frozen dataclass subclassing "
                        f"jaxkde.Kernel is (it is static metadata of the fitted state); "
                        f"{type(kernel).__name__} is not.") from None  # fmt: skip
    if not isinstance(kernel.name, str) or not kernel.name:
        raise TypeError(f"kernel.name must be a non-empty str; got {kernel.name!r}.")
    check_norm(kernel.norm)
    return _check_kernel_values(kernel)


@functools.lru_cache(maxsize=64)
def _check_kernel_values(kernel: Kernel) -> Kernel:
    with jax.ensure_compile_time_eval():
        return _check_profile_and_mass(kernel)


def _check_profile_and_mass(kernel: Kernel) -> Kernel:
    what = f"kernel {kernel.name!r}"
    probe = jnp.asarray([0.0, 0.25, 0.81, 1.0, 4.0, 100.0], jnp.float32)
    try:
        values = np.asarray(kernel.log_profile(probe), np.float64)
    except Exception as exc:  # the user's code: say where it failed
        raise TypeError(f"{what}: log_profile failed on an array of squared distances: "
                        f"{exc}") from exc  # fmt: skip
    if values.shape != probe.shape or np.isnan(values).any() or (values > values[0] + 1e-6).any():
        raise ValueError(f"{what}: log_profile must return an array of the input's shape, "
                         f"never NaN and at most its value at 0; got {values!r}.")  # fmt: skip
    if not np.isfinite(values[0]):
        raise ValueError(f"{what}: log_profile(0) must be finite; got {values[0]!r}.")
    radius = _profile_reach(kernel)
    r = np.linspace(0.0, radius, 200_001)
    log_k = np.asarray(kernel.log_profile(jnp.asarray(r * r, jnp.float32)), np.float64)
    profile = np.exp(log_k - values[0])
    for dim in _CHECK_DIMS:
        moment = np.trapezoid(profile * r ** (dim - 1), r) * np.exp(values[0])
        claimed = float(kernel.log_radial_moment(dim))
        if not (np.isfinite(claimed) and abs(np.exp(claimed) / moment - 1.0) < 1e-3):
            raise ValueError(f"{what}: log_radial_moment({dim}) = {claimed!r}, but the profile "
                             f"integrates to log({moment:.6g}) (int k(r) r^(d-1) dr, 0 to "
                             f"{radius:g}); the density would not integrate to 1.")  # fmt: skip
    return kernel


def get_kernel(name: str | Kernel, p: float | str = 2) -> Kernel:
    """Return the kernel called ``name`` (see ``KERNEL_NAMES``), measuring distances in the p-norm.

    Parameters
    ----------
    name : str or Kernel
        A :class:`Kernel` instance (a user kernel is checked by :func:`check_kernel`), or
        scikit-learn's ``"gaussian"``, ``"tophat"``, ``"epanechnikov"``, ``"exponential"``,
        ``"linear"``, ``"cosine"``; KDEpy's ``"biweight"``, ``"triweight"``, ``"tricube"``; the
        seed's ``"multivariate_gaussian"`` (an alias of ``"gaussian"``) and
        ``"univariate_gaussian"``.
    p : float >= 1 or inf
        The norm of the whitened differences ``||L^{-1}(x - x_i)||_p`` (default 2). Every
        kernel is normalised in every p-norm (the unit p-ball's volume) and sampled in it (a
        radius times a direction from the p-sphere's cone measure), as KDEpy does. Features
        that rest on the Euclidean norm (gradients, marginals, grids by FFT, CDFs in more than
        one dimension) need ``p = 2``.
    """
    if isinstance(name, Kernel):
        norm = check_norm(p)
        if norm != 2.0 and norm != name.norm:
            raise ValueError(f"p={p!r} disagrees with the kernel's own norm {name.norm!r}; give "
                             "the norm on the kernel and leave p at 2.")  # fmt: skip
        return name if type(name) in _KERNELS.values() else check_kernel(name)
    if not isinstance(name, str) or name not in _KERNELS:
        raise ValueError(f"kernel must be one of {list(KERNEL_NAMES)} or a jaxkde.Kernel; got "
                         f"{name!r}.")  # fmt: skip
    return _KERNELS[name](norm=check_norm(p))
