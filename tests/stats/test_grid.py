"""Grid log densities: exact, binned (linear binning + FFT) and auto, against float64 brute
force, the engine and KDEpy's FFTKDE."""

from __future__ import annotations

import functools
import warnings

import jax
import numpy as np
import pytest
from reference import brute_log_density

import jaxkde
from jaxkde.stats import grid

KERNELS = ["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]


def _cells(axes):
    return np.stack([g.reshape(-1) for g in np.meshgrid(*axes, indexing="ij")], axis=1)


def _two_clusters(rng, n, d):
    x = rng.normal(size=(n, d))
    x[: n // 3] = 0.3 * x[: n // 3] + 3.0
    return x


def _spacing_over_std(kde, axes):
    """Grid spacing over the kernel's conditional standard deviation, per axis."""
    std = 1.0 / np.sqrt(np.diag(np.linalg.inv(kde.bandwidth_)))
    return np.array([(a[1] - a[0]) / s for a, s in zip(axes, std, strict=True)])


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_exact_grid_is_the_engine_at_every_cell(dtype, kernel, d):
    rng = np.random.default_rng(d)
    x = _two_clusters(rng, 300, d).astype(dtype)
    w = rng.uniform(0.2, 2.0, size=300)
    kde = jaxkde.KDE(kernel, bandwidth=0.7).fit(x, sample_weight=w)
    res = kde.score_grid((9, 7, 5)[:d], method="exact")
    assert res.method == "exact" and res.n_exact == res.log_density.size
    assert res.log_density.shape == tuple(a.shape[0] for a in res.axes)
    want = kde.score_samples(_cells(res.axes)).astype(np.float64)
    np.testing.assert_allclose(res.log_density.reshape(-1), want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("d", "bandwidth"), [(1, "scott"), (2, "scott"), (2, "scott_full"), (3, "scott")]
)
def test_binned_gaussian_is_within_its_binning_error(dtype, d, bandwidth):
    """Linear binning errs by O((dx / sigma)^2) relative to the peak, whatever the weights."""
    rng = np.random.default_rng(10 + d)
    n = 3000 if d < 3 else 400
    x = _two_clusters(rng, n, d)
    w = rng.uniform(0.0, 1.0, size=n)
    kde = jaxkde.KDE(bandwidth=bandwidth).fit(x.astype(dtype), sample_weight=w)
    res = kde.score_grid(((400,), (100, 80), (48, 40, 32))[d - 1], method="binned")
    assert res.method == "binned" and res.n_exact == 0
    ref = brute_log_density(x, _cells(res.axes), kde.bandwidth_, w).reshape(res.log_density.shape)
    peak = np.exp(ref.max())
    err = np.max(np.abs(np.exp(res.log_density) - np.exp(ref))) / peak
    ratio = _spacing_over_std(kde, res.axes)
    assert err <= 0.1 * np.sum(ratio**2) + 1e-5, (err, ratio)
    assert err > 0 or dtype == "float64"
    assert not np.any(np.isnan(res.log_density))


@pytest.mark.slow
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("d", [1, 2])
def test_binned_from_the_fit_data_matches_the_laid_out_state(dtype, d, weighted):
    """A lazy fit bins its float64 data on the host (no layout built); a laid-out state bins
    its whitened words on the device: the same grid, far from the origin too."""
    rng = np.random.default_rng(30 + d)
    x = _two_clusters(rng, 4000, d) + 1e5
    w = rng.uniform(0.0, 1.0, size=4000) if weighted else None
    lazy = jaxkde.KDE(bandwidth="scott").fit(x.astype(dtype), sample_weight=w)
    laid = jaxkde.KDE(bandwidth="scott").fit(x.astype(dtype), sample_weight=w)
    laid.state_  # noqa: B018 -- builds the layout
    res = lazy.score_grid(((512,), (96, 80))[d - 1], method="binned")
    assert "state_" not in vars(lazy) and "state_" in vars(laid)
    ref = laid.score_grid(axes=res.axes, method="binned")
    peak = np.exp(ref.log_density.max())
    gap = np.max(np.abs(np.exp(res.log_density) - np.exp(ref.log_density))) / peak
    assert gap < (1e-5 if dtype == "float32" else 1e-12), gap
    exact = brute_log_density(x, _cells(res.axes), lazy.bandwidth_, w)
    assert np.max(np.abs(np.exp(res.log_density.reshape(-1)) - np.exp(exact))) / peak < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS[1:])
def test_binned_other_kernels_converge_with_the_grid(kernel):
    rng = np.random.default_rng(3)
    x = _two_clusters(rng, 2000, 1)
    kde = jaxkde.KDE(kernel, bandwidth=1.0).fit(x)
    errors = []
    for size in (200, 800):
        res = kde.score_grid(size, method="binned")
        ref = kde.score_samples(_cells(res.axes)).astype(np.float64)
        peak = np.exp(ref.max())
        errors.append(np.max(np.abs(np.exp(res.log_density.reshape(-1)) - np.exp(ref))) / peak)
    assert errors[1] < 0.02
    assert errors[1] < 0.6 * errors[0]  # at least first order in the spacing


@pytest.mark.parametrize("d", [1, 2])
def test_binned_agrees_with_kdepy_fftkde(d):
    """Where both compute the same binned estimate (Gaussian, isotropic h, the same grid)."""
    import KDEpy as kdepy  # a test dependency (the test extra)

    rng = np.random.default_rng(20 + d)
    x = _two_clusters(rng, 2000, d)
    h = 0.4
    kde = jaxkde.KDE(bandwidth=h).fit(x)
    res = kde.score_grid(((512,), (128, 96))[d - 1], method="binned")
    points = _cells(res.axes)
    theirs = kdepy.FFTKDE(bw=h).fit(x).evaluate(points if d > 1 else points[:, 0])
    ours = np.exp(res.log_density.reshape(-1))
    exact = np.exp(brute_log_density(x, points, np.full(d, h * h)))
    peak = exact.max()
    # The same estimate up to details (KDEpy truncates its kernel's support): 1e-5 of the peak
    # apart, and jaxkde's at least as close to the exact density.
    assert np.max(np.abs(ours - theirs)) / peak < 5e-5
    assert np.max(np.abs(ours - exact)) <= 1.1 * np.max(np.abs(theirs - exact)) + 1e-6 * peak


def test_auto_keeps_every_tail_right():
    """Axes reaching densities of 1e-60 of the peak: auto is within 0.01 nats everywhere the
    density is at least 1e-20 of the peak; the binned values alone are not."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=14000), 0.2 * rng.normal(size=6000) + 5.0])[:, None]
    kde = jaxkde.KDE(bandwidth="scott").fit(x)
    axes = (np.linspace(-14.0, 14.0, 1500),)
    res = kde.score_grid(axes=axes, method="auto")
    binned = kde.score_grid(axes=axes, method="binned").log_density
    assert res.method == "binned+exact"
    assert 0 < res.n_exact < 1500
    ref = brute_log_density(x, axes[0][:, None], kde.bandwidth_)
    keep = ref >= ref.max() + np.log(1e-20)
    assert ref.min() < ref.max() + np.log(1e-60)
    assert np.max(np.abs(res.log_density - ref)[keep]) <= 0.01
    assert not np.all(np.abs(binned - ref)[keep] <= 0.01)
    assert np.all(np.isfinite(res.log_density))


@pytest.mark.slow
def test_auto_2d_full_bandwidth_tails():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(800, 2)) @ np.array([[1.0, 0.0], [0.8, 0.6]])
    kde = jaxkde.KDE(bandwidth="scott_full").fit(x)
    axes = (np.linspace(-6, 6, 160), np.linspace(-6, 6, 160))
    res = kde.score_grid(axes=axes, method="auto")
    assert res.method == "binned+exact" and 0 < res.n_exact < 160 * 160
    ref = brute_log_density(x, _cells(axes), kde.bandwidth_).reshape(160, 160)
    assert ref.min() < ref.max() + np.log(1e-30)
    keep = ref >= ref.max() + np.log(1e-20)
    assert np.max(np.abs(res.log_density - ref)[keep]) <= 0.01


def test_auto_evaluates_exactly_where_binning_does_not_apply():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(20000, 1))
    big = dict(grid_size=1024)
    assert jaxkde.KDE("epanechnikov").fit(x).score_grid(**big).method == "exact"
    assert jaxkde.KDE().fit(x[:50]).score_grid(**big).method == "exact"  # small problem
    # a grid of 30 kernel standard deviations per cell
    kde = jaxkde.KDE(bandwidth=0.01).fit(x)
    coarse = (np.linspace(-6, 6, 41),)
    assert kde.score_grid(axes=coarse).method == "exact"
    with pytest.warns(RuntimeWarning, match="spacing"):
        kde.score_grid(axes=coarse, method="binned")
    # data outside user axes: binned refuses, auto is exact
    kde = jaxkde.KDE(bandwidth=0.1).fit(x)
    inner = (np.linspace(-1, 1, 2000),)
    assert kde.score_grid(axes=inner).method == "exact"
    with pytest.raises(ValueError, match="inside the grid"):
        kde.score_grid(axes=inner, method="binned")
    uneven = (np.concatenate([np.linspace(-5, 0, 100), np.linspace(0.1, 5, 900)]),)
    assert kde.score_grid(axes=uneven).method == "exact"
    with pytest.raises(ValueError, match="equally spaced"):
        kde.score_grid(axes=uneven, method="binned")


def test_labelled_fit_gives_the_mixture():
    rng = np.random.default_rng(7)
    x = _two_clusters(rng, 400, 2)
    y = (x[:, 0] > 1.5).astype(int)
    kde = jaxkde.KDE(bandwidth=0.5).fit(x, y)
    for method in ("exact", "binned"):
        res = kde.score_grid(120, method=method)
        want = kde.score_samples(_cells(res.axes)).astype(np.float64).reshape(120, 120)
        tol = 1e-5 if method == "exact" else 0.05
        keep = want > want.max() - 4
        np.testing.assert_allclose(res.log_density[keep], want[keep], atol=tol)


def test_default_axes_span_the_data_and_cut():
    x = np.array([[0.0, 10.0], [2.0, 14.0], [1.0, 12.0]])
    kde = jaxkde.KDE("tophat", bandwidth=[0.5, 2.0]).fit(x)
    axes, _ = kde.score_grid((11, 21), cut=2.0, method="exact")
    std = np.sqrt(np.diag(kde.bandwidth_) * kde.state_.kernel.coordinate_variance(2))
    assert axes[0].shape == (11,) and axes[1].shape == (21,)
    np.testing.assert_allclose([axes[0][0], axes[0][-1]], [0 - 2 * std[0], 2 + 2 * std[0]])
    np.testing.assert_allclose([axes[1][0], axes[1][-1]], [10 - 2 * std[1], 14 + 2 * std[1]])


def test_result_unpacks_and_the_same_shapes_do_not_recompile():
    rng = np.random.default_rng(8)
    kde = jaxkde.KDE().fit(rng.normal(size=(20000, 2)))
    axes, log_f = kde.score_grid(64, method="auto")
    assert len(axes) == 2 and log_f.shape == (64, 64)
    before = grid._binned._cache_size()
    kde.fit(rng.normal(size=(20000, 2)) + 1.0).score_grid(64, method="auto")
    assert grid._binned._cache_size() == before


def test_bad_axes_and_sizes_are_named():
    rng = np.random.default_rng(9)
    kde = jaxkde.KDE().fit(rng.normal(size=(50, 2)))
    with pytest.raises(ValueError, match="grid_size"):
        kde.score_grid(1)
    with pytest.raises(ValueError, match="grid_size"):
        kde.score_grid((10, 10, 10))
    with pytest.raises(ValueError, match="MAX_GRID_CELLS"):
        kde.score_grid(10**5)
    with pytest.raises(ValueError, match=r"axes\[1\] must be strictly increasing"):
        kde.score_grid(axes=(np.arange(5.0), np.array([0.0, 2.0, 1.0])))
    with pytest.raises(ValueError, match=r"axes\[0\] must be finite"):
        kde.score_grid(axes=(np.array([0.0, np.nan]), np.arange(3.0)))
    with pytest.raises(ValueError, match=r"axes\[0\] must be 1-D with at least 2"):
        kde.score_grid(axes=(np.array([]), np.arange(3.0)))
    with pytest.raises(ValueError, match="2 1-D arrays"):
        kde.score_grid(axes=(np.arange(3.0),))
    with pytest.raises(ValueError, match=r"2 1-D arrays.*got int"):
        kde.score_grid(axes=3)
    # Any sequence of 1-D arrays, the rows of a 2-D array among them, gives the same grid.
    a, b = np.linspace(-3.0, 3.0, 12), np.linspace(-2.0, 2.0, 12)
    want = np.asarray(kde.score_grid(axes=[a, b]).log_density)
    for axes in (np.array([a, b]), (a, b), [a.tolist(), b.tolist()], iter([a, b])):
        np.testing.assert_array_equal(np.asarray(kde.score_grid(axes=axes).log_density), want)
    with pytest.raises(ValueError, match="method must be one of"):
        kde.score_grid(8, method="fft")
    with pytest.raises(ValueError, match="cut"):
        kde.score_grid(8, cut=-1.0)
    big = tuple(np.linspace(-4, 4, 256) for _ in range(3))
    with pytest.raises(ValueError, match="padded FFT cells"):
        jaxkde.KDE().fit(rng.normal(size=(50, 3))).score_grid(axes=big, method="binned")
    x4 = rng.normal(size=(50, 4))
    with pytest.raises(ValueError, match="d <= 3"):
        jaxkde.KDE().fit(x4).score_grid(4, method="binned")
    with pytest.raises(jaxkde.NotFittedError):
        jaxkde.KDE().score_grid(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jaxkde.KDE().fit(x4).score_grid(3).log_density.shape == (3, 3, 3, 3)


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 3])
def test_factorised_exact_grid_far_tails_and_offsets(dtype, d):
    """Diagonal Gaussian grids in 2-D and 3-D go through per-axis factors and one product per
    chunk; far tails (1e-200 of the peak) and an offset of 1e6 stay within the engine's bound."""
    rng = np.random.default_rng(30 + d)
    n = 2500 if d == 2 else 1200
    x = (1e6 + _two_clusters(rng, n, d) * np.array([1.0, 0.5, 2.0])[:d]).astype(dtype)
    w = rng.uniform(0.1, 1.0, size=n)
    kde = jaxkde.KDE(bandwidth="scott").fit(x, sample_weight=w)
    sizes = (40, 30, 20)[:d] if d == 2 else (32, 24, 16)
    axes = tuple(np.linspace(1e6 - 12, 1e6 + 15, g) for g in sizes)
    res = kde.score_grid(axes=axes, method="exact")
    assert grid._factorisable(kde.state_, d)
    ref = brute_log_density(x, _cells(axes), kde.bandwidth_, w).reshape(sizes)
    assert ref.min() < ref.max() + np.log(1e-200) or dtype == "float32"
    scale = np.maximum(np.abs(ref), 1.0)  # s(q) >= |log f|
    rtol = 1e-5 if dtype == "float32" else 1e-10
    assert np.all(np.abs(res.log_density - ref) <= rtol * scale + 1e-6 * (dtype == "float32"))


def test_factorised_underflow_falls_back_to_the_engine():
    """Two points far apart along both axes: for a cell near neither, the per-axis maxima come
    from different points, the product underflows, and the cell is recomputed exactly."""
    x = np.array([[0.0, 0.0], [60.0, 60.0]])
    kde = jaxkde.KDE(bandwidth=1.0).fit(x)
    axes = (np.linspace(-5, 65, 71), np.linspace(-5, 65, 71))
    log_f, unsure = grid._factorised_state(kde.state_, axes)
    assert unsure.any() and not unsure.all()
    assert np.all(np.isfinite(log_f[~unsure]))
    res = kde.score_grid(axes=axes, method="exact")
    ref = brute_log_density(x, _cells(axes), np.array([1.0, 1.0])).reshape(71, 71)
    assert np.all(np.abs(res.log_density - ref) <= 1e-5 * np.maximum(np.abs(ref), 1.0))


def test_grid_products_are_true_float32_never_tf32():
    """Every matrix product of the binned and factorised paths asks for HIGHEST precision
    (on GPUs the default is TF32: a 2-D full-H auto grid then missed its 0.01-nat bound on an
    H100, 2026-11-28)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 2)) @ np.array([[1.0, 0.0], [0.8, 0.6]])
    state = jaxkde.KDE(bandwidth="scott_full").fit(x).state_
    axes = tuple(np.linspace(-6, 6, 32) for _ in range(2))
    origin = np.array([a[0] for a in axes]) - np.asarray(state.mean, np.float64)
    spacing = np.array([a[1] - a[0] for a in axes], np.float32)
    t, w = grid._device_coordinates(state, origin.astype(np.float32), spacing)
    h_inv = np.linalg.inv(state.bandwidth_matrix()).astype(np.float32)
    binned = functools.partial(grid._binned, kernel=state.kernel, shape=(32, 32),
                               fft_shape=(64, 64), with_error=True)  # fmt: skip
    jaxprs = [
        jax.make_jaxpr(grid._device_coordinates)(state, origin.astype(np.float32), spacing),
        jax.make_jaxpr(binned)(t, w, spacing, state.chol, h_inv, state.log_normalizer),
        jax.make_jaxpr(grid._data_range)(state),
    ]
    dots = [
        eqn
        for jaxpr in jaxprs
        for eqn in _all_eqns(jaxpr.jaxpr)
        if eqn.primitive.name == "dot_general"
    ]
    assert dots
    for eqn in dots:
        precision = eqn.params["precision"]
        assert precision is not None and all(p == jax.lax.Precision.HIGHEST for p in precision), (
            precision
        )


def _all_eqns(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its equations (jit, scan, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _all_eqns(inner)
