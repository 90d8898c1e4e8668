"""KDE Bayes classifier on MNIST pixels, and sampling throughput per kernel.

1. ``jaxkde.KDEClassifier`` (Gaussian, one bandwidth shared by the classes) on pixels / 255:
   sigma chosen on a validation split (fit on the first 50,000 training images, score the last
   10,000), then refit on all 60,000 and tested on the 10,000 test images. Timed against one
   scikit-learn ``KernelDensity`` per class plus priors, the same Bayes rule, measured in the
   same run on the first ``--sklearn-queries`` test images and extrapolated (the table says so).
2. Sampling throughput (draws per second) of every kernel, 10,000 draws from a KDE of the
   60,000 training images in PCA-50 space, against scikit-learn's ``sample`` (gaussian, tophat:
   the only kernels it can sample).

Usage::

    python benchmarks/mnist_classifier.py ../shared/data/mnist \
        --out benchmarks/results/classifier.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import statistics
import sys
import time

import jax
import numpy as np
from _report import emit

import jaxkde
from jaxkde.apps.datasets import load_mnist

KERNELS = ["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=pathlib.Path)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0])
    p.add_argument("--sklearn-queries", type=int, default=100)
    p.add_argument("--draws", type=int, default=10000)
    p.add_argument("--out", type=pathlib.Path)
    args = p.parse_args(argv)

    from sklearn.neighbors import KernelDensity

    train, train_y = load_mnist("train", args.data_dir)
    test, test_y = load_mnist("test", args.data_dir)
    x = train.reshape(-1, 784).astype(np.float32) / 255
    q = test.reshape(-1, 784).astype(np.float32) / 255
    lines = [
        "KDE Bayes classifier on MNIST pixels / 255 (Gaussian, shared sigma); "
        f"jax {jax.__version__}"
        f", {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; {datetime.date.today()}.",
        "",
        "| sigma | validation accuracy (fit 50,000, score 10,000) | seconds |",
        "| ---: | ---: | ---: |",
    ]
    best = (None, -1.0)
    for sigma in args.sigmas:
        t0 = time.perf_counter()
        clf = jaxkde.KDEClassifier(bandwidth=sigma).fit(x[:50000], train_y[:50000])
        acc = clf.score(x[50000:], train_y[50000:])
        sec = time.perf_counter() - t0
        print(f"sigma {sigma:g}: validation accuracy {acc:.4f} ({sec:.1f} s)", flush=True)
        lines.append(f"| {sigma:g} | {acc:.4f} | {sec:.1f} |")
        if acc > best[1]:
            best = (sigma, acc)
    sigma = best[0]

    t0 = time.perf_counter()
    clf = jaxkde.KDEClassifier(bandwidth=sigma).fit(x, train_y)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = clf.predict(q)
    predict_s = time.perf_counter() - t0
    acc = float(np.mean(pred == test_y))
    print(
        f"test accuracy at sigma {sigma:g}: {acc:.4f} (fit {fit_s:.2f} s, predict "
        f"{predict_s:.2f} s)",
        flush=True,
    )

    k = args.sklearn_queries
    t0 = time.perf_counter()
    models = [KernelDensity(bandwidth=sigma).fit(x[train_y == c]) for c in range(10)]
    sk_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    log_prior = np.log(np.bincount(train_y) / train_y.size)
    joint = np.column_stack([m.score_samples(q[:k]) for m in models]) + log_prior
    sk_pred = np.argmax(joint, axis=1)
    sk_s = time.perf_counter() - t0
    agree = float(np.mean(sk_pred == pred[:k]))
    sk_all = sk_s * q.shape[0] / k
    print(
        f"scikit-learn, one KernelDensity per class: fit {sk_fit:.2f} s, {k} queries "
        f"{sk_s:.2f} s, agreement with jaxkde {agree:.3f}",
        flush=True,
    )
    lines += [
        "",
        f"Chosen sigma = {sigma:g}. Refit on all 60,000 training images, tested on the 10,000 "
        "test images:",
        "",
        "| classifier | test accuracy | fit (s) | predict 10,000 (s) | vs jaxkde |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| jaxkde.KDEClassifier | {acc:.4f} | {fit_s:.2f} | {predict_s:.2f} | 1.00x |",
        f"| scikit-learn KernelDensity per class (default tree; {k} queries, extrapolated) | "
        f"agrees with jaxkde on {agree:.0%} of those | {sk_fit:.2f} | {sk_all:.0f} | "
        f"{sk_all / predict_s:.0f}x |",
    ]

    # ------------------------------------------------------------------ sampling throughput
    pca = jaxkde.pca_fit(x, 50)
    z = np.asarray(jaxkde.pca_transform(pca, x))
    lines += [
        "",
        f"Sampling {args.draws} draws from a KDE of the 60,000 training images in PCA-50 space "
        "(Scott bandwidth for jaxkde; scikit-learn takes a scalar bandwidth, 1.0 here); median "
        "of 3 after a first call (whose compile time is shown):",
        "",
        "| kernel | jaxkde draws/s | first call (s) | scikit-learn draws/s "
        "| jaxkde / scikit-learn |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kernel in KERNELS:
        kde = jaxkde.KDE(kernel).fit(z)
        t0 = time.perf_counter()
        kde.sample(args.draws, key=0)
        first = time.perf_counter() - t0
        times = []
        for rep in range(3):
            t0 = time.perf_counter()
            kde.sample(args.draws, key=rep + 1)
            times.append(time.perf_counter() - t0)
        rate = args.draws / statistics.median(times)
        sk_rate, ratio = "", ""
        if kernel in ("gaussian", "tophat"):
            sk = KernelDensity(kernel=kernel, bandwidth=1.0).fit(z)
            sk.sample(10, random_state=0)
            sk_times = []
            for rep in range(3):
                t0 = time.perf_counter()
                sk.sample(args.draws, random_state=rep)
                sk_times.append(time.perf_counter() - t0)
            sk_r = args.draws / statistics.median(sk_times)
            sk_rate, ratio = f"{sk_r:,.0f}", f"{rate / sk_r:.2f}x"
        print(
            f"sampling {kernel}: {rate:,.0f} draws/s (first call {first:.2f} s) {sk_rate}",
            flush=True,
        )
        lines.append(f"| {kernel} | {rate:,.0f} | {first:.2f} | {sk_rate} | {ratio} |")

    table = "\n".join(lines)
    emit(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
