"""The seed's workload and the rounding-error account's hard cases, each against its product.

The seed's kernel, ``KDE(kernel="univariate_gaussian", univariate_bandwidth=0.2)``, on MNIST
pixels / 255 (float32), at the exact (``precision="highest"``) setting:

* **seed**: 20,000 training images, 2,000 test images (the issue's shapes);
* **seed, W1's shapes**: 60,000 training images, 10,000 test images;
* **duplicated**: the first 10,000 training images stacked twice, 500 test images;
* **every query marked, one chunk**: built from the account's own condition (several
  near-equal largest terms in one chunk, a moderate ``|log f|``): the 20,000 training images
  and, in a row, three near-copies (+ N(0, 0.01^2) per pixel) of each of 2,000 test images,
  scored at those test images (+ the same noise);
* **every query marked, two chunks**: two near-copies of each test image at the start of the
  data and two more at its end, so the near-equal terms of every query lie in two chunks.

Each case is timed side by side with its floor, the bare float32 product ``Q X^T`` of the same
shapes at ``HIGHEST`` precision, the two interleaved (medians of ``--repeats`` after a warm-up).
It reports how many queries the first pass marked and which tier settled them (the worst
chunk, every chunk with more exact terms, direct differences), the largest error against a
float64 reference on ``--reference-queries`` queries, and the phase breakdown of the call
(host preparation, transfer, compile, device; see ``_report.phase_breakdown``).

Usage::

    python benchmarks/marked.py ../shared/data/mnist [--out benchmarks/results/marked_cpu.md]
"""

from __future__ import annotations

import argparse
import datetime
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _report import Summary, alternating, emit, machine, phase_breakdown, seconds
from jax import lax
from scipy.special import logsumexp

import jaxkde
from jaxkde.apps.datasets import read_idx
from jaxkde.core import engine

H = 0.2


def images(data_dir: pathlib.Path, name: str, n: int) -> np.ndarray:
    raw = read_idx(data_dir / name).reshape(-1, 784)[:n]
    return (raw / np.float32(255)).astype(np.float32)


def cases(data_dir: pathlib.Path, only=None):
    """``{name: (training rows, queries)}`` of the five cases (float32)."""
    train = images(data_dir, "train-images-idx3-ubyte.gz", 60000)
    test = images(data_dir, "t10k-images-idx3-ubyte.gz", 10000)
    rng = np.random.default_rng(0)

    def noisy(a):
        return (a + rng.normal(scale=0.01, size=a.shape)).astype(np.float32)

    q = test[:2000]
    out = {
        "seed": lambda: (train[:20000], test[:2000]),
        "seed, W1's shapes": lambda: (train, test),
        "duplicated": lambda: (np.concatenate([train[:10000], train[:10000]]), test[:500]),
        "every query marked, one chunk": lambda: (
            np.concatenate([train[:20000], noisy(np.repeat(q, 3, axis=0))]), noisy(q)),
        "every query marked, two chunks": lambda: (
            np.concatenate([noisy(np.repeat(q, 2, axis=0)), train[:20000],
                            noisy(np.repeat(q, 2, axis=0))]), noisy(q)),
    }  # fmt: skip
    return {name: make for name, make in out.items() if only is None or name in only}


