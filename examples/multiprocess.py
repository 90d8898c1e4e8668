"""Fit and score one KDE across several processes, each holding only its own rows.

Run N copies of this script, one per process (here on one machine, CPU devices, gloo):

    for i in 0 1; do python3 examples/multiprocess.py --process-id $i --num-processes 2 & done; wait

Each process reads only its own part of the data (here: rows i::N of a synthetic set; in real use
its own file, e.g. ``np.load(f"part-{i}.npy", mmap_mode="r")``), builds a global array with
``jax.make_array_from_process_local_data``, and fits ``KDE(mesh=mesh)``. Statistics are merged
by one small all-gather; scoring moves only per-device partial sums. Every process passes the
same queries and gets every result.

On a cluster, call ``jax.distributed.initialize()`` with no arguments: JAX reads the coordinator
address, the process count and the process id from SLURM (``srun``: ``SLURM_*`` variables) or from
the Cloud TPU / Kubernetes (JobSet) environment. On GPUs leave out the gloo line.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--coordinator", default="localhost:12357")
    p.add_argument("--rows", type=int, default=20_000)
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.process_id is None:  # SLURM, Kubernetes, Cloud TPU: JAX finds its peers itself
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import jaxkde

    rank, size = jax.process_index(), jax.process_count()
    # This process's part only (the same generator everywhere, so parts are disjoint rows).
    data = np.random.default_rng(0).normal(size=(args.rows, 5)).astype(np.float32)
    mine = data[rank::size]
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")), mine)
    kde = jaxkde.KDE(bandwidth="scott", mesh=mesh).fit(x)
    queries = data[:5]
    scores = kde.score_samples(queries)
    if rank == 0:
        print(f"{size} processes, {kde.n_samples_fit_} rows; log density of 5 queries:", scores)
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
