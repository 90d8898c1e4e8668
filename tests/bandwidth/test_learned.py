"""Learned bandwidths, shared-distance grid search and the Parzen-window protocol."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

import jaxkde
from jaxkde.bandwidth.objectives import bandwidth_from_params, params_from_bandwidth


def brute_loo(x, h_matrix, weights=None):
    """float64 brute force of sum_i w_i log f_{-i}(x_i) / sum w for a Gaussian KDE."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    h = np.diag(h_matrix) if np.ndim(h_matrix) == 1 else np.asarray(h_matrix)
    chol = np.linalg.cholesky(h)
    u = np.linalg.solve(chol, (x[:, None, :] - x[None, :, :]).reshape(-1, d).T).T
    d2 = (u**2).sum(1).reshape(n, n)
    np.fill_diagonal(d2, np.inf)
    log_norm = -0.5 * d * math.log(2 * math.pi) - np.log(np.diag(chol)).sum()
    with np.errstate(divide="ignore"):
        lse = logsumexp(np.log(w)[None, :] - 0.5 * d2, axis=1)
    log_loo = lse - np.log1p(-w) + log_norm
    return float(np.sum(w * log_loo))


@pytest.fixture
def data2d():
    rng = np.random.default_rng(0)
    return rng.normal(size=(250, 2)) @ np.array([[1.0, 0.0], [0.8, 0.4]])


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "full"])
@pytest.mark.parametrize("weighted", [False, True])
def test_loo_objective_matches_float64_brute_force(data2d, kind, weighted):
    with jax.enable_x64(True):
        x = data2d - data2d.mean(0)
        w = np.random.default_rng(1).uniform(0.2, 2, size=len(x)) if weighted else np.ones(len(x))
        h = {"scalar": np.full(2, 0.3), "diagonal": np.array([0.2, 0.5]),
             "full": np.array([[0.3, 0.1], [0.1, 0.2]])}[kind]  # fmt: skip
        params = jnp.asarray(params_from_bandwidth(h, kind))
        chol = np.asarray(bandwidth_from_params(params, kind, 2))
        np.testing.assert_allclose(chol**2 if chol.ndim == 1 else chol @ chol.T, h, rtol=1e-12)
        lw = jnp.asarray(np.log(w / w.sum()))
        got = jaxkde.loo_log_likelihood(
            params, jnp.asarray(x), lw, jnp.arange(250), kind=kind, chunk_size=64, block_size=50
        )
        assert float(got) == pytest.approx(brute_loo(x, h, w), rel=1e-10)


@pytest.mark.parametrize("kind", ["scalar", "diagonal"])
def test_loo_gradients(data2d, kind):
    with jax.enable_x64(True):
        x = jnp.asarray(data2d - data2d.mean(0))
        lw = jnp.full((250,), -math.log(250.0))
        rows = jnp.arange(250)

        def f(p):
            return jaxkde.loo_log_likelihood(
                p, x, lw, rows, kind=kind, chunk_size=64, block_size=50
            )

        p0 = jnp.asarray(-0.7) if kind == "scalar" else jnp.asarray([-0.9, -0.4])
        check_grads(f, (p0,), order=1, modes=["rev"])


@pytest.mark.parametrize("kernel", ["epanechnikov", "exponential"])
def test_loo_gradients_other_kernels_are_finite(data2d, kernel):
    x = jnp.asarray(data2d - data2d.mean(0), jnp.float32)
    lw = jnp.full((250,), -math.log(250.0), jnp.float32)
    g = jax.grad(jaxkde.loo_log_likelihood)(
        jnp.asarray(0.0), x, lw, jnp.arange(250), kernel=jaxkde.get_kernel(kernel),
        chunk_size=64, block_size=50,
    )  # fmt: skip
    assert np.isfinite(float(g))


def test_gradient_memory_is_bounded_by_block_sizes():
    n, d, block, chunk = 8192, 16, 256, 512
    x = jnp.asarray(np.random.default_rng(2).normal(size=(n, d)), jnp.float32)
    lw = jnp.full((n,), -math.log(n), jnp.float32)
    rows = jnp.arange(n)
    grad = jax.jit(jax.grad(
        lambda p: jaxkde.loo_log_likelihood(p, x, lw, rows, chunk_size=chunk, block_size=block)
    ))  # fmt: skip
    temp = grad.lower(jnp.asarray(0.0)).compile().memory_analysis().temp_size_in_bytes
    assert temp < 0.2 * n * n * 4  # nothing of size n x n (268 MB here)
    assert temp < 40 * 4 * (block * chunk + n * d)


