"""Shared by the benchmark scripts: timing, memory accounting and markdown output."""

from __future__ import annotations

import os
import pathlib
import statistics
import time
import tracemalloc
from typing import NamedTuple

import jax


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


def emit(table: str, out: pathlib.Path | None) -> None:
    """Print ``table`` after a blank line; write it (with a final newline) to ``out`` if given."""
    print()
    print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n")
