"""1-D sum updating: exact kernel sums against float64 brute force, on adversarial data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import jaxkde
from jaxkde.bandwidth import objectives
from jaxkde.core import sum_updating
from jaxkde.core.kernels import get_kernel
from jaxkde.core.state import whiten_queries

KERNELS = sum_updating.SUM_UPDATING_KERNELS
_NORM = {"tophat": 0.5, "epanechnikov": 0.75, "linear": 1.0, "cosine": np.pi / 4,
         "exponential": 0.5}  # fmt: skip


def _profile(kernel, d):
    """k(d) for |distance| / h = d, float64 (peak 1)."""
    return {
        "tophat": lambda: (d < 1).astype(float),
        "epanechnikov": lambda: np.clip(1 - d * d, 0, None),
        "linear": lambda: np.clip(1 - d, 0, None),
        "cosine": lambda: np.where(d < 1, np.cos(np.pi * np.minimum(d, 1) / 2), 0.0),
        "exponential": lambda: np.exp(-d),
    }[kernel]()


def _brute(x, w, q, h, kernel):
    """float64 by blocks: the kernel sum ``sum_i w_i k(|q - x_i| / h) / sum w`` (its log for the
    exponential kernel), the window's
    weight, and the weight of points whose side of the window's edge float64 rounding decides
    (``|d - 1|`` within rounding of the coordinates): the tophat may count them either way."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64) / np.sum(w)
    sums, window, edge = np.empty(len(q)), np.empty(len(q)), np.empty(len(q))
    for s in range(0, len(q), 512):
        qs = q[s : s + 512, None]
        d = np.abs(qs - x[None, :]) / h
        band = 1e-12 + 8 * np.finfo(np.float64).eps * (np.abs(qs) + np.abs(x[None, :])) / h
        if kernel == "exponential":  # log space: the terms underflow float64 far out
            sums[s : s + 512] = logsumexp(np.log(w)[None, :] - d, axis=1)
        else:
            sums[s : s + 512] = _profile(kernel, d) @ w
        window[s : s + 512] = (d < 1) @ w
        edge[s : s + 512] = (np.abs(d - 1) <= band) @ w
    return sums, window, edge


def _check(got_log, x, w, q, h, kernel, dtype):
    """Compact kernels: |f - f_ref| <= c eps (window weight), in peak-1 kernel units.
    Exponential: |log f - log f_ref| <= 1e-5 (1e-10) * max(1, |log f_ref|, log n)."""
    sums, window, edge = _brute(x, w, q, h, kernel)
    got_log = np.asarray(got_log, np.float64)
    assert not np.isnan(got_log).any()
    eps = np.finfo(dtype).eps
    if kernel == "exponential":
        want = sums + np.log(_NORM[kernel] / h)
        fin = np.isfinite(want)
        assert np.isfinite(got_log[fin]).all()
        scale = np.maximum(np.maximum(np.abs(want), 1.0), np.log(len(x)))
        tol = (1e-5 if dtype == "float32" else 1e-10) * scale
        err = np.abs(got_log - want)[fin]
        assert np.all(err <= tol[fin]), np.max(err)
        return
    got = np.exp(got_log) * h / _NORM[kernel]  # back to the normalised kernel sum
    # float64 keeps one word per coordinate: rounding of order eps * |z| moves terms too.
    centre = np.mean(x)
    spread = max(np.max(np.abs(x - centre)), np.max(np.abs(q - centre))) / h
    words = 0.0 if dtype == "float32" else 4.0 * spread
    tol = (16 + np.log2(len(x)) + words) * eps * window + (edge if kernel == "tophat" else 0.0)
    assert np.all(np.abs(got - sums) <= tol), np.max(np.abs(got - sums) - tol)
    clear = edge == 0
    # Empty windows are -inf, never rounding noise.
    assert np.array_equal((sums == 0)[clear], (got == 0)[clear])


