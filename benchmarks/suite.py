"""The benchmark suite: every workload, every peer, one markdown results file.

Runs, in one process and one after another (so that the tools of a workload are measured side
by side on the same machine state):

* W1 MNIST pixels, 10,000 x 60,000 x 784 (``mnist_pixels.py``);
* W2 MNIST PCA-50 with Scott's full covariance, and W4 sampling 10,000 draws (``mnist_pca.py``);
* W3 1-D n = 1,000,000 on 1,024 points and 2-D n = 200,000 on 256 x 256 (``low_dim.py``);
* W5 bandwidth selection and the Parzen protocol (``bandwidth_selection.py``);
* S, the seed's kernel on MNIST pixels at the issue's and at W1's shapes, duplicated data and
  two cases where the first pass marks every query, each against its product, with the
  tiers that settled the marked queries and a phase breakdown (``marked.py``).

It writes ``OUT`` with a summary table first (jaxkde, the hardware floor, the fastest peer) and
then each workload's full table, and prints the summary last. About 15 minutes on 2 CPU cores.

Usage::

    python benchmarks/suite.py ../shared/data/mnist --out benchmarks/results/suite_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
import time
import traceback

import bandwidth_selection
import low_dim
import marked
import mnist_pca
import mnist_pixels
from _report import Summary, machine, seconds


def summary_table(rows: list[Summary]) -> str:
    lines = [
        "| workload | jaxkde (s) | floor (s) | jaxkde / floor | fastest peer | peer (s) | "
        "peer / jaxkde | note |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        floor = "" if r.floor_s is None else seconds(r.floor_s)
        ratio = "" if r.floor_s is None else f"{r.jaxkde_s / r.floor_s:.2f}"
        peer_s = "" if r.peer_s is None else seconds(r.peer_s)
        speed = "" if r.peer_s is None else f"{r.peer_s / r.jaxkde_s:.3g}x"
        lines.append(f"| {r.workload} | {seconds(r.jaxkde_s)} | {floor} | {ratio} | {r.peer} | "
                     f"{peer_s} | {speed} | {r.note} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=pathlib.Path, help="folder with the four MNIST IDX .gz files")
    p.add_argument("--out", type=pathlib.Path, required=True, help="markdown file to write")
    p.add_argument("--only", nargs="*", choices=["W1", "W2", "W3", "W5", "S"], default=None,
                   help="run these workloads only (W2 includes W4)")  # fmt: skip
    p.add_argument("--loo-n", type=int, default=1000,
                   help="rows of W5's leave-one-out comparison (statsmodels is O(n^2) per "
                   "evaluation; 2,000 rows take it about 7 minutes)")  # fmt: skip
    args = p.parse_args(argv)
    data = str(args.data_dir)
    workloads = [
        ("W1", mnist_pixels.run, [data]),
        ("W2", mnist_pca.run, [data]),
        ("W3", low_dim.run, []),
        ("W5", bandwidth_selection.run, [data, "--loo-n", str(args.loo_n)]),
        ("S", marked.run, [data]),
    ]
    start = time.perf_counter()
    tables, summary, failed = [], [], []
    for name, run, run_args in workloads:
        if args.only and name not in args.only:
            continue
        print(f"\n===== {name} =====", flush=True)
        t0 = time.perf_counter()
        try:
            table, rows = run(run_args)
        except Exception:  # report and go on: one broken peer must not lose the other results
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"{name} took {time.perf_counter() - t0:.0f} s", flush=True)
        tables.append(table)
        summary.extend(rows)
    total = time.perf_counter() - start
    head = (
        f"jaxkde benchmark suite; {machine()}; {datetime.date.today()}; {total / 60:.1f} minutes. "
        "Times are for the whole workload (all queries, or all draws); peers timed on a subset "
        "are extrapolated linearly (see each table). Floor: the matrix products of the same "
        "work (W1), or those products followed by exp and a sum where the exponentials dominate "
        "(W2, W3); for W4 drawing the same random numbers and one product; for the seed's kernel "
        "(S) one float32 product of the same shapes."
    )
    if failed:
        head += f" FAILED: {', '.join(failed)} (see the log)."
    text = "\n\n".join([head, summary_table(summary), *tables])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print("\n" + head + "\n\n" + summary_table(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
