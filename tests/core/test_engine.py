"""The blocked log-sum-exp engine against float64 brute force; memory and compilation."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import RTOL, brute_log_density
from scipy.special import logsumexp

import jaxkde
from jaxkde.core.engine import pairwise_sq_distances
from jaxkde.core.state import build_state


def _bandwidth(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "scalar":
        return np.full(d, 0.7**2)
    if kind == "diagonal":
        return rng.uniform(0.3, 1.2, size=d) ** 2
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.3 * np.eye(d)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scalar", "diagonal", "full"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("chunk", "block"), [(64, 32), (50, 37), (1000, None)])
def test_log_density_matches_brute_force(dtype, kind, weighted, chunk, block):
    rng = np.random.default_rng(0)
    n, m, d = 203, 71, 4
    x = rng.normal(size=(n, d)) * [1.0, 2.0, 0.5, 1.5] + 3.0
    q = rng.normal(size=(m, d)) * 1.5 + 3.0
    w = rng.uniform(0, 2, size=n) if weighted else None
    if weighted:
        w[:5] = 0.0  # zero weights are legal and contribute nothing
    h = _bandwidth(kind, d, rng)
    state = build_state(
        jnp.asarray(x, dtype), None if w is None else jnp.asarray(w, dtype),
        h, jaxkde.get_kernel("gaussian"), chunk_size=chunk,
    )  # fmt: skip
    got = np.asarray(jaxkde.log_density(state, jnp.asarray(q, dtype), block_size=block))
    want = brute_log_density(x, q, h, w)
    assert got.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype])


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov"])
def test_cache_sized_sub_chunks_keep_masks_factors_and_grids(dtype, kernel, monkeypatch):
    """On the CPU the direct path (1-3 dimensions) cuts each chunk into sub-chunks whose terms
    fit in cache: the leave-one-out masks, adaptive factors and bandwidth grids must still
    meet the right rows, as a float64 brute force says."""
    from jaxkde.core import engine

    rng = np.random.default_rng(7)
    n, m, d = 300, 40, 2
    x = rng.normal(size=(n, d)) * [1.0, 3.0] + [5.0, -2.0]
    h = np.array([0.4, 2.5])
    lf = rng.uniform(-0.4, 0.4, size=n)
    ker = jaxkde.get_kernel(kernel)
    state = build_state(jnp.asarray(x, dtype), None, h, ker, chunk_size=96, log_factors=lf)
    grid = jnp.asarray([1.0, 0.25, 3.0], dtype)
    q_hi, q_lo = jaxkde.whiten_queries(state, x[:m])
    itemsize = np.dtype(dtype).itemsize
    monkeypatch.setattr(engine, "DIRECT_CACHE_BYTES", 24 * m * 3 * itemsize)
    c = state.points.shape[1]
    sub = engine._cache_sized(state, m * 3, itemsize).points.shape[1]
    assert 6 <= sub <= 24 < c and c % sub == 0  # every chunk is cut, into equal parts
    got = np.asarray(engine._logsumexp(state, q_hi, q_lo, "highest", jnp.arange(m), grid=grid))

    d2 = np.sum((x[:m, None, :] - x[None, :, :]) ** 2 / h, axis=-1) * np.exp(-2 * lf)
    want = np.empty((m, 3))
    for j, s in enumerate(np.asarray(grid, np.float64)):
        terms = -np.log(n) - d * lf + np.asarray(ker.log_profile(jnp.asarray(d2 * s)), np.float64)
        np.fill_diagonal(terms[:, :m], -np.inf)  # each query is row i: its own term is left out
        want[:, j] = logsumexp(terms, axis=1)
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite)
    np.testing.assert_allclose(got[finite], want[finite], rtol=10 * RTOL[dtype], atol=1e-5)


def test_chunk_padding_and_all_minus_inf_chunks_give_no_nan(dtype):
    """A chunk whose every weight is zero (log weight -inf) must leave the result untouched."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    w = np.ones(40)
    w[:16] = 0.0  # the whole first chunk of 16 rows has zero weight
    q = rng.normal(size=(9, 3))
    state = build_state(
        jnp.asarray(x, dtype),
        jnp.asarray(w, dtype),
        np.ones(3),
        jaxkde.get_kernel("gaussian"),
        chunk_size=16,
    )
    assert state.points.shape == (3, 16, 3)  # 40 rows -> 3 chunks of 16, 8 rows of padding
    got = np.asarray(jaxkde.log_density(state, jnp.asarray(q, dtype), block_size=4))
    np.testing.assert_allclose(got, brute_log_density(x[16:], q, np.ones(3)), rtol=RTOL[dtype])


