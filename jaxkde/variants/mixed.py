"""Mixed continuous and discrete data: product kernels as a Gaussian KDE in an embedding.

statsmodels' ``KDEMultivariate`` (and R's ``np``) estimate densities of data whose columns are
continuous (``"c"``), unordered discrete (``"u"``) or ordered discrete (``"o"``) with the
product kernel ``prod_j k_j(x_j, X_ij)``:

* ``c``: the Gaussian ``phi((x - X_i) / h) / h``;
* ``u``: Aitchison and Aitken's ``1 - lambda`` where ``x = X_i``, else ``lambda / (c - 1)``
  (``c`` levels in the data), ``0 < lambda <= (c - 1) / c``;
* ``o``: Wang and van Ryzin's ``1 - lambda`` where ``x = X_i``, else
  ``(1 - lambda) / 2 lambda^|x - X_i|`` (integer values), ``0 < lambda < 1``.

Each discrete kernel is ``(1 - lambda) exp(-||e(x) - e(X_i)||^2 / 2)`` for an embedding ``e``
of its values:

* ``u``: ``sqrt(a)`` times the one-hot vector of the level (one slot more for every level the
  data lack), ``a = log((1 - lambda)(c - 1) / lambda)``: the squared distance is ``2 a``
  between two levels, 0 within one;
* ``o``: ``sqrt(-2 log lambda)`` times the thermometer code of the value (``|x - y|`` ones
  differ), beside ``sqrt(log 2)`` times its one-hot code (``-log 2`` for any two values that
  differ); a value beyond the data's range is clipped to it and gets ``m log lambda`` for
  the ``m`` steps beyond, the same for every centre.

So the mixed KDE **is** a Gaussian KDE of the embedded rows with ``H = diag(h_c^2, 1, ..., 1)``,
evaluated by the exact engine (:mod:`jaxkde.core.engine`; every guarantee, block sizes, devices),
plus a constant: ``sum_j log(1 - lambda_j)`` and ``log(2 pi) / 2`` for each embedded
coordinate. The kernels of a discrete column sum to 1 over its values, so marginals drop
columns and conditional densities are ratios of two such KDEs.

The embedding is written with ``jax.numpy`` from integer codes found once on the host, so it is
differentiable in ``lambda`` (leave-one-out likelihood bandwidths, :class:`jaxkde.MixedKDE`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "MAX_ORDERED_SPAN",
    "VAR_TYPES",
    "MixedLayout",
    "check_var_type",
    "codes",
    "discrete_bounds",
    "embed_discrete",
    "embedded_log_constant",
    "mixed_layout",
    "normal_reference",
    "outside_log_terms",
]

#: The column kinds: continuous, unordered discrete, ordered discrete (statsmodels' letters).
VAR_TYPES = ("c", "u", "o")
#: Most integer values an ordered column may span (its thermometer code has that many slots).
MAX_ORDERED_SPAN = 1000

_LOG_2PI = math.log(2.0 * math.pi)


def check_var_type(var_type, d: int | None = None) -> str:
    """``var_type`` as a string of ``"c"``, ``"u"``, ``"o"``, one per column (``d`` of them)."""
    if not isinstance(var_type, str) or not var_type or set(var_type) - set(VAR_TYPES):
        raise ValueError(f"var_type must be a string of 'c' (continuous), 'u' (unordered) and "
                         f"'o' (ordered), one letter per column; got {var_type!r}.")  # fmt: skip
    if d is not None and len(var_type) != d:
        raise ValueError(f"var_type has {len(var_type)} letters for {d} columns of X; give one "
                         "per column.")  # fmt: skip
    return var_type


class MixedLayout(NamedTuple):
    """What the embedding of one data set needs, found once on the host.

    Attributes
    ----------
    var_type : str
    levels : tuple
        Per column: ``None`` (continuous), the sorted distinct values (unordered), or the
        integer range ``(lo, hi)`` of the data (ordered).
    """

    var_type: str
    levels: tuple

    @property
    def n_embedded(self) -> int:
        """Coordinates of the embedding."""
        return sum(_width(kind, lev) for kind, lev in zip(self.var_type, self.levels, strict=True))

    @property
    def continuous(self) -> np.ndarray:
        """Indices of the continuous columns."""
        return np.array([j for j, k in enumerate(self.var_type) if k == "c"], int)

    @property
    def discrete(self) -> np.ndarray:
        """Indices of the discrete columns."""
        return np.array([j for j, k in enumerate(self.var_type) if k != "c"], int)


def _width(kind: str, lev) -> int:
    if kind == "c":
        return 1
    if kind == "u":
        return len(lev) + 1
    lo, hi = lev
    return 2 * (hi - lo) + 2  # thermometer (hi - lo) and one-hot (hi - lo + 1, + outside)


def mixed_layout(data: np.ndarray, var_type: str) -> MixedLayout:
    """The layout of ``data`` ``(n, d)`` (float64) for ``var_type``; ``ValueError`` naming the
    column for a discrete column with one level, or an ordered one that is not integer-valued
    or spans more than :data:`MAX_ORDERED_SPAN` values."""
    var_type = check_var_type(var_type, data.shape[1])
    levels = []
    for j, kind in enumerate(var_type):
        col = data[:, j]
        if kind == "c":
            levels.append(None)
            continue
        values = np.unique(col)
        if values.size < 2:
            raise ValueError(f"column {j} ({kind!r}) has a single value in X; a discrete "
                             "kernel needs at least 2 levels (drop the column).")  # fmt: skip
        if kind == "u":
            levels.append(tuple(values.tolist()))
            continue
        if not np.all(values == np.round(values)):
            raise ValueError(f"column {j} is ordered ('o') but not integer-valued; code its "
                             "levels as consecutive integers.")  # fmt: skip
        lo, hi = int(values[0]), int(values[-1])
        if hi - lo > MAX_ORDERED_SPAN:
            raise ValueError(f"column {j} ('o') spans {hi - lo + 1} integer values, more than "
                             f"{MAX_ORDERED_SPAN + 1}; treat it as continuous ('c').")  # fmt: skip
        levels.append((lo, hi))
    return MixedLayout(var_type, tuple(levels))


def discrete_bounds(layout: MixedLayout) -> np.ndarray:
    """The largest ``lambda`` of each discrete column, ``(n_discrete,)``: ``(c - 1) / c``
    (unordered; the kernel is then flat), 1 (ordered; excluded)."""
    out = []
    for kind, lev in zip(layout.var_type, layout.levels, strict=True):
        if kind == "u":
            out.append((len(lev) - 1) / len(lev))
        elif kind == "o":
            out.append(1.0)
    return np.array(out)


def codes(layout: MixedLayout, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes ``(m, n_discrete)`` of the discrete columns of ``data`` (unordered: the
    level's index, ``c`` for a level the data lack; ordered: the value clipped to the range,
    minus ``lo``) and the steps ``(m, n_discrete)`` beyond the range (ordered; else 0)."""
    cols, beyond = [], []
    for j, (kind, lev) in enumerate(zip(layout.var_type, layout.levels, strict=True)):
        if kind == "c":
            continue
        col = data[:, j]
        if kind == "u":
            table = np.asarray(lev)
            idx = np.searchsorted(table, col)
            found = (idx < len(table)) & (table[np.minimum(idx, len(table) - 1)] == col)
            cols.append(np.where(found, idx, len(table)))
            beyond.append(np.zeros(len(col)))
            continue
        if not np.all(col == np.round(col)):
            raise ValueError(f"column {j} is ordered ('o'): its values must be integers.")
        lo, hi = lev
        clipped = np.clip(col, lo, hi)
        cols.append((clipped - lo).astype(np.int64))
        beyond.append(np.abs(col - clipped))
    m = data.shape[0]
    if not cols:
        return np.zeros((m, 0), np.int64), np.zeros((m, 0))
    return np.stack(cols, 1).astype(np.int64), np.stack(beyond, 1)


