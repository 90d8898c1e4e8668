"""The child of tests/test_streaming.py's large-file test: score queries against a memory-mapped
``.npy`` file and report the peak resident memory.

Usage: streaming_worker.py DATA.npy QUERIES.npy OUT.npz BANDWIDTH. Writes OUT.npz with the log
densities, the peak RSS (bytes, ``VmHWM``) and the fit and score times.
"""

from __future__ import annotations

import resource
import sys
import time

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
    start = time.perf_counter()
    kde = jaxkde.KDE(bandwidth=bandwidth).fit(x)  # too large for memory: streamed by default
    fitted = time.perf_counter()
    scores = kde.score_samples(q)
    done = time.perf_counter()
    streamed = type(kde.state_).__name__ == "StreamedState"
    np.savez(out, scores=scores, streamed=streamed,
             rss=peak_rss(),
             fit_s=fitted - start, score_s=done - fitted, n=kde.n_samples_fit_)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
