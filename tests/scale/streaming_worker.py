"""The child of tests/scale/test_streaming.py's large-file test: score queries against a
memory-mapped ``.npy`` file and report the peak resident memory.

Usage: streaming_worker.py DATA.npy QUERIES.npy OUT.npz BANDWIDTH. Writes OUT.npz with the log
densities, the peak RSS (bytes, ``VmHWM``), whether the fit streamed and its row count.
"""

from __future__ import annotations

import resource
import sys

import numpy as np


def peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM`` (``ru_maxrss`` keeps the high
    mark of the process before ``exec``, here a copy of the test runner's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> int:
    data, queries, out, bandwidth = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    import jaxkde

    x = np.load(data, mmap_mode="r")
    q = np.load(queries)
    kde = jaxkde.KDE(bandwidth=bandwidth).fit(x)  # too large for memory: streamed by default
    scores = kde.score_samples(q)
    streamed = type(kde.state_).__name__ == "StreamedState"
    np.savez(out, scores=scores, streamed=streamed, rss=peak_rss(), n=kde.n_samples_fit_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
