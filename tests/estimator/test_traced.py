"""The traceable fit: host equality, gradients, vmap over datasets, bootstrap, bad input."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import RTOL, brute_log_density
from scipy import stats

import jaxkde
from jaxkde import KDE, get_kernel
from jaxkde.estimator.traced import (
    bootstrap_band,
    bootstrap_log_density,
    fit_state,
    loo_log_density,
    traced_log_density,
)

KERNELS = ["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]
# Kernels whose log profile has a derivative where it is finite (not the tophat).
SMOOTH = ["gaussian", "epanechnikov", "exponential", "linear", "cosine"]
BANDWIDTHS = ["scott", "silverman", "scott_full", "silverman_full", "identity", 0.8,
              "vector", "matrix"]  # fmt: skip


def _bandwidth(spec, d, rng):
    if spec == "vector":
        return rng.uniform(0.5, 1.5, d)
    if spec == "matrix":
        a = rng.normal(size=(d, d))
        return 0.3 * a @ a.T + 0.5 * np.eye(d)
    return spec


def _host_kde(kernel, bandwidth, x, w=None):
    if kernel == "univariate_gaussian":
        return KDE(kernel=kernel, univariate_bandwidth=bandwidth).fit(x, sample_weight=w)
    return KDE(kernel=kernel, bandwidth=bandwidth).fit(x, sample_weight=w)


def _gaussian_fast(kernels):
    """The kernels as parameters, all but the gaussian one in the slow tier."""
    return [pytest.param(k, marks=() if k == "gaussian" else pytest.mark.slow) for k in kernels]


# A rule, a full rule and a matrix with the gaussian kernel in 5-D in the fast tier; every
# other kernel, bandwidth and dimension in the slow one.
CASES = [
    pytest.param(kernel, spec, d, id=f"{kernel}-{spec}-{d}d",
                 marks=() if kernel == "gaussian" and d == 5
                 and spec in ("scott", "scott_full", "matrix") else pytest.mark.slow)
    for kernel in KERNELS
    for spec in BANDWIDTHS
    for d in (1, 5)
]  # fmt: skip


@pytest.mark.parametrize(("kernel", "spec", "d"), CASES)
def test_fit_state_under_jit_scores_as_the_host_fit(dtype, kernel, spec, d):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(300, d)) + 3.0
    w = rng.uniform(0.2, 2.0, 300)
    q = x[:40] + 0.3 * rng.normal(size=(40, d))
    bw = _bandwidth(spec, d, rng)
    host = _host_kde(kernel, bw, x.astype(dtype), w)
    want = host.score_samples(q.astype(dtype))
    state = jax.jit(lambda x, w: fit_state(x, bw, weights=w, kernel=kernel))(
        jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    )
    assert state.dtype == dtype and state.points.shape[-1] == d
    np.testing.assert_allclose(state.bandwidth_matrix(), host.state_.bandwidth_matrix(),
                               rtol=20 * RTOL[dtype])  # fmt: skip
    got = np.asarray(jax.jit(traced_log_density)(state, jnp.asarray(q, dtype)))
    inside = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), inside)
    # Compact kernels near their support's edge amplify the bandwidth's rounding.
    tol = 20 * RTOL[dtype] if kernel in ("gaussian", "exponential", "tophat") else 1e-3
    if dtype == "float64":
        tol = 1e-9
    np.testing.assert_allclose(got[inside], want[inside], rtol=tol, atol=tol)


def test_univariate_kernel_and_p_norms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    q = rng.normal(size=(20, 3)).astype(np.float32)
    for p in (1, 2, math.inf):
        host = KDE(kernel="univariate_gaussian", univariate_bandwidth=0.7, p=p).fit(x)
        state = fit_state(x, 0.7, kernel="univariate_gaussian", p=p)
        np.testing.assert_allclose(traced_log_density(state, q), host.score_samples(q),
                                   rtol=1e-5)  # fmt: skip


def _brute_jax(x, h, w, q, kernel, loo=False):
    """float64 brute force in JAX: log sum_i w_i K_H(q - x_i), differentiable; with ``loo``
    (``q`` is ``x``) each row's own term left out and the weights renormalised."""
    d = x.shape[1]
    chol = jnp.linalg.cholesky(h) if h.ndim == 2 else jnp.diag(jnp.sqrt(h))
    diff = (q[:, None, :] - x[None]).reshape(-1, d)
    z = jax.scipy.linalg.solve_triangular(chol, diff.T, lower=True).T
    d2 = jnp.sum(z * z, -1).reshape(q.shape[0], x.shape[0])
    log_w = jnp.log(w / w.sum())
    log_det = jnp.sum(jnp.log(jnp.diag(chol)))
    terms = log_w + kernel.log_profile(d2)
    if loo:
        terms = jnp.where(jnp.eye(x.shape[0], dtype=bool), -jnp.inf, terms)
    lse = jax.scipy.special.logsumexp(terms, axis=1)
    if loo:
        lse = lse - jnp.log1p(-w / w.sum())
    return lse + kernel.log_normalizer(d, log_det)


