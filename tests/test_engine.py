"""The blocked log-sum-exp engine against float64 brute force; memory and compilation."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import RTOL, brute_log_density

import jaxkde
from jaxkde.engine import pairwise_sq_distances
from jaxkde.state import build_state


def _bandwidth(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "scalar":
        return np.full(d, 0.7**2)
    if kind == "diagonal":
        return rng.uniform(0.3, 1.2, size=d) ** 2
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.3 * np.eye(d)


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
        compiled = jaxkde.log_density_whitened.lower(kde.state_, hi, lo).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(392), temp_bytes(784)
    growth = large - small
    assert growth <= 8 * 4 * (block + chunk) * 392, (small, large)
    assert growth < block * chunk * 392 * 4 / 50
    assert large < 64 * 2**20 + 8 * 4 * (block * chunk + block * 784)


def test_memory_does_not_grow_with_data_size():
    """Doubling the data adds chunks to the scan, not temporaries."""
    temps = []
    for n in (2048, 8192):
        x = np.random.default_rng(6).random((n, 64), dtype=np.float32)
        kde = jaxkde.KDE(bandwidth=1.0, chunk_size=512).fit(x)
        hi, lo = jaxkde.whiten_queries(kde.state_, x[:256])
        c = jaxkde.log_density_whitened.lower(kde.state_, hi, lo).compile()
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
    assert kde.state_.dim > jaxkde.engine.DIRECT_MAX_DIM  # the matrix-product path

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