def test_far_queries_stay_finite_in_float32():
    """Log densities thousands of nats down: every kernel term underflows, the log does not."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 10)).astype(np.float32)
    q = x[:5] + 40.0
    state = build_state(jnp.asarray(x), None, np.full(10, 0.25), jaxkde.get_kernel("gaussian"))
    got = np.asarray(jaxkde.log_density(state, q))
    want = brute_log_density(x, q, np.full(10, 0.25))
    assert np.all(want < -20_000)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("norm", [1.0, 2.0, np.inf])
def test_pairwise_sq_distances(norm):
    rng = np.random.default_rng(3)
    q, z = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    got = pairwise_sq_distances(
        jnp.asarray(q), jnp.sum(jnp.asarray(q) ** 2, 1), jnp.asarray(z),
        jnp.sum(jnp.asarray(z) ** 2, 1), norm,
    )  # fmt: skip
    want = np.linalg.norm(q[:, None] - z[None], ord=norm, axis=-1) ** 2
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_identical_points_clamp_to_zero_distance():
    """|q|^2 + |z|^2 - 2 q.z can round below zero; the engine clamps it."""
    z = jnp.asarray(np.random.default_rng(4).normal(size=(64, 30)) * 100, jnp.float32)
    d2 = pairwise_sq_distances(z, jnp.sum(z * z, 1), z, jnp.sum(z * z, 1))
    assert float(jnp.min(d2)) >= 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kernel", "p"), [("gaussian", 2), ("univariate_gaussian", 1), ("univariate_gaussian", "inf")]
)
def test_peak_memory_is_bounded_by_block_sizes(kernel, p):
    """XLA's own accounting of temporaries: O(block * chunk), never block * chunk * dim.

    A backend may add a fixed workspace for its matrix-product library (cuBLAS on GPUs), so
    the bound is on how temporaries grow with the dimension: only (block, d) and (chunk, d)
    buffers may grow, nothing of shape (block, chunk, d).
    """
    block, chunk = 256, 512

    def temp_bytes(d):
        x = np.random.default_rng(5).random((4 * chunk, d), dtype=np.float32)
        kde = jaxkde.KDE(kernel, bandwidth=1.0, p=p, chunk_size=chunk).fit(x)
        hi, lo = jaxkde.whiten_queries(kde.state_, x[:block])
        compiled = jaxkde.log_density_program.lower(kde.state_, hi, lo).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(392), temp_bytes(784)
    growth = large - small
    assert growth <= 8 * 4 * (block + chunk) * 392, (small, large)
    assert growth < block * chunk * 392 * 4 / 50
    assert large < 64 * 2**20 + 8 * 4 * (block * chunk + block * 784)


@pytest.mark.slow
def test_memory_does_not_grow_with_data_size():
    """Doubling the data adds chunks to the scan, not temporaries."""
    temps = []
    for n in (2048, 8192):
        x = np.random.default_rng(6).random((n, 64), dtype=np.float32)
        kde = jaxkde.KDE(bandwidth=1.0, chunk_size=512).fit(x)
        hi, lo = jaxkde.whiten_queries(kde.state_, x[:256])
        c = jaxkde.log_density_program.lower(kde.state_, hi, lo).compile()
        temps.append(c.memory_analysis().temp_size_in_bytes)
    assert temps[1] <= temps[0] * 1.05 + 4096


class _CompileCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.count += 1


def test_second_call_with_new_data_of_same_shape_does_not_recompile():
    counter = _CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        rng = np.random.default_rng(7)
        x1, x2 = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) + 1
        q1, q2 = rng.normal(size=(100, 6)), rng.normal(size=(100, 6))
        kde = jaxkde.KDE(bandwidth="scott", chunk_size=128, batch_size=64)
        kde.fit(x1).score_samples(q1)
        first = counter.count
        assert first > 0
        kde.fit(x2).score_samples(q2)  # new data and queries, same shapes
        kde.sample(5, key=0)
        kde.sample(5, key=1)
        before = counter.count
        kde.score_samples(q1)
        kde.sample(5, key=2)
        assert counter.count == before
        # The only new compilations after refitting are those of the sampler's first use.
        jaxkde.KDE(bandwidth="scott", chunk_size=128, batch_size=64).fit(x1).score_samples(q2)
        assert counter.count == before
    finally:
        jax.monitoring.unregister_event_duration_listener(counter)


def test_query_count_changes_reuse_block_programs():
    """Many query counts compile at most one program per block bucket."""
    counter = _CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        rng = np.random.default_rng(8)
        kde = jaxkde.KDE(bandwidth=1.0, chunk_size=128, batch_size=64).fit(
            rng.normal(size=(300, 3))
        )
        for m in (64, 128, 192, 640):  # multiples of the block: a single program
            kde.score_samples(rng.normal(size=(m, 3)))
        settled = counter.count
        for m in (64, 256, 1024):
            kde.score_samples(rng.normal(size=(m, 3)))
        assert counter.count == settled
    finally:
        jax.monitoring.unregister_event_duration_listener(counter)


def test_precision_argument_is_validated():
    state = jaxkde.KDE(bandwidth=1.0).fit(np.zeros((3, 2)) + np.arange(3)[:, None]).state_
    with pytest.raises(ValueError, match="precision"):
        jaxkde.log_density(state, jnp.zeros((1, 2)), precision="tf32")


@pytest.mark.parametrize(
    "params", [{"bandwidth": 1.0}, {"bandwidth": "scott_full", "zero_variance": "subspace"}]
)
def test_matrix_products_run_at_the_stated_precision(params):
    """Every product in the program is HIGHEST by default (no TF32 on GPUs), DEFAULT on request
    for the distance product only; whitening and projection (on the device, inside a trace)
    always stay HIGHEST."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(64, 5))
    x = np.column_stack([x, x[:, 0] + x[:, 1]])  # collinear: the full rule projects (basis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kde = jaxkde.KDE(**params).fit(x)
    assert kde.state_.dim > jaxkde.core.engine.DIRECT_MAX_DIM  # the matrix-product path

    def dots(precision):
        traced = jax.jit(lambda q: jaxkde.log_density(kde.state_, q, precision=precision))
        text = traced.lower(jnp.zeros((8, 6), jnp.float32)).as_text()
        return [line for line in text.splitlines() if "dot_general" in line]

    highest = dots("highest")
    assert highest and all("precision = [HIGHEST, HIGHEST]" in line for line in highest)
    default = dots("default")
    assert sum("precision = [DEFAULT, DEFAULT]" in line for line in default) == 1
    text = jaxkde.sample_with_centres.lower(kde.state_, jax.random.key(0), 4, 1.0).as_text()
    assert all("HIGHEST" in line for line in text.splitlines() if "dot_general" in line)