def _problem(d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, d))
    a = rng.normal(size=(d, d))
    h = 0.2 * a @ a.T + 3.0 * d * np.eye(d)  # wide: every point inside some compact support
    w = rng.uniform(0.5, 2.0, 60)
    q = x[:6] + 0.1 * rng.normal(size=(6, d))
    return x, h, w, q


@pytest.mark.parametrize("kernel", _gaussian_fast(SMOOTH))
# Direct differences (2-D), and the checked matrix product with its custom derivative (12-D).
@pytest.mark.parametrize("d", [2, pytest.param(12, marks=pytest.mark.slow)])
def test_gradients_equal_those_of_a_float64_brute_force(kernel, d):
    with jax.enable_x64(True):
        x, h, w, q = (jnp.asarray(a) for a in _problem(d))
        kern = get_kernel(kernel)

        def ours(x, h, w):
            return jnp.sum(traced_log_density(fit_state(x, h, weights=w, kernel=kernel), q))

        def ours_loo(x, h, w):
            return jnp.sum(loo_log_density(fit_state(x, h, weights=w, kernel=kernel), x))

        def brute(x, h, w):
            return jnp.sum(_brute_jax(x, h, w, q, kern))

        def brute_loo(x, h, w):
            return jnp.sum(_brute_jax(x, h, w, x, kern, loo=True))

        for f, ref in ((ours, brute), (ours_loo, brute_loo)):
            assert np.isfinite(float(f(x, h, w)))
            np.testing.assert_allclose(f(x, h, w), ref(x, h, w), rtol=1e-12)
            got = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(x, h, w)
            want = jax.grad(ref, argnums=(0, 1, 2))(x, h, w)
            for name, g, r in zip("XHw", got, want, strict=True):
                scale = np.max(np.abs(r))
                assert np.max(np.abs(g - r)) <= 1e-10 * scale, (f.__name__, name)


def _directional(f, args, directions, eps=1e-4):
    """Fourth-order central difference of ``f`` along ``directions`` (one per argument)."""

    def at(t):
        return float(f(*(a + t * v for a, v in zip(args, directions, strict=True))))

    return (-at(2 * eps) + 8 * at(eps) - 8 * at(-eps) + at(-2 * eps)) / (12 * eps)


@pytest.mark.parametrize("kernel", _gaussian_fast(SMOOTH))
@pytest.mark.parametrize("loo", [False, True], ids=["density", "leave-one-out"])
def test_gradients_match_central_differences(kernel, loo):
    with jax.enable_x64(True):
        x, h, w, q = (jnp.asarray(a) for a in _problem(3, seed=1))
        rng = np.random.default_rng(2)
        s = rng.normal(size=(3, 3))

        def f(x, h, w):
            state = fit_state(x, h, weights=w, kernel=kernel)
            out = loo_log_density(state, x) if loo else traced_log_density(state, q)
            return jnp.sum(out)

        assert np.isfinite(float(f(x, h, w)))
        grads = jax.grad(f, argnums=(0, 1, 2))(x, h, w)
        # Each argument alone, along a random direction (H along a symmetric one).
        directions = [rng.normal(size=x.shape), s + s.T, rng.normal(size=w.shape)]
        for i, v in enumerate(directions):
            dirs = [jnp.zeros_like(a) for a in (x, h, w)]
            dirs[i] = jnp.asarray(v)
            want = _directional(f, (x, h, w), dirs)
            got = float(jnp.sum(grads[i] * dirs[i]))
            assert abs(got - want) <= 1e-6 * abs(want), ("XHw"[i], got, want)
        # A Cholesky factor L of H = L L^T, along a lower-triangular direction.
        chol = jnp.linalg.cholesky(h)

        def by_chol(c):
            return f(x, c @ c.T, w)

        v = jnp.tril(jnp.asarray(rng.normal(size=(3, 3))))
        want = _directional(by_chol, (chol,), (v,))
        got = float(jnp.sum(jax.grad(by_chol)(chol) * v))
        assert abs(got - want) <= 1e-6 * abs(want), ("L", got, want)


