"""Sampling from a fitted KDE: a centre drawn by weight plus kernel noise shaped by H.

Draws happen on the device (:func:`draw`: centre indices, the centres' whitened coordinates and
unit kernel noise). :func:`sample_with_centres` maps them back to the data's coordinates on the
device, in the working dtype; :func:`sample_host` returns float64 points as precise as float64
draws: formed on the device where a bound on the working dtype's rounding is negligible against
the kernel's spread, else on the host in float64, so samples of data far from the origin
(timestamps, say) keep their precision. The same key gives the same draws in both.
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxkde.core.state import HostWhitening, KDEState, host_whitening, unwhiten, unwhiten_host

__all__ = [
    "DEVICE_SAMPLING_TOL",
    "SamplingScales",
    "as_key",
    "check_sample_size",
    "choose_by_weight",
    "draw",
    "sample",
    "sample_around",
    "sample_host",
    "sample_parts",
    "sample_with_centres",
    "sampling_scales",
    "uniform53",
]


def as_key(key) -> jax.Array:
    """Return a JAX PRNG key from a key, an integer seed, a NumPy ``Generator`` or
    ``RandomState`` (a seed drawn from it, advancing it, as SciPy's samplers do), or ``None``
    (fresh OS entropy)."""
    if isinstance(key, np.random.Generator):
        return jax.random.key(int(key.integers(0, 2**63, dtype=np.int64)))
    if isinstance(key, np.random.RandomState):
        return jax.random.key(int(key.randint(0, 2**63 - 1, dtype=np.int64)))
    if key is None:
        return jax.random.key(int(np.random.SeedSequence().generate_state(1, np.uint32)[0]))
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        if not 0 <= int(key) < 2**63:
            raise ValueError(f"key must be a non-negative integer seed below 2**63; got {key}.")
        return jax.random.key(int(key))
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (
            key.dtype == jnp.uint32 and key.shape == (2,)
        ):
            return key
    raise TypeError(
        f"key must be a JAX PRNG key, an integer seed, a numpy.random.Generator or "
        f"RandomState, or None; got {key!r}."
    )


def check_sample_size(n_samples, n_features: int, name: str = "n_samples") -> int:
    """Refuse sample counts that cannot be allocated, before anything is allocated.

    The draws need about ``8 * n_samples * n_features`` bytes several times over (indices,
    noise, float64 results); more than the machine's memory, or more than ``2**31 - 1`` values
    (the index range of JAX arrays without x64), is refused with a ``ValueError`` naming
    ``name``.
    """
    if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer; got {n_samples!r}.")
    n = int(n_samples)
    if n < 1:
        raise ValueError(f"{name} must be a positive integer; got {n_samples!r}.")
    values = n * max(1, n_features)
    needed = 32 * values
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        memory = None
    if values > 2**31 - 1 or (memory is not None and needed > memory):
        raise ValueError(
            f"{name}={n} is too many: {n} x {n_features} values need about "
            f"{needed / 2**30:.3g} GiB"
            + (f", and this machine has {memory / 2**30:.3g} GiB" if memory else "")
            + "; draw in batches of fewer samples."
        )
    return n


def choose_by_weight(key: jax.Array, log_weights: jax.Array, num: int) -> jax.Array:
    """``num`` indices drawn with probability ``exp(log_weights)`` (normalised), by inverse CDF.

    ``O(n + num log n)`` time and ``O(n + num)`` memory, unlike a Gumbel-max over a
    ``(num, n)`` array; zero weights (``-inf``) are never drawn.
    """
    w = jnp.exp(log_weights - jnp.max(log_weights))
    cdf = jnp.cumsum(w)
    u = jax.random.uniform(key, (num,), cdf.dtype) * cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right")
    # Never past the last index of positive weight (u can round up to the total).
    last = jnp.max(jnp.where(w > 0, jnp.arange(w.shape[0]), 0))
    return jnp.minimum(idx, last)


def _low_words(state: KDEState, indices: jax.Array) -> jax.Array | None:
    """The low words ``(m, k)`` of the centres ``indices`` (``None`` in float64)."""
    return None if state.points_lo is None else state.points_lo.reshape(-1, state.dim)[indices]


def _around(state: KDEState, key: jax.Array, indices: jax.Array, low_words: bool = True):
    k = state.dim
    z = state.points.reshape(-1, k)[indices]
    lo = _low_words(state, indices) if low_words else None
    noise = state.kernel.sample_unit(key, (indices.shape[0], k), state.dtype)
    if state.log_factors is not None:  # adaptive: each centre's own kernel, lambda_i^2 H
        noise = noise * jnp.exp(state.log_factors.reshape(-1)[indices])[:, None]
    return z, lo, noise


@functools.partial(jax.jit, static_argnames=("num_samples",))
def draw(state: KDEState, key: jax.Array, num_samples: int):
    """The random part of sampling, on the device.

    Returns
    -------
    indices : int array, shape (num_samples,)
        Rows of the training data used as centres, drawn by weight.
    z_hi, z_lo : arrays, shape (num_samples, k)
        The centres' whitened coordinates (double words; ``z_lo`` is ``None`` in float64).
    noise : array, shape (num_samples, k)
        Draws from the unit kernel (whitened space).
    """
    check_sample_size(num_samples, state.n_features, "num_samples")
    key_centre, key_noise = jax.random.split(key)
    idx = choose_by_weight(key_centre, state.log_weights.reshape(-1), num_samples)
    return (idx, *_around(state, key_noise, idx))


@jax.jit
def sample_around(
    state: KDEState, key: jax.Array, indices: jax.Array, scaling_factor: float | jax.Array = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Draw one point around each given data point: ``x_r + sqrt(scaling_factor) * L u``.

    ``u`` is drawn from the kernel in whitened space, so for the Gaussian kernel the draw
    follows ``N(x_r, scaling_factor * H)``.

    Parameters
    ----------
    state : KDEState
    key : PRNG key
    indices : int array, shape (m,)
        Rows of the training data to draw around.
    scaling_factor : float
        ``k`` in ``N(x_r, k H)``.

    Returns
    -------
    centres : array, shape (m, d)
        The rows ``x_r``, reconstructed from the whitened state (exact up to rounding).
    samples : array, shape (m, d)
    """
    z, lo, noise = _around(state, key, indices)
    if lo is not None:
        z = z + lo
    scale = jnp.sqrt(jnp.asarray(scaling_factor, state.dtype))
    return unwhiten(state, z), unwhiten(state, z + scale * noise)


@functools.partial(jax.jit, static_argnames=("num_samples",))
def sample_with_centres(
    state: KDEState, key: jax.Array, num_samples: int, scaling_factor: float | jax.Array = 1.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw ``num_samples`` points and report the data point each was drawn around (device,
    working dtype; see :func:`sample_host` for float64 results).

    A centre ``x_r`` is drawn with probability equal to its weight, then a point around it,
    ``x_r + sqrt(scaling_factor) L u`` with ``u`` from the unit kernel.

    Returns
    -------
    indices : int array, shape (num_samples,)
        Row of the training data used as centre.
    centres : array, shape (num_samples, d)
    samples : array, shape (num_samples, d)
    """
    idx, z, lo, noise = draw(state, key, num_samples)
    if lo is not None:
        z = z + lo
    scale = jnp.sqrt(jnp.asarray(scaling_factor, state.dtype))
    return idx, unwhiten(state, z), unwhiten(state, z + scale * noise)


#: Samples are formed on the device, in the working dtype, when a bound on that rounding is at
#: most this fraction of the kernel's standard deviation along every coordinate; otherwise in
#: float64 on the host (data far from the origin, timestamps say, or huge scaling factors).
DEVICE_SAMPLING_TOL = 1e-4


class SamplingScales(NamedTuple):
    """What bounds the rounding of points ``x = c + B L w`` formed in the working dtype, in
    units of the kernel's standard deviation ``sigma_j = |row j of B L|`` along each coordinate
    ``j``: ``offset = max_j |c_j| / sigma_j`` and ``rel = max_j rel_j``, where ``rel_j`` bounds
    the rounding of ``(B L w)_j`` in units of ``eps sigma_j |w|`` (1 for a diagonal ``L``,
    ``1 + sqrt(k)`` for a full one, more through a basis). See :func:`sampling_scales`."""

    offset: np.ndarray
    rel: np.ndarray


def sampling_scales(whitening: HostWhitening) -> SamplingScales:
    """The :class:`SamplingScales` of a state's whitening (``O(d k + k^3)`` host work, once
    per fit)."""
    chol, basis = whitening.chol, whitening.basis
    k = chol.shape[0]
    lc = np.diag(chol) if chol.ndim == 1 else chol
    sigma = np.sqrt(np.sum((lc if basis is None else basis @ lc) ** 2, axis=1))
    if basis is None:
        rel = 1.0 if chol.ndim == 1 else 1.0 + math.sqrt(k)
    else:
        norm = float(np.linalg.norm(lc, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = 2.0 * (1.0 + math.sqrt(k)) * np.max(np.linalg.norm(basis, axis=1) * norm / sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.max(np.abs(whitening.centre) / sigma)
    return SamplingScales(np.float64(offset), np.float64(rel))


def _replay(state, key, num_samples, indices=None, low_words=True):
    """``(indices, z, lo, noise)``: the draws of :func:`_device_draws` (the same key, the same
    numbers), with the centres' low words, for the host route."""
    if indices is None:
        key_centre, key = jax.random.split(key)
        indices = choose_by_weight(key_centre, state.log_weights.reshape(-1), num_samples)
    return (indices, *_around(state, key, indices, low_words=low_words))


_replay_program = jax.jit(_replay, static_argnames=("num_samples",))


@functools.partial(jax.jit, static_argnames=("num_samples", "centres"))
def _device_draws(state, key, num_samples, noise_scale, offset, rel, indices=None, *,
                  centres=True):  # fmt: skip
    """Draws (as :func:`draw`, without the low words), the points ``x = c + B L w`` formed on
    the device, and a bound on their rounding in kernel standard deviations:
    ``eps (offset + (3 + rel) max_i |w_i|)``, since ``|x_ij| / sigma_j <= |c_j| / sigma_j +
    |w_i|`` and the low words, dropped, are within ``eps |w_i| / 2`` of a whitened point.
    ``noise_scale`` is ``sqrt(scaling_factor)``. Returns ``(indices, samples, centres or None,
    bound)``; :func:`_replay_program` gives the draws themselves where the bound is too
    large."""
    indices, z, _, noise = _replay(state, key, num_samples, indices, low_words=False)
    w = z + jnp.asarray(noise_scale, state.dtype) * noise
    samples = unwhiten(state, w)
    at = unwhiten(state, z) if centres else None
    w_max = jnp.sqrt(jnp.max(jnp.sum(w * w, axis=1)))
    bound = jnp.finfo(state.dtype).eps * (offset + (3.0 + rel) * w_max)
    return indices, samples, at, bound


def sample_host(
    state: KDEState,
    key: jax.Array,
    num_samples: int,
    scaling_factor: float = 1.0,
    whitening: HostWhitening | None = None,
    *,
    indices=None,
    centres: bool = True,
    scales: SamplingScales | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """:func:`sample_with_centres` with float64 results, as precise as float64 draws.

    The points are formed on the device in the working dtype when a bound on that rounding is
    within :data:`DEVICE_SAMPLING_TOL` of the kernel's standard deviation along every
    coordinate (the draws are then used as they are); otherwise the same draws are formed in
    float64 on the host, so samples of data far from the origin keep their precision.

    With ``indices`` (data rows, shape ``(num_samples,)``) the draws are around those rows, as
    :func:`sample_around`; otherwise centres are drawn by weight. ``scales``:
    ``sampling_scales(whitening)``, to reuse across calls (its arrays may be placed on the
    device in the working dtype). Returns ``(indices, centres,
    samples)`` as NumPy arrays, the last two float64 (``centres`` is ``None`` when not asked
    for); raises a ``ValueError`` naming ``scaling_factor`` if the samples overflow float64.
    """
    hw = host_whitening(state) if whitening is None else whitening
    scales = sampling_scales(hw) if scales is None else scales
    offset, rel = (jnp.asarray(a, state.dtype) for a in scales)
    given = None if indices is None else jnp.asarray(indices)
    # Beyond the working dtype the device's points overflow, and the host forms them.
    noise_scale = min(math.sqrt(scaling_factor), float(np.finfo(state.dtype).max))
    drawn = _device_draws(state, key, num_samples, noise_scale, offset, rel, given,
                          centres=centres)  # fmt: skip
    idx, samples, at, bound = jax.device_get(drawn)  # one transfer
    if bound <= DEVICE_SAMPLING_TOL:  # NaN or inf (overflow) take the host route
        at = None if at is None else at.astype(np.float64)
        return idx, at, samples.astype(np.float64)
    _, z, lo, noise = _replay_program(state, key, num_samples, given)
    centres_, samples = _host_points(state, z, lo, noise, scaling_factor, hw, centres)
    return idx, centres_, samples


def _host_points(state, z, lo, noise, scaling_factor, whitening, centres=True):
    """Centres (``None`` unless ``centres``) and samples in float64 from the device's draws."""
    z = np.asarray(z, np.float64)
    if lo is not None:
        z = z + np.asarray(lo, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        samples = unwhiten_host(
            state, z + math.sqrt(scaling_factor) * np.asarray(noise, np.float64),
            whitening=whitening,
        )  # fmt: skip
    centres = unwhiten_host(state, z, whitening=whitening) if centres else None
    if not np.all(np.isfinite(samples)):
        raise ValueError(
            f"scaling_factor={scaling_factor!r} spreads the samples beyond float64's range; "
            "use a smaller scaling_factor."
        )
    return centres, samples


def sample(
    state: KDEState, key: jax.Array, num_samples: int, scaling_factor: float | jax.Array = 1.0
) -> jax.Array:
    """Draw ``num_samples`` points, shape ``(num_samples, d)`` (see :func:`sample_with_centres`)."""
    return sample_with_centres(state, key, num_samples, scaling_factor)[2]


def uniform53(key: jax.Array, num: int) -> np.ndarray:
    """``num`` uniforms in ``[0, 1)`` with 53 random bits each (float64, on the host), from two
    32-bit words per draw: the same values on every backend and whether or not x64 is on."""
    words = np.asarray(jax.random.bits(key, (num, 2), jnp.uint32)).astype(np.uint64)
    return ((words[:, 0] >> np.uint64(5)) * 2.0**26 + (words[:, 1] >> np.uint64(6))) / 2.0**53


def sample_parts(
    key: jax.Array,
    num_samples: int,
    part_weights: np.ndarray,
    part: int,
    cumulative: np.ndarray,
    fetch,
    kernel,
    whitening: HostWhitening,
    scaling_factor: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draws from a KDE whose rows are split into parts (processes, or the blocks of a file),
    seen from part ``part``: the same key gives the same draws however the rows are split.

    A centre is the row where ``u * W`` falls in the rows' cumulative weight (``u`` from
    :func:`uniform53`, ``W`` the total), so it depends on the rows in order, not on the parts;
    the noise comes from the unit kernel. Only the owner of a centre reads its row.

    Parameters
    ----------
    key : PRNG key
    num_samples : int
    part_weights : np.ndarray, shape (n_parts,)
        Total weight of each part, in order (float64).
    part : int
        The part seen here.
    cumulative : np.ndarray, shape (n_p,)
        Cumulative weights of this part's rows (float64).
    fetch : callable
        ``fetch(rows)`` -> this part's rows ``rows`` (sorted local indices) in the original
        coordinates, float64 ``(len(rows), d)``.
    kernel : Kernel
    whitening : HostWhitening
        The KDE's whitening (its ``chol`` shapes the noise; no ``basis``).
    scaling_factor : float

    Returns
    -------
    owner : np.ndarray of int, shape (num_samples,)
        The part each centre lies in.
    rows : np.ndarray of int, shape (num_samples,)
        The centre's row within its part (``-1`` where another part owns it).
    centres : np.ndarray, shape (num_samples, d)
        The centres owned here, float64 (0 in the other rows).
    shift : np.ndarray, shape (num_samples, d)
        Each sample minus its centre, float64 (the same in every part).
    """
    key_centre, key_noise = jax.random.split(key)
    ends = np.cumsum(np.asarray(part_weights, np.float64))
    target = uniform53(key_centre, num_samples) * ends[-1]
    live = np.flatnonzero(np.asarray(part_weights) > 0)
    owner = np.minimum(np.searchsorted(ends, target, side="right"), live[-1])
    mine = owner == part
    rows = np.full(num_samples, -1, np.int64)
    if mine.any():
        local = target[mine] - (ends[part - 1] if part > 0 else 0.0)
        last = int(np.searchsorted(cumulative, cumulative[-1], side="left"))  # last positive row
        rows[mine] = np.minimum(np.searchsorted(cumulative, local, side="right"), last)
    chol = whitening.chol
    noise = np.asarray(kernel.sample_unit(key_noise, (num_samples, chol.shape[0]), whitening.dtype),
                       np.float64) * math.sqrt(scaling_factor)  # fmt: skip
    with np.errstate(over="ignore", invalid="ignore"):
        shift = noise * chol if chol.ndim == 1 else noise @ chol.T
    if not np.all(np.isfinite(shift)):
        raise ValueError(
            f"scaling_factor={scaling_factor!r} spreads the samples beyond float64's range; "
            "use a smaller scaling_factor."
        )
    centres = np.zeros_like(shift)
    if mine.any():
        wanted, where = np.unique(rows[mine], return_inverse=True)
        centres[mine] = np.asarray(fetch(wanted), np.float64)[where]
    return owner, rows, centres, shift