def test_default_block_sizes_follow_the_backend():
    assert jaxkde.default_block_sizes("cpu") == jaxkde.BLOCK_SIZES["cpu"]
    for platform in ("gpu", "cuda", "rocm", "tpu"):
        assert jaxkde.default_block_sizes(platform) == jaxkde.BLOCK_SIZES["gpu"]
    assert jaxkde.default_block_sizes() == jaxkde.default_block_sizes(jax.default_backend())
    chunk = jaxkde.default_block_sizes()[1]
    x = np.random.default_rng(0).normal(size=(chunk + 5, 2)).astype(np.float32)
    kde = jaxkde.KDE(bandwidth=0.5).fit(x)
    assert kde.batch_size is None and kde.chunk_size is None
    assert kde.state_.points.shape[0] == 2 and kde.state_.points.shape[1] <= chunk


@pytest.mark.parametrize("n_parts", [1, 3])
def test_combine_log_sums_is_an_exact_log_sum_exp(n_parts):
    from scipy.special import logsumexp

    rng = np.random.default_rng(n_parts)
    parts = rng.normal(scale=300.0, size=(n_parts, 5))
    parts[:, 0] = -np.inf  # every part empty for this query
    parts[0, 1] = -np.inf  # one empty part

    def finite_total(p):
        out = jaxkde.combine_log_sums(p)
        return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0))

    with jax.enable_x64(True):
        got = np.asarray(jaxkde.combine_log_sums(jnp.asarray(parts)))
        grad = np.asarray(jax.grad(finite_total)(jnp.asarray(parts)))
    with np.errstate(divide="ignore"):
        want = logsumexp(parts, axis=0)
    empty = ~np.isfinite(want)
    assert empty[0] and np.all(got[empty] == -np.inf)
    np.testing.assert_allclose(got[~empty], want[~empty], rtol=1e-13)
    assert np.all(np.isfinite(grad))
    # d/dparts is the softmax over parts: columns sum to 1, or to 0 where every part is empty.
    np.testing.assert_allclose(grad.sum(axis=0), np.where(empty, 0.0, 1.0), rtol=1e-12)