@pytest.mark.parametrize("d", [1, 2])
def test_optimiser_finds_the_grid_optimum(d):
    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(size=(150, d)), rng.normal(size=(100, d)) * 0.5 + 3])
    grid = np.linspace(0.05, 1.5, 146)
    with jax.enable_x64(True):
        brute = [brute_loo(x - x.mean(0), np.full(d, h * h)) for h in grid]
        fit = jaxkde.fit_bandwidth(x.astype(np.float64), kind="scalar", max_steps=400)
    best = grid[int(np.argmax(brute))]
    learned = math.sqrt(fit.matrix[0])
    assert abs(learned - best) <= grid[1] - grid[0]
    assert fit.converged and fit.trace.size == fit.steps == 0
    assert fit.objective >= max(brute) - 1e-6


@pytest.mark.slow
def test_diagonal_and_full_improve_on_anisotropic_data(data2d):
    scalar = jaxkde.fit_bandwidth(data2d, kind="scalar")
    diagonal = jaxkde.fit_bandwidth(data2d, kind="diagonal")
    full = jaxkde.fit_bandwidth(data2d, kind="full")
    assert diagonal.objective > scalar.objective
    assert full.objective > diagonal.objective
    assert full.matrix.shape == (2, 2)
    np.testing.assert_allclose(full.matrix, full.matrix.T)


@pytest.mark.slow
def test_evaluation_subsets_are_deterministic_per_key():
    x = np.random.default_rng(4).normal(size=(3000, 3)) * [1.0, 2.0, 0.5]
    a = jaxkde.fit_bandwidth(x, kind="diagonal", batch_size=512, max_steps=30, key=5)
    b = jaxkde.fit_bandwidth(x, kind="diagonal", batch_size=512, max_steps=30, key=5)
    c = jaxkde.fit_bandwidth(x, kind="diagonal", batch_size=512, max_steps=30, key=6)
    np.testing.assert_array_equal(a.trace, b.trace)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert not np.array_equal(a.matrix, c.matrix)


@pytest.mark.slow
def test_step_budget_and_loops_of_patience_steps(data2d):
    with pytest.warns(RuntimeWarning, match="max_steps"):
        fit = jaxkde.fit_bandwidth(data2d, kind="diagonal", max_steps=7, patience=3, gtol=0.0)
    assert fit.steps == 7 and fit.trace.size == 7 and not fit.converged
    assert fit.status == "max_steps" and fit.gradient > 0
    # The stopping rule is checked after each loop of `patience` steps.
    fit = jaxkde.fit_bandwidth(data2d, kind="diagonal", max_steps=500, patience=4, gtol=1e9)
    assert fit.converged and fit.steps == 4 and fit.status == "converged"


def test_a_step_that_leaves_the_finite_range_keeps_the_last_finite_bandwidth(data2d):
    with pytest.warns(RuntimeWarning, match="nonfinite"):
        fit = jaxkde.fit_bandwidth(data2d, kind="diagonal", optimizer=optax.sgd(1e30),
                                   max_steps=50, patience=5)  # fmt: skip
    assert 0 < fit.steps < 50 and not fit.converged and fit.status == "nonfinite"
    assert np.all(np.isfinite(fit.params)) and np.all(np.isfinite(fit.trace))
    assert fit.trace.size == fit.steps


def _clusters(rng, n_clusters=20, per=25, gap=50.0, spread=0.01):
    centres = gap * np.arange(n_clusters)
    return (centres[:, None] + spread * rng.normal(size=(n_clusters, per))).reshape(-1, 1)


@pytest.mark.slow
def test_optima_decades_from_the_start_are_reached_and_certified():
    """Twenty tight clusters: Scott's rule is ~10^4 times the optimum (the issue's example)."""
    x = _clusters(np.random.default_rng(7))
    fit = jaxkde.fit_bandwidth(x, kind="scalar")
    h = math.sqrt(fit.matrix[0])
    grid = np.exp(np.linspace(math.log(1e-3), math.log(100.0), 400))
    with jax.enable_x64(True):
        brute = np.array([brute_loo(x, np.full(1, g * g)) for g in grid])
    best = grid[int(np.argmax(brute))]
    scott = math.sqrt(jaxkde.scott_bandwidth(jnp.asarray(x))[0])
    assert scott / best > 1e3  # the start is more than three decades away
    assert abs(math.log(h / best)) < 0.02  # within the brute-force grid's spacing
    assert fit.converged and fit.status == "converged" and fit.gradient <= 1e-3
    assert fit.objective >= brute.max() - 1e-3
    assert fit.objective > brute[np.argmin(np.abs(grid - 1.58))] + 4.0  # the old answer, h = 1.58
    # The same through the estimator, and for a diagonal bandwidth.
    assert math.sqrt(jaxkde.KDE(bandwidth="cv").fit(x).bandwidth_[0, 0]) == pytest.approx(h)
    diag = jaxkde.fit_bandwidth(x, kind="diagonal")
    assert diag.converged and abs(math.log(math.sqrt(diag.matrix[0]) / best)) < 0.05


