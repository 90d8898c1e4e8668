"""Shared by the benchmark scripts: timing, memory accounting and markdown output."""

from __future__ import annotations

import math
import os
import pathlib
import statistics
import time
import tracemalloc
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxkde
from jaxkde.estimator.evaluation import query_block_rows


class Summary(NamedTuple):
    """One line of the suite's summary table (seconds for the whole workload)."""

    workload: str
    jaxkde_s: float
    floor_s: float | None
    peer: str
    peer_s: float | None
    note: str = ""


def timed(fn, repeats: int):
    """(first-call seconds, median of ``repeats`` later calls, last result)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times) if times else first, out


def seconds(v: float) -> str:
    """Three significant digits, without exponents for long times."""
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def xla_bytes(compiled) -> int:
    """Temporaries plus outputs of a compiled XLA program, in bytes."""
    ma = compiled.memory_analysis()
    return int(ma.temp_size_in_bytes + ma.output_size_in_bytes)


def traced_peak(fn):
    """``(fn(), peak bytes allocated by Python/NumPy meanwhile)``."""
    tracemalloc.start()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak


def machine() -> str:
    """JAX version, device and CPU count, for table captions."""
    return f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs"


def jaxkde_timing(kde, queries, repeats: int, ref: np.ndarray):
    """Time ``kde.score_samples(queries)``; compile the first block's program separately.

    Returns ``(first call s, median s, compile s, XLA bytes, max |error| on the first
    len(ref) queries)``.
    """
    block = queries[: kde.batch_size or jaxkde.default_block_sizes()[0]]
    t0 = time.perf_counter()
    hi, lo = jaxkde.whiten_queries(kde.state_, block)
    # The first pass: the recomputation tiers compile only where it marks a query.
    compiled = jaxkde.core.engine._first_pass_program.lower(kde.state_, hi, lo).compile()
    compile_s = time.perf_counter() - t0
    first, med, got = timed(lambda: kde.score_samples(queries), repeats)
    err = float(np.max(np.abs(got[: ref.shape[0]] - ref)))
    return first, med, compile_s, xla_bytes(compiled), err


def kernel_sum_floor(kde, queries, repeats: int, precision: str = "highest") -> float:
    """Seconds for the floor of exact summation on ``kde``'s own layout and query blocks.

    The blocked products of jaxkde's squared distances followed by one ``exp`` per pair and a
    sum over centres: no maximum, no stabilisation, no kernel profile. Both layouts of a
    block are timed, ``(queries, centres)`` summed along rows and ``(centres, queries)``
    summed along columns, and the faster is the floor.
    """
    state = kde.state_
    prec = jaxkde.PRECISIONS[precision]

    def exp_sum(by_centre: bool):
        @jax.jit
        def run(q):
            q_sq = jnp.sum(q * q, axis=1)

            def step(acc, xs):
                z, z_sq = xs
                if by_centre:
                    d2 = z_sq[:, None] + q_sq[None, :] - 2 * jnp.matmul(z, q.T, precision=prec)
                    return acc + jnp.sum(jnp.exp(-0.5 * d2), axis=0), None
                d2 = q_sq[:, None] + z_sq[None, :] - 2 * jnp.matmul(q, z.T, precision=prec)
                return acc + jnp.sum(jnp.exp(-0.5 * d2), axis=1), None

            init = jnp.zeros((q.shape[0],), q.dtype)
            return lax.scan(step, init, (state.points, state.sq_norms))[0]

        return run

    zq = jaxkde.whiten(state, jnp.asarray(queries, state.dtype))
    block = kde.batch_size or jaxkde.default_block_sizes()[0]
    blocks = []
    for start in range(0, zq.shape[0], block):  # jaxkde's blocks, the last padded as it pads
        part = zq[start : start + block]
        rows = query_block_rows(part.shape[0], block)
        blocks.append(jnp.pad(part, ((0, rows - part.shape[0]), (0, 0))))
    best = math.inf
    for fn in (exp_sum(False), exp_sum(True)):
        jax.block_until_ready([fn(b) for b in blocks])
        best = min(
            best, timed(lambda fn=fn: jax.block_until_ready([fn(b) for b in blocks]), repeats)[1]
        )
    return best


def emit(table: str, out: pathlib.Path | None) -> None:
    """Print ``table`` after a blank line; write it (with a final newline) to ``out`` if given."""
    print()
    print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n")


def alternating(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable of ``fns`` (name -> fn), the calls interleaved
    ``repeats`` times after one warm-up call each, so that every tool meets the same machine
    state (this machine is shared and noisy)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def phase_breakdown(kde, queries: np.ndarray, repeats: int) -> dict:
    """Where ``kde.score_samples(queries)``'s time goes, for a KDE without labels or mesh.

    Seconds for all queries, block by block as ``score_samples`` takes them: ``host`` (float64
    check, centring, whitening and the split into words), ``transfer`` (placing the words on
    the device), ``compile`` (the block program, first call only) and ``device`` (the compiled
    program on placed words; medians of ``repeats``). ``score_samples`` overlaps the host work
    of one block with the device work of the last, so its time is below their sum.
    """
    from jaxkde._validation import check_data
    from jaxkde.core.state import _whiten64, split_double_word

    state, hw = kde.state_, kde._whitening
    block = kde.batch_size or jaxkde.default_block_sizes()[0]
    x64 = check_data(queries, "X")[0]
    starts = range(0, x64.shape[0], block)

    def host():
        out = []
        for start in starts:
            part = check_data(x64[start : start + block], "X")[0]
            rows = query_block_rows(part.shape[0], block)
            part = np.concatenate([part, np.repeat(part[:1], rows - part.shape[0], axis=0)])
            out.append(split_double_word(_whiten64(part, hw), hw.dtype))
        return out

    words = host()

    def transfer():
        return jax.block_until_ready([tuple(map(jax.device_put, w)) for w in words])

    placed = transfer()
    t0 = time.perf_counter()  # the first pass, and the tiers where it marks a query
    for hi, lo in {w[0].shape: w for w in placed}.values():
        jaxkde.core.engine._first_pass_program.lower(state, hi, lo).compile()
    compile_s = time.perf_counter() - t0
    passes = [jaxkde.core.engine._first_pass_program(state, *w) for w in placed]  # not timed
    marked = {w[0].shape: (w, p) for w, p in zip(placed, passes, strict=True) if np.any(p[1])}
    t0 = time.perf_counter()
    for (hi, lo), (log_f, code, partial) in marked.values():
        jaxkde.core.engine._settle_program.lower(state, hi, lo, log_f, code, partial).compile()
    compile_s += time.perf_counter() - t0

    def device():
        return jax.block_until_ready([jaxkde.log_density_whitened(state, *w) for w in placed])

    medians = alternating({"host": host, "transfer": transfer, "device": device}, repeats)
    return {**medians, "compile": compile_s}
