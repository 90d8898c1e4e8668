"""Sample quality of the digit job: fidelity and novelty over scaling factors and PCA sizes.

For each configuration, ``jaxkde.apps.digits.sample_digits`` (what ``jaxkde sample`` runs) draws
``--per-digit`` samples of every digit 0-9 from KDEs fitted on the shipped test split, and:

* fidelity: the share of samples that an independent classifier assigns to the requested digit
  (scikit-learn's 3-nearest-neighbour classifier on the 60,000 training images, pixels / 255;
  used only here);
* novelty: the median distance from each sample to its nearest image among those the KDE was
  fitted on (the digit's test images), divided by the same median for real images the KDE did
  not see (``--per-digit`` training images of each digit, to the same test images). Copies of
  the fitted data give about 0; real unseen digits give 1 by construction.

Writes a markdown table and a PNG plot of fidelity against novelty.

``--samplers`` instead compares samplers the way ``jaxkde sample -n 2000 --seed S`` runs them
(2,000 digits of any class from the KDE of all 10,000 test images), over seeds, on four
measures: fidelity and novelty as above (novelty against 2,000 unseen training images), the
**mid-grey share** (of the inked pixels, > 0.15, the share below 0.85) and the **Fréchet
distance** between the samples and the 60,000 training images in the training images' top-50
principal components (computed on their first 20,000), with the seconds per 2,000 digits and a
picture of 16 digits per sampler (``digit_samplers.png``).

Usage::

    python benchmarks/digit_quality.py ../shared/data/mnist --out-dir benchmarks/results
    python benchmarks/digit_quality.py ../shared/data/mnist --samplers --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
import time

import jax
import numpy as np
from scipy import linalg

import jaxkde
from jaxkde.apps.datasets import load_mnist
from jaxkde.apps.digits import INTENSITIES, KEEP, digit_grid, inpaint_digits, sample_digits
from jaxkde.core.sampling import sample_host


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row (float64)."""
    q = queries.astype(np.float64)
    r = reference.astype(np.float64)
    d2 = (q**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2 * q @ r.T
    return np.sqrt(np.maximum(d2.min(axis=1), 0))


def mid_grey_share(pixels: np.ndarray) -> float:
    """Of the inked pixels (> 0.15), the share that is mid-grey (below 0.85)."""
    ink = pixels > 0.15
    return float((ink & (pixels < 0.85)).sum() / ink.sum())


class Frechet:
    """Fréchet distance to reference images in their top-``k`` principal components."""

    def __init__(self, reference: np.ndarray, k: int = 50, fit_rows: int = 20_000):
        ref = reference.astype(np.float64)
        self.mean = ref.mean(0)
        self.axes = np.linalg.svd(ref[:fit_rows] - self.mean, full_matrices=False)[2][:k]
        feats = (ref - self.mean) @ self.axes.T
        self.mu, self.cov = feats.mean(0), np.cov(feats.T)

    def __call__(self, pixels: np.ndarray) -> float:
        feats = (pixels.astype(np.float64) - self.mean) @ self.axes.T
        mu, cov = feats.mean(0), np.cov(feats.T)
        root = linalg.sqrtm(self.cov @ cov).real
        return float(((self.mu - mu) ** 2).sum() + np.trace(self.cov + cov - 2 * root))


def tweedie_digits(images, n_samples, k, n_components, key, pca):
    """A candidate: the seed's draw from N(x_r, k H) in PCA space, then one Tweedie step
    ``y + k H grad log f(y)`` (the KDE's score) that removes the kernel noise's expected
    part, mapped back and clipped."""
    pixels = images.reshape(-1, 784).astype(np.float32) / 255
    scores = np.asarray(jaxkde.pca_transform(pca, pixels))
    kde = jaxkde.KDE().fit(scores)
    order = np.argsort(-kde.score_samples(scores), kind="stable")
    pool = order[: int(np.ceil(0.5 * len(order)))]
    key_pick, key_draw = jax.random.split(jax.random.key(key))
    picks = np.asarray(jax.random.choice(key_pick, pool, (n_samples,)))
    _, _, drawn = sample_host(kde.state_, key_draw, n_samples, k, indices=picks)
    h = np.asarray(kde.bandwidth_)
    step = kde.score_function(drawn) * (k * (np.diag(h) if h.ndim == 2 else h))
    recon = np.asarray(jaxkde.pca_inverse_transform(pca, drawn + step))
    return np.clip(recon, 0.0, 1.0).astype(np.float32), picks


def compare_samplers(args, clf, train_pixels, fit_images, fit_labels) -> int:
    """The ``--samplers`` measurement (see the module docstring)."""
    fit_pixels = fit_images.reshape(-1, 784).astype(np.float32) / 255
    frechet = Frechet(train_pixels)
    rng = np.random.default_rng(0)
    unseen = train_pixels[rng.choice(len(train_pixels), 2000, replace=False)]
    unseen_median = float(np.median(nearest_distances(unseen, fit_pixels)))
    real = fit_pixels[rng.choice(len(fit_pixels), 2000, replace=False)]
    print(f"real test digits: mid-grey {mid_grey_share(real):.3f}, Frechet {frechet(real):.2f}")
    pcas = {c: jaxkde.pca_fit(fit_pixels, c) for c in (30, 45)}
    samplers = {  # name -> (components, k, how)
        "seed (PCA-30, k = 0.3, linear)": (30, 0.3, "linear"),
        "Tweedie step (PCA-30, k = 0.3)": (30, 0.3, "tweedie"),
        "PCA-45, k = 0.45, linear": (45, 0.45, "linear"),
        "PCA-30, k = 0.3, calibrated": (30, 0.3, "calibrated"),
        "default (PCA-45, k = 0.45, calibrated)": (45, 0.45, "calibrated"),
    }
    rows, pictures = [], []
    for name, (comp, k, how) in samplers.items():
        measures = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            if how == "tweedie":
                flat, picks = tweedie_digits(fit_images, 2000, k, comp, seed, pcas[comp])
            else:
                r = sample_digits(fit_images, None, n_samples=2000, scaling_factor=k,
                                  n_components=comp, intensity=how, key=seed,
                                  pca=pcas[comp])  # fmt: skip
                flat, picks = r.samples.reshape(2000, -1), r.source_indices
            sec = time.perf_counter() - t0
            fidelity = float((clf.predict(flat) == fit_labels[picks]).mean())
            novelty = float(np.median(nearest_distances(flat, fit_pixels))) / unseen_median
            measures.append((mid_grey_share(flat), frechet(flat), fidelity, novelty, sec))
            print(f"{name:42s} seed {seed}: mid-grey {measures[-1][0]:.3f} Frechet "
                  f"{measures[-1][1]:.2f} fidelity {fidelity:.3f} novelty {novelty:.3f} "
                  f"({sec:.2f} s)", flush=True)  # fmt: skip
            if seed == args.seeds[0]:
                pictures.append(flat[:16].reshape(16, 28, 28))
        rows.append((name, np.array(measures)))
    lines = [
        f"Samplers, 2,000 digits of any class from the KDE of the 10,000 test images, seeds "
        f"{', '.join(map(str, args.seeds))} (min-max over seeds); real test digits: mid-grey "
        f"{mid_grey_share(real):.3f}, Fréchet {frechet(real):.2f}; {datetime.date.today()}.",
        "",
        "| sampler | mid-grey share | Fréchet (top-50 PCA) | fidelity | novelty | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def span(col, fmt):
        return f"{fmt.format(col.min())}-{fmt.format(col.max())}"

    for name, m in rows:
        lines.append(f"| {name} | {span(m[:, 0], '{:.3f}')} | {span(m[:, 1], '{:.2f}')} | "
                     f"{span(m[:, 2], '{:.3f}')} | {span(m[:, 3], '{:.3f}')} | "
                     f"{span(m[:, 4], '{:.2f}')} |")  # fmt: skip
    table = "\n".join(lines)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "digit_samplers.md").write_text(table + "\n")
    print()
    print(table)
    from PIL import Image

    grid = np.concatenate([digit_grid([p], items_per_row=16, zoom=2) for p in pictures], axis=0)
    Image.fromarray(grid).save(args.out_dir / "digit_samplers.png")
    print(f"wrote {args.out_dir / 'digit_samplers.md'} and {args.out_dir / 'digit_samplers.png'}"
          f" (rows: {', '.join(samplers)})")  # fmt: skip
    return 0


def inpaint_quality(args, clf, train_pixels, train_labels, test_pixels, test_labels) -> int:
    """Complete ``--inpaint-n`` random test digits from their ``--inpaint-keep`` half with a
    KDE fitted on the 60,000 training images; fidelity of the completions and of the half
    alone (other half 0) under the 3-NN classifier, and the RMSE of the completed half."""
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(test_pixels.shape[0], args.inpaint_n, replace=False))
    t0 = time.perf_counter()
    result = inpaint_digits(train_pixels, test_pixels[rows], keep=args.inpaint_keep,
                            key=args.seed)  # fmt: skip
    sec = time.perf_counter() - t0
    truth = test_labels[rows]
    hidden = ~result.mask.reshape(-1)
    done = result.completions.reshape(len(rows), -1)
    half = result.observed.reshape(len(rows), -1)
    fidelity = float((clf.predict(done) == truth).mean())
    half_fidelity = float((clf.predict(half) == truth).mean())
    # How much of the label the kept half carries at all: 3-NN trained on kept halves only.
    from sklearn.neighbors import KNeighborsClassifier

    kept = result.mask.reshape(-1)
    half_clf = KNeighborsClassifier(n_neighbors=3).fit(train_pixels[:, kept], train_labels)
    half_only = float((half_clf.predict(test_pixels[rows][:, kept]) == truth).mean())
    original = test_pixels[rows]
    rmse = float(np.sqrt(np.mean((done[:, hidden] - original[:, hidden]) ** 2)))
    zero_rmse = float(np.sqrt(np.mean(original[:, hidden] ** 2)))
    table = "\n".join([
        f"Inpainting, {args.inpaint_n} random test digits completed from their "
        f"{args.inpaint_keep} half; KDE (half Scott's H) of 50 PCA scores of the 60,000 "
        f"training images; 3-NN classifier on the training images; seed {args.seed}; "
        f"{datetime.date.today()}.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| fidelity: completed digit classified as its true label | {fidelity:.3f} |",
        f"| the same classifier on the half alone (other half 0) | {half_fidelity:.3f} |",
        f"| 3-NN trained on kept halves only, on the kept half (the half's own information) "
        f"| {half_only:.3f} |",
        f"| RMSE of the completed half (pixels in [0, 1]) | {rmse:.4f} |",
        f"| RMSE of the half left at 0 | {zero_rmse:.4f} |",
        f"| time to fit and complete all (s) | {sec:.1f} |",
    ])  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "inpaint_quality.md").write_text(table + "\n")
    print(table)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=pathlib.Path, help="folder with the MNIST training split")
    p.add_argument("--per-digit", type=int, default=100)
    p.add_argument("--scaling-factors", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.8])
    p.add_argument("--components", type=int, nargs="+", default=[20, 30, 50])
    p.add_argument("--sources", nargs="+", default=["density", "random"])
    p.add_argument(
        "--source-quantiles",
        type=float,
        nargs="+",
        default=[0.5],
        help="for density sources: the densest fraction of each digit's images drawn from",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--intensity",
        choices=INTENSITIES,
        default="calibrated",
        help="intensities of the per-digit sweep (calibrated)",
    )
    p.add_argument(
        "--inpaint",
        action="store_true",
        help="only the inpainting measurement (completion fidelity and pixel error)",
    )
    p.add_argument(
        "--samplers",
        action="store_true",
        help="only the comparison of samplers (mid-grey share, Frechet distance)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--inpaint-n", type=int, default=1000, help="test digits completed (1000)")
    p.add_argument("--inpaint-keep", default="top", choices=KEEP)
    p.add_argument("--out-dir", type=pathlib.Path, default=pathlib.Path("benchmarks/results"))
    args = p.parse_args(argv)

    from sklearn.neighbors import KNeighborsClassifier

    fit_images, fit_labels = load_mnist("test")
    train_images, train_labels = load_mnist("train", args.data_dir)
    fit_pixels = fit_images.reshape(-1, 784).astype(np.float32) / 255
    train_pixels = train_images.reshape(-1, 784).astype(np.float32) / 255

    t0 = time.perf_counter()
    clf = KNeighborsClassifier(n_neighbors=3).fit(train_pixels, train_labels)
    acc = float((clf.predict(fit_pixels[:2000]) == fit_labels[:2000]).mean())
    print(
        f"classifier: 3-NN on 60,000 training images; accuracy on 2,000 real test images "
        f"{acc:.3f} ({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )

    if args.inpaint:
        return inpaint_quality(args, clf, train_pixels, train_labels, fit_pixels, fit_labels)
    if args.samplers:
        return compare_samplers(args, clf, train_pixels, fit_images, fit_labels)

    # The reference for novelty: real digits the KDEs did not see.
    rng = np.random.default_rng(args.seed)
    unseen_nn = []
    for digit in range(10):
        rows = rng.choice(np.flatnonzero(train_labels == digit), args.per_digit, replace=False)
        unseen_nn.append(nearest_distances(train_pixels[rows], fit_pixels[fit_labels == digit]))
    unseen_median = float(np.median(np.concatenate(unseen_nn)))
    print(f"median nearest-image distance of unseen real digits: {unseen_median:.3f}", flush=True)

    # (label, source, quantile): density sources once per quantile.
    specs = [
        (f"density {q:g}" if source == "density" else source, source, q)
        for source in args.sources
        for q in (args.source_quantiles if source == "density" else [1.0])
    ]
    results = []  # (components, label, k, fidelity, novelty, seconds, per-digit fidelity)
    for n_components in args.components:
        pca = jaxkde.pca_fit(fit_pixels, n_components)
        for label, source, quantile in specs:
            for k in args.scaling_factors:
                t0 = time.perf_counter()
                correct, nn, per_digit = 0, [], []
                for digit in range(10):
                    r = sample_digits(
                        fit_images, fit_labels, digit=digit, n_samples=args.per_digit,
                        scaling_factor=k, n_components=n_components, source=source,
                        source_quantile=quantile, key=args.seed * 1000 + digit, pca=pca,
                        intensity=args.intensity,
                    )  # fmt: skip
                    flat = r.samples.reshape(args.per_digit, -1)
                    hits = int((clf.predict(flat) == digit).sum())
                    correct += hits
                    per_digit.append(hits / args.per_digit)
                    nn.append(nearest_distances(flat, fit_pixels[fit_labels == digit]))
                fidelity = correct / (10 * args.per_digit)
                novelty = float(np.median(np.concatenate(nn))) / unseen_median
                sec = time.perf_counter() - t0
                results.append((n_components, label, k, fidelity, novelty, sec, per_digit))
                print(
                    f"PCA-{n_components:<3d} {label:12s} k={k:<5g} fidelity {fidelity:.3f} "
                    f"novelty {novelty:.3f} ({sec:.1f} s)",
                    flush=True,
                )

    args.out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Digit quality, {args.per_digit} samples of each digit 0-9 per row, KDEs (Scott) fitted "
        f"on the MNIST test split; 3-NN classifier accuracy on real test images {acc:.3f}; "
        f"median unseen nearest-image distance {unseen_median:.3f}; {datetime.date.today()}.",
        "",
        "| PCA components | source (densest fraction) | scaling factor k | fidelity | novelty | "
        + " | ".join(f"fid. {d}" for d in range(10))
        + " |",
        "| ---: | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in range(10)) + " |",
    ]
    for comp, source, k, fid, nov, _, per in results:
        lines.append(
            f"| {comp} | {source} | {k:g} | {fid:.3f} | {nov:.3f} | "
            + " | ".join(f"{v:.2f}" for v in per)
            + " |"
        )
    table = "\n".join(lines)
    (args.out_dir / "digit_quality.md").write_text(table + "\n")
    print()
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for comp in args.components:
        for label, source, _ in specs:
            pts = [(nov, fid, k) for c, s, k, fid, nov, _, _ in results if c == comp and s == label]
            if not pts:
                continue
            xs, ys, _ = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o" if source == "density" else "s",
                    linestyle="-" if source == "density" else "--",
                    label=f"PCA-{comp}, {label} source")  # fmt: skip
            for x, y, k in pts:
                ax.annotate(f"k={k:g}", (x, y), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    ax.axhline(0.95, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(0.75, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("novelty (median nearest-image distance / that of unseen real digits)")
    ax.set_ylabel("fidelity (share classified as the requested digit)")
    ax.set_title("jaxkde sample: fidelity against novelty")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out_dir / "digit_quality.png")
    print(f"wrote {args.out_dir / 'digit_quality.md'} and {args.out_dir / 'digit_quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