def test_duplicated_points_have_no_maximum():
    x = np.repeat(np.random.default_rng(8).normal(size=(40, 2)), 2, axis=0)
    with pytest.warns(RuntimeWarning, match="no maximum"):
        fit = jaxkde.fit_bandwidth(x, kind="scalar")
    assert fit.status == "unbounded" and not fit.converged
    with pytest.raises(ValueError, match="no maximum"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        jaxkde.KDE(bandwidth="cv").fit(x)


@pytest.mark.slow
def test_objectives_that_are_minus_inf_at_the_start_are_left_for_finite_ones():
    """Epanechnikov: an outlier no kernel of Scott's width reaches makes the objective -inf."""
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.normal(size=(200, 1)), [[40.0]]])
    scott = jaxkde.scott_bandwidth(jnp.asarray(x - x.mean(0)))
    kern = jaxkde.get_kernel("epanechnikov")
    with jax.enable_x64(True):
        lw = jnp.full((201,), -math.log(201.0))
        start = jaxkde.loo_log_likelihood(jnp.asarray(0.5 * math.log(float(scott[0]))),
                                          jnp.asarray(x - x.mean(0)), lw, jnp.arange(201),
                                          kernel=kern)  # fmt: skip
    assert float(start) == -np.inf
    fit = jaxkde.fit_bandwidth(x, kernel="epanechnikov")
    assert np.isfinite(fit.objective) and fit.converged
    assert math.sqrt(fit.matrix[0]) > 20.0  # it must reach the outlier


def test_scale_search_reports_what_happened():
    from jaxkde.bandwidth.scale_search import scale_search as _scale_search

    status, _, _, _ = _scale_search(lambda s: np.full(len(s), -np.inf), 1e-3)
    assert status == "nonfinite"
    status, s, _, _ = _scale_search(lambda s: -np.asarray(s), 1e-3)  # grows as h -> 0
    assert status == "unbounded" and s <= -12 * math.log(10) + 1e-9
    status, s, _, width = _scale_search(lambda s: -((np.asarray(s) - 7.0) ** 2), 1e-4)
    assert status == "converged" and abs(s - 7.0) < 1e-4 and width <= 1e-4


def test_bad_init_is_refused(data2d):
    for init, match in [(np.array([1.0, -1.0]), "positive"), (np.array([np.nan, 1.0]), "finite"),
                        (np.ones(3), "shape"), ([[1.0, 2.0], [2.0, 1.0]], "positive definite"),
                        ("scott", "numbers")]:  # fmt: skip
        with pytest.raises((ValueError, TypeError), match=match):
            jaxkde.fit_bandwidth(data2d, init=init)


def test_kde_cv_bandwidth_uses_fit_bandwidth(data2d):
    kde = jaxkde.KDE(bandwidth="cv_diagonal").fit(data2d)
    direct = jaxkde.fit_bandwidth(data2d, kind="diagonal")
    np.testing.assert_allclose(np.diag(kde.bandwidth_), direct.matrix, rtol=1e-6)
    assert kde.bandwidth_fit_.objective == pytest.approx(direct.objective)
    seed = jaxkde.KDE(bandwidth_estimator="cv").fit(data2d)
    assert seed.bandwidth_fit_ is not None and seed.bandwidth_.shape == (2, 2)


def test_bad_selection_inputs(data2d):
    with pytest.raises(ValueError, match="no useful likelihood gradient"):
        jaxkde.fit_bandwidth(data2d, kernel="tophat")
    with pytest.raises(ValueError, match="kind must be one of"):
        jaxkde.fit_bandwidth(data2d, kind="spherical")
    with pytest.raises(ValueError, match="at least 2 rows"):
        jaxkde.fit_bandwidth(data2d[:1])
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        jaxkde.grid_log_likelihood(data2d, data2d, [0.5, -1.0])


