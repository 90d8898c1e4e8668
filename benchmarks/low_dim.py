"""W3: low-dimensional densities on grids, where binned FFT methods are the peers to beat.

* 1-D: n = 1,000,000 points (a two-component Gaussian mixture), density on a 1,024-point grid;
* 2-D: n = 200,000 points (a three-component correlated mixture), on a 256 x 256 grid (65,536
  points, the grid KDEpy's FFTKDE chooses);
* 3-D: n = 100,000 points (a two-component mixture) on a 64 x 64 x 64 grid, jaxkde's grid
  methods beside FFTKDE only.

Gaussian kernel, isotropic bandwidth ``h`` from Scott's rule (the mean standard deviation in 2-D)
given to every tool; times include fitting. Tools, side by side in one run:

* jaxkde ``KDE(bandwidth=h).fit(x).score_grid(axes=..., method=m)`` for ``m`` in auto, binned
  and exact (see :mod:`jaxkde.stats.grid`), fit included; binned also on a fitted KDE;
* jaxkde ``score_samples`` at every grid point (the exact engine, no grid structure), and the
  floor of that exact summation: jaxkde's blocked product followed by ``exp`` and a row sum
  (no stabilisation), on its own whitened layout;
* KDEpy ``FFTKDE`` (linear binning and an FFT convolution: approximate, ``O(n + g log g)``) and
  ``TreeKDE`` (a k-d tree with the kernel cut off at its practical support); SciPy
  ``gaussian_kde`` (exact, float64); scikit-learn ``KernelDensity`` (tree, exact up to its
  tolerances). Slow tools run on a subset of grid points and are extrapolated linearly (the
  table says so).

Beside W3, the exact 1-D case of sum updating (:mod:`jaxkde.core.sum_updating`): the epanechnikov
kernel, n = 1,000,000 data and as many queries anywhere, fit included, beside the blocked
engine's time for the same job (extrapolated) and the leave-one-out likelihood over all rows.

``--no-peers`` runs jaxkde alone (a GPU machine has no KDEpy); ``benchmarks/gpu.sh`` uses it.

Errors are against a float64 exact sum on a subset of grid points (every 8th in 1-D, 256 drawn
at random in 2-D): the largest density error relative to the largest density of the subset,
and the largest log-density error where the density is at least 1e-3 (and 1e-20) of that.

Usage::

    python benchmarks/low_dim.py [--out benchmarks/results/w3.md]
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _report import Summary, emit, kernel_sum_floor, machine, seconds, timed
from scipy.special import logsumexp

import jaxkde


def mixture_1d(n: int, rng) -> np.ndarray:
    comp = rng.random(n) < 0.7
    return np.where(comp, rng.normal(0.0, 1.0, n), rng.normal(4.0, 0.5, n)).astype(np.float32)


def mixture_2d(n: int, rng) -> np.ndarray:
    means = np.array([[0.0, 0.0], [3.0, 2.0], [-2.0, 3.0]])
    covs = np.array(
        [[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.2], [-0.2, 0.8]], [[0.7, 0.0], [0.0, 0.3]]]
    )
    comp = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    chol = np.linalg.cholesky(covs)
    x = means[comp] + np.einsum("nij,nj->ni", chol[comp], rng.normal(size=(n, 2)))
    return x.astype(np.float32)


def exact_log_density(x: np.ndarray, q: np.ndarray, h: float, block: int = 64) -> np.ndarray:
    """float64 exact Gaussian KDE log density, queries in blocks (direct differences)."""
    x64 = x.astype(np.float64)
    n, d = x64.shape
    out = []
    for s in range(0, q.shape[0], block):
        qb = q[s : s + block].astype(np.float64)
        d2 = ((qb[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
        out.append(logsumexp(-0.5 * d2 / h**2, axis=1))
    return np.concatenate(out) - np.log(n) - 0.5 * d * np.log(2 * np.pi) - d * np.log(h)


def errors(log_f: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(max |f - f_ref| / max f_ref, max |log f - log f_ref| where f_ref >= 1e-3 max f_ref,
    the same where f_ref >= 1e-20 max f_ref)."""
    peak = np.max(ref)
    out = []
    with np.errstate(over="ignore", invalid="ignore"):
        out.append(float(np.max(np.abs(np.exp(log_f - peak) - np.exp(ref - peak)))))
        for level in (1e-3, 1e-20):
            keep = ref >= peak + np.log(level)
            out.append(float(np.max(np.abs(log_f[keep] - ref[keep]))))
    return tuple(out)