def _data(rng, n, offset=0.0, spread=1.0):
    x = offset + spread * rng.standard_normal(n)
    x[: n // 10] = x[n // 10]  # heavy ties: a tenth of the data on one value
    x[n // 10 : n // 10 + 20] = x[-20:]  # duplicated points
    return x


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("offset", "spread", "h"), [(0.0, 1.0, 0.3), (1e6, 1e-3, 2e-4),
                                                    (0.0, 1e4, 0.5)])  # fmt: skip
def test_score_samples_match_float64_brute_force(kernel, offset, spread, h, dtype):
    rng = np.random.default_rng(0)
    x = _data(rng, 3000, offset, spread)
    w = rng.random(3000) + 0.05
    q = np.concatenate([
        x[:: 30],  # the data themselves (ties and duplicates included)
        x[:: 97] + h, x[:: 89] - h,  # exactly at the edge of a point's window
        offset + spread * 4 * rng.standard_normal(300),  # anywhere, tails included
        [offset + 1e3 * spread],  # far from everything
    ])  # fmt: skip
    kde = jaxkde.KDE(kernel, bandwidth=h).fit(x[:, None], sample_weight=w)
    got = kde.score_samples(q[:, None])
    _check(got, x, w, q, h, kernel, dtype)
    assert kde._sorted is not None  # score_samples took the sum-updating path
    if offset != 0.0 or spread != 1.0:
        return
    # The engine computes the same density away from the windows' edges.
    anywhere = q[-301:, None]
    engine = np.asarray(jaxkde.log_density(kde.state_, anywhere))
    fin = np.isfinite(engine)
    assert np.array_equal(fin, np.isfinite(got[-301:]))
    diff = np.abs(got[-301:][fin] - engine[fin])
    assert np.all(diff <= 5e-5 * np.maximum(1.0, np.abs(engine[fin])))


@pytest.mark.slow
def test_large_n():
    """n = 1e5 with many exact ties, 200 queries everywhere, every kernel, against brute force."""
    rng = np.random.default_rng(1)
    x = np.round(_data(rng, 100_000), 3)  # many exact ties from rounding
    q = rng.standard_normal(200) * 2
    h = 0.01
    for kernel in KERNELS:
        kde = jaxkde.KDE(kernel, bandwidth=h).fit(x[:, None])
        _check(kde.score_samples(q[:, None]), x, np.ones_like(x), q, h, kernel, "float32")


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["exponential", "epanechnikov"])
def test_far_clusters_and_zero_weights(kernel):
    """Two clusters 600 bandwidths apart (the centre, where padding rows sit, in the gap
    between them), zero-weight points in the gap: the exponential's tails stay exact across it,
    and zero weights count for nothing (also leave-one-out, where the objective stays finite)."""
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(-300, 1, 500), rng.normal(300, 1, 501), [0.0, 150.0, 151.0]])
    w = np.concatenate([np.ones(1001), [0.0, 0.0, 0.0]])
    q = np.linspace(-400, 400, 801)
    kde = jaxkde.KDE(kernel, bandwidth=1.0).fit(x[:, None], sample_weight=w)
    _check(kde.score_samples(q[:, None]), x[:1001], w[:1001], q, 1.0, kernel, "float32")
    xc = (x - np.average(x, weights=w)).astype(np.float32)
    with np.errstate(divide="ignore"):
        lw = jnp.asarray(np.log(w / w.sum()), jnp.float32)
    rows = jnp.arange(1001)  # the positive-weight rows, as fit_bandwidth evaluates
    args = (jnp.asarray(xc[:, None]), lw, rows, jnp.zeros((len(x), 1), jnp.float32))
    params = jnp.asarray([np.log(5.0)], jnp.float32)
    value = objectives.loo_log_likelihood(params, *args, kind="scalar", kernel=get_kernel(kernel))
    assert np.isfinite(float(value))


def test_tophat_window_is_open_at_both_ends():
    """Points exactly one bandwidth away are outside the tophat's window (as in the engine)."""
    x = np.array([0.0, 1.0, 2.0, 2.0, 5.0])
    kde = jaxkde.KDE("tophat", bandwidth=1.0).fit(x[:, None])
    got = np.exp(kde.score_samples(np.array([[1.0], [2.0], [0.5], [3.0], [4.0], [-1.0]])))
    # window weight / (2 h): q=1 sees x=1 only; q=2 the two 2s; q=0.5 sees 0 and 1; q=3 the
    # 2s (|3 - 2| = 1 excluded, so none); q=4 none (|4 - 5| = 1); q=-1 none.
    assert np.allclose(got, np.array([1, 2, 2, 0, 0, 0]) / 5 / 2, rtol=1e-6, atol=0)


