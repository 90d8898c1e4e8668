"""KDEs over memory-mapped files (jaxkde/scale/streaming.py): the same answers as in memory, in
bounded memory, and clear errors when the file is not what the fit saw."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from reference import RTOL
from scipy.special import logsumexp

import jaxkde
from jaxkde.bandwidth.rules import rule_bandwidth
from jaxkde.core import moments
from jaxkde.scale import streaming

KERNELS = ["gaussian", "epanechnikov", "tophat"]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few hundred rows (with chunk_size=256), so a small file spans many blocks."""
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 8 * 3 * 256)


def data(dtype, n=3001, d=3):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + np.arange(d) * 50.0
    return x.astype(dtype), rng.uniform(0.0, 2.0, size=n)


def on_disk(tmp_path, x) -> np.memmap:
    np.save(tmp_path / "x.npy", x)
    return np.load(tmp_path / "x.npy", mmap_mode="r")


def scaled_error(got, want):
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin)
    return np.max(np.abs(got[fin] - want[fin]) / np.maximum(np.abs(want[fin]), 1.0), initial=0)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bandwidth", ["scott", "silverman_full", 0.9])
def test_streamed_file_scores_as_in_memory(kernel, bandwidth, dtype, tmp_path, small_blocks):
    x, w = data(dtype)
    w[:700] = 0.0  # whole blocks of weight 0 are skipped
    mm = on_disk(tmp_path, x)
    queries = np.r_[x[:50] + 0.1, x[-5:] + 40.0]
    for weights in (None, w):
        streamed = jaxkde.KDE(kernel, bandwidth=bandwidth, chunk_size=256, out_of_core=True)
        streamed.fit(mm, sample_weight=weights)
        memory = jaxkde.KDE(kernel, bandwidth=bandwidth).fit(x, sample_weight=weights)
        assert streamed.state_.block_rows < x.shape[0] // 4  # several blocks, one partial
        np.testing.assert_allclose(streamed.bandwidth_, memory.bandwidth_, rtol=1e-12)
        got = streamed.score_samples(queries)
        assert got.dtype == np.dtype(dtype)
        assert scaled_error(got, memory.score_samples(queries).astype(np.float64)) < RTOL[dtype]
        assert streamed.score(queries[:50]) == pytest.approx(memory.score(queries[:50]),
                                                             rel=10 * RTOL[dtype])  # fmt: skip


def test_a_view_of_rows_streams_its_own_rows(tmp_path, small_blocks):
    x, _ = data(np.float32)
    mm = on_disk(tmp_path, x)
    view = mm[1000:2500]
    assert isinstance(view, np.memmap)
    got = jaxkde.KDE(out_of_core=True).fit(view).score_samples(x[:20])
    want = jaxkde.KDE().fit(x[1000:2500]).score_samples(x[:20])
    assert scaled_error(got, want.astype(np.float64)) < 1e-5


def test_streamed_statistics_are_those_of_the_whole_file(tmp_path, small_blocks):
    x, w = data(np.float64)
    rows = streaming.row_file(on_disk(tmp_path, x))
    for full in (True, False):
        stats = streaming.streamed_moments(rows, w, full)
        cov = np.cov(x.T, aweights=w)
        np.testing.assert_allclose(stats.mean, np.average(x, axis=0, weights=w), rtol=1e-12)
        np.testing.assert_allclose(np.diag(stats.cov), np.diag(cov), rtol=1e-10)
        if full:
            np.testing.assert_allclose(stats.cov, cov, rtol=1e-10, atol=1e-12)
        assert stats.n_eff == pytest.approx(w.sum() ** 2 / (w @ w), rel=1e-12)
        np.testing.assert_array_equal(stats.low, x.min(axis=0))
    one = moments.moments(moments.part_statistics(x, w)[None], x.shape[1])
    np.testing.assert_allclose(rule_bandwidth("scott_full", one),
                               jaxkde.KDE(bandwidth="scott_full").fit(x, sample_weight=w)
                               .bandwidth_, rtol=1e-6)  # fmt: skip


