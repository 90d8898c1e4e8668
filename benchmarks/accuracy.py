"""Accuracy at the edges: the largest error of jaxkde's log densities against float64 brute force.

For each dimension d, offset of the data from the origin and ratio of the data's spread to the
bandwidth, the data are ``offset + N(0, I)`` (n points) with bandwidth ``1 / ratio``; the queries
are 24 points beside data points (half a bandwidth away) and 8 drawn like the data. The error of
each query is measured against a float64 direct-difference brute force, relative to the scale
the README states the bound in, ``s(q) = max(|log f(q)|, |largest log term|, 1)``; the table gives
the largest over the queries, in float32 and under x64, with the time of the evaluation.

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


def case(d: int, offset: float, ratio: float, n: int, x64: bool) -> tuple[float, float]:
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
    err = np.abs(got - want) / scale
    return float(np.nanmax(np.where(np.isnan(err), np.inf, err))), seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=pathlib.Path)
    args = p.parse_args(argv)
    rows = []
    for d in (1, 2, 50, 784):
        n = 200 if d == 784 else 500
        for offset in (0.0, 1e6, 1e9):
            for ratio in (1e2, 1e4, 1e6):
                e32, t32 = case(d, offset, ratio, n, False)
                e64, t64 = case(d, offset, ratio, n, True)
                rows.append((d, n, offset, ratio, e32, t32, e64, t64))
                print(f"d={d} offset={offset:g} spread/h={ratio:g}: float32 {e32:.2e} ({t32:.3f} s)"
                      f", x64 {e64:.2e} ({t64:.3f} s)", flush=True)  # fmt: skip
    lines = [
        f"Largest |log f - log f_64| / s(q) over 32 queries ({machine()}; "
        f"{time.strftime('%Y-%m-%d')}). Bound stated: 1e-5 (float32), 1e-10 (x64).",
        "",
        "| d | n | offset | spread / bandwidth | float32 | time (s) | x64 | time (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d, n, offset, ratio, e32, t32, e64, t64 in rows:
        lines.append(f"| {d} | {n} | {offset:g} | {ratio:g} | {e32:.1e} | {t32:.3f} | {e64:.1e} | "
                     f"{t64:.3f} |")  # fmt: skip
    worst32 = max(r[4] for r in rows)
    worst64 = max(r[6] for r in rows)
    lines += ["", f"Worst case: {worst32:.1e} (float32), {worst64:.1e} (x64)."]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