# ----------------------------------------------------------------- accuracy at the edges


def _brute_with_scale(x, q, h, kernel="gaussian"):
    """float64 log density of an isotropic KDE and the scale s(q) of the stated bound:
    ``max(|log f|, |largest log term|, 1)``. Direct differences, exact for these inputs."""
    kern = jaxkde.get_kernel(kernel)
    x, q = np.asarray(x, np.float64), np.asarray(q, np.float64)
    n, d = x.shape
    logs, tops = [], []
    for start in range(0, len(q), 8):
        d2 = (((q[start : start + 8, None, :] - x[None]) / h) ** 2).sum(-1)
        with jax.enable_x64(True):
            terms = np.asarray(kern.log_profile(jnp.asarray(d2))) - math.log(n)
        with np.errstate(divide="ignore"):
            logs.append(logsumexp(terms, axis=1))
        tops.append(terms.max(axis=1))
    log_f = np.concatenate(logs) + float(kern.log_normalizer(d, d * math.log(h)))
    top = np.concatenate(tops)
    scale = np.maximum(np.maximum(np.abs(np.where(np.isfinite(log_f), log_f, 0)),
                                  np.abs(np.where(np.isfinite(top), top, 0))), 1.0)  # fmt: skip
    return log_f, scale


@pytest.mark.slow
@pytest.mark.parametrize("d", [1, 2, 50, 784])
@pytest.mark.parametrize("offset", [1e6, 1e9])
@pytest.mark.parametrize("ratio", [1e4, 1e6])
def test_any_offset_and_spread_to_bandwidth_ratio(dtype, d, offset, ratio):
    """The stated bound, |error| <= RTOL * s(q), at the issue's edges: data 1e6 to 1e9 from the
    origin, spread 1e4 to 1e6 bandwidths, queries beside data points and among them."""
    rng = np.random.default_rng(int(d + ratio) % 1000)
    n = 150 if d == 784 else 300
    x = offset + rng.normal(size=(n, d))
    h = 1.0 / ratio
    near = x[:12] + h * 0.5 * rng.normal(size=(12, d)) / math.sqrt(d)
    q = np.concatenate([near, offset + rng.normal(size=(4, d))])
    got = jaxkde.KDE(bandwidth=h).fit(x).score_samples(q)
    want, scale = _brute_with_scale(x, q, h)
    assert got.dtype == np.dtype(dtype) and not np.any(np.isnan(got))
    rtol = jaxkde.RTOL[np.dtype(dtype)]
    err = np.abs(got.astype(np.float64) - want) / scale
    assert np.all(err <= rtol), f"max error / s = {err.max():.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["gaussian", "exponential", "epanechnikov", "cosine"])
@pytest.mark.parametrize("d", [2, 50])
def test_every_kernel_keeps_the_bound_on_wide_data(kernel, d):
    """Spread 10^4 bandwidths, 10^6 from the origin, queries inside the kernels' support."""
    rng = np.random.default_rng(d)
    x = 1e6 + 1e4 * rng.normal(size=(200, d))
    q = x[:16] + 0.3 * rng.normal(size=(16, d)) / math.sqrt(d)
    got = jaxkde.KDE(kernel, bandwidth=1.0).fit(x).score_samples(q)
    want, scale = _brute_with_scale(x, q, 1.0, kernel)
    assert np.all(np.isfinite(got))
    # Compact kernels: log(1 - r^2) is ill-conditioned near the edge (the README's 1e-4).
    rtol = 1e-5 if kernel in ("gaussian", "exponential") else 1e-4
    np.testing.assert_array_less(np.abs(got - want) / scale, rtol)


