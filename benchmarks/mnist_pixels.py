"""W1: log densities of the MNIST test images under a Gaussian KDE of the training images.

Pixels / 255, isotropic sigma = 0.2, float32, all tools measured side by side in one run:

* jaxkde (blocked online log-sum-exp);
* the hardware floor: the bare float32 matrix product of the same shapes in JAX, both as one
  (n_test, n_train) product and blocked exactly as jaxkde blocks it (same GEMMs, no kernel);
* scikit-learn ``KernelDensity`` (default tree), and jax.scipy.stats.gaussian_kde with the same
  isotropic bandwidth, and the seed's numpy 3-D broadcast: timed on a subset of queries and
  extrapolated linearly to all queries (the table says so);
* a float64 reference (NumPy, centred data) on the first ``--reference-queries`` test images,
  against which every tool's max |error| in log density is reported.

Peak memory is XLA's accounting of the compiled program's temporaries and outputs (JAX tools)
or tracemalloc's peak (NumPy and scikit-learn tools), beyond the inputs.

Usage::

    python benchmarks/mnist_pixels.py ../shared/data/mnist [--out benchmarks/results/w1.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _report import Summary, emit, jaxkde_timing, seconds, timed, traced_peak, xla_bytes
from jax import lax
from scipy.special import logsumexp

import jaxkde
from jaxkde.apps.datasets import read_idx
from jaxkde.estimator.evaluation import query_block_rows

SIGMA = 0.2


def load(data_dir: pathlib.Path, n_train: int, n_test: int):
    train = read_idx(data_dir / "train-images-idx3-ubyte.gz").reshape(-1, 784)[:n_train]
    test = read_idx(data_dir / "t10k-images-idx3-ubyte.gz").reshape(-1, 784)[:n_test]
    return (train / np.float32(255)).astype(np.float32), (test / np.float32(255)).astype(np.float32)


def reference_log_density(train: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """float64: squared distances of centred data by GEMM (error ~1e-12 here), then logsumexp."""
    x = train.astype(np.float64)
    mu = x.mean(0)
    x = (x - mu) / SIGMA
    q = (queries.astype(np.float64) - mu) / SIGMA
    d2 = np.maximum((q**2).sum(1)[:, None] + (x**2).sum(1)[None, :] - 2 * q @ x.T, 0)
    n, d = x.shape
    return (
        logsumexp(-0.5 * d2, axis=1) - np.log(n) - 0.5 * d * np.log(2 * np.pi) - d * np.log(SIGMA)
    )


def run(argv=None) -> tuple[str, list[Summary]]:
    """Run W1; print and optionally write its table; return it with the summary line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=pathlib.Path, help="folder with the four MNIST IDX .gz files")
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after the first call")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--reference-queries", type=int, default=500)
    p.add_argument("--sklearn-queries", type=int, default=100)
    p.add_argument("--jsp-queries", type=int, default=20)
    p.add_argument("--broadcast-queries", type=int, default=4)
    p.add_argument("--skip", nargs="*", default=[], choices=["sklearn", "jsp", "broadcast"])
    p.add_argument(
        "--default-precision",
        action="store_true",
        help="also time jaxkde at precision='default' (TF32 products on recent GPUs)",
    )
    p.add_argument("--out", type=pathlib.Path, help="write the markdown table here too")
    args = p.parse_args(argv)

    train, test = load(args.data_dir, args.n_train, args.n_test)
    n, d = train.shape
    m = test.shape[0]
    print(
        f"# W1 MNIST pixels: {m} queries x {n} data x {d} dims, sigma={SIGMA}, float32", flush=True
    )
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}",
        flush=True,
    )
    rows = []  # (tool, scope, seconds for all queries, first call, compile, memory, max err)

    n_ref = min(args.reference_queries, m)
    t0 = time.perf_counter()
    ref = reference_log_density(train, test[:n_ref])
    print(f"float64 reference on {n_ref} queries: {time.perf_counter() - t0:.1f} s", flush=True)

    # ---------------------------------------------------------------- jaxkde
    t0 = time.perf_counter()
    kde = jaxkde.KDE(bandwidth=SIGMA, batch_size=args.batch_size, chunk_size=args.chunk_size)
    kde.fit(train)
    jax.block_until_ready(kde.state_)
    fit_s = time.perf_counter() - t0
    block = test[: args.batch_size]
    first, med, compile_s, mem, err = jaxkde_timing(kde, test, args.repeats, ref)
    rows.append(("jaxkde", f"all {m}", med, first, compile_s, mem, err))
    print(
        f"jaxkde: fit {fit_s:.2f} s, compile {compile_s:.2f} s, first {first:.2f} s, "
        f"median {med:.2f} s, max err {err:.2e}",
        flush=True,
    )

    if args.default_precision:
        kde_d = jaxkde.KDE(
            bandwidth=SIGMA,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            precision="default",
        ).fit(train)
        first, med_d, got_d = timed(lambda: kde_d.score_samples(test), args.repeats)
        err_d = float(np.max(np.abs(got_d[:n_ref] - ref)))
        rows.append(("jaxkde, precision='default'", f"all {m}", med_d, first, None, None, err_d))
        print(f"jaxkde precision=default: median {med_d:.2f} s, max err {err_d:.2e}", flush=True)

    # ---------------------------------------------------------------- floors
    floor_rows = []
    a, b = jnp.asarray(test), jnp.asarray(train)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=lax.Precision.HIGHEST))
    t0 = time.perf_counter()
    mm_c = mm.lower(a, b).compile()
    mm_compile = time.perf_counter() - t0
    first, mm_med, _ = timed(lambda: mm(a, b).block_until_ready(), args.repeats)
    rows.append(
        ("matmul floor, one product", f"all {m}", mm_med, first, mm_compile, xla_bytes(mm_c), None)
    )
    floor_rows.append(len(rows) - 1)
    print(f"floor (one product): median {mm_med:.2f} s", flush=True)

    state = kde.state_
    pts = state.points

    @jax.jit
    def blocked_mm(q):
        def step(acc, z):
            return acc + jnp.matmul(q, z.T, precision=lax.Precision.HIGHEST)[:, 0], None

        return lax.scan(step, jnp.zeros((q.shape[0],), q.dtype), pts)[0]

    qb = jnp.asarray(block)
    t0 = time.perf_counter()
    bm_c = blocked_mm.lower(qb).compile()
    bm_compile = time.perf_counter() - t0
    # Exactly jaxkde's query blocks: full blocks, and the final one padded as jaxkde pads it.
    shapes = [
        query_block_rows(min(args.batch_size, m - start), args.batch_size)
        for start in range(0, m, args.batch_size)
    ]
    block_inputs = [jnp.asarray(test[:rows]) for rows in shapes]
    jax.block_until_ready([blocked_mm(q) for q in block_inputs])  # compile every shape

    def run_blocked():
        return jax.block_until_ready([blocked_mm(q) for q in block_inputs])

    first, bm_med, _ = timed(run_blocked, args.repeats)
    rows.append(
        (
            "matmul floor, jaxkde's blocks",
            f"all {m}",
            bm_med,
            first,
            bm_compile,
            xla_bytes(bm_c),
            None,
        )
    )
    floor_rows.append(len(rows) - 1)
    print(f"floor (blocked as jaxkde): median {bm_med:.2f} s", flush=True)

    # ---------------------------------------------------------------- scikit-learn
    if "sklearn" not in args.skip:
        from sklearn.neighbors import KernelDensity

        k = min(args.sklearn_queries, n_ref)
        t0 = time.perf_counter()
        skl = KernelDensity(kernel="gaussian", bandwidth=SIGMA).fit(train)
        skl_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        out, peak = traced_peak(lambda: skl.score_samples(test[:k]))
        sec = time.perf_counter() - t0
        err = float(np.max(np.abs(out - ref[:k])))
        rows.append(
            (
                "scikit-learn KernelDensity (algorithm='auto')",
                f"{k} queries, extrapolated",
                sec * m / k,
                None,
                None,
                peak,
                err,
            )
        )
        print(
            f"sklearn: fit {skl_fit:.2f} s, {k} queries {sec:.2f} s, max err {err:.2e}", flush=True
        )

    # ---------------------------------------------------------------- jax.scipy.stats.gaussian_kde
    if "jsp" not in args.skip:
        from jax.scipy.stats import gaussian_kde

        k = min(args.jsp_queries, n_ref)
        cov = jnp.eye(d, dtype=jnp.float32) * SIGMA**2
        jkde = gaussian_kde.tree_unflatten(
            None,
            (
                jnp.asarray(n, jnp.float32),
                jnp.asarray(train.T),
                jnp.full((n,), 1.0 / n, jnp.float32),
                cov,
                jnp.linalg.inv(cov),
            ),
        )
        logpdf = jax.jit(lambda kd, x: kd.logpdf(x))
        qk = jnp.asarray(test[:k].T)
        t0 = time.perf_counter()
        jc = logpdf.lower(jkde, qk).compile()
        jcompile = time.perf_counter() - t0
        first, jmed, out = timed(lambda: logpdf(jkde, qk).block_until_ready(), 1)
        err = float(np.max(np.abs(np.asarray(out) - ref[:k])))
        rows.append(
            (
                "jax.scipy.stats.gaussian_kde",
                f"{k} queries, extrapolated",
                jmed * m / k,
                None,
                jcompile,
                xla_bytes(jc),
                err,
            )
        )
        print(f"jax.scipy: {k} queries {jmed:.2f} s, max err {err:.2e}", flush=True)

    # ---------------------------------------------------------------- the seed's 3-D broadcast
    if "broadcast" not in args.skip:
        k = min(args.broadcast_queries, n_ref)

        def seed_style():
            diff = test[:k, None, :] - train[None, :, :]  # (k, n, d): the seed's broadcast
            d2 = np.sum(diff * diff, axis=-1)
            norm = np.float64(2 * np.pi) ** (d / 2) * np.float64(SIGMA) ** d
            return np.mean(np.exp(-0.5 * d2 / SIGMA**2), axis=1) / norm

        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            dens, peak = traced_peak(seed_style)
            sec = time.perf_counter() - t0
            logd = np.log(dens)
        bad = int(np.sum(~np.isfinite(logd)))
        err = float(np.max(np.abs(logd - ref[:k]))) if bad == 0 else float("inf")
        rows.append(
            (
                "seed-style NumPy 3-D broadcast",
                f"{k} queries, extrapolated",
                sec * m / k,
                None,
                None,
                peak,
                err,
            )
        )
        print(f"seed broadcast: {k} queries {sec:.2f} s, {bad}/{k} densities 0 or inf", flush=True)

    # ---------------------------------------------------------------- table
    jk = rows[0][2]
    floor = min(rows[i][2] for i in floor_rows)
    lines = [
        f"W1, {m} MNIST test images vs {n} training images, {d}-d, sigma={SIGMA}, float32; "
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; "
        f"{datetime.date.today()}; median of {args.repeats} runs after the first.",
        "",
        "| tool | measured on | time for all queries (s) | vs jaxkde | vs floor | first call (s) "
        "| compile (s) | peak memory (MB) | max abs err vs float64 (nats) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tool, scope, sec, first, comp, mem, err in rows:

        def f(v, fmt):
            return "" if v is None else format(v, fmt)

        lines.append(
            f"| {tool} | {scope} | {seconds(sec)} | {sec / jk:.2f}x | {sec / floor:.2f}x | "
            f"{f(first, '.3g')} | {f(comp, '.3g')} | {f(mem and mem / 2**20, '.0f')} | "
            f"{f(err, '.1e')} |"
        )
    lines.append("")
    lines.append(
        f"jaxkde / best matmul floor = {jk / floor:.3f}; errors on the first {n_ref} "
        "queries (fewer for subset tools)."
    )
    table = "\n".join(lines)
    emit(table, args.out)
    peers = [r for r in rows[1:] if r[0].startswith(("scikit", "jax.scipy"))]
    best = min(peers, key=lambda r: r[2]) if peers else None
    summary = Summary(
        f"W1 MNIST pixels, {m} x {n} x {d}",
        jk,
        floor,
        best[0] if best else "",
        best[2] if best else None,
        f"peer {best[1]}" if best else "",
    )
    return table, [summary]


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