def test_loo_log_density_is_the_renormalised_brute_force(dtype):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 2))
    w = rng.uniform(0.1, 3.0, 150)
    state = fit_state(jnp.asarray(x, dtype), "scott", weights=jnp.asarray(w, dtype))
    h = state.bandwidth_matrix()
    got = np.asarray(loo_log_density(state, jnp.asarray(x, dtype)))
    want = np.empty(150)
    for i in range(150):
        keep = np.arange(150) != i
        want[i] = brute_log_density(x[keep], x[i : i + 1], h, w[keep])[0]
    np.testing.assert_allclose(got, want, rtol=20 * RTOL[dtype])


def test_vmap_over_datasets_equals_one_fit_each():
    rng = np.random.default_rng(4)
    xs = rng.normal(size=(8, 100, 2)).astype(np.float32) * rng.uniform(0.5, 2, (8, 1, 1))
    q = rng.normal(size=(30, 2)).astype(np.float32)

    @jax.jit
    @jax.vmap
    def scores(x):
        return traced_log_density(fit_state(x, "scott_full"), q)

    got = np.asarray(scores(xs))
    for b in range(8):
        want = KDE(bandwidth="scott_full").fit(xs[b]).score_samples(q)
        np.testing.assert_allclose(got[b], want, rtol=2e-5, atol=2e-5)


def test_fit_state_on_offset_data_is_accurate():
    """Offset 1e4, spread 1: the compensated centre keeps float32 log densities right."""
    rng = np.random.default_rng(5)
    x = 1e4 + rng.normal(size=(2000, 2))
    q = 1e4 + rng.normal(size=(50, 2))
    state = jax.jit(fit_state)(jnp.asarray(x, jnp.float32))
    got = np.asarray(traced_log_density(state, jnp.asarray(q, jnp.float32)))
    x32 = x.astype(np.float32).astype(np.float64)
    want = brute_log_density(x32, q.astype(np.float32), state.bandwidth_matrix())
    # The queries' float32 rounding (0.5 ulp of 1e4 = 5e-4) is the error left.
    np.testing.assert_allclose(got, want, atol=1e-3)
    mean32 = np.asarray(state.mean, np.float64)
    assert np.all(np.abs(mean32 - x32.mean(0)) <= 2 * np.spacing(np.float32(1e4)))