def test_the_issues_examples():
    rng = np.random.default_rng(3)
    # Two 1-D clusters 1e4 apart, bandwidth 1, queries near the far one: was 0.5 nats wrong.
    x = np.concatenate([rng.normal(size=(500, 1)), rng.normal(size=(500, 1)) + 1e4])
    q = rng.normal(size=(50, 1)) + 1e4
    want, scale = _brute_with_scale(x, q, 1.0)
    got = jaxkde.KDE(bandwidth=1.0).fit(x).score_samples(q)
    assert np.max(np.abs(got - want) / scale) <= 1e-5
    # Unix timestamps over one day, bandwidths of 10 and 1 seconds: were 2-3 and 12 nats wrong.
    t = 1.7e9 + rng.uniform(0, 86400, size=(1000, 1))
    q = t[:50] + 5 * rng.normal(size=(50, 1))
    for h in (10.0, 1.0):
        want, scale = _brute_with_scale(t, q, h)
        got = jaxkde.KDE(bandwidth=h).fit(t).score_samples(q)
        assert np.max(np.abs(got - want) / scale) <= 1e-5
    # 1e6 + 1e-3 * normal: Scott's rule worked on the cast data (all constant) and failed.
    x = 1e6 + 1e-3 * rng.normal(size=(500, 1))
    kde = jaxkde.KDE().fit(x)
    h = math.sqrt(kde.bandwidth_[0, 0])
    assert h == pytest.approx(1e-3 * np.std(x - 1e6, ddof=1) / 1e-3 * 500 ** (-0.2), rel=1e-6)
    want, scale = _brute_with_scale(x, x[:50], h)
    assert np.max(np.abs(kde.score_samples(x[:50]) - want) / scale) <= 1e-5


def test_well_scaled_high_dimensional_data_needs_no_recomputation(mnist_test_images):
    """MNIST pixels at sigma = 0.2 (W1): the error account passes without a recomputation, and
    the result is within the bound (the compensated largest term makes it 10x better)."""
    from jaxkde.core.engine import _checked_gemm_logsumexp

    x = mnist_test_images[:2000] / 255.0
    q = mnist_test_images[2000:2128] / 255.0
    kde = jaxkde.KDE(bandwidth=0.2).fit(x)
    hi, lo = jaxkde.whiten_queries(kde.state_, q)
    account = jax.jit(lambda s, hi, lo: _checked_gemm_logsumexp(s, hi, lo, None, 0, False, None,
                                                                s.log_normalizer))  # fmt: skip
    _, code, _ = account(kde.state_, hi, lo)
    assert not np.any(np.asarray(code))
    want, scale = _brute_with_scale(x, q, 0.2)
    err = np.abs(kde.score_samples(q) - want) / scale
    assert err.max() <= 1e-5


def test_huge_and_tiny_values_give_minus_inf_or_an_error_never_nan(dtype):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 3))
    f32 = dtype == "float32"
    kde = jaxkde.KDE(bandwidth=0.5).fit(x)
    far = np.array([[3e38, 0.0, 0.0], [1e39, 1.0, 2.0]] if f32 else [[1e300, 0, 0], [1e200, 1, 2]])
    got = kde.score_samples(far)
    assert np.all(got == -np.inf)  # the squared distance overflows: density exactly 0
    # Tiny bandwidths: finite at the data points; elsewhere -0.5 |u|^2 / h^2, or -inf once
    # that overflows the working dtype.
    tiny = 1e-25 if f32 else 1e-140
    q = np.concatenate([x[:3], x[:3] + 0.1])
    got = jaxkde.KDE(bandwidth=tiny).fit(x).score_samples(q)
    assert np.all(np.isfinite(got[:3]))
    assert got[0] == pytest.approx(-math.log(50) - 1.5 * math.log(2 * math.pi)
                                   - 3 * math.log(tiny), rel=1e-6)  # fmt: skip
    if f32:
        assert np.all(got[3:] == -np.inf)
    else:
        np.testing.assert_allclose(got[3:], -0.5 * 0.03 / tiny**2, rtol=1e-10)
        with pytest.raises(ValueError, match="bandwidth must lie in"):
            jaxkde.KDE(bandwidth=1e-160).fit(x)
    # Values beyond the working dtype: fine relative to a rule's bandwidth, an error otherwise.
    wide = np.concatenate([x, [[1e39 if f32 else 1e150, 0.0, 0.0]]])
    assert np.all(np.isfinite(jaxkde.KDE().fit(wide).score_samples(wide[:5])))
    if f32:
        with pytest.raises(ValueError, match="overflows float32"):
            jaxkde.KDE(bandwidth=1.0).fit(wide)
    if not f32:
        with pytest.raises(ValueError, match="variance of X overflows float64"):
            jaxkde.KDE().fit(np.concatenate([x, [[1e300, 0.0, 0.0]]]))


