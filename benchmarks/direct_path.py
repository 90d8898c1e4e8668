"""Where the time of the low-dimensional exact path goes: the engine against its parts.

In 1-3 dimensions every squared distance is a direct difference of double-word coordinates
(no matrix product). This script times, side by side in one run, on 2-D data:

1. ``KDE().score_samples`` (the engine: direct differences, online log-sum-exp) and
   ``_report.kernel_sum_floor`` (blocked matrix product + ``exp`` + sum, the faster of its two
   layouts) on ``--n`` points and ``--m`` queries, for several ``batch_size`` / ``chunk_size``
   pairs;
2. the same block arithmetic written bare on one query block against every chunk: the
   floor's product + exp + sum; direct differences with the low words and one ``exp`` pass;
   the same with the two passes of the online log-sum-exp (a max over the chunk, then the
   shifted ``exp`` sum); both without the low words; the floor and the two passes laid out
   ``(centres, queries)`` and reduced along columns, as the engine now does. Each is divided
   by the faster floor.

Usage::

    python benchmarks/direct_path.py [--n 200000] [--m 8192] \
        [--out benchmarks/results/direct_path.md]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from _report import emit, kernel_sum_floor, machine, timed

import jaxkde


def bare(kind: str, q, q_lo, z, z_lo):
    """One query block against every chunk ``z`` ``(chunks, c, 2)``, written bare.

    ``kind`` names the terms (``floor``: product; else direct differences, ``_lo`` with the
    low words), the passes (``one``: a plain ``exp`` sum; ``two``: max, then shifted sum) and,
    ending in ``_T``, the layout ``(centres, queries)`` reduced along columns (else rows).
    """
    b = q.shape[0]
    with_lo = "_lo" in kind
    two = kind.startswith("two")
    axis = 0 if kind.endswith("_T") else 1

    def d2(z1, zl1):
        total = 0.0
        for j in range(q.shape[1]):
            diff = q[:, j, None] - z1[None, :, j]
            if with_lo:
                diff = diff + (q_lo[:, j, None] - zl1[None, :, j])
            total = total + diff * diff
        return total.T if axis == 0 else total

    def expand(v):
        return v[None, :] if axis == 0 else v[:, None]

    @jax.jit
    def run():
        def step(carry, xs):
            z1, zl1 = xs
            if kind.startswith("floor"):
                if axis == 0:
                    dd = jnp.sum(z1 * z1, 1)[:, None] + jnp.sum(q * q, 1)[None, :] - 2 * z1 @ q.T
                else:
                    dd = jnp.sum(q * q, 1)[:, None] + jnp.sum(z1 * z1, 1)[None, :] - 2 * q @ z1.T
                return carry + jnp.sum(jnp.exp(-0.5 * dd), axis), None
            logits = -0.5 * d2(z1, zl1)
            if not two:
                return carry + jnp.sum(jnp.exp(logits), axis), None
            run_max, run_sum = carry
            new = jnp.maximum(run_max, jnp.max(logits, axis))
            shifted = jnp.sum(jnp.exp(logits - expand(new)), axis)
            return (new, run_sum * jnp.exp(run_max - new) + shifted), None

        init = (jnp.full(b, -jnp.inf), jnp.zeros(b)) if two else jnp.zeros(b)
        return jax.lax.scan(step, init, (z, z_lo))[0]

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--m", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, 2)).astype(np.float32)
    queries = (1.5 * rng.normal(size=(args.m, 2))).astype(np.float32)
    rows = [
        f"2-D, {args.n:,} points, {args.m:,} queries, float32; {machine()}.",
        "",
        "| batch_size | chunk_size | score_samples (s) | floor (s) | / floor |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for batch, chunk in [(1024, 4096), (256, 4096), (1024, 1024), (1024, 16384)]:
        kde = jaxkde.KDE(batch_size=batch, chunk_size=chunk).fit(x)
        med = timed(lambda kde=kde: kde.score_samples(queries), args.repeats)[1]
        floor = kernel_sum_floor(kde, queries, args.repeats)
        rows.append(f"| {batch} | {chunk} | {med:.3f} | {floor:.3f} | {med / floor:.2f}x |")
        print(rows[-1], flush=True)
    kde = jaxkde.KDE(batch_size=1024, chunk_size=4096).fit(x)
    state = kde.state_
    hi, lo = jaxkde.whiten_queries(state, queries[:1024])
    z, z_lo = state.points, state.points_lo
    rows += ["", "One block of 1,024 queries against every chunk, written bare:", "",
             "| computation | time (s) | / floor |", "| --- | ---: | ---: |"]  # fmt: skip
    labels = {
        "floor": "product + exp + sum (the floor), rows",
        "floor_T": "product + exp + sum, centres leading",
        "one_lo": "direct differences with low words, one exp pass, rows",
        "two_lo": "the same, two passes (max, then shifted exp sum), rows",
        "two_lo_T": "the same two passes, centres leading (the engine)",
        "one": "direct differences, high words only, one exp pass, rows",
        "two": "high words only, two passes, rows",
    }
    times = {}
    for kind in labels:
        fn = bare(kind, hi, lo, z, z_lo)
        times[kind] = timed(lambda fn=fn: jax.block_until_ready(fn()), args.repeats + 1)[1]
        print(f"{kind}: {times[kind]:.4f} s", flush=True)
    base = min(times["floor"], times["floor_T"])
    for kind, label in labels.items():
        rows.append(f"| {label} | {times[kind]:.4f} | {times[kind] / base:.2f}x |")
    emit("\n".join(rows), args.out)


if __name__ == "__main__":
    main()
