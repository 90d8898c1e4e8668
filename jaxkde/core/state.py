"""The fitted state of a KDE: an immutable pytree holding what evaluation and sampling need.

Everything that decides accuracy is prepared on the host in float64 before any cast to the
working dtype: the weighted centre, the whitening ``z = L^{-1} B^T (x - centre)`` of the data
and of the queries, and the weights. In float32 a whitened coordinate is stored as a
double-word pair ``hi + lo`` (``hi`` the float32 rounding of the float64 value, ``lo`` the
float32 rounding of the remainder), so differences of nearby points are exact to about 2^-48
of the coordinates, whatever the data's offset or the spread-to-bandwidth ratio; under x64
the float64 value is kept alone (``lo`` is ``None``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

from jaxkde._validation import check_data, check_positive_int, working_dtype
from jaxkde.core.kernels import Kernel

__all__ = [
    "ClassConditionalState",
    "HostWhitening",
    "KDEState",
    "LazyState",
    "build_state",
    "chunk_layout",
    "chunk_rows",
    "data_centre",
    "host_whitening",
    "normalized_log_weights",
    "split_double_word",
    "state_header",
    "state_points",
    "unwhiten",
    "unwhiten_host",
    "whiten",
    "whiten_on_device",
    "whiten_queries",
]

# Whitening is a change of coordinates every result depends on: always true float32/float64
# products, never TF32, whatever the engine's distance precision.
_HIGHEST = lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class KDEState:
    """Fitted KDE as data (a JAX pytree; ``kernel`` is static metadata).

    With ``H = L L^T`` the bandwidth (in the coordinates of ``basis``), a point ``x`` is
    whitened as ``z = L^{-1} B^T (x - mean)`` (``B = basis``, or the identity), so that
    ``log f(y) = log_normalizer + logsumexp_i [log_weights_i + kernel.log_profile(|z_y - z_i|^2)]``.

    Attributes
    ----------
    points : array, shape (n_chunks, chunk_size, k)
        Whitened, centred data split into equal chunks (the high word in float32); padding rows
        are zero.
    points_lo : array of shape (n_chunks, chunk_size, k), or None
        Low word of the whitened data in float32 (``points + points_lo`` is the float64 value to
        about 2^-48 relative); ``None`` in float64.
    sq_norms : array, shape (n_chunks, chunk_size)
        ``|z_i|^2`` of each point (0 on padding).
    log_weights : array, shape (n_chunks, chunk_size)
        Normalised log weights (they log-sum-exp to 0); ``-inf`` on padding.
    mean : array, shape (d,)
        The centre subtracted before whitening: the data's weighted mean, rounded to the working
        dtype (its float64 value is what the host subtracts, exactly).
    chol : array, shape (k,) or (k, k)
        Cholesky factor ``L`` of the bandwidth: its diagonal when ``H`` is diagonal.
    basis : array of shape (d, k), or None
        Orthonormal basis of the subspace the density lives in; ``None`` for the whole space.
    log_normalizer : array, shape ()
        ``kernel.log_normalizer(k, log |det L|)``.
    kernel : Kernel
        The kernel. Static.
    log_factors : array of shape (n_chunks, chunk_size), or None
        Adaptive bandwidths: ``log lambda_i``, centre ``i``'s kernel having bandwidth
        ``lambda_i^2 H`` (its term ``lambda_i^-k k(|z_y - z_i|^2 / lambda_i^2)``); 0 on padding.
        ``None`` (the default) for a fixed bandwidth.
    """

    points: jax.Array
    points_lo: jax.Array | None
    sq_norms: jax.Array
    log_weights: jax.Array
    mean: jax.Array
    chol: jax.Array
    basis: jax.Array | None
    log_normalizer: jax.Array
    kernel: Kernel
    log_factors: jax.Array | None = None

    @property
    def dim(self) -> int:
        """Dimension ``k`` of the whitened space."""
        return self.points.shape[-1]

    @property
    def n_features(self) -> int:
        """Number of features ``d`` of the original data."""
        return self.mean.shape[0]

    @property
    def dtype(self):
        return self.points.dtype

    def bandwidth_matrix(self) -> np.ndarray:
        """``H`` in the original coordinates, shape ``(d, d)`` (``B H B^T`` on a subspace)."""
        chol = np.asarray(self.chol, np.float64)
        h = np.diag(chol**2) if chol.ndim == 1 else chol @ chol.T
        if self.basis is not None:
            basis = np.asarray(self.basis, np.float64)
            h = basis @ h @ basis.T
        return h


jax.tree_util.register_dataclass(
    KDEState,
    data_fields=[
        "points", "points_lo", "sq_norms", "log_weights", "mean", "chol", "basis",
        "log_normalizer", "log_factors",
    ],
    meta_fields=["kernel"],
)  # fmt: skip


class HostWhitening(NamedTuple):
    """The float64 map of a state from original to whitened coordinates, for host use.

    ``z = (x - centre) @ basis @ transform.T`` (``basis`` and ``transform`` optional), where
    ``transform`` is ``L^{-1}`` (or ``1 / diag(L)`` as a vector). Every value is the float64
    value of the state's working-dtype arrays, so host and device agree on the coordinates.
    """

    centre: np.ndarray
    basis: np.ndarray | None
    transform: np.ndarray
    chol: np.ndarray
    dtype: np.dtype


def host_whitening(state: KDEState) -> HostWhitening:
    """The float64 whitening of ``state`` (``L^{-1}`` computed once; reuse it across calls)."""
    chol = np.asarray(state.chol, np.float64)
    transform = 1.0 / chol if chol.ndim == 1 else np.linalg.inv(chol)
    basis = None if state.basis is None else np.asarray(state.basis, np.float64)
    return HostWhitening(
        np.asarray(state.mean, np.float64), basis, transform, chol, np.dtype(state.dtype)
    )


def _whiten64(x: np.ndarray, hw: HostWhitening) -> np.ndarray:
    u = np.subtract(np.asarray(x, np.float64), hw.centre)
    if hw.basis is not None:
        u = u @ hw.basis
    if hw.transform.ndim == 1:
        u *= hw.transform
        return u
    return u @ hw.transform.T


def split_double_word(z: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """``(hi, lo)``: ``hi`` the rounding of float64 ``z`` to ``dtype``, ``lo`` that of the rest.

    For float64 ``lo`` is ``None``. Overflow leaves ``inf`` in ``hi`` and NaN in ``lo``
    (callers check ``hi``).
    """
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        hi = z.astype(dtype)
        if dtype == np.float64:
            return hi, None
        rest = hi.astype(np.float64)
        np.subtract(z, rest, out=rest)
        lo = rest.astype(dtype)  # NaN where hi overflowed: such rows are replaced by callers
    return hi, lo


def whiten_queries(
    state: KDEState, queries, whitening: HostWhitening | None = None
) -> tuple[jax.Array, jax.Array | None]:
    """Whitened double-word coordinates ``(hi, lo)`` of ``queries`` ``(m, d)``, each ``(m, k)``.

    Host data (NumPy arrays, lists, concrete JAX arrays) are centred and whitened in float64 on
    the host and split into words; inside a JAX trace (``jit``, ``grad``: traced queries, or a
    traced state such as one built by :func:`jaxkde.fit_state`) they are whitened on the device
    in the working dtype (:func:`whiten_on_device`). A query whose whitened
    coordinates overflow the working dtype is mapped to ``inf``: the engine returns ``-inf``
    for it (its squared distance to every point overflows too).
    """
    leaves = jax.tree.leaves((state, queries))
    if any(isinstance(a, jax.core.Tracer) for a in leaves):
        return whiten_on_device(state, queries)
    data, _ = check_data(queries, "queries", n_features=state.n_features, owner="the state")
    return whiten_checked_queries(state, data, whitening)


def whiten_on_device(state: KDEState, queries) -> tuple[jax.Array, jax.Array | None]:
    """Whitened coordinates ``(hi, lo)`` of ``queries`` ``(m, d)`` computed on the device in
    the working dtype (``lo`` zero in float32, ``None`` in float64): what runs inside a trace."""
    q = jnp.asarray(queries, state.dtype)
    if q.ndim != 2 or q.shape[1] != state.n_features:
        raise ValueError(f"queries must have shape (m, {state.n_features}); got {q.shape}.")
    hi = whiten(state, q)
    return hi, None if state.points_lo is None else jnp.zeros_like(hi)


def whiten_checked_queries(
    state: KDEState, data: np.ndarray, whitening: HostWhitening | None = None
) -> tuple[jax.Array, jax.Array | None]:
    """:func:`whiten_queries` of float64 host queries ``(m, d)`` already validated by
    ``check_data`` (callers that whiten one block for several states check it once)."""
    hw = host_whitening(state) if whitening is None else whitening
    z = _whiten64(data, hw)
    hi, lo = split_double_word(z, hw.dtype)
    if not np.isfinite(hi).all():  # beyond the working dtype: infinitely far from every point
        bad = ~np.isfinite(hi).all(axis=1)
        hi[bad] = np.inf
        if lo is not None:
            lo[bad] = 0.0
    return jnp.asarray(hi), None if lo is None else jnp.asarray(lo)


def unwhiten_host(state: KDEState, z_hi, z_lo=None, whitening: HostWhitening | None = None):
    """Original coordinates ``(m, d)`` in float64 of whitened points ``z_hi (+ z_lo)``."""
    hw = host_whitening(state) if whitening is None else whitening
    z = np.asarray(z_hi, np.float64)
    if z_lo is not None:
        z = z + np.asarray(z_lo, np.float64)
    u = z * hw.chol if hw.chol.ndim == 1 else z @ hw.chol.T
    if hw.basis is not None:
        u = u @ hw.basis.T
    return u + hw.centre


def state_points(state: KDEState, whitening: HostWhitening | None = None) -> np.ndarray:
    """The centres of positive weight of a state, in original coordinates ``(n, d)``, float64
    (the padding of the last chunk dropped)."""
    k = state.dim
    lo = None if state.points_lo is None else np.asarray(state.points_lo).reshape(-1, k)
    keep = np.isfinite(np.asarray(state.log_weights, np.float64).reshape(-1))
    return unwhiten_host(state, np.asarray(state.points).reshape(-1, k), lo, whitening)[keep]


def whiten(state: KDEState, x: jax.Array) -> jax.Array:
    """Map points ``(m, d)`` to whitened coordinates ``(m, k)`` on the device, in the working
    dtype (for traced use; host data go through :func:`whiten_queries`)."""
    u = x - state.mean
    if state.basis is not None:
        u = jnp.matmul(u, state.basis, precision=_HIGHEST)
    if state.chol.ndim == 1:
        return u / state.chol
    return solve_triangular(state.chol, u.T, lower=True).T


def unwhiten(state: KDEState, z: jax.Array) -> jax.Array:
    """Inverse of :func:`whiten`: whitened ``(m, k)`` back to original coordinates ``(m, d)``."""
    u = z * state.chol if state.chol.ndim == 1 else jnp.matmul(z, state.chol.T, precision=_HIGHEST)
    if state.basis is not None:
        u = jnp.matmul(u, state.basis.T, precision=_HIGHEST)
    return u + state.mean


def chunk_layout(n: int, max_chunk: int) -> tuple[int, int]:
    """Split ``n`` rows into ``n_chunks`` equal chunks of at most ``max_chunk`` rows.

    The chunk size is rounded up to a multiple of 8, so padding is below ``8 * n_chunks`` rows.
    """
    max_chunk = check_positive_int(max_chunk, "chunk_size")
    n_chunks = max(1, math.ceil(n / max_chunk))
    size = math.ceil(n / n_chunks)
    size = min(max_chunk, 8 * math.ceil(size / 8)) if max_chunk >= 8 else size
    n_chunks = math.ceil(n / size)
    return n_chunks, size


def chunk_rows(a: jax.Array, n_chunks: int, size: int, fill: float = 0.0) -> jax.Array:
    """Rows ``(n, ...)`` laid out as ``(n_chunks, size, ...)``, the last chunk padded with
    ``fill`` (on the device, traceable; :func:`chunk_layout` gives the shape)."""
    pad = n_chunks * size - a.shape[0]
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1), constant_values=fill)
    return a.reshape((n_chunks, size, *a.shape[1:]))


def shared_row_counts(sizes, ratio: float = 1.1) -> list[int]:
    """Row counts to lay out states of ``sizes`` rows with few distinct shapes.

    Largest first, each size is raised to the largest size not more than ``ratio`` times it
    that starts a group, so no state is padded by more than ``ratio - 1`` of its rows and
    similar sizes (the classes of MNIST) share one shape.
    """
    out = {}
    top = None
    for size in sorted(set(int(s) for s in sizes), reverse=True):
        if top is None or top > ratio * size:
            top = size
        out[size] = top
    return [out[int(s)] for s in sizes]


def normalized_log_weights(weights, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(w, log_w)`` in float64: weights divided by their sum, and their logs (-inf for 0).

    Scaled by the largest weight first, so weights of 1e-300 or 1e300 normalise without
    underflow or overflow.
    """
    if weights is None:
        return np.full(n, 1.0 / n), np.full(n, -math.log(n))
    w = np.asarray(weights, np.float64)
    if not w.max() > 0:  # no mass at all (a class whose rows all weigh 0): every log is -inf
        return np.zeros(n), np.full(n, -np.inf)
    w = w / w.max()
    w = w / w.sum()
    with np.errstate(divide="ignore"):
        return w, np.log(w)