def test_isolated_point_loo_is_minus_inf_not_noise():
    x = np.array([0.0, 0.1, 0.2, 5.0])
    lw = jnp.full(4, -np.log(4.0), jnp.float32)
    got = sum_updating.loo_log_sums(jnp.asarray(x, jnp.float32), jnp.zeros(4, jnp.float32), lw,
                                    jnp.arange(4), jnp.float32(1.0),
                                    kernel=get_kernel("epanechnikov"))  # fmt: skip
    got = np.asarray(got)
    assert np.isneginf(got[3]) and np.isfinite(got[:3]).all()


@pytest.mark.slow
@pytest.mark.parametrize(("kernel", "offset", "spread"), [
    ("epanechnikov", 0.0, 1.0), ("linear", 1e6, 1.0), ("cosine", 0.0, 1e3),
    ("exponential", 1e6, 1.0), ("exponential", 0.0, 1e3),
])  # fmt: skip
def test_leave_one_out_matches_brute_force_and_its_gradient(kernel, offset, spread):
    rng = np.random.default_rng(2)
    n = 2000
    x = _data(rng, n, offset, spread)
    w = rng.random(n) + 0.1
    xc = x - np.average(x, weights=w)
    hi = xc.astype(np.float32)
    lo = (xc - hi).astype(np.float32)
    lw = np.log(w / w.sum()).astype(np.float32)
    rows = np.arange(0, n, 3)
    h = 0.5 * spread
    args = (jnp.asarray(hi[:, None]), jnp.asarray(lw), jnp.asarray(rows), jnp.asarray(lo[:, None]))
    k = get_kernel(kernel)
    got = sum_updating.loo_log_sums(args[0], args[3], args[1], args[2], jnp.float32(h), kernel=k)
    sums = _brute(xc, w, xc[rows], h, kernel)[0]
    if kernel == "exponential":
        sums = np.exp(sums)  # no underflow at this spread
    own = w[rows] / w.sum()  # k(0) = 1
    with np.errstate(divide="ignore"):
        want = np.log(np.maximum(sums - own, 0.0))  # float64 leaves the own term out
    got = np.asarray(got, np.float64)
    assert np.array_equal(np.isfinite(got), np.isfinite(want))
    fin = np.isfinite(want)
    assert np.allclose(got[fin], want[fin], rtol=0, atol=2e-5)

    def objective64(hh):
        d = np.abs(xc[rows, None] - xc[None, :]) / hh
        kk = _profile(kernel, d) * _NORM[kernel] / hh
        kk[np.arange(len(rows)), rows] = 0.0
        ww = w / w.sum()
        return np.sum(ww[rows] * np.log(kk @ ww / (1 - ww[rows]))) / np.sum(ww[rows])

    value, grad = jax.value_and_grad(objectives.loo_log_likelihood)(
        jnp.asarray([np.log(h)], jnp.float32), *args, kind="scalar", kernel=k
    )
    step = 1e-6
    want_grad = (objective64(h * np.exp(step)) - objective64(h * np.exp(-step))) / (2 * step)
    assert abs(float(value) - objective64(h)) <= 1e-5 * max(1.0, abs(objective64(h)))
    assert abs(float(grad[0]) - want_grad) <= 1e-3 * max(1e-2, abs(want_grad))


def test_loo_scales_agree_with_single_evaluations():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(500)
    args = (jnp.asarray(x[:, None], jnp.float32), jnp.full(500, -np.log(500.0), jnp.float32),
            jnp.arange(500), jnp.zeros((500, 1), jnp.float32))  # fmt: skip
    k = get_kernel("linear")
    p = jnp.asarray([np.log(0.2)], jnp.float32)
    scales = jnp.asarray([-1.0, 0.0, 1.0], jnp.float32)
    many = objectives._loo_at_scales(p, *args, scales, kind="scalar", kernel=k, chunk_size=2048,
                                    block_size=256, precision="highest", mesh=None)  # fmt: skip
    one = [float(objectives.loo_log_likelihood(p + s, *args, kind="scalar", kernel=k))
           for s in scales]  # fmt: skip
    assert np.allclose(np.asarray(many), one, rtol=1e-6)