def test_nan_inside_a_trace_propagates_and_is_refused_outside():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 2)).astype(np.float32)
    q = rng.normal(size=(5, 2)).astype(np.float32)
    bad = x.copy()
    bad[7, 1] = np.nan
    out = jax.jit(lambda x: traced_log_density(fit_state(x), q))(bad)
    assert np.all(np.isnan(out))  # documented: NaN data give NaN everywhere, never a number
    with pytest.raises(ValueError, match="X must be finite"):
        fit_state(bad)
    not_pd = np.array([[1.0, 2.0], [2.0, 1.0]], np.float32)
    out = jax.jit(lambda h: traced_log_density(fit_state(x, h), q))(not_pd)
    assert np.all(np.isnan(out))
    with pytest.raises(ValueError, match=r"positive.definite"):
        fit_state(x, not_pd)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bandwidth": "isj"}, "bandwidth must be one of"),
        ({"bandwidth": -1.0}, "bandwidth must be positive"),
        ({"bandwidth": np.ones(3)}, "one scale h per feature"),
        ({"weights": np.ones(4)}, r"weights must have shape \(50,\)"),
        ({"weights": -np.ones(50)}, "non-negative"),
        ({"kernel": "box"}, "kernel must be one of"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_fit_state_errors_name_the_argument(kwargs, match):
    x = np.random.default_rng(7).normal(size=(50, 2)).astype(np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        fit_state(x, **kwargs)


def test_a_constant_feature_is_floored_as_the_host_does():
    rng = np.random.default_rng(8)
    x = np.column_stack([rng.normal(size=100), np.full(100, 2.0)])
    with pytest.warns(RuntimeWarning):
        host = KDE().fit(x)
    state = fit_state(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(state.bandwidth_matrix(), host.state_.bandwidth_matrix(),
                               rtol=1e-5)  # fmt: skip
    q = x[:5]
    np.testing.assert_allclose(traced_log_density(state, q), host.score_samples(q), rtol=1e-4)


def test_bootstrap_log_density_equals_scipy_on_the_same_resamples():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300, 1))
    grid = np.linspace(-3, 3, 64)[:, None]
    key = jax.random.key(3)
    x32, grid32 = jnp.asarray(x, jnp.float32), jnp.asarray(grid, jnp.float32)
    got = np.asarray(bootstrap_log_density(x32, grid32, key, n_resamples=20, batch=7))
    keys = jax.random.split(key, 20)
    for b in (0, 6, 7, 19):  # across batch boundaries
        rows = np.asarray(jax.random.choice(keys[b], 300, (300,), replace=True))
        want = stats.gaussian_kde(x[rows, 0]).logpdf(grid[:, 0])
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)


def test_bootstrap_band_brackets_the_density():
    rng = np.random.default_rng(10)
    x = rng.normal(size=400)
    grid = np.linspace(-2, 2, 41)
    band = bootstrap_band(x, grid, n_resamples=200, level=0.9, seed=1)
    assert band.lower.shape == band.upper.shape == band.density.shape == (41,)
    assert np.all(band.lower <= band.upper)
    inside = (band.lower <= band.density) & (band.density <= band.upper)
    assert inside.mean() >= 0.95
    # The band's half width near the mode is about 1.645 bootstrap standard errors.
    sd = np.std(np.exp(np.asarray(bootstrap_log_density(
        jnp.asarray(x[:, None], jnp.float32), jnp.asarray(grid[:, None], jnp.float32),
        jax.random.key(1), n_resamples=200))), axis=0)  # fmt: skip
    width = (band.upper - band.lower)[20]
    assert 0.7 * 2 * 1.645 * sd[20] <= width <= 1.3 * 2 * 1.645 * sd[20]
    with pytest.raises(ValueError, match="level"):
        bootstrap_band(x, grid, level=1.0)


def test_log_density_of_a_traced_state_whitens_on_the_device():
    """``jaxkde.log_density`` takes the device path when the state is traced, even for host
    queries (it used to read the traced state back to the host and fail)."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    q = x[:5] + 0.1
    got = jax.jit(lambda x: jaxkde.log_density(fit_state(x), q))(x)
    np.testing.assert_allclose(got, traced_log_density(fit_state(x), q), rtol=1e-6)
    np.testing.assert_allclose(got, KDE().fit(x).score_samples(q), rtol=1e-5)


def test_sampling_a_traced_fit_under_jit():
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(1000, 2)) * [1.0, 3.0] + [5.0, 0.0]).astype(np.float32)
    draw = jax.jit(lambda x, key: jaxkde.sample(fit_state(x), key, 40_000))
    s = np.asarray(draw(x, jax.random.key(0)), np.float64)
    h = np.diag(fit_state(x).bandwidth_matrix())  # Scott's diagonal H
    want = np.sqrt(x.astype(np.float64).var(0, ddof=1) + h)  # data spread plus the kernel's
    np.testing.assert_allclose(s.std(0), want, rtol=0.02)
    assert np.all(np.abs(s.mean(0) - x.mean(0)) <= 0.05 * want)


def test_public_names():
    for name in ("fit_state", "traced_log_density", "loo_log_density", "bootstrap_band",
                 "bootstrap_log_density", "BootstrapBand"):  # fmt: skip
        assert name in jaxkde.__all__ and getattr(jaxkde, name) is not None