def embed_discrete(layout: MixedLayout, discrete_codes: jax.Array, lambdas: jax.Array,
                   dtype=jnp.float32, outside: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """The embedding ``(m, n_embedded - k_c)`` of the discrete columns' codes (see the module
    docstring), in ``dtype``; ``outside`` ``(m, n_discrete)`` marks ordered values beyond the
    data's range (their one-hot code is the "outside" slot). Traceable and differentiable in
    ``lambdas`` ``(n_discrete,)``."""
    parts = [jnp.zeros((discrete_codes.shape[0], 0), dtype)]
    kinds = [(k, lev) for k, lev in zip(layout.var_type, layout.levels, strict=True) if k != "c"]
    for i, (kind, lev) in enumerate(kinds):
        code = discrete_codes[:, i]
        lam = lambdas[i]
        if kind == "u":
            c = len(lev)
            scale = jnp.sqrt(jnp.maximum(jnp.log((1.0 - lam) * (c - 1) / lam), 0.0))
            parts.append(scale.astype(dtype) * jax.nn.one_hot(code, c + 1, dtype=dtype))
            continue
        span = lev[1] - lev[0]
        steps = jnp.arange(span, dtype=code.dtype)
        thermometer = (code[:, None] > steps[None, :]).astype(dtype)
        parts.append(jnp.sqrt(-2.0 * jnp.log(lam)).astype(dtype) * thermometer)
        if outside is not None:
            code = jnp.where(outside[:, i], span + 1, code)
        parts.append(math.sqrt(math.log(2.0)) * jax.nn.one_hot(code, span + 2, dtype=dtype))
    return jnp.concatenate(parts, axis=1)


def embedded_log_constant(layout: MixedLayout, lambdas: jax.Array) -> jax.Array:
    """What turns the Gaussian KDE of the embedded rows into the mixed one: ``log(2 pi) / 2``
    per embedded discrete coordinate plus ``sum_j log(1 - lambda_j)``."""
    extra = layout.n_embedded - len(layout.continuous)
    return 0.5 * extra * _LOG_2PI + jnp.sum(jnp.log1p(-lambdas))


def outside_log_terms(layout: MixedLayout, beyond: np.ndarray, lambdas) -> np.ndarray:
    """``sum_j m_j log lambda_j`` per row ``(m,)``: ordered values ``m_j`` steps beyond the
    data's range (0 inside it)."""
    lam = np.asarray(lambdas, np.float64)
    if beyond.shape[1] == 0:
        return np.zeros(beyond.shape[0])
    with np.errstate(invalid="ignore"):
        terms = np.where(beyond > 0, beyond * np.log(lam)[None, :], 0.0)
    return terms.sum(axis=1)


def normal_reference(data: np.ndarray) -> np.ndarray:
    """statsmodels' ``normal_reference`` rule for every column, ``1.06 sigma n^(-1/(4+d))``
    (``sigma`` with ``ddof=0``), shape ``(d,)``: a continuous column's ``h``; a discrete
    column's start for cross-validation."""
    n, d = data.shape
    return 1.06 * np.std(data, axis=0) * n ** (-1.0 / (4.0 + d))