@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov", "exponential"])
def test_grid_equals_independent_evaluations(data2d, kernel):
    q = np.random.default_rng(5).normal(size=(70, 2))
    hs = [0.2, 0.5, 1.3]
    grid = jaxkde.grid_log_likelihood(data2d, q, hs, kernel=kernel, block_size=32, chunk_size=64)
    assert grid.shape == (70, 3)
    for j, h in enumerate(hs):
        alone = jaxkde.KDE(kernel, bandwidth=h).fit(data2d).score_samples(q)
        finite = np.isfinite(alone)
        np.testing.assert_array_equal(np.isfinite(grid[:, j]), finite)
        # float32; compact kernels are ill-conditioned near the edge of their support
        rtol = 2e-5 if kernel == "gaussian" else 1e-4
        np.testing.assert_allclose(grid[finite, j], alone[finite], rtol=rtol)


def test_grid_leave_one_out_equals_brute_force(data2d):
    with jax.enable_x64(True):
        hs = [0.2, 0.6]
        grid = jaxkde.grid_log_likelihood(data2d, None, hs, block_size=64, chunk_size=64)
        for j, h in enumerate(hs):
            assert grid[:, j].mean() == pytest.approx(
                brute_loo(data2d, np.full(2, h * h)), rel=1e-10
            )


def test_parzen_equals_numpy_reference():
    rng = np.random.default_rng(6)
    samples, valid, test = rng.random((60, 5)), rng.random((30, 5)), rng.random((40, 5))
    sigmas = np.logspace(-1, 0, 10)

    def parzen(centres, x, sigma):
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        d = x.shape[1]
        return (logsumexp(-d2 / (2 * sigma**2), axis=1) - math.log(len(centres))
                - 0.5 * d * math.log(2 * math.pi * sigma**2))  # fmt: skip

    val = [parzen(samples, valid, s).mean() for s in sigmas]
    best = sigmas[int(np.argmax(val))]
    ll = parzen(samples, test, best)
    with jax.enable_x64(True):
        got = jaxkde.parzen_log_likelihood(samples, test, valid)
    assert got.sigma == pytest.approx(best)
    np.testing.assert_allclose(got.validation_means, val, rtol=1e-10)
    assert got.mean == pytest.approx(ll.mean(), rel=1e-10)
    assert got.stderr == pytest.approx(ll.std() / math.sqrt(len(ll)), rel=1e-10)
    with pytest.raises(ValueError, match="validation is needed"):
        jaxkde.parzen_log_likelihood(samples, test)
    one = jaxkde.parzen_log_likelihood(samples, test, sigmas=[0.3])
    assert one.sigma == 0.3 and one.validation_means is None


