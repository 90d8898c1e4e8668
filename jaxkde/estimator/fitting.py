"""The estimator's fit paths as functions returning the fitted attributes."""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh

from jaxkde.bandwidth.rules import moments_bandwidth
from jaxkde.core.sharding import replicate
from jaxkde.core.state import (
    ClassConditionalState,
    host_whitening,
)
from jaxkde.scale.distributed import (
    class_moments,
    global_classes,
    global_moments,
    global_state,
    is_global,
    process_rows,
)

__all__ = [
    "fit_across_processes",
]


def fit_across_processes(
    X: jax.Array,
    sample_weight,
    y,
    *,
    kernel,
    mesh: Mesh,
    chunk_size: int,
    dtype,
    spec,
    learn,
    priors,
) -> tuple[dict, tuple[int, int]]:
    """The fitted attributes of a :class:`jaxkde.KDE` of the global ``X`` (rows in several
    processes), and the data's shape ``(n, d)``; nothing is gathered.

    ``spec(label)`` gives the bandwidth asked for (``label`` ``None`` without labels),
    ``learn(spec)`` turns a learned bandwidth's name into ``(H spec, BandwidthFit)`` (anything
    else into ``(spec, None)``), ``priors(classes, totals)`` the class priors.
    """
    x = process_rows(X, "X")
    w = None if sample_weight is None else process_rows(sample_weight, "sample_weight")
    if x.ndim != 2 or (w is not None and w.shape != x.shape[:1]):
        raise ValueError(f"X must be 2-D with one sample_weight per row; got {X.shape}.")
    if not np.all(np.isfinite(x)) or (w is not None and not np.all(np.isfinite(w) & (w >= 0))):
        raise ValueError("X must be finite and sample_weight finite and non-negative.")
    stats = global_moments(x, w)
    place = functools.partial(global_state, kernel=kernel, mesh=mesh, chunk_size=chunk_size,
                              dtype=dtype)  # fmt: skip

    def parts(part_stats, weights, n_rows):  # what sampling needs: the weights of the parts
        mine = np.arange(1.0, n_rows + 1) if weights is None else np.cumsum(weights)
        return part_stats.part_weights, mine

    fitted = {"adaptive_factors_": None, "_data_range": (stats.low, stats.high),
              "_sorted": False, "_bounds": None, "_images": None}  # fmt: skip
    shape = (int(stats.counts.sum()), x.shape[1])
    if y is None:
        h, fit = learn(spec(None))
        state, local = place(x, w, moments_bandwidth(h, stats, x[:1]), stats=stats)
        fitted.update({"state_": state, "bandwidth_": local.bandwidth_matrix(),
                       "bandwidth_fit_": fit, "_whitening": host_whitening(local),
                       "_parts_weights": parts(stats, w, x.shape[0])})  # fmt: skip
        return fitted, shape
    if not is_global(y) or y.shape != X.shape[:1]:
        raise ValueError(f"y must be a global jax.Array of shape {X.shape[:1]}, sharded like X, "
                         "for X spread over processes.")  # fmt: skip
    labels = process_rows(y, "y")
    classes = global_classes(labels).astype(y.dtype)
    codes = np.searchsorted(classes, labels.astype(y.dtype))
    specs = [spec(label) for label in classes.tolist()]
    full = any(isinstance(h, str) and h.endswith("_full") for h in specs)
    per_class = class_moments(x, w, codes, len(classes), full)
    class_priors = priors(classes, np.array([m.total_weight for m in per_class]))
    states, locals_, class_parts = [], [], []
    for c, h in enumerate(specs):
        rows = codes == c
        xc, wc = x[rows], None if w is None else w[rows]
        state, local = place(xc, wc, moments_bandwidth(h, per_class[c], x[:1]), stats=per_class[c])
        states.append(state)
        locals_.append(local)
        class_parts.append(parts(per_class[c], wc, xc.shape[0]))
    with np.errstate(divide="ignore"):
        log_priors = replicate(mesh, np.log(class_priors).astype(dtype))[0]
    fitted.update({
        "state_": ClassConditionalState(tuple(states), log_priors),
        "bandwidth_": np.stack([s.bandwidth_matrix() for s in locals_]),
        "classes_": classes, "class_prior_": class_priors,
        "class_count_": np.array([int(m.counts.sum()) for m in per_class]),
        "bandwidth_fit_": [None] * len(classes),
        "_whitening": tuple(host_whitening(s) for s in locals_),
        "_parts_weights": class_parts,
    })  # fmt: skip
    return fitted, shape