def reference(train: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """float64 log density of the seed's kernel (centred data; GEMM error ~1e-12 here)."""
    x = train.astype(np.float64)
    mu = x.mean(0)
    x = (x - mu) / H
    q = (queries.astype(np.float64) - mu) / H
    d2 = np.maximum((q**2).sum(1)[:, None] + (x**2).sum(1)[None, :] - 2 * q @ x.T, 0)
    return logsumexp(-0.5 * d2, axis=1) - math.log(len(x) * H) - 0.5 * math.log(2 * math.pi)


def tier_counts(kde, queries: np.ndarray) -> tuple[int, list[int]]:
    """Queries the first pass marked, and how many each tier settled, block by block."""
    state = kde.state_
    block = kde.batch_size or jaxkde.default_block_sizes()[0]

    @jax.jit
    def run(hi, lo):
        lse, code, part = engine._checked_gemm_logsumexp(state, hi, lo, None, 0, False, None,
                                                         state.log_normalizer)  # fmt: skip
        gemm = (state, hi, lo, None, state.log_normalizer, part._replace(worst=None))
        settled = engine._recompute_fwd(False, engine.TIERS, lse, code, part.worst, gemm,
                                        (state, hi, lo, None, None), (None, 0))[1][2]  # fmt: skip
        return jnp.sum(code != 0), jnp.stack([jnp.sum(s) for s in settled])

    marked, tiers = 0, np.zeros(3, int)
    for start in range(0, len(queries), block):
        hi, lo = jaxkde.whiten_queries(state, queries[start : start + block])
        count, settled = run(hi, lo)
        marked += int(count)
        tiers += np.asarray(settled)
    return marked, tiers.tolist()


def run(argv=None) -> tuple[str, list[Summary]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=pathlib.Path, help="folder with the four MNIST IDX .gz files")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--reference-queries", type=int, default=200)
    p.add_argument("--only", nargs="*", default=None, help="run these cases only (by name)")
    p.add_argument("--out", type=pathlib.Path, help="write the markdown table here too")
    args = p.parse_args(argv)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=lax.Precision.HIGHEST))
    rows, phases, summary = [], [], []
    for name, make in cases(args.data_dir, args.only).items():
        train, queries = make()
        kde = jaxkde.KDE(kernel="univariate_gaussian", univariate_bandwidth=H).fit(train)
        t0 = time.perf_counter()
        kde.score_samples(queries)
        first = time.perf_counter() - t0
        a, b = jnp.asarray(queries), jnp.asarray(train)
        times = alternating({"jaxkde": lambda kde=kde, q=queries: kde.score_samples(q),
                             "floor": lambda a=a, b=b: mm(a, b).block_until_ready()},
                            args.repeats)  # fmt: skip
        k = min(args.reference_queries, len(queries))
        err = float(np.max(np.abs(kde.score_samples(queries[:k]) - reference(train, queries[:k]))))
        marked, tiers = tier_counts(kde, queries)
        ratio = times["jaxkde"] / times["floor"]
        shape = f"{len(queries)} x {len(train)} x 784"
        rows.append(f"| {name} | {shape} | {seconds(times['jaxkde'])} | {seconds(times['floor'])} "
                    f"| {ratio:.2f}x | {marked} | {tiers[0]} / {tiers[1]} / {tiers[2]} "
                    f"| {first:.2f} | {err:.1e} |")  # fmt: skip
        ph = phase_breakdown(kde, queries, args.repeats)
        phases.append(f"| {name} | {seconds(ph['host'])} | {seconds(ph['transfer'])} | "
                      f"{seconds(ph['compile'])} | {seconds(ph['device'])} | "
                      f"{seconds(times['jaxkde'])} |")  # fmt: skip
        summary.append(Summary(f"seed kernel: {name}, {shape}", times["jaxkde"], times["floor"],
                               "", None, f"{marked} queries marked"))  # fmt: skip
        print(rows[-1], flush=True)
        print(phases[-1], flush=True)
    table = "\n".join([
        f"The seed's kernel (univariate_gaussian, h = {H}) at precision='highest', float32; "
        f"{machine()}; {datetime.date.today()}; medians of {args.repeats} runs, jaxkde and "
        "its floor (one float32 product Q X^T at HIGHEST) interleaved.",
        "",
        "| case | queries x data x dim | jaxkde (s) | floor (s) | jaxkde / floor | marked by "
        "the first pass | settled by tier 1 / 2 / 3 | first call (s) | max abs err vs float64 "
        "(nats) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "Tier 1 recomputes a marked query's worst chunk, tier 2 every chunk (both with "
        f"{engine._REFINE_EXACT} exact terms per chunk), tier 3 uses direct differences.",
        "",
        "Phase breakdown of the same calls (seconds for all queries; score_samples overlaps one "
        "block's host work with the last block's device work):",
        "",
        "| case | host preparation | transfer | compile (first call) | device | score_samples |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *phases,
    ])  # fmt: skip
    emit(table, args.out)
    return table, summary


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