@pytest.mark.parametrize("kernel", ["epanechnikov", "exponential"])
def test_exact_grid_uses_sum_updating(kernel):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(5000)
    kde = jaxkde.KDE(kernel, bandwidth=0.2).fit(x[:, None])
    res = kde.score_grid(256, method="exact")
    assert res.method == "exact"
    _check(res.log_density, x, np.ones_like(x), res.axes[0], 0.2, kernel, "float32")


def test_sort_data_refuses_what_it_cannot_do():
    kde = jaxkde.KDE("gaussian", bandwidth=1.0).fit(np.zeros((3, 1)) + np.arange(3)[:, None])
    assert not sum_updating.supports_sum_updating(kde.state_)
    with pytest.raises(ValueError, match="sum updating needs a 1-D state"):
        sum_updating.sort_data(kde.state_)
    kde2 = jaxkde.KDE("epanechnikov", bandwidth=1.0).fit(np.random.default_rng(0).random((5, 2)))
    assert not sum_updating.supports_sum_updating(kde2.state_)


def test_cache_is_refreshed_by_fit_and_dropped_by_pickle():
    import pickle

    kde = jaxkde.KDE("epanechnikov", bandwidth=1.0).fit(np.array([[0.0], [0.5]]))
    first = kde.score_samples([[0.25]])
    kde.fit(np.array([[10.0], [10.5]]))
    assert np.isneginf(kde.score_samples([[0.25]])[0])  # not the old data's sums
    again = pickle.loads(pickle.dumps(kde.fit(np.array([[0.0], [0.5]]))))
    assert again._sorted is None
    assert np.allclose(again.score_samples([[0.25]]), first)


def test_sorted_log_density_jits_once_per_query_block():
    rng = np.random.default_rng(5)
    kde = jaxkde.KDE("cosine", bandwidth=0.5).fit(rng.standard_normal((100, 1)))
    sd = sum_updating.sort_data(kde.state_)
    q_hi, q_lo = whiten_queries(kde.state_, rng.standard_normal((64, 1)))
    sum_updating.sorted_log_density(sd, q_hi, q_lo)
    before = sum_updating.sorted_log_density._cache_size()
    q_hi, q_lo = whiten_queries(kde.state_, rng.standard_normal((64, 1)))
    sum_updating.sorted_log_density(sd, q_hi, q_lo)
    assert sum_updating.sorted_log_density._cache_size() == before


def test_data_beyond_the_exact_cell_range_use_the_engine():
    """Whitened data spanning more than 2^22 bandwidths (float32 cells would no longer be exact
    integers with room to spare): score_samples and the leave-one-out objective use the engine,
    and stay right."""
    x = np.array([0.0, 0.5, 1.0, 3.0e7, 3.0e7 + 0.5])
    kde = jaxkde.KDE("epanechnikov", bandwidth=1.0).fit(x[:, None])
    q = np.array([0.25, 3.0e7 + 0.25, 1.5e7])
    got = kde.score_samples(q[:, None])
    assert kde._sorted is False
    sums = _brute(x, np.ones_like(x), q, 1.0, "epanechnikov")[0]
    with np.errstate(divide="ignore"):
        want = np.log(sums * 0.75)
    assert np.isneginf(got[2]) and np.allclose(got[:2], want[:2], rtol=0, atol=1e-5)

    xc = x - x.mean()
    hi = xc.astype(np.float32)
    args = (jnp.asarray(hi[:, None]), jnp.full(5, -np.log(5.0), jnp.float32), jnp.arange(5),
            jnp.asarray((xc - hi).astype(np.float32)[:, None]))  # fmt: skip
    k = get_kernel("epanechnikov")
    value = objectives.loo_log_likelihood(jnp.asarray([0.0], jnp.float32), *args, kind="scalar",
                                         kernel=k)  # fmt: skip
    d = np.abs(xc[:, None] - xc[None, :])
    kk = np.clip(1 - d * d, 0, None) * 0.75
    np.fill_diagonal(kk, 0.0)
    want_loo = np.mean(np.log(kk.sum(1) / 5 / (1 - 0.2)))
    assert abs(float(value) - want_loo) < 1e-5
