"""Data larger than memory: a KDE over the rows of a file, streamed to the device block by block.

``KDE(out_of_core=True).fit(X)`` with ``X`` a :class:`numpy.memmap` (``np.load(path,
mmap_mode="r")`` gives one) keeps the rows in the file (by default, a memmap too large to fit
in memory does). Each pass over them reads one block of rows at a time with
positioned reads (``os.preadv``: no page of the file is mapped into the process, so the resident
memory stays that of a few blocks however large the file), in a background thread one block
ahead of the device:

* ``fit`` makes one pass for the statistics of the rules (per-block float64 moments merged
  by Chan's formulas, :mod:`jaxkde.core.moments`), checking every value is finite;
* ``score_samples`` makes one pass per call: each block is centred and whitened in float64 on
  the host exactly as an in-memory fit does (:func:`jaxkde.build_state`, with the global
  centre and ``H``, its log weights lowered by the block's share of the total weight), moved to
  the device while the previous block is reduced, and the blocks' log-sum-exps are merged with
  ``logaddexp``. Every block has the same shapes, so one compiled program serves them all.

A file truncated underneath gives a ``ValueError`` naming it at the first short read, never a
crash or a silent answer.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import math
import mmap
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxkde.core.engine import log_density_whitened
from jaxkde.core.kernels import Kernel
from jaxkde.core.moments import Moments, merge_statistics, moments, part_statistics
from jaxkde.core.sampling import sample_parts
from jaxkde.core.state import (
    HostWhitening,
    KDEState,
    build_state,
    host_whitening,
    whiten_checked_queries,
)

__all__ = [
    "RowFile",
    "StreamedState",
    "block_rows_for",
    "is_file_backed",
    "row_file",
    "should_stream",
    "streamed_log_density",
    "streamed_moments",
    "streamed_sample",
    "streamed_state",
]

#: Bytes of float64 data per streamed block (the host holds a few blocks at a time).
BLOCK_BYTES = 32 * 2**20


def is_file_backed(x) -> bool:
    """Whether ``x`` is a :class:`numpy.memmap` over a file."""
    return (
        isinstance(x, np.memmap)
        and getattr(x, "_mmap", None) is not None
        and bool(getattr(x, "filename", None))
    )


def should_stream(x, out_of_core: bool | None) -> bool:
    """Whether ``fit`` streams ``x`` (see ``KDE(out_of_core=...)``): a file-backed memmap when
    asked, or by default when an in-memory fit (about ``32 n d`` bytes) would need more than
    half of the machine's memory. ``out_of_core=True`` for anything else is an error."""
    if out_of_core is not None and not isinstance(out_of_core, (bool, np.bool_)):
        raise TypeError(f"out_of_core must be True, False or None; got {out_of_core!r}.")
    if not is_file_backed(x):
        if out_of_core:
            raise ValueError(
                "out_of_core=True needs X to be a numpy.memmap over a file "
                f"(np.load(path, mmap_mode='r')); got {type(x).__name__}."
            )
        return False
    if out_of_core is not None:
        return bool(out_of_core)
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return False
    return 32 * x.size > memory / 2


