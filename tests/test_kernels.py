"""Kernels: the seed's univariate kernel exactly, normalisation, unit samplers, names."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import RTOL, brute_univariate_log_density
from scipy import integrate, stats

import jaxkde
from jaxkde.kernels import GaussianKernel, UnivariateGaussianKernel


@pytest.mark.parametrize("p", [1, 2, np.inf])
@pytest.mark.parametrize("h", [0.3, 2.0])
def test_univariate_kernel_reproduces_seed_formula(dtype, p, h):
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(150, 4)), rng.normal(size=(33, 4)) * 1.3
    kde = jaxkde.KDE(
        kernel="univariate_gaussian", univariate_bandwidth=h, p=p, chunk_size=64, batch_size=16
    )
    got = kde.fit(x.astype(dtype)).score_samples(q.astype(dtype))
    np.testing.assert_allclose(got, brute_univariate_log_density(x, q, h, p), rtol=RTOL[dtype])


def test_univariate_p2_differs_from_normalised_gaussian_by_the_documented_constant():
    rng = np.random.default_rng(1)
    x, q, h, d = rng.normal(size=(80, 6)), rng.normal(size=(10, 6)), 0.8, 6
    uni = jaxkde.KDE(kernel="univariate_gaussian", bandwidth=h).fit(x).score_samples(q)
    gauss = jaxkde.KDE(kernel="gaussian", bandwidth=h).fit(x).score_samples(q)
    np.testing.assert_allclose(
        uni - gauss, (d - 1) * (math.log(h) + 0.5 * math.log(2 * math.pi)), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("kernel", "p"),
    [
        ("gaussian", 2),
        ("univariate_gaussian", 1),
        ("univariate_gaussian", 2),
        ("univariate_gaussian", "inf"),
    ],
)
def test_one_dimensional_densities_integrate_to_one(kernel, p):
    x = np.array([[-1.0], [0.2], [0.5], [3.0]])
    kde = jaxkde.KDE(kernel, bandwidth=0.4, p=p).fit(x)
    grid = np.linspace(-8, 11, 20001)
    dens = kde.predict(grid[:, None])
    assert integrate.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("bandwidth", [0.5, [0.4, 0.9], "scott_full"])
def test_two_dimensional_gaussian_density_integrates_to_one(bandwidth):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]])
    kde = jaxkde.KDE(bandwidth=bandwidth).fit(x)
    g = np.linspace(-9, 9, 601)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    dens = kde.predict(np.column_stack([xx.ravel(), yy.ravel()])).reshape(xx.shape)
    total = integrate.trapezoid(integrate.trapezoid(dens, g, axis=1), g)
    assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("p", [1, np.inf])
def test_univariate_unit_sampler_radius_is_chi(p):
    """For density ~ exp(-||u||_p^2 / 2) in d dims, ||u||_p follows a chi law with d dof."""
    d = 5
    kern = jaxkde.get_kernel("univariate_gaussian", p)
    u = np.asarray(kern.sample_unit(jax.random.key(0), (4000, d), jnp.float32), np.float64)
    r = np.linalg.norm(u, ord=p, axis=1)
    assert stats.kstest(r, stats.chi(d).cdf).pvalue > 1e-3


@pytest.mark.parametrize("p", [1, np.inf])
def test_univariate_unit_sampler_matches_density_on_a_region(p):
    """In 2-D, the share of samples in a box equals the normalised density's mass there."""
    kern = jaxkde.get_kernel("univariate_gaussian", p)
    u = np.asarray(kern.sample_unit(jax.random.key(1), (40000, 2), jnp.float32), np.float64)

    def dens(a, b):
        r = abs(a) + abs(b) if p == 1 else max(abs(a), abs(b))
        return math.exp(-0.5 * r * r)

    total = integrate.dblquad(dens, -12, 12, -12, 12, epsabs=1e-10)[0]
    mass = integrate.dblquad(dens, 0.2, 1.5, -0.3, 0.7, epsabs=1e-10)[0] / total
    inside = (u[:, 0] > -0.3) & (u[:, 0] < 0.7) & (u[:, 1] > 0.2) & (u[:, 1] < 1.5)
    se = math.sqrt(mass * (1 - mass) / u.shape[0])
    assert abs(inside.mean() - mass) < 4 * se


def test_gaussian_unit_sampler_is_standard_normal():
    u = np.asarray(GaussianKernel().sample_unit(jax.random.key(2), (20000, 3), jnp.float32))
    np.testing.assert_allclose(u.mean(0), 0, atol=0.03)
    np.testing.assert_allclose(np.cov(u.T), np.eye(3), atol=0.04)


def test_kernel_names_and_norms():
    assert isinstance(jaxkde.get_kernel("multivariate_gaussian"), GaussianKernel)
    assert jaxkde.get_kernel("univariate_gaussian", "inf") == UnivariateGaussianKernel(norm=np.inf)
    with pytest.raises(ValueError, match=r"kernel must be one of \['gaussian'"):
        jaxkde.get_kernel("epanechnikov_typo")
    with pytest.raises(ValueError, match="p must be 1, 2 or inf"):
        jaxkde.get_kernel("univariate_gaussian", 3)
    with pytest.raises(ValueError, match="only available for kernel='univariate_gaussian'"):
        jaxkde.get_kernel("gaussian", 1)