def _cast_checked(values: np.ndarray, dtype, what: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = np.asarray(values, np.float64).astype(dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError(
            f"{what} overflows {np.dtype(dtype).name} (largest finite value "
            f"{np.finfo(dtype).max:.3g}); rescale the data or enable float64 "
            "(jax.config.update('jax_enable_x64', True))."
        )
    return out


def data_centre(data: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The weighted mean of float64 ``data`` ``(n, d)`` under normalised ``weights`` (``None``:
    equal weights); the plain mean when no row has weight (any point would do for a state of
    no mass). Every state's centre comes from here, so a lazy fit and an eager one of the same
    rows agree to the last bit."""
    if weights is None or not weights.any():
        return data.mean(axis=0)
    return weights @ data


def state_header(
    bandwidth: np.ndarray, kernel: Kernel, centre: np.ndarray, basis: np.ndarray | None, dtype
) -> tuple[KDEState, HostWhitening]:
    """The data-free part of a state: centre, Cholesky factor, basis and normaliser in the
    working ``dtype`` (the data fields ``None``), and its float64 :class:`HostWhitening`.

    Raises ``ValueError`` if the factor or the centre overflow ``dtype`` or the factor
    underflows it.
    """
    dtype = np.dtype(dtype)
    h = np.asarray(bandwidth, np.float64)
    chol64 = np.sqrt(h) if h.ndim == 1 else np.linalg.cholesky(h)
    chol_w = _cast_checked(chol64, dtype, "the bandwidth's Cholesky factor")
    diag = chol_w if chol_w.ndim == 1 else np.diag(chol_w)
    if not np.all(diag > 0):
        raise ValueError(
            f"the bandwidth is below the smallest positive {dtype.name} "
            f"({np.finfo(dtype).tiny:.3g}); rescale the data or enable float64."
        )
    mean_w = _cast_checked(centre, dtype, "the data's mean")
    basis_w = None if basis is None else np.asarray(basis, np.float64).astype(dtype)
    chol_host = chol_w.astype(np.float64)
    hw = HostWhitening(
        mean_w.astype(np.float64),
        None if basis_w is None else basis_w.astype(np.float64),
        1.0 / chol_host if chol_host.ndim == 1 else np.linalg.inv(chol_host),
        chol_host,
        dtype,
    )
    log_det = float(np.sum(np.log(diag.astype(np.float64))))
    log_normalizer = np.asarray(kernel.log_normalizer(diag.shape[0], log_det), dtype)
    header = KDEState(
        points=None, points_lo=None, sq_norms=None, log_weights=None,
        mean=jnp.asarray(mean_w), chol=jnp.asarray(chol_w),
        basis=None if basis_w is None else jnp.asarray(basis_w),
        log_normalizer=jnp.asarray(log_normalizer), kernel=kernel,
    )  # fmt: skip
    return header, hw


def build_state(
    data,
    weights,
    bandwidth: np.ndarray,
    kernel: Kernel,
    *,
    basis: np.ndarray | None = None,
    chunk_size: int = 4096,
    dtype=None,
    n_rows: int | None = None,
    log_factors: np.ndarray | None = None,
    centre: np.ndarray | None = None,
    log_mass: float = 0.0,
) -> KDEState:
    """Centre, whiten and chunk ``data`` for evaluation, in float64 on the host.

    Parameters
    ----------
    data : array-like, shape (n, d)
        Training points (read in float64: the centre and the whitening are computed before any
        cast to the working dtype).
    weights : array-like of shape (n,), or None
        Non-negative weights, not all zero (``None``: equal weights).
    bandwidth : array, shape (k,) or (k, k)
        Diagonal or full bandwidth matrix ``H`` in the coordinates of ``basis``.
    kernel : Kernel
    basis : array of shape (d, k), or None
    chunk_size : int
        Maximum number of data points reduced per step.
    dtype : numpy dtype, optional
        Working dtype; default ``data``'s dtype (float32 or float64).
    n_rows : int, optional
        Lay the chunks out for ``n_rows >= n`` rows (the rest padded with weight 0), so that
        states of similar sizes share array shapes and hence compiled programs.
    log_factors : array of shape (n,), optional
        ``log lambda_i`` of adaptive bandwidths (see :mod:`jaxkde.variants.adaptive`); ``None``:
        fixed.
    centre : array of shape (d,), optional
        The centre of the whitening (default: the weighted mean of ``data``).
    log_mass : float
        Added to every log weight: ``data`` is one part, of this log share of the total
        weight, of a KDE whose parts live in several processes (:mod:`jaxkde.scale.distributed`).
    """
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    x64, data_dtype = check_data(data, "data")
    dtype = data_dtype if dtype is None else working_dtype(dtype)
    n, _ = x64.shape
    w64, log_w64 = normalized_log_weights(weights, n)
    log_w64 = log_w64 + log_mass
    if centre is None:
        centre = data_centre(x64, None if weights is None else w64)
    partial, hw = state_header(bandwidth, kernel, centre, basis, dtype)
    z64 = _whiten64(x64, hw)
    hi, lo = split_double_word(z64, dtype)
    if not np.all(np.isfinite(hi)):
        raise ValueError(
            f"X relative to the bandwidth (the whitened data) overflows {dtype.name}; rescale X, "
            "use a larger bandwidth or enable float64."
        )
    k = z64.shape[1]
    if n_rows is not None and n_rows < n:
        raise ValueError(f"n_rows must be at least the {n} rows of data; got {n_rows}.")
    n_chunks, size = chunk_layout(n if n_rows is None else n_rows, chunk_size)
    pad = n_chunks * size - n
    with np.errstate(over="ignore"):
        if k <= 3:  # columns: einsum's row reduction crawls over narrow arrays
            sq = sum(z64[:, j] * z64[:, j] for j in range(k)).astype(dtype)
        else:
            sq = np.einsum("ij,ij->i", z64, z64).astype(dtype)

    def chunked(a, fill=0.0):
        a = np.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1), constant_values=fill)
        return jnp.asarray(a.reshape((n_chunks, size, *a.shape[1:])))

    return dataclasses.replace(
        partial,
        points=chunked(hi),
        points_lo=None if lo is None else chunked(lo),
        sq_norms=chunked(sq),
        log_weights=chunked(log_w64.astype(dtype), -np.inf),
        log_factors=None
        if log_factors is None
        else chunked(_cast_checked(np.reshape(log_factors, (n,)), dtype, "log_factors")),
    )


class LazyState:
    """A fitted state whose device layout is built on first use.

    ``fit`` computes the float64 statistics (rules, centre, the header of
    :func:`state_header`) and keeps the validated data; :attr:`state` whitens, splits into
    double words and chunks them (:func:`build_state`) the first time something needs the
    engine's layout, and caches it. Methods that work from the data themselves (the binned
    grid, :mod:`jaxkde.stats.grid`) read ``data`` and ``weights`` and never pay for it.

    Parameters
    ----------
    data : np.ndarray of float64, shape (n, d)
        Validated data (``check_data``); kept, copied unless it owns its memory (so the
        caller's array may change after ``fit``).
    weights : array of shape (n,), or None
        Non-negative weights, not all zero (copied likewise).
    bandwidth, kernel, basis, chunk_size, dtype, n_rows
        As for :func:`build_state`.
    extent : pair of arrays of shape (d,), optional
        Per-feature minimum and maximum of ``data`` (all rows), when the caller has them.
    """

    def __init__(self, data: np.ndarray, weights, bandwidth, kernel: Kernel, *, basis=None,
                 chunk_size: int = 4096, dtype=None, n_rows: int | None = None,
                 extent=None) -> None:  # fmt: skip
        data = data if data.flags.owndata else data.copy()
        weights = None if weights is None else np.array(weights, np.float64)
        self.data = data
        self.weights = None if weights is None else normalized_log_weights(weights, len(data))[0]
        self.dtype = working_dtype(data.dtype if dtype is None else dtype)
        self.centre = data_centre(data, self.weights)
        self.header, self.whitening = state_header(bandwidth, kernel, self.centre, basis,
                                                   self.dtype)  # fmt: skip
        self._build = functools.partial(
            build_state, data, weights, bandwidth, kernel, basis=basis, chunk_size=chunk_size,
            dtype=self.dtype, n_rows=n_rows, centre=self.centre,
        )  # fmt: skip
        self._state = None
        if not self._fits_dtype(extent):
            self.state  # noqa: B018 -- builds now, raising build_state's named error

    def _fits_dtype(self, extent) -> bool:
        """Whether every whitened coordinate surely fits the working dtype (a bound from the
        data's extent, O(d^2))."""
        low, high = (self.data.min(axis=0), self.data.max(axis=0)) if extent is None else extent
        dev = np.maximum(np.abs(high - self.centre), np.abs(low - self.centre))
        hw = self.whitening
        if hw.basis is not None:
            dev = dev @ np.abs(hw.basis)
        bound = dev * hw.transform if hw.transform.ndim == 1 else np.abs(hw.transform) @ dev
        return bool(np.all(bound < 0.25 * np.finfo(self.dtype).max))

    @property
    def state(self) -> KDEState:
        """The laid-out :class:`KDEState` (built on first access, then cached)."""
        if self._state is None:
            self._state = self._build()
            self._build = None
        return self._state

    @property
    def built(self) -> bool:
        """Whether :attr:`state` has been built."""
        return self._state is not None

    @property
    def kernel(self) -> Kernel:
        return self.header.kernel

    @property
    def chol(self) -> jax.Array:
        return self.header.chol

    @property
    def basis(self) -> jax.Array | None:
        return self.header.basis

    @property
    def log_normalizer(self) -> jax.Array:
        return self.header.log_normalizer

    @property
    def log_factors(self) -> None:
        """Always ``None``: adaptive fits are built eagerly."""
        return None

    @property
    def n_features(self) -> int:
        return self.data.shape[1]

    @property
    def dim(self) -> int:
        return self.header.chol.shape[0]

    def bandwidth_matrix(self) -> np.ndarray:
        """As :meth:`KDEState.bandwidth_matrix`."""
        return self.header.bandwidth_matrix()


@dataclasses.dataclass(frozen=True)
class ClassConditionalState:
    """Per-class fitted KDEs and class log priors (a JAX pytree).

    Attributes
    ----------
    states : tuple of KDEState
        One per class, each with its own data, weights and bandwidth (same kernel).
    log_priors : array, shape (n_classes,)
        ``log P(class)``; they log-sum-exp to 0 (``-inf`` for a class of prior 0).
    """

    states: tuple[KDEState, ...]
    log_priors: jax.Array

    @property
    def n_classes(self) -> int:
        return len(self.states)


jax.tree_util.register_dataclass(
    ClassConditionalState, data_fields=["states", "log_priors"], meta_fields=[]
)
