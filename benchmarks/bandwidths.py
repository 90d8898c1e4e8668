"""Bandwidth selectors: integrated squared error against the true density, and speed.

1. The 15 Marron-Wand (1992) normal mixtures, n = 1,000, ``--reps`` replicates (100 by
   default): the mean ISE of a Gaussian KDE for every selector (Scott, Silverman,
   silverman_robust, sj, isj, plugin, lscv, likelihood CV) and KDEpy's ISJ. The ISE of a
   Gaussian KDE against a normal mixture is computed in closed form (float64), so no
   integration error enters.
2. Four bivariate normal mixtures, n = 1,000: the full-matrix plug-in against Scott's diagonal
   and full rules and the full-matrix likelihood CV.
3. Speed: every selector at n = 1e6 in 1-D (first call, then the median of 3), the plug-in at
   n = 1e5 in 3-D.
4. ``--only-bounded``: reflection and transform on Exponential(1) and Beta(2, 5), n = 2,000.
5. ``--only-adaptive``: Abramson's adaptive KDE against the fixed one on lognormal and
   Student-t(3) samples, n = 2,000: held-out log-likelihood, ISE and time.
6. ``--adaptive-speed``: adaptive against fixed scoring time at three sizes on the default
   device (the GPU figures).

Usage::

    python benchmarks/bandwidths.py --out benchmarks/results/bandwidths.md [--reps 100]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import platform
import time
import warnings

import jax
import numpy as np

import jaxkde

# ------------------------------------------------------------------- Marron-Wand mixtures
_MW = {
    1: ("Gaussian", [(1, 0, 1)]),
    2: ("Skewed unimodal", [(1 / 5, 0, 1), (1 / 5, 1 / 2, 2 / 3), (3 / 5, 13 / 12, 5 / 9)]),
    3: ("Strongly skewed", [(1 / 8, 3 * ((2 / 3) ** k - 1), (2 / 3) ** k) for k in range(8)]),
    4: ("Kurtotic unimodal", [(2 / 3, 0, 1), (1 / 3, 0, 1 / 10)]),
    5: ("Outlier", [(1 / 10, 0, 1), (9 / 10, 0, 1 / 10)]),
    6: ("Bimodal", [(1 / 2, -1, 2 / 3), (1 / 2, 1, 2 / 3)]),
    7: ("Separated bimodal", [(1 / 2, -3 / 2, 1 / 2), (1 / 2, 3 / 2, 1 / 2)]),
    8: ("Skewed bimodal", [(3 / 4, 0, 1), (1 / 4, 3 / 2, 1 / 3)]),
    9: ("Trimodal", [(9 / 20, -6 / 5, 3 / 5), (9 / 20, 6 / 5, 3 / 5), (1 / 10, 0, 1 / 4)]),
    10: ("Claw", [(1 / 2, 0, 1)] + [(1 / 10, k / 2 - 1, 1 / 10) for k in range(5)]),
    11: ("Double claw", [(49 / 100, -1, 2 / 3), (49 / 100, 1, 2 / 3)]
         + [(1 / 350, (k - 3) / 2, 1 / 100) for k in range(7)]),
    12: ("Asymmetric claw", [(1 / 2, 0, 1)]
         + [(2 ** (1 - k) / 31, k + 1 / 2, 2 ** (-k) / 10) for k in range(-2, 3)]),
    13: ("Asymmetric double claw", [(46 / 100, 2 * k - 1, 2 / 3) for k in range(2)]
         + [(1 / 300, -k / 2, 1 / 100) for k in range(1, 4)]
         + [(7 / 300, k / 2, 7 / 100) for k in range(1, 4)]),
    14: ("Smooth comb", [(2 ** (5 - k) / 63, (65 - 96 * 0.5**k) / 21, (32 / 63) / 2**k)
                         for k in range(6)]),
    15: ("Discrete comb", [(2 / 7, (12 * k - 15) / 7, 2 / 7) for k in range(3)]
         + [(1 / 21, 2 * k / 7, 1 / 21) for k in range(8, 11)]),
}  # fmt: skip


def _mixture(components):
    w = np.array([c[0] for c in components])
    return w / w.sum(), np.array([c[1] for c in components]), np.array([c[2] for c in components])


def sample_1d(components, n: int, rng) -> np.ndarray:
    w, mu, sd = _mixture(components)
    k = rng.choice(len(w), size=n, p=w)
    return rng.normal(mu[k], sd[k])


def _phi(u, var):
    return np.exp(-0.5 * u * u / var) / np.sqrt(2 * np.pi * var)


def ise_1d(x: np.ndarray, h2: float, components) -> float:
    """Closed-form ISE of the Gaussian KDE (variance ``h2``) of ``x`` against the mixture."""
    w, mu, sd = _mixture(components)
    n = x.size
    square = np.sum(_phi(x[:, None] - x[None, :], 2 * h2)) / n**2
    cross = np.sum(w[None, :] * _phi(x[:, None] - mu[None, :], h2 + sd[None, :] ** 2)) / n
    truth = np.sum(w[:, None] * w[None, :] * _phi(mu[:, None] - mu[None, :],
                                                  sd[:, None] ** 2 + sd[None, :] ** 2))  # fmt: skip
    return float(square - 2 * cross + truth)


def _selectors_1d():
    def rule(name):
        return lambda x: float(jaxkde.KDE(bandwidth=name).fit(x[:, None]).bandwidth_[0, 0])

    def kdepy_isj(x):
        from KDEpy.bw_selection import improved_sheather_jones

        return float(improved_sheather_jones(x[:, None])) ** 2

    names = ("scott", "silverman", "silverman_robust", "sj", "isj", "plugin", "lscv", "cv")
    out = {name: rule(name) for name in names}
    try:
        import KDEpy  # noqa: F401

        out["KDEpy ISJ"] = kdepy_isj
    except ImportError:
        pass
    return out


def marron_wand(reps: int, n: int = 1000) -> tuple[str, dict]:
    selectors = _selectors_1d()
    rows = []
    means = {}
    for index, (title, comps) in _MW.items():
        rng = np.random.default_rng(index)
        ise = {name: [] for name in selectors}
        for _ in range(reps):
            x = sample_1d(comps, n, rng)
            for name, fn in selectors.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        ise[name].append(ise_1d(x, fn(x), comps))
                    except Exception:  # a peer that fails counts as missing, reported below
                        ise[name].append(np.nan)
        means[index] = {k: float(np.nanmean(v)) for k, v in ise.items()}
        fails = {k: int(np.isnan(v).sum()) for k, v in ise.items() if np.isnan(v).any()}
        best = min(means[index], key=means[index].get)
        cells = [f"{1e3 * means[index][k]:.3f}" + (" *" if k == best else "") for k in selectors]
        note = "" if not fails else " fails: " + ", ".join(f"{k} {v}" for k, v in fails.items())
        rows.append(f"| {index} {title} | " + " | ".join(cells) + f" |{note}")
        print(rows[-1], flush=True)
    head = "| density | " + " | ".join(selectors) + " |\n|" + "---|" * (len(selectors) + 1)
    return head + "\n" + "\n".join(rows), means


# ------------------------------------------------------------------------- 2-D mixtures
_BIVARIATE = {
    "correlated normal": [(1.0, [0, 0], [[1, 0.9], [0.9, 1]])],
    "bimodal": [(0.5, [-1.5, 0], [[1, 0.5], [0.5, 1]]), (0.5, [1.5, 0], [[1, 0.5], [0.5, 1]])],
    "kurtotic": [(2 / 3, [0, 0], [[1, 1], [1, 4]]),
                 (1 / 3, [0, 0], [[4 / 9, -1 / 3], [-1 / 3, 4 / 9]])],
    "trimodal": [(9 / 20, [-1.2, 1.2], [[0.36, 0.252], [0.252, 0.49]]),
                 (9 / 20, [1.2, -1.2], [[0.36, 0.252], [0.252, 0.49]]),
                 (1 / 10, [0, 0], [[0.16, 0.056], [0.056, 0.16]])],
}  # fmt: skip


def _phi_2d(u, cov):
    inv = np.linalg.inv(cov)
    quad = np.einsum("...i,ij,...j->...", u, inv, u)
    return np.exp(-0.5 * quad) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))


def ise_2d(x, h, comps) -> float:
    n = x.shape[0]
    w = np.array([c[0] for c in comps])
    mu = [np.array(c[1], float) for c in comps]
    cov = [np.array(c[2], float) for c in comps]
    square = np.sum(_phi_2d(x[:, None] - x[None], 2 * h)) / n**2
    cross = sum(wk * np.sum(_phi_2d(x - m, h + c)) for wk, m, c in zip(w, mu, cov, strict=True))
    truth = sum(w[a] * w[b] * _phi_2d(mu[a] - mu[b], cov[a] + cov[b])
                for a in range(len(w)) for b in range(len(w)))  # fmt: skip
    return float(square - 2 * cross / n + truth)


def bivariate(reps: int, n: int = 1000) -> str:
    names = ("scott", "scott_full", "plugin", "cv_full")
    rows = []
    for seed, (title, comps) in enumerate(_BIVARIATE.items()):
        rng = np.random.default_rng(100 + seed)
        ise = {k: [] for k in names}
        w = np.array([c[0] for c in comps])
        for _ in range(reps):
            k = rng.choice(len(w), size=n, p=w / w.sum())
            x = np.stack([rng.multivariate_normal(comps[j][1], comps[j][2]) for j in k])
            for name in names:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    h = jaxkde.KDE(bandwidth=name).fit(x).bandwidth_
                ise[name].append(ise_2d(x, h, comps))
        means = {k: float(np.mean(v)) for k, v in ise.items()}
        best = min(means, key=means.get)
        cells = [f"{1e3 * means[k]:.3f}" + (" *" if k == best else "") for k in names]
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    head = "| mixture | " + " | ".join(names) + " |\n|" + "---|" * (len(names) + 1)
    return head + "\n" + "\n".join(rows)


# ------------------------------------------------------------------------------ bounded
def bounded(reps: int, n: int = 2000) -> str:
    """Reflection and transform against the unbounded KDE (Scott's rule throughout)."""
    from scipy import stats

    laws = {
        "Exponential(1)": (stats.expon(), [(0.0, None)], 30.0),
        "Beta(2, 5)": (stats.beta(2, 5), [(0.0, 1.0)], 1.0),
    }
    rows = []
    for seed, (title, (law, bounds, top)) in enumerate(laws.items()):
        rng = np.random.default_rng(200 + seed)
        inner = np.linspace(0.0, top, 200001)
        outer = np.linspace(-3.0, top + 3.0, 400001)
        truth_in = law.pdf(inner)
        truth_out = law.pdf(outer)
        res = {k: {"mass": [], "ise": [], "inner": [], "f0": [], "t": []} for k in
               ("unbounded", "reflect", "transform")}  # fmt: skip
        for _ in range(reps):
            x = law.rvs(size=n, random_state=rng)[:, None]
            for name in res:
                kwargs = {} if name == "unbounded" else {"bounds": bounds, "boundary": name}
                t0 = time.perf_counter()
                kde = jaxkde.KDE(**kwargs).fit(x)
                grid = outer if name == "unbounded" else inner
                dens = kde.predict(grid[:, None])
                res[name]["t"].append(time.perf_counter() - t0)
                truth = truth_out if name == "unbounded" else truth_in
                res[name]["ise"].append(np.trapezoid((dens - truth) ** 2, grid))
                # The part of the ISE farther than 3 Scott bandwidths from every bound: what a
                # boundary correction leaves as it is (the same mask for every method).
                h = math.sqrt(float(jaxkde.KDE().fit(x).bandwidth_[0, 0]))
                far = (grid > 3 * h) & (grid < (top - 3 * h if math.isfinite(law.support()[1])
                                                else top))  # fmt: skip
                res[name]["inner"].append(np.trapezoid(((dens - truth) ** 2)[far], grid[far]))
                on = (grid >= 0) & (grid <= top)
                res[name]["mass"].append(np.trapezoid(dens[on], grid[on]))
                res[name]["f0"].append(float(kde.predict(np.array([[1e-9]]))[0]))
        for name, r in res.items():
            rows.append(f"| {title} | {name} | {np.mean(r['mass']):.6f} | "
                        f"{1e3 * np.mean(r['ise']):.3f} | {1e3 * np.mean(r['inner']):.3f} | "
                        f"{np.mean(r['f0']):.3f} | "
                        f"{law.pdf(1e-9):.3f} | {np.median(r['t']):.3f} |")  # fmt: skip
            print(rows[-1], flush=True)
    head = ("| law | method | mass on the support | mean ISE x 1e3 | of which > 3h from the "
            "bounds | mean f(0+) | true f(0+) | fit + grid (s) |\n"
            "|---|---|---|---|---|---|---|---|")  # fmt: skip
    return head + "\n" + "\n".join(rows)


# ----------------------------------------------------------------------------- adaptive
def adaptive(reps: int, n: int = 2000, n_test: int = 10000) -> str:
    """Abramson's adaptive KDE against the fixed one on heavy tails: held-out log-likelihood,
    ISE against the true density, and time (fit + scoring the held-out points)."""
    from scipy import stats

    laws = {
        "lognormal(0, 1)": (stats.lognorm(1.0), np.linspace(-5.0, 80.0, 170001)),
        "Student-t(3)": (stats.t(3), np.linspace(-80.0, 80.0, 320001)),
    }
    methods = {
        "fixed, scott": {},
        "adaptive, scott pilot, alpha 1/2": {"adaptive": True},
        "fixed, cv": {"bandwidth": "cv"},
        "adaptive, cv (H learned with the factors fixed)": {"bandwidth": "cv", "adaptive": True},
    }
    rows = []
    for seed, (title, (law, grid)) in enumerate(laws.items()):
        rng = np.random.default_rng(300 + seed)
        truth = law.pdf(grid)
        res = {k: {"ll": [], "ise": [], "t": []} for k in methods}
        for _ in range(reps):
            x = law.rvs(size=n, random_state=rng)[:, None]
            test = law.rvs(size=n_test, random_state=rng)[:, None]
            for name, kwargs in methods.items():
                t0 = time.perf_counter()
                kde = jaxkde.KDE(**kwargs).fit(x)
                ll = kde.score_samples(test)
                res[name]["t"].append(time.perf_counter() - t0)
                res[name]["ll"].append(float(np.mean(ll.astype(np.float64))))
                dens = kde.predict(grid[:, None])
                res[name]["ise"].append(np.trapezoid((dens - truth) ** 2, grid))
        base = np.median(res["fixed, scott"]["t"])
        for name, r in res.items():
            rows.append(f"| {title} | {name} | {np.mean(r['ll']):.4f} | "
                        f"{1e3 * np.mean(r['ise']):.3f} | {np.median(r['t']):.3f} | "
                        f"{np.median(r['t']) / base:.2f}x |")  # fmt: skip
            print(rows[-1], flush=True)
    head = ("| law | method | mean held-out log-lik | mean ISE x 1e3 | fit + score (s, median) "
            "| time / fixed scott |\n|---|---|---|---|---|---|")  # fmt: skip
    return head + "\n" + "\n".join(rows)


def adaptive_speed(reps: int = 5) -> str:
    """Fixed against adaptive on the default device: fit, first score (compile included) and the
    median of ``reps`` later scores, at three sizes (direct differences in 1-D and 2-D, the
    checked matrix product in 50-D)."""
    rng = np.random.default_rng(7)
    cases = [
        ("1-D t(3)", rng.standard_t(3, size=(2000, 1)), rng.standard_t(3, size=(10000, 1)), {}),
        ("2-D t(3)", rng.standard_t(3, size=(100000, 2)), rng.standard_t(3, size=(10000, 2)),
         {}),
        ("50-D t(5), scott_full", rng.standard_t(5, size=(60000, 50)),
         rng.standard_t(5, size=(10000, 50)), {"bandwidth": "scott_full"}),
    ]  # fmt: skip
    rows = []
    for title, x, q, kwargs in cases:
        x, q = x.astype(np.float32), q.astype(np.float32)
        out = {}
        for name, extra in (("fixed", {}), ("adaptive", {"adaptive": True})):
            t0 = time.perf_counter()
            kde = jaxkde.KDE(**kwargs, **extra).fit(x)
            fit = time.perf_counter() - t0
            t0 = time.perf_counter()
            kde.score_samples(q)
            first = time.perf_counter() - t0
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                kde.score_samples(q)
                times.append(time.perf_counter() - t0)
            out[name] = (fit, first, float(np.median(times)))
        for name, (fit, first, med) in out.items():
            rows.append(f"| {title} | {x.shape[0]:,} x {q.shape[0]:,} | {name} | {fit:.3f} | "
                        f"{first:.3f} | {med:.4f} | {med / out['fixed'][2]:.2f}x |")  # fmt: skip
            print(rows[-1], flush=True)
    head = ("| data | n x queries | estimator | fit (s) | first score (s) | score, median (s) | "
            "score / fixed |\n|---|---|---|---|---|---|---|")  # fmt: skip
    return head + "\n" + "\n".join(rows)


# --------------------------------------------------------------------------------- speed
def speed() -> str:
    rng = np.random.default_rng(0)
    x = sample_1d(_MW[6][1], 10**6, rng)[:, None]
    rows = []
    fns = {
        "scott": lambda d: jaxkde.KDE(bandwidth="scott").fit(d).bandwidth_,
        "silverman_robust": jaxkde.silverman_robust_bandwidth,
        "sj": jaxkde.sj_bandwidth,
        "isj": jaxkde.isj_bandwidth,
        "plugin": jaxkde.plugin_bandwidth,
        "lscv": jaxkde.lscv_bandwidth,
    }
    for name, fn in fns.items():
        t0 = time.perf_counter()
        h = fn(x)
        first = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
        rows.append(f"| {name} | 1-D, n = 1e6 | {first:.3f} | {np.median(times):.3f} | "
                    f"{math.sqrt(float(np.ravel(h)[0])):.5f} |")  # fmt: skip
        print(rows[-1], flush=True)
    # Heavy tails: the range spans thousands of bandwidths, and the pair sums are binned again
    # finely where the data are (or summed exactly); one call each, the error named if any.
    heavy = {
        "Cauchy, n = 1e6": rng.standard_cauchy(10**6),
        "N(0, 1) + one point at 1e4, n = 1e6": np.r_[rng.normal(size=10**6 - 1), 1e4],
        "lognormal sigma 3, n = 1e5": rng.lognormal(0.0, 3.0, 10**5),
    }
    for label, data in heavy.items():
        for name in ("sj", "isj", "plugin", "lscv"):
            t0 = time.perf_counter()
            try:
                h = f"{math.sqrt(float(np.ravel(fns[name](data[:, None]))[0])):.5f}"
            except jaxkde.SelectorError as exc:
                h = f"SelectorError: {str(exc)[:70]}..."
            rows.append(f"| {name} | {label} | {time.perf_counter() - t0:.3f} | - | {h} |")
            print(rows[-1], flush=True)
    x3 = rng.normal(size=(10**5, 3)) @ np.array([[1, 0, 0], [0.5, 1, 0], [0.2, 0.3, 1.0]])
    x3[: 5 * 10**4, 0] += 3.0
    t0 = time.perf_counter()
    h = jaxkde.plugin_bandwidth(x3)
    rows.append(f"| plugin | 3-D, n = 1e5 | {time.perf_counter() - t0:.3f} | - | "
                f"diag sqrt {np.sqrt(np.diag(h)).round(4).tolist()} |")  # fmt: skip
    print(rows[-1], flush=True)
    head = "| selector | data | first call (s) | median of 3 (s) | h |\n|---|---|---|---|---|"
    return head + "\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--reps-2d", type=int, default=10)
    parser.add_argument("--skip-ise", action="store_true")
    parser.add_argument("--only-bounded", action="store_true")
    parser.add_argument("--reps-bounded", type=int, default=20)
    parser.add_argument("--only-adaptive", action="store_true")
    parser.add_argument("--reps-adaptive", type=int, default=20)
    parser.add_argument("--adaptive-speed", action="store_true")
    args = parser.parse_args()
    parts = [
        "# Bandwidth selectors\n",
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} CPUs, jax {jax.__version__}, backend {jax.default_backend()}.\n",
    ]
    if args.adaptive_speed:
        parts += [f"## Adaptive against fixed: speed on {jax.devices()[0].device_kind}\n",
                  adaptive_speed(), ""]  # fmt: skip
        args.skip_ise = True
    elif args.only_adaptive:
        parts += [
            f"## Adaptive bandwidths: n = 2,000, 10,000 held-out points, "
            f"{args.reps_adaptive} replicates\n",
            adaptive(args.reps_adaptive),
            "",
        ]
        args.skip_ise = True
    elif args.only_bounded:
        parts += [f"## Bounded data: n = 2,000, {args.reps_bounded} replicates, Scott's rule\n",
                  bounded(args.reps_bounded), ""]  # fmt: skip
        args.skip_ise = True
    else:
        parts += ["## Speed\n", speed(), ""]
    if not args.skip_ise:
        table, means = marron_wand(args.reps)
        parts += [f"## Marron-Wand mixtures: mean ISE x 1e3, n = 1,000, {args.reps} replicates "
                  "(* best)\n", table, ""]  # fmt: skip
        multimodal = range(6, 16)
        for name in ("isj", "plugin", "sj", "lscv", "cv"):
            wins = sum(means[i][name] < means[i]["scott"] for i in multimodal)
            parts.append(f"- `{name}` beats Scott on mean ISE for {wins} of the 10 multimodal "
                         "densities (6-15).")  # fmt: skip
        parts += ["", f"## Bivariate mixtures: mean ISE x 1e3, n = 1,000, {args.reps_2d} "
                  "replicates (* best)\n", bivariate(args.reps_2d), ""]  # fmt: skip
    text = "\n".join(parts) + "\n"
    print(text)
    if args.out is not None:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
