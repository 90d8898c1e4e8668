"""KDEs inside JAX programs: many KDEs in one call, and the traceable fit against the host fit.

1. **Bootstrap**: ``R`` resamples of ``n`` 1-D points (a two-component normal mixture), each
   fitted with Scott's rule and scored on an ``m``-point grid. jaxkde runs them as one jitted
   call (:func:`jaxkde.bootstrap_log_density`, ``vmap`` in batches); against it, the loop over
   ``KDE().fit(resample).score_samples(grid)`` and the loop over SciPy's
   ``gaussian_kde(resample).logpdf(grid)`` on the same resamples. The floor is a jitted plain
   sum of ``exp(-(g - x)^2 / 2h^2)`` over the same ``R n m`` pairs (no fit, no log space, no
   rounding account). Answers: the largest difference of jaxkde's log densities from SciPy's
   float64 ones.
2. **Fit**: :func:`jaxkde.fit_state` under ``jit`` against the host fit, for ``n = 1e6`` 1-D
   points and the 60,000 MNIST training images (784 pixels, scaled to [0, 1]), Scott's rule.
   The host fit is timed as ``KDE().fit(X)`` (float64 statistics; the layout deferred) and with
   its layout built (``.state_``), which is what ``fit_state`` returns.

Usage::

    python benchmarks/traced.py ../shared/data/mnist [--resamples 1000] [--n 2000] [--grid 512]
        [--out benchmarks/results/traced.md]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from _report import emit, machine, seconds, timed
from scipy import stats

import jaxkde
from jaxkde.apps.datasets import load_mnist


def bootstrap(n_resamples: int, n: int, m: int, peers_every: int) -> list[str]:
    rng = np.random.default_rng(0)
    x = np.where(rng.uniform(size=n) < 0.3, rng.normal(-2, 0.5, n), rng.normal(1, 1, n))
    grid = np.linspace(-4, 5, m)
    x32, g32 = jnp.asarray(x[:, None], jnp.float32), jnp.asarray(grid[:, None], jnp.float32)
    key = jax.random.key(0)

    def ours():
        return jaxkde.bootstrap_log_density(
            x32, g32, key, n_resamples=n_resamples
        ).block_until_ready()

    compile_s, ours_s, logs = timed(ours, 3)
    keys = jax.random.split(key, n_resamples)
    rows = [np.asarray(jax.random.choice(k, n, (n,), replace=True)) for k in keys]
    looped = list(range(0, n_resamples, peers_every))
    xf = x.astype(np.float32)[:, None]
    gf = grid.astype(np.float32)[:, None]
    jaxkde.KDE().fit(xf[rows[0]]).score_samples(gf)  # compile once
    t0 = time.perf_counter()
    for b in looped:
        jaxkde.KDE().fit(xf[rows[b]]).score_samples(gf)
    loop_s = (time.perf_counter() - t0) * n_resamples / len(looped)
    t0 = time.perf_counter()
    worst = 0.0
    for b in looped:
        want = stats.gaussian_kde(x[rows[b]]).logpdf(grid)
        worst = max(worst, float(np.max(np.abs(np.asarray(logs[b], np.float64) - want))))
    scipy_s = (time.perf_counter() - t0) * n_resamples / len(looped)

    h = float(np.std(x) * n ** (-0.2))
    resampled = jnp.asarray(np.stack([x[r] for r in rows]), jnp.float32)  # (R, n)

    @jax.jit
    def floor_fn(xs, g):
        def one(xb):
            return jnp.sum(jnp.exp(-0.5 * ((g - xb[None, :]) / h) ** 2), axis=1)

        return jax.lax.map(one, xs, batch_size=50)

    _, floor_s, _ = timed(lambda: floor_fn(resampled, g32).block_until_ready(), 3)
    share = "" if peers_every == 1 else f" (every {peers_every}th resample timed, scaled up)"
    return [
        f"### Bootstrap: {n_resamples} resamples of n = {n} 1-D points, {m}-point grid",
        "",
        "| method | seconds | vs jaxkde |",
        "| --- | ---: | ---: |",
        f"| jaxkde `bootstrap_log_density` (one jitted call) | {seconds(ours_s)} | 1 |",
        f"| floor: plain jitted sum of exp, same pairs | {seconds(floor_s)} | "
        f"{floor_s / ours_s:.2f} |",
        f"| loop over `KDE().fit(resample).score_samples(grid)`{share} | {seconds(loop_s)} | "
        f"{loop_s / ours_s:.1f} |",
        f"| loop over SciPy `gaussian_kde(resample).logpdf(grid)`{share} | {seconds(scipy_s)} | "
        f"{scipy_s / ours_s:.1f} |",
        "",
        f"Compile and first run of jaxkde's call: {seconds(compile_s)} s. Largest |log f - log "
        f"f_scipy| over the compared resamples and grid: {worst:.1e} (float32 against float64).",
    ]


def fit_times(data_dir: pathlib.Path) -> list[str]:
    rng = np.random.default_rng(1)
    cases = {
        "n = 1e6, 1-D": rng.normal(size=(1_000_000, 1)).astype(np.float32),
        "MNIST pixels, 60,000 x 784": (
            load_mnist("train", data_dir)[0].reshape(-1, 784) / 255.0
        ).astype(np.float32),
    }
    lines = [
        "### Fit: `fit_state` under `jit` against the host fit (Scott's rule, float32)",
        "",
        "| data | host `fit` | host `fit` + layout | `fit_state` (jit) | compile | / host `fit` "
        "| / host `fit` + layout |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fit = jax.jit(jaxkde.fit_state)
    for name, x in cases.items():
        dev = jnp.asarray(x)

        def traced(dev=dev):
            return jax.block_until_ready(fit(dev))

        compile_s, traced_s, _ = timed(traced, 3)
        _, host_s, _ = timed(lambda x=x: jaxkde.KDE().fit(x), 3)

        def host_built(x=x):
            return jax.block_until_ready(jaxkde.KDE().fit(x).state_)

        _, built_s, _ = timed(host_built, 3)
        lines.append(f"| {name} | {seconds(host_s)} | {seconds(built_s)} | {seconds(traced_s)} | "
                     f"{seconds(compile_s)} | {traced_s / host_s:.2f} | "
                     f"{traced_s / built_s:.2f} |")  # fmt: skip
    lines += ["", "Host data for the host fit; device arrays for `fit_state` (on the CPU, the same "
              "memory). Medians of 3 runs after a first."]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", type=pathlib.Path, help="folder of the MNIST IDX files")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--grid", type=int, default=512)
    p.add_argument("--peers-every", type=int, default=1,
                   help="time the loops on every k-th resample only, scaled up")  # fmt: skip
    p.add_argument("--out", type=pathlib.Path)
    args = p.parse_args(argv)
    lines = [f"KDEs inside JAX programs ({machine()}; {time.strftime('%Y-%m-%d')}).", ""]
    lines += bootstrap(args.resamples, args.n, args.grid, args.peers_every)
    lines += ["", *fit_times(args.data_dir)]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
