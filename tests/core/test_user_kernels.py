"""User kernels through the documented Kernel protocol: checked, exact, sampled, traceable."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import RTOL, tiered
from scipy import integrate, stats

import jaxkde


def _sech2_moment(dim: int) -> float:
    return integrate.quad(lambda r: r ** (dim - 1) / np.cosh(r) ** 2, 0, 60, epsabs=0,
                          epsrel=1e-13, limit=200)[0]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Sech2Kernel(jaxkde.Kernel):
    """The logistic kernel ``k(r) = sech(r)^2`` (KDEpy's ``logistic``, up to scale)."""

    name: str = "sech2"

    def log_profile(self, sq_dist):
        r = jnp.sqrt(jnp.maximum(sq_dist, 0.0))
        return 2.0 * (math.log(2.0) - r - jnp.log1p(jnp.exp(-2.0 * r)))

    def log_radial_moment(self, dim):
        return math.log(_sech2_moment(dim))


def _brute(x, q, h, p=2.0):
    d = x.shape[1]
    diff = np.abs(q[:, None, :] - x[None]) / h
    r = diff.max(-1) if np.isinf(p) else (diff**p).sum(-1) ** (1 / p)
    if np.isinf(p):
        volume = 2.0**d
    else:
        volume = (2 * math.gamma(1 + 1 / p)) ** d / math.gamma(1 + d / p)
    mass = d * volume * _sech2_moment(d) * h**d
    return np.log(np.mean(1 / np.cosh(r) ** 2, axis=1) / mass)


@pytest.mark.parametrize(
    ("d", "p"), tiered([(6, 2.0), (2, np.inf), (1, 2.0), (2, 2.0), (3, 1.0)], 2)
)
def test_user_kernel_against_float64_brute_force(dtype, d, p):
    rng = np.random.default_rng(0)
    # Offset data (centring and whitening in float64), compared as the working dtype holds them.
    x = (rng.normal(size=(300, d)) + 1e3).astype(dtype).astype(np.float64)
    q = (x[:40] + rng.normal(size=(40, d)) * 0.5).astype(dtype).astype(np.float64)
    kernel = Sech2Kernel(norm=p)
    kde = jaxkde.KDE(kernel, bandwidth=0.7, chunk_size=64).fit(x.astype(dtype))
    got = kde.score_samples(q.astype(dtype))
    np.testing.assert_allclose(got, _brute(x, q, 0.7, p), rtol=max(RTOL[dtype], 1e-9))
    if dtype == "float32":  # the same under jit, through the traced path
        fitted = jax.jit(
            lambda z: jaxkde.traced_log_density(jaxkde.fit_state(z, 0.7, kernel=kernel), q)
        )
        np.testing.assert_allclose(fitted(jnp.asarray(x, jnp.float32)), got, rtol=1e-4)


def test_user_kernel_samples_and_cdf():
    kernel = Sech2Kernel()
    kde = jaxkde.KDE(kernel, bandwidth=1.0).fit(np.zeros((1, 1)))
    # 1-D: sech^2 / 2 is the logistic density of scale 1/2.
    draws = kde.sample(20_000, key=0)[:, 0]
    assert stats.kstest(draws, stats.logistic(scale=0.5).cdf).pvalue > 1e-3
    u = np.array([-30.0, -8.0, -1.0, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(kde.log_cdf(u[:, None]), stats.logistic(scale=0.5).logcdf(u),
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    # 3-D: each coordinate's variance is the documented one.
    u3 = np.asarray(kernel.sample_unit(jax.random.key(1), (100_000, 3), jnp.float32))
    np.testing.assert_allclose(u3.var(0), kernel.coordinate_variance(3), rtol=0.03)


def test_user_kernel_learns_a_bandwidth():
    x = np.random.default_rng(2).normal(size=(300, 2))
    kde = jaxkde.KDE(Sech2Kernel(), bandwidth="cv").fit(x)
    assert kde.bandwidth_fit_.status in ("converged", "max_steps") or np.isfinite(
        kde.bandwidth_[0, 0])  # fmt: skip
    assert 0.05 < np.sqrt(kde.bandwidth_[0, 0]) < 2.0


@dataclasses.dataclass(frozen=True)
class _WrongMass(Sech2Kernel):
    name: str = "wrong"

    def log_radial_moment(self, dim):
        return 0.0  # right in 1-D only


@dataclasses.dataclass(frozen=True)
class _NaNProfile(Sech2Kernel):
    name: str = "nan"

    def log_profile(self, sq_dist):
        return jnp.log(1.0 - sq_dist)  # NaN beyond 1


@dataclasses.dataclass(frozen=True, eq=False)
class _Unhashable(Sech2Kernel):
    name: str = "unhashable"
    __hash__ = None


@pytest.mark.parametrize(
    ("kernel", "p", "error", "match"),
    [(_WrongMass(), 2, ValueError, r"log_radial_moment\(2\) = 0.0"),
     (_NaNProfile(), 2, ValueError, "never NaN"),
     (Sech2Kernel(norm=1.0), 3, ValueError, "disagrees with the kernel's own norm"),
     ("sech2", 2, ValueError, "or a jaxkde.Kernel")],
)  # fmt: skip
def test_user_kernels_are_checked(kernel, p, error, match):
    with pytest.raises(error, match=match):
        jaxkde.KDE(kernel, bandwidth=1.0, p=p).fit(np.zeros((3, 2)) + np.arange(3)[:, None])


def test_unhashable_kernels_are_refused():
    with pytest.raises(TypeError, match="must be hashable"):
        jaxkde.get_kernel(_Unhashable())