@dataclasses.dataclass(frozen=True)
class RowFile:
    """The rows of a C-ordered 2-D array stored in a file, read by positioned reads.

    Attributes
    ----------
    path : str
    offset : int
        Byte offset of row 0 in the file.
    shape : tuple[int, int]
    dtype : np.dtype
    """

    path: str
    offset: int
    shape: tuple[int, int]
    dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        return self.shape[1] * self.dtype.itemsize

    def _truncated(self, fd: int, stop: int) -> ValueError:
        size = os.fstat(fd).st_size
        have = max(0, (size - self.offset) // self.row_bytes)
        return ValueError(
            f"the file {self.path!r} behind X is shorter than its {self.shape[0]} rows: it "
            f"holds {have} rows now, and row {stop - 1} was asked for (was it truncated or "
            "rewritten after the fit?)."
        )

    def read(self, start: int, stop: int, fd: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` as a new array of the file's dtype."""
        out = np.empty((stop - start, self.shape[1]), self.dtype)
        view = memoryview(out).cast("B")
        own = fd is None
        fd = os.open(self.path, os.O_RDONLY) if own else fd
        try:
            done, position = 0, self.offset + start * self.row_bytes
            while done < len(view):
                got = os.preadv(fd, [view[done:]], position + done)
                if got == 0:
                    raise self._truncated(fd, stop)
                done += got
        finally:
            if own:
                os.close(fd)
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (sorted indices), float64 ``(len(rows), d)``."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return np.concatenate(
                [self.read(int(r), int(r) + 1, fd) for r in rows] or [np.empty((0, self.shape[1]))]
            ).astype(np.float64)
        finally:
            os.close(fd)


def row_file(x: np.memmap, name: str = "X") -> RowFile:
    """The :class:`RowFile` behind a file-backed memmap ``x`` ``(n, d)`` (a view of rows of a
    larger memmap is fine); ``ValueError`` naming ``name`` for one that cannot be streamed."""
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array; got shape {x.shape}.")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name}: a memory-mapped file is streamed by rows and must be C-ordered "
                         "(np.load(..., mmap_mode='r') of an array saved in C order).")  # fmt: skip
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold real numbers; its dtype is {x.dtype}.")
    if getattr(x, "mode", "r") == "c":
        raise ValueError(f"{name} is a copy-on-write memmap (mode 'c'), whose changes are not in "
                         "the file; save them or open the file with mode 'r'.")  # fmt: skip
    base = np.frombuffer(x._mmap, np.uint8).ctypes.data
    start = x.offset - x.offset % mmap.ALLOCATIONGRANULARITY  # where np.memmap mapped
    rows = RowFile(os.fspath(x.filename), start + x.ctypes.data - base, tuple(x.shape), x.dtype)
    fd = os.open(rows.path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size < rows.offset + x.shape[0] * rows.row_bytes:
            raise rows._truncated(fd, x.shape[0])
    finally:
        os.close(fd)
    return rows


def block_rows_for(d: int, chunk_size: int) -> int:
    """Rows per streamed block: about :data:`BLOCK_BYTES` of float64, a multiple of the
    engine's ``chunk_size``."""
    target = max(1, BLOCK_BYTES // (8 * d))
    return chunk_size * max(1, round(target / chunk_size))


def _prefetched(fn, items, depth: int = 1):
    """``fn(item)`` for each item, in order, computed in a background thread ``depth`` items
    ahead of the consumer (NumPy, reads and transfers release the GIL). The thread runs under
    the caller's x64 setting (``jax.enable_x64`` contexts are per thread)."""
    x64 = bool(jax.config.jax_enable_x64)

    def run(item):
        with jax.enable_x64(x64):
            return fn(item)

    items = iter(items)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = collections.deque(pool.submit(run, i) for i in itertools.islice(items, depth))
        try:
            while pending:
                done = pending.popleft().result()
                nxt = next(items, None)
                if nxt is not None:
                    pending.append(pool.submit(run, nxt))
                yield done
        finally:
            for future in pending:
                future.cancel()


def _finite_block(rows: RowFile, start: int, fd: int) -> np.ndarray:
    block = rows.read(start, min(start + _stat_rows(rows), rows.shape[0]), fd)
    data = block.astype(np.float64)
    if not np.all(np.isfinite(data)):
        bad = start + int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
        raise ValueError(f"X must be finite; row {bad} of {rows.path!r} is not.")
    return data


def _stat_rows(rows: RowFile) -> int:
    return block_rows_for(rows.shape[1], 8)


def streamed_moments(rows: RowFile, weights: np.ndarray | None, full: bool = True) -> Moments:
    """The merged float64 statistics of every row of ``rows`` (one pass over the file); the
    covariance is diagonal unless ``full`` (see :func:`jaxkde.core.moments.part_statistics`).

    Raises ``ValueError`` naming the first row that is not finite.
    """
    n, d = rows.shape
    fd = os.open(rows.path, os.O_RDONLY)
    try:
        running = None
        starts = range(0, n, _stat_rows(rows))
        for start, data in _prefetched(lambda s: (s, _finite_block(rows, s, fd)), starts):
            w = None if weights is None else weights[start : start + data.shape[0]]
            part = part_statistics(data, w, full)
            running = (part if running is None
                       else merge_statistics(np.stack([running, part]), d, full))  # fmt: skip
    finally:
        os.close(fd)
    stats = moments(running, d, full)
    return stats._replace(counts=np.array([n]), part_weights=np.array([stats.total_weight]))


@dataclasses.dataclass(frozen=True)
class StreamedState:
    """A KDE whose rows stay in a file.

    Attributes
    ----------
    rows : RowFile
    weights : np.ndarray of shape (n,), or None
        float64 sample weights (``None``: equal).
    total_weight : float
    template : KDEState
        The state of the first block: its centre, ``H`` and normaliser are every block's.
    whitening : HostWhitening
    block_rows : int
        Rows per streamed block (every block is laid out for this many).
    chunk_size : int
        The engine's chunk within a block.
    """

    rows: RowFile
    weights: np.ndarray | None
    total_weight: float
    template: KDEState
    whitening: HostWhitening
    block_rows: int
    chunk_size: int

    @property
    def kernel(self) -> Kernel:
        return self.template.kernel

    def bandwidth_matrix(self) -> np.ndarray:
        return self.template.bandwidth_matrix()

    def block_state(self, start: int, fd: int | None = None) -> KDEState | None:
        """The state of rows ``start : start + block_rows`` (``None`` if they weigh nothing)."""
        stop = min(start + self.block_rows, self.rows.shape[0])
        w = None if self.weights is None else self.weights[start:stop]
        mass = (stop - start) / self.rows.shape[0] if w is None else float(w.sum())
        if w is not None:
            mass /= self.total_weight
        if not mass > 0:
            return None
        t = self.template
        return build_state(self.rows.read(start, stop, fd), w, _h(t), t.kernel,
                           chunk_size=self.chunk_size, dtype=t.dtype, n_rows=self.block_rows,
                           centre=self.whitening.centre, log_mass=math.log(mass))  # fmt: skip


def _h(state: KDEState) -> np.ndarray:
    chol = np.asarray(state.chol, np.float64)
    return chol**2 if chol.ndim == 1 else chol @ chol.T


def streamed_state(
    rows: RowFile,
    weights: np.ndarray | None,
    bandwidth: np.ndarray,
    kernel: Kernel,
    stats: Moments,
    *,
    chunk_size: int,
    dtype,
    block_rows: int | None = None,
) -> StreamedState:
    """The :class:`StreamedState` of ``rows`` with bandwidth ``H`` ``(d,)`` or ``(d, d)``, centred
    at the merged mean of ``stats``."""
    n, d = rows.shape
    block_rows = block_rows_for(d, chunk_size) if block_rows is None else block_rows
    block_rows = min(block_rows, chunk_size * -(-n // chunk_size))
    first = rows.read(0, min(n, 8)).astype(np.float64)
    template = build_state(first, None, bandwidth, kernel, chunk_size=8, dtype=dtype,
                           centre=stats.mean)  # fmt: skip
    return StreamedState(rows, weights, stats.total_weight, template, host_whitening(template),
                         block_rows, chunk_size)  # fmt: skip


@jax.jit
def _merge_logs(total: jax.Array, part: jax.Array) -> jax.Array:
    return jnp.logaddexp(total, part)


def streamed_log_density(
    streamed: StreamedState,
    queries: np.ndarray,
    *,
    block_size: int | None = None,
    precision: str = "highest",
) -> np.ndarray:
    """``log f`` at float64 host ``queries`` ``(m, d)`` (validated), one pass over the file.

    Each block is one call of the engine's compiled :func:`jaxkde.core.engine.log_density_whitened`
    (queries by ``block_size``), so the error bound of :func:`jaxkde.log_density` holds per
    block; merging the blocks adds a few float32 roundings of ``log f``.
    """
    zq_hi, zq_lo = whiten_checked_queries(streamed.template, queries, streamed.whitening)
    fd = os.open(streamed.rows.path, os.O_RDONLY)
    try:
        total = None
        blocks = _prefetched(lambda s: streamed.block_state(s, fd),
                             range(0, streamed.rows.shape[0], streamed.block_rows))  # fmt: skip
        for state in blocks:
            if state is None:
                continue
            part = log_density_whitened(state, zq_hi, zq_lo, block_size=block_size,
                                        precision=precision)  # fmt: skip
            if total is not None:  # dispatch is asynchronous: at most two blocks in flight
                total.block_until_ready()
            total = part if total is None else _merge_logs(total, part)
    finally:
        os.close(fd)
    return np.asarray(total)


def streamed_sample(
    streamed: StreamedState, key: jax.Array, num_samples: int, scaling_factor: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, centres, samples)``: centres drawn by weight (read from the file, float64) and
    a draw around each (see :func:`jaxkde.core.sampling.sample_parts`)."""

    n = streamed.rows.shape[0]
    cumulative = (np.arange(1, n + 1, dtype=np.float64) if streamed.weights is None
                  else np.cumsum(streamed.weights))  # fmt: skip
    _, rows, centres, shift = sample_parts(key, num_samples, np.array([cumulative[-1]]), 0,
                                           cumulative, streamed.rows.take, streamed.kernel,
                                           streamed.whitening, scaling_factor)  # fmt: skip
    return rows, centres, centres + shift