def grid_axes(grid: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The axes of a rectilinear grid given as points ``(g, d)``, and where each point sits in
    the flattened ``score_grid`` result."""
    axes = tuple(np.unique(grid[:, k]) for k in range(grid.shape[1]))
    index = np.ravel_multi_index(
        [np.searchsorted(a, grid[:, k]) for k, a in enumerate(axes)],
        tuple(a.shape[0] for a in axes),
    )
    return axes, index


def mixture_3d(n: int, rng) -> np.ndarray:
    comp = rng.random(n) < 0.6
    a = rng.normal(size=(n, 3))
    b = 0.5 * rng.normal(size=(n, 3)) + np.array([3.0, -1.0, 2.0])
    return np.where(comp[:, None], a, b).astype(np.float32)


def grid_method_rows(name, x, h, axes, index, ref_idx, ref, repeats):
    """Rows of ``KDE(bandwidth=h).fit(x).score_grid(axes=axes, method=m)`` for each method, fit
    included; ``index`` places each grid point in the flattened result."""
    rows = []
    scope = f"all {index.shape[0]}"
    for method in ("auto", "binned", "exact"):

        def fit_grid(method=method):
            return jaxkde.KDE(bandwidth=h).fit(x).score_grid(axes=axes, method=method)

        first, med, res = timed(fit_grid, repeats)
        errs = errors(res.log_density.reshape(-1)[index][ref_idx], ref)
        rows.append((f"jaxkde score_grid {method} ({res.method}, {res.n_exact} exact cells)",
                     scope, med, first, *errs))  # fmt: skip
        print(f"{name} score_grid {method}: first {first:.3f} s, median {med:.4f} s, "
              f"{res.method} {res.n_exact} exact, errs {errs}", flush=True)  # fmt: skip
    return rows


def fftkde_row(name, x, h, points, ref_idx, ref, repeats):
    """KDEpy FFTKDE on ``points`` (an equally spaced grid), timed and scored like the others."""
    from KDEpy import FFTKDE

    def fft():
        return FFTKDE(kernel="gaussian", bw=h).fit(x.astype(np.float64)).evaluate(points)

    first, sec, dens = timed(fft, repeats)
    with np.errstate(divide="ignore"):
        errs = errors(np.log(np.maximum(dens, 0))[ref_idx], ref)
    print(f"{name} FFTKDE: {sec:.3f} s, errs {errs}", flush=True)
    return ("KDEpy FFTKDE (binned, approximate)", f"all {points.shape[0]}", sec, first, *errs)


def workload_3d(x, size, h, args):
    """3-D rows: jaxkde's grid methods and FFTKDE only (the other tools would take hours)."""
    axes = jaxkde.default_axes(jaxkde.KDE(bandwidth=h).fit(x).state_, size, 3.0)
    cells = np.stack([g.reshape(-1) for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    ref_idx = np.sort(np.random.default_rng(2).choice(cells.shape[0], 256, replace=False))
    ref = exact_log_density(x, cells[ref_idx], h)
    index = np.arange(cells.shape[0])
    rows = grid_method_rows("3-D", x, h, axes, index, ref_idx, ref, args.repeats)
    if args.no_peers:
        return rows
    return [*rows, fftkde_row("3-D", x, h, cells, ref_idx, ref, args.repeats)]


def epanechnikov_reference(x: np.ndarray, q: np.ndarray, h: float) -> np.ndarray:
    """float64 exact epanechnikov KDE density at ``q``: every term inside each query's window
    (found by searching the sorted data; the terms outside are exactly zero)."""
    xs = np.sort(x.astype(np.float64))
    lo = np.searchsorted(xs, q - h, side="right")
    hi = np.searchsorted(xs, q + h, side="left")
    out = np.empty(q.shape[0])
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        u = (q[i] - xs[a:b]) / h
        out[i] = np.sum(1.0 - u * u)
    return out * 0.75 / (h * xs.shape[0])


def sum_updating_rows(args) -> tuple[list, dict]:
    """Exact 1-D epanechnikov: n data and as many queries anywhere, by sum updating
    (``score_samples`` routes there), fit included; the engine's time for the same job
    extrapolated from a subset; the leave-one-out likelihood over all n rows, with its
    gradient; the relative density error against float64 on reference queries."""
    rng = np.random.default_rng(3)
    n = args.n_sum
    x = mixture_1d(n, rng)[:, None]
    sd = float(np.std(x.astype(np.float64), ddof=1))
    h = float(np.sqrt(5.0) * sd * n ** (-1 / 5))  # Scott's rule at the kernel's variance
    lo, hi = float(x.min()) - 1.0, float(x.max()) + 1.0
    q = np.where(rng.random(n) < 0.5, rng.uniform(lo, hi, n), mixture_1d(n, rng)).astype(
        np.float32
    )[:, None]
    ref_q = q[:: max(1, n // 2000), 0]
    ref = epanechnikov_reference(x[:, 0], ref_q.astype(np.float64), h)

    def fit_score():
        return jaxkde.KDE("epanechnikov", bandwidth=h).fit(x).score_samples(q)

    first, med, got = timed(fit_score, args.repeats)
    dens = np.exp(got[:: max(1, n // 2000)].astype(np.float64))
    inside = ref > 0
    rel = float(np.max(np.abs(dens[inside] / ref[inside] - 1.0)))
    zeros_agree = bool(np.all(dens[~inside] == 0.0))
    print(f"sum updating: first {first:.2f} s, median {med:.3f} s, rel err {rel:.2e}, "
          f"empty windows -inf: {zeros_agree}", flush=True)  # fmt: skip
    rows = [("jaxkde KDE('epanechnikov').fit(x).score_samples(q) (sum updating)", f"all {n:,}",
             med, first, rel)]  # fmt: skip

    kde = jaxkde.KDE("epanechnikov", bandwidth=h).fit(x)
    sub = q[:4096]
    jaxkde.log_density(kde.state_, sub).block_until_ready()
    t0 = time.perf_counter()
    jaxkde.log_density(kde.state_, sub).block_until_ready()
    engine = (time.perf_counter() - t0) * n / sub.shape[0]
    rows.append(("jaxkde blocked engine (jaxkde.log_density), the same job",
                 f"{sub.shape[0]} queries, extrapolated", engine, None, None))  # fmt: skip
    print(f"engine: {engine:.1f} s extrapolated", flush=True)

    centred = x.astype(np.float64) - np.mean(x.astype(np.float64))
    x_hi = centred.astype(np.float32)
    x_lo = (centred - x_hi).astype(np.float32)
    lw = np.full(n, -np.log(n), np.float32)
    value_and_grad = jax.jit(jax.value_and_grad(jaxkde.loo_log_likelihood),
                             static_argnames=("kind", "kernel"))  # fmt: skip
    kern = jaxkde.get_kernel("epanechnikov")
    params = jnp.asarray([np.log(h)], jnp.float32)
    inputs = (jnp.asarray(x_hi), jnp.asarray(lw), jnp.arange(n), jnp.asarray(x_lo))

    def loo():
        v, g = value_and_grad(params, *inputs, kind="scalar", kernel=kern)
        return float(v), float(g[0])

    first_loo, med_loo, (value, grad) = timed(loo, args.repeats)
    rows.append(("leave-one-out log-likelihood and gradient, all rows (sum updating)",
                 f"all {n:,}", med_loo, first_loo, None))  # fmt: skip
    print(f"LOO: first {first_loo:.2f} s, median {med_loo:.3f} s, value {value:.6f}, "
          f"grad {grad:.3g}", flush=True)  # fmt: skip
    return rows, {"h": h, "n": n, "zeros": zeros_agree, "loo": value}


def workload(name, x, grid, h, ref_idx, sub_idx, tree_idx, args):
    """Rows (tool, scope, seconds for the whole grid, rel err, log err) for one data set."""
    d = x.shape[1]
    g = grid.shape[0]
    t0 = time.perf_counter()
    ref = exact_log_density(x, grid[ref_idx], h)
    ref_s = time.perf_counter() - t0
    print(f"{name}: float64 reference on {len(ref_idx)} grid points {ref_s:.1f} s", flush=True)
    rows = []

    def jaxkde_fit_eval():
        kde = jaxkde.KDE(bandwidth=h, batch_size=args.batch_size, chunk_size=args.chunk_size)
        return kde, kde.fit(x).score_samples(grid)

    axes, index = grid_axes(grid)
    rows += grid_method_rows(name, x, h, axes, index, ref_idx, ref, args.repeats)
    fitted = jaxkde.KDE(bandwidth=h).fit(x)
    first, med, _ = timed(lambda: fitted.score_grid(axes=axes, method="binned"), 10)
    rows.append(("jaxkde score_grid binned, fitted KDE (grid only)", f"all {g}", med, first,
                 None, None, None))  # fmt: skip
    print(f"{name} score_grid binned, grid only: {med:.4f} s", flush=True)

    first, med, (kde, got) = timed(jaxkde_fit_eval, args.repeats)
    errs = errors(got[ref_idx], ref)
    rows.append(("jaxkde score_samples at every point (exact engine)", f"all {g}", med, first,
                 *errs))  # fmt: skip
    print(f"{name} jaxkde: first {first:.2f} s, median {med:.2f} s, errs {errs}", flush=True)
    floor = kernel_sum_floor(kde, grid, args.repeats)
    rows.append(("floor of exact summation: blocked product + exp + sum", f"all {g}", floor,
                 None, None, None, None))  # fmt: skip
    print(f"{name} floor: {floor:.2f} s", flush=True)

    if args.no_peers:
        return rows
    from KDEpy import TreeKDE

    rows.append(fftkde_row(name, x, h, grid, ref_idx, ref, args.repeats))

    t0 = time.perf_counter()
    dens = TreeKDE(kernel="gaussian", bw=h).fit(x.astype(np.float64)).evaluate(grid[tree_idx])
    sec = time.perf_counter() - t0
    pos = np.searchsorted(tree_idx, ref_idx)
    with np.errstate(divide="ignore"):
        tree_log = np.log(np.maximum(dens, 0))
    errs = errors(tree_log[pos], ref) if np.all(tree_idx[pos] == ref_idx) else (None,) * 3
    scope = f"all {g}" if len(tree_idx) == g else f"{len(tree_idx)} points, extrapolated"
    rows.append(("KDEpy TreeKDE", scope, sec * g / len(tree_idx), None, *errs))
    print(f"{name} TreeKDE: {len(tree_idx)} points {sec:.2f} s", flush=True)

    from scipy.stats import gaussian_kde

    sd = float(np.sqrt(np.mean(np.var(x.astype(np.float64), axis=0, ddof=1))))
    pos = np.searchsorted(ref_idx, sub_idx)
    t0 = time.perf_counter()
    skde = gaussian_kde(x.T.astype(np.float64), bw_method=h / sd)
    skde.covariance = np.eye(d) * h**2  # isotropic h in every dimension, as the other tools
    skde.cho_cov = np.linalg.cholesky(skde.covariance)
    out = skde.logpdf(grid[sub_idx].T.astype(np.float64))
    sec = time.perf_counter() - t0
    errs = errors(out, ref[pos])
    rows.append(("SciPy gaussian_kde (exact, float64)", f"{len(sub_idx)} points, extrapolated",
                 sec * g / len(sub_idx), None, *errs))  # fmt: skip
    print(f"{name} scipy: {len(sub_idx)} points {sec:.2f} s, errs {errs}", flush=True)

    from sklearn.neighbors import KernelDensity

    t0 = time.perf_counter()
    out = KernelDensity(bandwidth=h).fit(x).score_samples(grid[sub_idx])
    sec = time.perf_counter() - t0
    errs = errors(out, ref[pos])
    rows.append(("scikit-learn KernelDensity (tree)", f"{len(sub_idx)} points, extrapolated",
                 sec * g / len(sub_idx), None, *errs))  # fmt: skip
    print(f"{name} sklearn: {len(sub_idx)} points {sec:.2f} s, errs {errs}", flush=True)
    return rows


def run(argv=None) -> tuple[str, list[Summary]]:
    """Run W3; print and optionally write its table; return it with the summary lines."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-1d", type=int, default=1_000_000)
    p.add_argument("--grid-1d", type=int, default=1024)
    p.add_argument("--n-2d", type=int, default=200_000)
    p.add_argument("--grid-2d", type=int, default=256, help="points per axis")
    p.add_argument("--n-3d", type=int, default=100_000)
    p.add_argument("--grid-3d", type=int, default=64, help="points per axis")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--n-sum", type=int, default=1_000_000,
                   help="data and queries of the exact 1-D sum-updating case")  # fmt: skip
    p.add_argument("--no-peers", action="store_true",
                   help="jaxkde only (for a GPU machine without KDEpy); the 2-D grid is then "
                   "jaxkde's default axes instead of FFTKDE's")  # fmt: skip
    p.add_argument("--out", type=pathlib.Path)
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    print(f"# W3 low-dimensional grids; {machine()}", flush=True)

    x1 = mixture_1d(args.n_1d, rng)[:, None]
    h1 = float(args.n_1d ** (-1 / 5) * np.std(x1.astype(np.float64), ddof=1))
    g1 = np.linspace(float(x1.min()) - 4 * h1, float(x1.max()) + 4 * h1, args.grid_1d)[:, None]
    idx1 = np.arange(0, args.grid_1d, 8)
    rows1 = workload("1-D", x1, g1, h1, idx1, idx1[::2],
                     np.arange(args.grid_1d), args)  # fmt: skip

    x2 = mixture_2d(args.n_2d, rng)
    sd2 = float(np.sqrt(np.mean(np.var(x2.astype(np.float64), axis=0, ddof=1))))
    h2 = float(args.n_2d ** (-1 / 6) * sd2)
    if args.no_peers:
        axes2 = jaxkde.default_axes(jaxkde.KDE(bandwidth=h2).fit(x2).state_, args.grid_2d, 3.0)
        g2 = np.stack([a.reshape(-1) for a in np.meshgrid(*axes2, indexing="ij")], axis=1)
    else:
        from KDEpy import FFTKDE

        g2, _ = FFTKDE(kernel="gaussian", bw=h2).fit(x2.astype(np.float64)).evaluate(args.grid_2d)
    n_grid = g2.shape[0]
    # Reference points scattered over the grid (a stride would follow one edge of it).
    idx2 = np.sort(np.random.default_rng(1).choice(n_grid, 256, replace=False))
    tree2 = np.union1d(idx2, np.arange(0, n_grid, 16))
    rows2 = workload("2-D", x2, g2, h2, idx2, idx2, tree2, args)

    x3 = mixture_3d(args.n_3d, rng)
    sd3 = float(np.sqrt(np.mean(np.var(x3.astype(np.float64), axis=0, ddof=1))))
    h3 = float(args.n_3d ** (-1 / 7) * sd3)
    rows3 = workload_3d(x3, args.grid_3d, h3, args)
    rows_su, su = sum_updating_rows(args)

    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    def ratio(sec, fft):
        return "" if fft is None else f"{sec / fft[2]:.3g}x"

    lines = [
        f"W3, Gaussian kernel on grids, Scott bandwidth; {machine()}; {datetime.date.today()}; "
        f"times include fitting (except the 'fitted KDE' row), median of {args.repeats} runs "
        "after the first (subset tools: one run, extrapolated).",
    ]
    summary = []
    for title, rows, h in [
        (f"1-D, n = {args.n_1d:,}, {args.grid_1d}-point grid", rows1, h1),
        (f"2-D, n = {args.n_2d:,}, {args.grid_2d} x {args.grid_2d} grid", rows2, h2),
    ]:
        auto, binned, exact = rows[0], rows[1], rows[2]
        grid_only = rows[3]
        engine = rows[4]
        fft = next((r for r in rows if r[0].startswith("KDEpy FFTKDE")), None)
        lines += [
            "",
            f"{title}, h = {h:.4g}:",
            "",
            "| tool | measured on | time (s) | vs FFTKDE | first call (s) | max density err "
            "/ peak | max log err (f >= 1e-3 peak) | max log err (f >= 1e-20 peak) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for tool, scope, sec, first, rel, lerr, lerr20 in rows:
            lines.append(f"| {tool} | {scope} | {seconds(sec)} | {ratio(sec, fft)} | "
                         f"{f(first, '.3g')} | {f(rel, '.1e')} | {f(lerr, '.1e')} | "
                         f"{f(lerr20, '.1e')} |")  # fmt: skip
        if fft is None:
            lines += ["", f"exact grid: score_samples at every point takes "
                      f"{engine[2] / exact[2]:.2g}x its time."]  # fmt: skip
            summary.append(Summary(f"W3 {title} (score_grid auto)", auto[2], None, "", None,
                                   f"binned {seconds(binned[2])} s; exact grid "
                                   f"{seconds(exact[2])} s"))  # fmt: skip
            continue
        exact_peers = [r for r in rows if r[0].startswith(("SciPy", "scikit-learn"))]
        best = min(exact_peers, key=lambda r: r[2])
        lines += [
            "",
            f"binned, fit included: {binned[2] / fft[2]:.2f}x FFTKDE's time (its density error "
            f"{binned[4]:.1e} of the peak, FFTKDE's {fft[4]:.1e}); on a fitted KDE "
            f"{grid_only[2] / fft[2]:.2f}x. auto: {auto[2] / fft[2]:.3g}x FFTKDE's time, log "
            f"error at most {auto[6]:.1e} nats where f >= 1e-20 of the peak (FFTKDE: "
            f"{fft[6]:.3g}). exact grid: score_samples at every point takes "
            f"{engine[2] / exact[2]:.2g}x its time; the faster exact peer ({best[0]}) "
            f"{best[2] / exact[2]:.0f}x.",
        ]
        summary.append(Summary(f"W3 {title} (score_grid auto)", auto[2], None, fft[0], fft[2],
                               f"binned {seconds(binned[2])} s; exact grid "
                               f"{seconds(exact[2])} s; fastest exact peer: {best[0]} "
                               f"{seconds(best[2])} s"))  # fmt: skip
    g3 = args.grid_3d
    lines += [
        "",
        f"3-D, n = {args.n_3d:,}, {g3} x {g3} x {g3} grid (default axes), h = {h3:.4g}; errors "
        "on 256 grid points drawn at random; FFTKDE evaluated on the same points:",
        "",
        "| tool | measured on | time (s) | vs FFTKDE | first call (s) | max density err "
        "/ peak | max log err (f >= 1e-3 peak) | max log err (f >= 1e-20 peak) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fft3 = None if args.no_peers else rows3[-1]
    for tool, scope, sec, first, rel, lerr, lerr20 in rows3:
        lines.append(f"| {tool} | {scope} | {seconds(sec)} | {ratio(sec, fft3)} | "
                     f"{f(first, '.3g')} | {f(rel, '.1e')} | {f(lerr, '.1e')} | "
                     f"{f(lerr20, '.1e')} |")  # fmt: skip
    lines += [
        "",
        f"Exact 1-D epanechnikov, n = {su['n']:,} data (the 1-D mixture) and as many queries "
        f"(half uniform over the data's range +- 1, half from the mixture), h = {su['h']:.4g}; "
        "density error relative to float64 (every term of each window) on "
        f"{min(2000, su['n'])} of the queries; empty windows give -inf: {su['zeros']}:",
        "",
        "| computation | measured on | time (s) | first call (s) | max relative density err |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for tool, scope, sec, first, rel in rows_su:
        lines.append(f"| {tool} | {scope} | {seconds(sec)} | {f(first, '.3g')} | "
                     f"{f(rel, '.1e')} |")  # fmt: skip
    lines += [
        "",
        f"Leave-one-out mean log-likelihood at this h: {su['loo']:.6g}"
        + (" (-inf: some point has no other within h, as compact kernels allow)."
           if su["loo"] == -np.inf else "."),
    ]  # fmt: skip
    table = "\n".join(lines)
    emit(table, args.out)
    return table, summary


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
