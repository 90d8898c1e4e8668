"""GPU check: correctness against float64 on the host, then the main workloads timed.

Meant for a machine with a GPU and JAX's CUDA (or ROCm) build; runs on CPU too (``--quick``
shrinks every size for a smoke run). Every workload is computed by jaxkde on the default
device at each matrix-product precision:

* ``"highest"`` (the default): true float32 products;
* ``"high"``: on NVIDIA GPUs, three bfloat16 passes (about float32 accuracy, faster);
* ``"default"``: the backend's choice, TF32 on NVIDIA GPUs since Ampere (10 mantissa bits).

and compared with a float64 NumPy reference on a subset of queries. The check (``ok``) is that
``"highest"`` on the device is as accurate as jaxkde in float32 on the host CPU backend, on the
same queries (error at most 3x the CPU's, or 1e-5 nats). The other precisions are reported, not
checked: they trade accuracy for speed, and the table says by how much. The floor is the float32
matrix product of the same work (W1, at the same precision), or that product followed by exp
and a sum (W2, W3); for W4 the random numbers and one product.

W1 MNIST pixels 10,000 x 60,000 x 784; W2 MNIST PCA-50 Scott full covariance, 10,000 x
60,000; W3 1-D n = 1,000,000 on 1,024 points and 2-D n = 200,000 on 256 x 256; W4 10,000
draws; W5 learned diagonal bandwidth (PCA-10, n = 1,000). Times are defined as in the CPU
suite (W3's include fitting), so that the speed-up column compares like with like. About 2 to 3
minutes on one H100 (estimated, not yet measured), most of it compilation and the host's float64
references. The table comes last.

Usage::

    python benchmarks/gpu.py MNIST_DIR [--out gpu.md] [--cpu-suite benchmarks/results/suite_cpu.md]
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import re
import sys
import time

import jax
import jax.numpy as jnp
import low_dim
import mnist_pca
import mnist_pixels
import numpy as np
from _report import emit, kernel_sum_floor, machine, timed

import jaxkde

PRECISIONS = ("highest", "high", "default")


def on_cpu(fn):
    """``fn()`` with the host CPU backend as default device."""
    with jax.default_device(jax.devices("cpu")[0]):
        return fn()


def cpu_suite_seconds(path: pathlib.Path | None) -> list[tuple[str, float]]:
    """(workload, jaxkde seconds) rows of a suite summary table ("W1 MNIST pixels, ...")."""
    if path is None or not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and re.match(r"W\d ", cells[0]):
            try:
                out.append((cells[0], float(cells[1])))
            except ValueError:
                pass
    return out


def density_rows(name, key, fit, queries, ref, repeats, floor_fn, include_fit=False):
    """Rows for one density workload at every precision, with the host CPU float32 check.

    ``fit(precision)`` returns a fitted KDE; ``ref`` is the float64 log density of the first
    ``len(ref)`` queries; ``floor_fn(kde, queries, precision)`` times the floor. With
    ``include_fit`` the time includes fitting (as the suite's W3 does).
    """
    n_ref = ref.shape[0]
    cpu_got = on_cpu(lambda: fit("highest").score_samples(queries[:n_ref]))
    cpu_err = float(np.max(np.abs(cpu_got - ref)))
    rows = []
    for precision in PRECISIONS:
        kde = fit(precision)
        if include_fit:
            first, med, got = timed(lambda p=precision: fit(p).score_samples(queries), repeats)
        else:
            first, med, got = timed(lambda kde=kde: kde.score_samples(queries), repeats)
        err = float(np.max(np.abs(got[:n_ref] - ref)))
        floor = floor_fn(kde, queries, precision)
        ok = err <= max(3 * cpu_err, 1e-5) if precision == "highest" else None
        rows.append((name, key, precision, med, first, floor, err, cpu_err, ok))
        print(f"{name} {precision}: {med:.4f} s (first {first:.2f} s), floor {floor:.4f} s, "
              f"err {err:.2e} (CPU float32 {cpu_err:.2e})", flush=True)  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=pathlib.Path, help="folder with the four MNIST IDX .gz files")
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument("--cpu-suite", type=pathlib.Path,
                   default=pathlib.Path(__file__).parent / "results" / "suite_cpu.md",
                   help="suite results of the 2-core CPU, for the speed-up column")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run on CPU)")
    args = p.parse_args(argv)
    quick = args.quick
    reps = 1 if quick else args.repeats
    t_start = time.perf_counter()
    print(f"# GPU check; {machine()}; devices {jax.devices()}", flush=True)
    rows = []

    # ------------------------------------------------------------------ W1 MNIST pixels
    train, test = mnist_pixels.load(args.data_dir, 6000 if quick else 60000,
                                    1000 if quick else 10000)  # fmt: skip
    n_ref = 100 if quick else 300
    ref = mnist_pixels.reference_log_density(train, test[:n_ref])
    sigma = mnist_pixels.SIGMA
    a_test, a_train = jnp.asarray(test), jnp.asarray(train)

    def w1_floor(kde, queries, precision):
        prec = jaxkde.PRECISIONS[precision]
        mm = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=prec))
        mm(a_test, a_train).block_until_ready()
        return timed(lambda: mm(a_test, a_train).block_until_ready(), reps)[1]

    def fit_w1(precision):
        return jaxkde.KDE(bandwidth=sigma, precision=precision).fit(train)

    rows += density_rows("W1 MNIST pixels", "W1", fit_w1, test, ref, reps, w1_floor)

    def exp_floor(kde, queries, precision):
        return kernel_sum_floor(kde, queries, reps, precision)

    # ------------------------------------------------------------------ W2 PCA-50, Scott full
    z_train, z_test = mnist_pca.load(args.data_dir, 50)
    if quick:
        z_train, z_test = z_train[:6000], z_test[:1000]
    h = mnist_pca.scott_full(z_train)
    ref = mnist_pca.reference(z_train, z_test[:n_ref], h)

    def fit_w2(precision):
        return jaxkde.KDE(bandwidth="scott_full", precision=precision).fit(z_train)

    rows += density_rows("W2 MNIST PCA-50", "W2", fit_w2, z_test, ref, reps, exp_floor)

    # ------------------------------------------------------------------ W4 sampling
    kde = jaxkde.KDE(bandwidth="scott_full").fit(z_train)
    keys = iter(range(1, 10000))
    draws_n = 1000 if quick else 10000
    first, med, draws = timed(lambda: kde.sample(draws_n, key=next(keys)), reps)
    expected = np.cov(z_train.astype(np.float64).T) + h
    cov_err = float(np.max(np.abs(np.cov(draws.astype(np.float64).T) - expected))
                    / np.max(np.abs(expected)))  # fmt: skip
    rows.append(("W4 sampling", "W4", "highest", med, first, None, cov_err, None,
                 cov_err < (0.2 if quick else 0.1)))  # fmt: skip
    print(f"W4: {med:.4f} s (first {first:.2f} s), covariance rel. err {cov_err:.3f}", flush=True)

    # ------------------------------------------------------------------ W3 low-dimensional grids
    rng = np.random.default_rng(0)
    n1 = 100_000 if quick else 1_000_000
    x1 = low_dim.mixture_1d(n1, rng)[:, None]
    h1 = float(n1 ** (-1 / 5) * np.std(x1.astype(np.float64), ddof=1))
    g1 = np.linspace(float(x1.min()) - 4 * h1, float(x1.max()) + 4 * h1, 1024)[:, None]
    idx1 = np.arange(0, 1024, 16)
    ref1 = low_dim.exact_log_density(x1, g1[idx1], h1)
    n2, side = (20_000, 64) if quick else (200_000, 256)
    x2 = low_dim.mixture_2d(n2, rng)
    h2 = float(n2 ** (-1 / 6) * np.sqrt(np.mean(np.var(x2.astype(np.float64), axis=0, ddof=1))))
    lo, hi = x2.min(0) - 4 * h2, x2.max(0) + 4 * h2
    axes = [np.linspace(lo[i], hi[i], side) for i in range(2)]
    g2 = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    idx2 = np.sort(np.random.default_rng(1).choice(side * side, 256, replace=False))
    ref2 = low_dim.exact_log_density(x2, g2[idx2], h2)
    for name, key, x, g, bw, idx, rf in [
        (f"W3 1-D n={n1:,}, 1024 points", "W3 1-D", x1, g1, h1, idx1, ref1),
        (f"W3 2-D n={n2:,}, {side}x{side}", "W3 2-D", x2, g2, h2, idx2, ref2),
    ]:
        order = np.concatenate([idx, np.setdiff1d(np.arange(g.shape[0]), idx)])
        q = g[order].astype(np.float32)  # the reference points first

        def fit_w3(precision, x=x, bw=bw):
            return jaxkde.KDE(bandwidth=bw, precision=precision).fit(x)

        rows += density_rows(name, key, fit_w3, q, rf, reps, exp_floor, include_fit=True)

    # ------------------------------------------------------------------ W5 learned bandwidth
    pca10 = jaxkde.pca_fit(train, 10)
    z10 = np.asarray(jaxkde.pca_transform(pca10, train[:1000]), np.float32)
    t0 = time.perf_counter()
    fit = jaxkde.fit_bandwidth(z10, kind="diagonal")
    sec = time.perf_counter() - t0
    cpu_fit = on_cpu(lambda: jaxkde.fit_bandwidth(z10, kind="diagonal"))
    gap = abs(fit.objective - cpu_fit.objective)
    rows.append(("W5 LOO diagonal bandwidth, n = 1,000", "W5 LOO", "highest", sec, sec, None,
                 gap, None, gap < 1e-3))  # fmt: skip
    print(f"W5: {sec:.2f} s ({fit.steps} steps), objective {fit.objective:.4f} vs CPU "
          f"{cpu_fit.objective:.4f}", flush=True)  # fmt: skip

    # ------------------------------------------------------------------ table
    cpu = [] if quick else cpu_suite_seconds(args.cpu_suite)  # quick sizes are not comparable

    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    lines = [
        f"GPU check; {machine()}; {datetime.date.today()}; median of {reps} runs after the "
        f"first; {(time.perf_counter() - t_start) / 60:.1f} minutes in all.",
        "",
        "| workload | precision | time (s) | first call (s) | floor (s) | vs floor | max err vs "
        "float64 | host CPU float32 err | ok | 2-core CPU suite (s) | speed-up |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, key, precision, sec, first, floor, err, cpu_err, ok in rows:
        ratio = None if floor is None else sec / floor
        match = [sec for workload, sec in cpu if workload.startswith(key)]
        ref_s = match[0] if match and precision == "highest" else None
        speed = None if ref_s is None else ref_s / sec
        status = "" if ok is None else ("yes" if ok else "NO")
        lines.append(
            f"| {name} | {precision} | {sec:.4g} | {first:.3g} | {f(floor, '.4g')} | "
            f"{f(ratio, '.2f')} | {err:.2e} | {f(cpu_err, '.2e')} | {status} | "
            f"{f(ref_s, '.3g')} | {f(speed, '.0f')} |"
        )
    lines += [
        "",
        "W4's error is the draws' covariance against Cov + H (relative; sampling noise alone "
        "gave 0.010 to 0.033 over 30 seeds on the CPU); W5's is the gap between the objectives "
        "reached on the device and on the host CPU.",
    ]
    failed = [r for r in rows if r[-1] is False]
    if failed:
        lines.append(f"FAILED: {', '.join(f'{r[0]} ({r[2]})' for r in failed)}")
    emit("\n".join(lines), args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