def test_streamed_samples_are_around_rows_of_the_file(tmp_path, small_blocks):
    x, w = data(np.float32)
    w[: x.shape[0] // 2] = 0.0
    kde = jaxkde.KDE(bandwidth=1e-3, chunk_size=256, out_of_core=True)
    kde.fit(on_disk(tmp_path, x), sample_weight=w)
    a = kde.sample(400, key=5)
    np.testing.assert_array_equal(a, kde.sample(400, key=5))  # the same key, the same draws
    centre, _ = kde.random_sample(key=2)
    assert np.any(np.all(centre == x.astype(np.float64), axis=1))  # a row, read exactly
    nearest = np.argmin(((a[:, None, :] - x[None, :, :]) ** 2).sum(-1), axis=1)
    assert np.all(w[nearest] > 0)  # only rows of positive weight are centres
    # centres by weight: the mean of the draws is the weighted mean (4 standard errors)
    mean = np.average(x, axis=0, weights=w)
    assert np.all(np.abs(a.mean(axis=0) - mean) < 4 * x[w > 0].std(axis=0) / np.sqrt(400))


def test_truncated_or_bad_files_are_clear_errors(tmp_path, small_blocks):
    x, _ = data(np.float32)
    mm = on_disk(tmp_path, x)
    kde = jaxkde.KDE(out_of_core=True).fit(mm)
    path = tmp_path / "x.npy"
    size = os.path.getsize(path)
    os.truncate(path, size - 100 * x.shape[1] * 4)  # the last 100 rows gone
    with pytest.raises(ValueError, match=r"shorter than its 3001 rows: it holds 2901 rows"):
        kde.score_samples(x[:3])
    with pytest.raises(ValueError, match="shorter than its 3001 rows"):
        jaxkde.KDE(out_of_core=True).fit(
            mm
        )  # the memmap still says 3001 rows: refused before any read
    bad = x.copy()
    bad[2000, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 2000 of .* is not"):
        jaxkde.KDE(out_of_core=True).fit(on_disk(tmp_path, bad))
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    with pytest.raises(ValueError, match="C-ordered"):
        jaxkde.KDE(out_of_core=True).fit(np.load(tmp_path / "f.npy", mmap_mode="r"))
    np.save(tmp_path / "c.npy", x)
    with pytest.raises(ValueError, match="copy-on-write"):
        jaxkde.KDE(out_of_core=True).fit(np.load(tmp_path / "c.npy", mmap_mode="c"))


def test_what_needs_the_rows_in_memory_is_refused(tmp_path):
    x, _ = data(np.float32)
    mm = on_disk(tmp_path, x)
    kde = jaxkde.KDE(out_of_core=True).fit(mm)
    for call, name in [(lambda: kde.cdf(x[:2]), "log_cdf"), (lambda: pickle.dumps(kde), "pickling"),
                       (lambda: kde.score_grid(8), "score_grid"),
                       (lambda: kde.marginal([0]), "marginal"),
                       (lambda: kde.score_function(x[:2]), "score_function")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"{name} is not available for a KDE streamed"):
            call()
    for params, fit_kw, what in [
        ({}, {"y": np.zeros(x.shape[0])}, "y \\(class labels\\)"),
        ({"adaptive": True}, {}, "adaptive=True"),
        ({"bandwidth": "cv_ml"}, {}, "bandwidth='cv_ml'"),
        ({"mesh": jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))}, {}, "mesh"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=what):
            jaxkde.KDE(**params, out_of_core=True).fit(mm, **fit_kw)
    with pytest.raises(ValueError, match="zero variance"):
        jaxkde.KDE(out_of_core=True).fit(on_disk(tmp_path, np.ones((50, 2), np.float32)))


def test_small_memmaps_fit_in_memory_unless_asked(tmp_path, monkeypatch):
    """By default only a memmap too large for memory streams (joblib hands scikit-learn's
    parallel model selection small read-only memmaps, which must keep every method)."""
    x, _ = data(np.float32)
    y = (x[:, 0] > x[:, 0].mean()).astype(int)
    mm = on_disk(tmp_path, x)
    kde = jaxkde.KDE().fit(mm, y)  # labels and every method, as for an array
    assert isinstance(kde.state_, jaxkde.ClassConditionalState)
    assert isinstance(jaxkde.KDE(out_of_core=True).fit(mm).state_, streaming.StreamedState)
    assert isinstance(jaxkde.KDE(out_of_core=False).fit(mm).state_, jaxkde.KDEState)
    real = os.sysconf
    # A machine with one page of memory: by default, even this file streams.
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_PHYS_PAGES" else real(name))
    assert isinstance(jaxkde.KDE().fit(mm).state_, streaming.StreamedState)
    with pytest.raises(ValueError, match=r"out_of_core=True needs X to be a numpy\.memmap"):
        jaxkde.KDE(out_of_core=True).fit(x)
    with pytest.raises(TypeError, match="out_of_core must be True, False or None"):
        jaxkde.KDE(out_of_core="yes").fit(mm)


@pytest.mark.slow
def test_a_4_gb_file_scores_in_bounded_memory(tmp_path):
    """1,000 queries against 1.31M x 784 float32 rows (4.1 GB) in a subprocess whose peak
    resident memory stays under 1.5 GB. The file is 128 tiles of 10,240 base rows, each tile
    shifted by one of 4 vectors in turn, so its exact density is the mean of 4 in-memory KDEs of
    the base rows: every block must be read, weighted and merged right to match it."""
    d, base_rows, tiles = 784, 10_240, 128
    rng = np.random.default_rng(0)
    base = rng.standard_normal((base_rows, d), dtype=np.float32)
    shifts = (0.2 * rng.standard_normal((4, d))).astype(np.float32)
    path = tmp_path / "big.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (base_rows * tiles, d)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for t in range(tiles):
            f.write((base + shifts[t % 4]).tobytes())
    assert os.path.getsize(path) > 4.1e9
    queries = (base[:1000] + shifts[0] + 0.1 * rng.standard_normal((1000, d))).astype(np.float32)
    np.save(tmp_path / "q.npy", queries)
    worker = Path(__file__).with_name("streaming_worker.py")
    paths = [str(Path(jaxkde.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    subprocess.run([sys.executable, str(worker), str(path), str(tmp_path / "q.npy"),
                    str(tmp_path / "out.npz"), "1.0"], check=True, env=env,
                   timeout=900)  # fmt: skip
    out = np.load(tmp_path / "out.npz")
    assert int(out["n"]) == base_rows * tiles and bool(out["streamed"])
    assert int(out["rss"]) < 1.5e9, f"peak RSS {int(out['rss']) / 1e9:.2f} GB"
    parts = [jaxkde.KDE(bandwidth=1.0).fit(base + s).score_samples(queries) for s in shifts]
    want = logsumexp(np.stack(parts).astype(np.float64), axis=0) - np.log(4)
    assert scaled_error(out["scores"].astype(np.float64), want) < 1e-5
