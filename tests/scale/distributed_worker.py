"""One process of the multi-process tests (tests/scale/test_distributed.py): run as N processes.

Usage: distributed_worker.py PROCESS_ID N PORT OUT_DIR SCENARIO. Each process loads only its own
rows of a shared synthetic dataset (consecutive rows in uneven shares, see ``my_rows``), fits
KDEs across processes and writes what it saw to OUT_DIR/result-PROCESS_ID.npz; an error is
written to OUT_DIR/error-PROCESS_ID.txt.
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np


def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2003, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 2.0, 0.5], [0.0, 0.0, 0.7]])
    x = (x + np.array([100.0, -5.0, 0.0])).astype(np.float32)
    w = rng.uniform(0.2, 3.0, size=x.shape[0])
    queries = np.r_[x[:40], rng.normal(size=(20, 3)) * 3 + [100.0, -5.0, 0.0]].astype(np.float32)
    return x, w, queries


def labels(x: np.ndarray) -> np.ndarray:
    """Three classes by position, and a fourth (7) in the last 30 rows only: some processes
    hold none of it."""
    y = (x[:, 1] > -5).astype(np.int32) + (x[:, 2] > 0.5)
    y[-30:] = 7
    return y


def my_rows(n: int, rank: int, size: int) -> np.ndarray:
    """Process ``rank``'s rows: consecutive, in shares 1 : 2 : ... : size (uneven), so the
    global array holds the rows in their order whatever the number of processes."""
    bounds = np.round(n * np.cumsum(np.arange(size + 1)) / (size * (size + 1) / 2)).astype(int)
    return np.arange(bounds[rank], bounds[rank + 1])


def main() -> int:
    rank, size, port, out, scenario = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                       sys.argv[4], sys.argv[5])  # fmt: skip
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", size, rank, heartbeat_timeout_seconds=10,
                               initialization_timeout=60)  # fmt: skip
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import jaxkde

    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows_sharding = NamedSharding(mesh, PartitionSpec("data"))

    def spread(local):
        return jax.make_array_from_process_local_data(rows_sharding, local)

    x, w, queries = dataset()
    mine = my_rows(x.shape[0], rank, size)
    try:
        if scenario == "die":
            if rank == size - 1:
                os._exit(3)  # dies without a word: the others must fail, not hang
            kde = jaxkde.KDE(mesh=mesh).fit(spread(x[mine]))
            kde.score_samples(queries)
            return 0
        if scenario == "no_rows":
            local = x[mine] if rank != 1 else x[:0]
            jaxkde.KDE(mesh=mesh).fit(spread(local))
            return 0
        if scenario == "widths":
            local = x[mine] if rank != 1 else x[mine][:, :2]
            jaxkde.KDE(mesh=mesh).fit(spread(local))
            return 0
        results = {}
        gx, gw = spread(x[mine]), spread(w[mine])
        for name, kde in [
            ("scott", jaxkde.KDE(mesh=mesh, chunk_size=256).fit(gx)),
            ("weighted_full",
             jaxkde.KDE(bandwidth="scott_full", mesh=mesh).fit(gx, sample_weight=gw)),
            ("explicit", jaxkde.KDE("epanechnikov", bandwidth=0.8, mesh=mesh).fit(gx)),
        ]:  # fmt: skip
            results[f"{name}_scores"] = kde.score_samples(queries)
            results[f"{name}_bandwidth"] = kde.bandwidth_
            results[f"{name}_n"] = kde.n_samples_fit_
        if size == 2:  # the learned bandwidth (the slowest fit) with 2 processes only
            learned = jaxkde.KDE(bandwidth="cv_diagonal", mesh=mesh).fit(gx, sample_weight=gw)
            results["learned_bandwidth"] = learned.bandwidth_
            results["learned_objective"] = learned.bandwidth_fit_.objective
            results["learned_scores"] = learned.score_samples(queries)
        gy = spread(labels(x)[mine])
        clf = jaxkde.KDEClassifier(mesh=mesh).fit(gx, gy, sample_weight=gw)
        results["posteriors"] = clf.predict_proba(queries)
        results["priors"] = clf.class_prior_
        labelled = jaxkde.KDE(bandwidth="scott_full", mesh=mesh).fit(gx, gy)
        results["labelled_scores"] = labelled.score_samples(queries)
        results["labelled_bandwidth"] = labelled.bandwidth_
        results["class_samples"] = labelled.sample(9, key=3)
        kde = jaxkde.KDE(mesh=mesh).fit(gx)
        results["cdf"] = kde.cdf(queries[:5])
        # queries sharded over the processes: a global array of results, each process its rows
        mine_q = my_rows(queries.shape[0], rank, size)
        scores = kde.score_samples(spread(queries[mine_q]))
        assert isinstance(scores, jax.Array) and not scores.is_fully_addressable
        results["sharded_scores"] = np.concatenate([np.asarray(s.data) for s in sorted(
            scores.addressable_shards, key=lambda s: s.index[0].start)])  # fmt: skip
        results["sharded_rows"] = mine_q
        results["sharded_total"] = kde.score(spread(queries[mine_q]))
        results["samples"] = kde.sample(7, key=0)
        try:
            kde.score_grid(8)
        except ValueError as exc:
            results["grid_error"] = str(exc)
        np.savez(os.path.join(out, f"result-{rank}.npz"), **results)
        return 0
    except Exception as exc:  # reported to the test, which checks the message
        with open(os.path.join(out, f"error-{rank}.txt"), "w") as f:
            f.write(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
