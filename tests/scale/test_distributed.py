"""Several real processes on localhost (jax.distributed, CPU devices, gloo collectives), each
holding only its own rows: the fitted KDE must match one process fitting all the rows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxkde
from jaxkde.scale import distributed

WORKER = Path(__file__).with_name("distributed_worker.py")
sys.path.insert(0, str(WORKER.parent))
from distributed_worker import dataset, labels  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(n: int, scenario: str, tmp_path: Path, timeout: float = 240.0):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(jaxkde.__file__).parents[1]),
                                         env.get("PYTHONPATH", "")])  # fmt: skip
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(i), str(n), str(port), str(tmp_path),
                          scenario], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in range(n)
    ]  # fmt: skip
    start = time.monotonic()
    codes = []
    for p in procs:
        try:
            p.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{scenario}: a process hung for {timeout} s")
        codes.append(p.returncode)
    logs = [p.stdout.read().decode(errors="replace")[-3000:] for p in procs]
    return codes, logs, time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("n_processes", [2, 4])
def test_fit_across_processes_matches_one_process(n_processes, tmp_path):
    codes, logs, _ = _run(n_processes, "fit", tmp_path)
    assert codes == [0] * n_processes, logs
    x, w, queries = dataset()
    want = {
        "scott": jaxkde.KDE().fit(x),
        "weighted_full": jaxkde.KDE(bandwidth="scott_full").fit(x, sample_weight=w),
        "explicit": jaxkde.KDE("epanechnikov", bandwidth=0.8).fit(x),
    }
    learned = None
    if n_processes == 2:
        learned = jaxkde.KDE(bandwidth="cv_diagonal").fit(x, sample_weight=w.astype(np.float32))
    y = labels(x)
    # (the global weights are float32 jax.Arrays: the reference takes the same values)
    classifier = jaxkde.KDEClassifier().fit(x, y, sample_weight=w.astype(np.float32))
    labelled = jaxkde.KDE(bandwidth="scott_full").fit(x, y)
    # The labelled draws of one process, by the sampler of fits across processes.
    parts = [(np.array([float((y == c).sum())]), np.arange(1.0, (y == c).sum() + 1))
             for c in labelled.classes_]  # fmt: skip
    codes, _, class_samples = distributed.global_sample_classes(
        labelled.state_.states, labelled._whitening, parts, labelled.class_prior_,
        jax.random.key(3), 9)  # fmt: skip
    assert len(set(labelled.classes_[codes].tolist())) > 1
    np.save(tmp_path / "x.npy", x)
    streamed = jaxkde.KDE(out_of_core=True).fit(np.load(tmp_path / "x.npy", mmap_mode="r"))
    for rank in range(n_processes):
        got = np.load(tmp_path / f"result-{rank}.npz")
        for name, kde in want.items():
            assert int(got[f"{name}_n"]) == x.shape[0]
            # the same H up to the float32 rounding of its Cholesky factor
            np.testing.assert_allclose(got[f"{name}_bandwidth"], kde.bandwidth_, rtol=3e-7)
            ref = kde.score_samples(queries).astype(np.float64)
            fin = np.isfinite(ref)
            assert np.array_equal(np.isfinite(got[f"{name}_scores"]), fin)
            scale = np.maximum(np.abs(ref[fin]), 1.0)
            assert np.max(np.abs(got[f"{name}_scores"][fin] - ref[fin]) / scale) < 1e-5, name
        np.testing.assert_allclose(got["cdf"], want["scott"].cdf(queries[:5]), atol=1e-6)
        ref = want["scott"].score_samples(queries).astype(np.float64)
        np.testing.assert_allclose(got["sharded_scores"], ref[got["sharded_rows"]], rtol=1e-5)
        assert float(got["sharded_total"]) == pytest.approx(ref.sum(), rel=1e-5)
        # The same key draws the same samples whatever the number of processes: those of one
        # process streaming all the rows from a file (the same centres, in row order).
        np.testing.assert_allclose(got["samples"], streamed.sample(7, key=0), rtol=1e-12)
        assert "not available for a KDE fitted across processes" in str(got["grid_error"])
        # labels: priors and posteriors of one process's fit, class 7 absent from process 0
        np.testing.assert_allclose(got["priors"], classifier.class_prior_, rtol=1e-12)
        np.testing.assert_allclose(got["posteriors"], classifier.predict_proba(queries),
                                   atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(got["labelled_bandwidth"], labelled.bandwidth_, rtol=3e-7)
        ref = labelled.score_samples(queries).astype(np.float64)
        assert np.max(np.abs(got["labelled_scores"] - ref) / np.maximum(np.abs(ref), 1)) < 1e-5
        np.testing.assert_allclose(got["class_samples"], class_samples, rtol=1e-12)
        assert ("learned_bandwidth" in got) == (n_processes == 2)
        if learned is None:
            continue
        # a learned (leave-one-out) bandwidth: the same optimum as one process's
        np.testing.assert_allclose(got["learned_bandwidth"], learned.bandwidth_, rtol=1e-4)
        assert float(got["learned_objective"]) == pytest.approx(learned.bandwidth_fit_.objective,
                                                                abs=1e-5)  # fmt: skip
        ref = learned.score_samples(queries).astype(np.float64)
        assert np.max(np.abs(got["learned_scores"] - ref) / np.maximum(np.abs(ref), 1)) < 1e-5


@pytest.mark.parametrize(("scenario", "message"), [
    ("no_rows", "process 1 holds no rows of X"),
    ("widths", "different widths"),
])  # fmt: skip
def test_bad_parts_fail_in_every_process(scenario, message, tmp_path):
    codes, logs, _ = _run(2, scenario, tmp_path)
    assert all(c != 0 for c in codes), logs
    for rank in range(2):  # the same clear error in every process, none waits on another
        text = (tmp_path / f"error-{rank}.txt").read_text()
        assert text.startswith("ValueError: ") and message in text, text[-2000:]


@pytest.mark.slow
def test_a_dead_process_is_an_error_not_a_hang(tmp_path):
    # With heartbeat_timeout_seconds=10 JAX's coordination service stops the survivor (it
    # aborts, exit code non-zero) about 10 s after its peer died, instead of waiting forever.
    codes, logs, seconds = _run(2, "die", tmp_path, timeout=150.0)
    assert codes[1] == 3
    assert codes[0] != 0, logs[0]
    assert seconds < 150.0


@pytest.mark.parametrize("rule", ["scott", "silverman", "scott_full", "silverman_full"])
def test_merged_moments_give_the_rules_of_the_whole_data(rule):
    """In one process the statistics are those of all rows (np.cov), and the rule built from
    them equals resolve_bandwidth's; the merge over processes is checked by the tests above."""
    from jaxkde.bandwidth.rules import resolve_bandwidth, rule_bandwidth
    from jaxkde.scale import distributed

    x, w, _ = dataset()
    x = x.astype(np.float64)
    one = distributed.global_moments(x, w)
    np.testing.assert_allclose(one.cov, np.cov(x.T, aweights=w), rtol=1e-12)
    assert one.n_eff == pytest.approx(w.sum() ** 2 / (w @ w), rel=1e-12)
    want = resolve_bandwidth(x, w, rule).matrix
    np.testing.assert_allclose(rule_bandwidth(rule, one), want, rtol=1e-12)
    with pytest.raises(ValueError, match="zero variance"):
        rule_bandwidth(rule, distributed.global_moments(np.ones((5, 2)), None))
