"""Score function against score_samples on W1's shape, and mean-shift clustering of MNIST.

1. W1's shape (MNIST test images against the training images, pixels / 255, sigma = 0.2,
   float32): ``score_function`` (log density and its gradient, one extra matrix product per
   block) against ``score_samples``, each timed as its first call and then the median of
   ``--repeats``, side by side in one run; the ratio is the issue's target (<= 2.5x).
2. Mean shift (``KDE.modes``) on MNIST PCA-10 (the PCA fitted on the training images; the KDE
   on ``--n-cluster`` test images, Scott's rule): the number of modes, how many hold at least
   1% of the points, and the agreement with the labels (purity: the share of points whose
   label is the most common label of their mode).

Usage::

    python benchmarks/geometry.py ../shared/data/mnist [--out benchmarks/results/geometry.md]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
from _report import emit, machine, timed
from mnist_pixels import load

import jaxkde
from jaxkde.apps.datasets import read_idx


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--n-cluster", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    train, test = load(args.data_dir, args.n_train, args.n_test)
    kde = jaxkde.KDE(bandwidth=0.2).fit(train)
    s_first, s_med, _ = timed(lambda: kde.score_samples(test), args.repeats)
    g_first, g_med, grad = timed(lambda: kde.score_function(test), args.repeats)
    assert np.all(np.isfinite(grad))
    rows = [
        "| work | first call (s) | median (s) | / score_samples |",
        "| --- | ---: | ---: | ---: |",
        f"| score_samples, {args.n_test:,} x {args.n_train:,} x 784 | {s_first:.2f} | "
        f"{s_med:.2f} | 1.00x |",
        f"| score_function, same | {g_first:.2f} | {g_med:.2f} | {g_med / s_med:.2f}x |",
    ]
    print("\n".join(rows), flush=True)

    n_cluster = min(args.n_cluster, test.shape[0])
    labels = read_idx(args.data_dir / "t10k-labels-idx1-ubyte.gz")[:n_cluster]
    pca = jaxkde.pca_fit(train, 10)
    z = np.asarray(jaxkde.pca_transform(pca, test[:n_cluster]), np.float64)
    t0 = time.perf_counter()
    kde10 = jaxkde.KDE().fit(z)
    modes = kde10.modes()
    elapsed = time.perf_counter() - t0
    counts = np.bincount(modes.labels)
    purity = sum(np.bincount(labels[modes.labels == m]).max() for m in range(counts.size))
    big = counts >= 0.01 * z.shape[0]
    rows += [
        "",
        "| mean shift, MNIST PCA-10, Scott | value |",
        "| --- | ---: |",
        f"| points | {z.shape[0]:,} |",
        f"| modes | {counts.size} |",
        f"| modes holding >= 1% of the points | {int(big.sum())} ({counts[big].sum():,} points) |",
        f"| purity (majority label per mode) | {purity / z.shape[0]:.3f} |",
        f"| converged | {modes.converged.mean():.3f} after {modes.n_iter} iterations |",
        f"| fit + mean shift (s) | {elapsed:.1f} |",
    ]
    table = f"# Score function and mean shift\n\n{machine()}.\n\n" + "\n".join(rows)
    emit(table, args.out)


if __name__ == "__main__":
    main()