# ------------------------------------------------------ the tiers that settle marked queries


def _near_equal_case(dtype, copies):
    """Queries each with several near-equal largest terms (``copies[j]`` near-copies of the
    query in chunk j of 64 rows) among far background rows, wide enough (|z|^2 / RTOL large)
    that the first pass's account is exceeded for every query."""
    rng = np.random.default_rng(11)
    d, m = 256, 3
    spread = 8.0 if dtype == "float32" else 600.0  # the same account / bound in both dtypes
    base = spread * rng.normal(size=(m, d))
    x = spread * rng.normal(size=(256, d))
    for j, count in enumerate(copies):  # chunk j holds rows 64 j .. 64 j + 63
        near = np.repeat(base, count, axis=0) + 0.02 * rng.normal(size=(m * count, d))
        x[64 * j : 64 * j + m * count] = near
    return x, base + 0.02 * rng.normal(size=(m, d))


def _tier_counts(state, q_hi, q_lo):
    """How many queries the first pass left to each tier, and how many each tier settled."""
    from jaxkde.core import engine

    def run(state, q_hi, q_lo):
        lse, code, part = engine._checked_gemm_logsumexp(state, q_hi, q_lo, None, 0, False, None,
                                                         state.log_normalizer)  # fmt: skip
        gemm = (state, q_hi, q_lo, None, state.log_normalizer, part._replace(worst=None))
        direct = (state, q_hi, q_lo, None, None)
        settled = engine._recompute_fwd(
            False, engine.TIERS, lse, code, part.worst, gemm, direct, (None, 0)
        )
        return code, settled[1][2]

    code, settled = jax.jit(run)(state, q_hi, q_lo)
    return np.bincount(np.asarray(code), minlength=3), [int(np.sum(s)) for s in settled]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("copies", "tier"),
    [((3,), 0), ((2, 2), 1), ((20, 20), 2)],
    ids=["one-chunk", "two-chunks", "beyond-exact-terms"],
)
def test_marked_queries_are_settled_by_the_cheapest_tier_that_can(dtype, copies, tier):
    """Near-equal largest terms in one chunk are settled by recomputing that chunk; spread over
    two, by every chunk with more exact terms; more of them than those exact terms, by direct
    differences. Each answer within the stated bound of a float64 brute force."""
    x, q = _near_equal_case(dtype, copies)
    kde = jaxkde.KDE(bandwidth=1.0, chunk_size=64).fit(x)
    q_hi, q_lo = jaxkde.whiten_queries(kde.state_, q)
    codes, settled = _tier_counts(kde.state_, q_hi, q_lo)
    assert codes[jaxkde.core.engine._REFINE] == len(q)  # every query marked by the first pass
    assert settled[tier] == len(q) and sum(settled) == len(q), settled
    got = kde.score_samples(q)
    want, scale = _brute_with_scale(x, q, 1.0)
    err = np.abs(got.astype(np.float64) - want) / scale
    assert np.all(err <= jaxkde.RTOL[np.dtype(dtype)]), f"max error / s = {err.max():.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("copies", [(3,), (2, 2), (20, 20)], ids=["tier1", "tier2", "tier3"])
def test_gradients_flow_through_every_tier(dtype, copies):
    """d log f / dq of marked queries (recomputed by a tier) against the float64 softmax
    formula: -sum_i p_i (q - x_i) / h^2."""
    x, q = _near_equal_case(dtype, copies)
    state = jaxkde.KDE(bandwidth=1.0, chunk_size=64).fit(x).state_
    grad = jax.jit(jax.grad(lambda q: jnp.sum(jaxkde.log_density(state, q))))
    got = np.asarray(grad(jnp.asarray(q, dtype)), np.float64)
    diff = q[:, None, :] - x[None, :, :]
    terms = -0.5 * np.sum(diff**2, axis=-1)
    p = np.exp(terms - logsumexp(terms, axis=1, keepdims=True))
    want = -np.einsum("mn,mnd->md", p, diff)
    # A float32 query whitened on the device moves by ~eps |q|: the softmax moves with it.
    tol = 2e-2 if dtype == "float32" else 1e-6
    np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max())
