"""Out-of-core scoring: a KDE over a memory-mapped .npy file against the same KDE in memory.

Writes ``--rows`` x ``--dim`` float32 Gaussian rows to a file, then times, side by side in one
run:

1. streamed: ``KDE(bandwidth=1, out_of_core=True).fit(np.load(path, mmap_mode="r"))`` (one
   pass for the centre) and ``score_samples`` of ``--queries`` queries (one pass over the file
   per call: positioned reads, float64 whitening on the host one block ahead of the device);
2. in memory: the same KDE fitted to the loaded array, and the same queries;
3. the floor: jaxkde's blocked float32 distance products plus one exp and a row sum per pair
   (``_report.kernel_sum_floor``) on the in-memory layout.

The streamed part runs first, so the peak RSS printed after it is its own (in a fresh process).

Usage::

    python benchmarks/out_of_core.py [--rows 262144] [--out benchmarks/results/out_of_core.md]
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import tempfile
import time

import numpy as np
from _report import emit, kernel_sum_floor, machine, seconds, timed

import jaxkde


def write_rows(path: pathlib.Path, rows: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, rows, 65536):
            f.write(rng.standard_normal((min(65536, rows - start), dim), np.float32).tobytes())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=262_144)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="where the file goes")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = pathlib.Path(tmp) / "rows.npy"
        write_rows(path, args.rows, args.dim)
        queries = 0.5 * np.random.default_rng(1).standard_normal((args.queries, args.dim))
        queries = queries.astype(np.float32)
        mapped = np.load(path, mmap_mode="r")

        t0 = time.perf_counter()
        streamed = jaxkde.KDE(bandwidth=1.0, out_of_core=True).fit(mapped)
        s_fit = time.perf_counter() - t0
        s_first, s_med, s_out = timed(lambda: streamed.score_samples(queries), args.repeats)
        s_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"streamed: fit {s_fit:.2f} s, score first {s_first:.2f} s, median {s_med:.2f} s, "
              f"peak RSS {s_rss:.2f} GiB", flush=True)  # fmt: skip

        t0 = time.perf_counter()
        loaded = np.load(path)
        memory = jaxkde.KDE(bandwidth=1.0).fit(loaded)
        m_fit = time.perf_counter() - t0
        m_first, m_med, m_out = timed(lambda: memory.score_samples(queries), args.repeats)
        floor = kernel_sum_floor(memory, queries, args.repeats)
        print(f"in memory: fit {m_fit:.2f} s, score first {m_first:.2f} s, median {m_med:.2f} s;"
              f" floor {floor:.2f} s", flush=True)  # fmt: skip
    err = float(np.max(np.abs(s_out.astype(np.float64) - m_out) / np.maximum(np.abs(m_out), 1)))
    pairs = args.rows * args.queries
    gib = args.rows * args.dim * 4 / 2**30
    rows = [
        f"{args.queries:,} queries against {args.rows:,} x {args.dim} float32 rows "
        f"({gib:.2f} GiB file), bandwidth 1; {machine()}.",
        "",
        "| path | fit (s) | score, first call (s) | score, median (s) | pairs / s | / floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| streamed from the file (memmap) | {seconds(s_fit)} | {seconds(s_first)} | "
        f"{seconds(s_med)} | {pairs / s_med:.3g} | {s_med / floor:.2f}x |",
        f"| in memory (np.load) | {seconds(m_fit)} | {seconds(m_first)} | {seconds(m_med)} | "
        f"{pairs / m_med:.3g} | {m_med / floor:.2f}x |",
        f"| floor: products + exp + sum, in memory | | | {seconds(floor)} | "
        f"{pairs / floor:.3g} | 1.00x |",
        "",
        f"Streamed / in memory: {s_med / m_med:.2f}x. Peak RSS of the streamed part: "
        f"{s_rss:.2f} GiB. Largest scaled difference between the two: {err:.2g}.",
    ]
    emit("\n".join(rows), args.out)


if __name__ == "__main__":
    main()
