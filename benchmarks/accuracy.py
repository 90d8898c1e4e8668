"""Accuracy at the edges: the largest error of jaxkde's log densities against float64 brute force.

For each dimension d, offset of the data from the origin and ratio of the data's spread to the
bandwidth, the data are ``offset + N(0, I)`` (n points) with bandwidth ``1 / ratio``; the queries
are 24 points beside data points (half a bandwidth away) and 8 drawn like the data. The error of
each query is measured against a float64 direct-difference brute force, relative to the scale
the README states the bound in, ``s(q) = max(|log f(q)|, |largest log term|, 1)``; the table gives
the largest over the queries, in float32 and under x64, with the time of the evaluation.

The traced columns fit the same data with :func:`jaxkde.fit_state` under ``jit`` (the data
cast to the working dtype first, centred on the device with a compensated mean, whitened into
double words) and score the same queries with :func:`jaxkde.log_density`: the accuracy a KDE
built inside a JAX program reaches, beside the host fit's. A program that holds its data in
float32 has already rounded them (by ``offset * 2^-24``), which no fit can undo, so the traced
error is measured against the brute force of the data as cast.

Usage::

    python benchmarks/accuracy.py [--out benchmarks/results/accuracy.md]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time

import jax
import numpy as np
from _report import emit, machine
from scipy.special import logsumexp

import jaxkde


def brute(x: np.ndarray, q: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """float64 log density and the scale s(q), by direct differences."""
    n, d = x.shape
    logs, tops = [], []
    for start in range(0, len(q), 8):
        d2 = (((q[start : start + 8, None, :] - x[None]) / h) ** 2).sum(-1)
        terms = -0.5 * d2 - math.log(n)
        logs.append(logsumexp(terms, axis=1))
        tops.append(terms.max(axis=1))
    log_f = np.concatenate(logs) - 0.5 * d * math.log(2 * math.pi) - d * math.log(h)
    scale = np.maximum(np.maximum(np.abs(log_f), np.abs(np.concatenate(tops))), 1.0)
    return log_f, scale


def _worst(got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> float:
    err = np.abs(np.asarray(got, np.float64) - want) / scale
    return float(np.nanmax(np.where(np.isnan(err), np.inf, err)))


def case(d: int, offset: float, ratio: float, n: int, x64: bool) -> tuple[float, float, float]:
    """(host fit's worst error, its evaluation seconds, the traced fit's worst error)."""
    rng = np.random.default_rng(d * 7 + int(math.log10(ratio)))
    x = offset + rng.normal(size=(n, d))
    h = 1.0 / ratio
    near = x[:24] + 0.5 * h * rng.normal(size=(24, d)) / math.sqrt(d)
    q = np.concatenate([near, offset + rng.normal(size=(8, d))])
    want, scale = brute(x, q, h)
    with jax.enable_x64(x64):
        kde = jaxkde.KDE(bandwidth=h).fit(x)
        kde.score_samples(q)  # compile
        t0 = time.perf_counter()
        got = kde.score_samples(q).astype(np.float64)
        seconds = time.perf_counter() - t0
        dtype = np.float64 if x64 else np.float32
        state = jax.jit(jaxkde.fit_state)(x.astype(dtype), h)
        traced = np.asarray(jaxkde.log_density(state, q))
    # The traced fit sees the data in the working dtype: measured against their brute force.
    seen, seen_scale = brute(x.astype(dtype).astype(np.float64), q, h)
    return _worst(got, want, scale), seconds, _worst(traced, seen, seen_scale)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=pathlib.Path)
    args = p.parse_args(argv)
    rows = []
    for d in (1, 2, 50, 784):
        n = 200 if d == 784 else 500
        for offset in (0.0, 1e6, 1e9):
            for ratio in (1e2, 1e4, 1e6):
                e32, t32, f32 = case(d, offset, ratio, n, False)
                e64, t64, f64 = case(d, offset, ratio, n, True)
                rows.append((d, n, offset, ratio, e32, t32, f32, e64, t64, f64))
                print(f"d={d} offset={offset:g} spread/h={ratio:g}: float32 {e32:.2e} ({t32:.3f} s)"
                      f" traced {f32:.2e}, x64 {e64:.2e} ({t64:.3f} s) traced {f64:.2e}",
                      flush=True)  # fmt: skip
    lines = [
        f"Largest |log f - log f_64| / s(q) over 32 queries ({machine()}; "
        f"{time.strftime('%Y-%m-%d')}). Bound stated: 1e-5 (float32), 1e-10 (x64).",
        "",
        "Traced: the same data cast to the working dtype, fitted by `fit_state` under `jit`, "
        "against the brute force of the data as cast.",
        "",
        "| d | n | offset | spread / bandwidth | float32 | time (s) | traced float32 | x64 "
        "| time (s) | traced x64 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d, n, offset, ratio, e32, t32, f32, e64, t64, f64 in rows:
        lines.append(f"| {d} | {n} | {offset:g} | {ratio:g} | {e32:.1e} | {t32:.3f} | {f32:.1e} "
                     f"| {e64:.1e} | {t64:.3f} | {f64:.1e} |")  # fmt: skip
    worst32 = max(r[4] for r in rows)
    worst64 = max(r[7] for r in rows)
    lines += ["", f"Worst case: {worst32:.1e} (float32), {worst64:.1e} (x64)."]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