@pytest.mark.slow
def test_parzen_command(tmp_path, capsys):
    from jaxkde.apps.cli import main

    samples = tmp_path / "s.npy"
    assert main(["sample", "-n", "50", "--out", str(samples)]) == 0
    capsys.readouterr()
    rc = main(["parzen", "--samples", str(samples), "--validation", "test",
               "--validation-size", "200", "--limit", "100"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "Parzen log-likelihood of 100 test images under 50 samples" in out
    assert out.count("sigma 0.") + out.count("sigma 1.") == 10
    (tmp_path / "bad.npy").write_text("not numpy")
    assert main(["parzen", "--samples", str(tmp_path / "bad.npy")]) == 1
    assert "not a readable .npy" in capsys.readouterr().err


@pytest.mark.slow
def test_loo_gradient_through_the_exact_recomputation():
    """8-d pairs of points 0.5 apart, the pairs spread over 10^5 bandwidths: the matrix-product
    distances are 2e-7 wrong (x64), every row's account is exceeded and recomputed by direct
    differences; value and gradient match float64 brute force."""
    from jaxkde.core.engine import DIRECT_MAX_DIM

    rng = np.random.default_rng(10)
    d = 8
    assert d > DIRECT_MAX_DIM
    centres = 1e5 * rng.normal(size=(90, d))
    x = np.concatenate([centres, centres + 0.5 * rng.normal(size=(90, d))])
    with jax.enable_x64(True):
        xc = x - x.mean(0)
        lw = jnp.full((180,), -math.log(180.0))

        def f(p):
            return jaxkde.loo_log_likelihood(
                p, jnp.asarray(xc), lw, jnp.arange(180),
                kind="diagonal", chunk_size=64, block_size=60,
            )  # fmt: skip

        p0 = jnp.full((d,), math.log(0.7))
        value, grad = jax.value_and_grad(f)(p0)
        assert float(value) == pytest.approx(brute_loo(xc, np.full(d, 0.49)), rel=1e-12)
        check_grads(f, (p0,), order=1, modes=["rev"], eps=1e-4)
        assert np.all(np.isfinite(np.asarray(grad)))


def test_parzen_errors_name_its_own_arguments():
    samples = np.zeros((5, 3))
    with pytest.raises(ValueError, match="test has 2 features, but samples"):
        jaxkde.parzen_log_likelihood(samples, np.zeros((4, 2)), sigmas=[0.5])
    with pytest.raises(ValueError, match="validation has 4 features"):
        jaxkde.parzen_log_likelihood(samples, np.zeros((4, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="sigmas must be positive"):
        jaxkde.parzen_log_likelihood(samples, np.zeros((4, 3)), sigmas=[0.5, -1.0])
    with pytest.raises(ValueError, match="samples contains NaN"):
        jaxkde.parzen_log_likelihood(np.full((5, 3), np.nan), np.zeros((4, 3)), sigmas=[0.5])


# ----------------------------------------------------------- searches that must end
def _loo_reference(x, h):
    """Mean leave-one-out log-likelihood of a 1-D gaussian KDE, float64 brute force."""
    u = (x[:, None] - x[None, :]) / h
    k = np.exp(-0.5 * u * u) / (math.sqrt(2 * math.pi) * h)
    np.fill_diagonal(k, 0.0)
    with np.errstate(divide="ignore"):
        return float(np.mean(np.log(k.sum(axis=1) / (x.size - 1))))


def test_cv_finds_an_optimum_at_the_search_grid_edge():
    # Twenty clusters 50 apart, spread 0.12: the optimum lies at the junction of two windows
    # of the old search, which moved down and up again forever.
    rng = np.random.default_rng(0)
    x = (np.arange(20)[:, None] * 50.0 + 0.12 * rng.normal(size=(20, 25))).reshape(-1, 1)
    fit = jaxkde.fit_bandwidth(x)
    assert fit.status == "converged"
    res = minimize_scalar(
        lambda lh: -_loo_reference(x[:, 0], math.exp(lh)),
        method="bounded",
        bounds=(math.log(0.01), math.log(1.0)),
        options={"xatol": 1e-6},
    )
    assert math.sqrt(fit.matrix[0]) == pytest.approx(math.exp(res.x), rel=2e-3)


@pytest.mark.slow
def test_lscv_with_a_constant_column_ends_at_its_minimum():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=300), np.full(300, 3.0)]
    kde = jaxkde.KDE(bandwidth="lscv").fit(x)
    h = math.sqrt(kde.bandwidth_[0, 0])

    def lscv(h):  # scalar H = h^2 I in 2-D, float64 brute force
        u = np.sum((x[:, None] - x[None]) ** 2, axis=-1)
        square = np.mean(np.exp(-u / (4 * h * h)) / (4 * math.pi * h * h))
        k = np.exp(-u / (2 * h * h)) / (2 * math.pi * h * h)
        np.fill_diagonal(k, 0.0)
        return square - 2 * np.mean(k.sum(axis=1) / 299)

    res = minimize_scalar(
        lambda lh: lscv(math.exp(lh)),
        method="bounded",
        bounds=(math.log(1e-3), math.log(10.0)),
        options={"xatol": 1e-7},
    )
    assert lscv(h) <= lscv(math.exp(res.x)) + 1e-4 * abs(lscv(math.exp(res.x)))


@pytest.mark.parametrize("peak", [-3.0, 1.0, -6.0, 4.0, -2.875, -12.0 + 0.25])
def test_scale_search_brackets_optima_at_every_window_edge(peak):
    # Optima on the edges of every window the search may lay, and between them: the search
    # brackets each within a bounded number of evaluations.
    from jaxkde.bandwidth.scale_search import scale_search

    calls = []
    target = peak * math.log(10.0)

    def evaluate(s):
        calls.append(1)
        return -np.abs(np.asarray(s) - target)  # a kink: the worst case for a bracket

    status, s, _, _ = scale_search(evaluate, 1e-6)
    assert status == "converged" and abs(s - target) <= 1e-6
    assert len(calls) <= 20


@pytest.mark.slow
def test_lscv_on_duplicates_names_its_objective():
    x = np.repeat(np.arange(10.0), 20)[:, None]
    for data in (x, np.c_[x, 2 * x + 1]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match="least-squares cross-validation") as info:
                jaxkde.KDE(bandwidth="lscv").fit(data)
        assert "likelihood" not in str(info.value) and "returned" not in str(info.value)
    with pytest.raises(ValueError, match="leave-one-out likelihood keeps growing"):
        jaxkde.KDE(bandwidth="cv").fit(x)
