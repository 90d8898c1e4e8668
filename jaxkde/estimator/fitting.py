"""The estimator's fit paths: pure functions from the parameters and data to a :class:`Fitted`.

:class:`jaxkde.KDE` checks nothing itself: ``fit`` builds :class:`FitParams` from its
parameters, :func:`check_params` checks the cheap ones, one of :func:`fit_in_memory`,
:func:`fit_streamed` or :func:`fit_global` fits, and :meth:`Fitted.attributes` gives the
fitted attributes it stores. Every path returns the same record, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxkde._validation import (
    check_data,
    check_labels,
    check_positive_int,
    check_weights,
    working_dtype,
)
from jaxkde.bandwidth.choice import LEARNED, bandwidth_spec, learn, learned_spec, rule_or_explicit
from jaxkde.bandwidth.rules import (
    PointBandwidths,
    check_point_scales,
    moments_bandwidth,
    resolve_bandwidth,
)
from jaxkde.core.engine import PRECISIONS, default_block_sizes
from jaxkde.core.kernels import Kernel, UnivariateGaussianKernel, get_kernel
from jaxkde.core.sharding import replicate, shard_state
from jaxkde.core.state import (
    ClassConditionalState,
    LazyState,
    build_state,
    host_whitening,
    shared_row_counts,
    state_points,
)
from jaxkde.scale import streaming
from jaxkde.scale.distributed import (
    class_moments,
    global_classes,
    global_moments,
    global_state,
    is_global,
    process_rows,
)
from jaxkde.stats.marginals import MixtureParts
from jaxkde.variants.adaptive import abramson_log_factors, check_alpha, pilot_log_density
from jaxkde.variants.bounds import (
    BOUNDARY_METHODS,
    Bounds,
    check_bounds,
    check_inside,
    reflection_images,
    to_transformed,
)

__all__ = [
    "FitParams",
    "Fitted",
    "append_rows",
    "block_sizes",
    "check_params",
    "class_priors",
    "encode_labels",
    "fit_across_processes",
    "fit_global",
    "fit_in_memory",
    "fit_mixture",
    "fit_streamed",
    "reflected_states",
    "weighted_range",
]


class FitParams(NamedTuple):
    """The parameters of :class:`jaxkde.KDE`, as its fit reads them (see its docstring)."""

    kernel: Any = "gaussian"
    bandwidth: Any = None
    priors: Any = None
    bandwidth_estimator: Any = None
    univariate_bandwidth: Any = None
    p: Any = 2
    zero_variance: str = "floor"
    variance_floor: float = 1e-6
    batch_size: Any = None
    chunk_size: Any = None
    precision: str = "highest"
    mesh: Any = None
    bounds: Any = None
    boundary: str = "reflect"
    adaptive: Any = False
    alpha: float = 0.5
    out_of_core: Any = None


@dataclasses.dataclass
class Fitted:
    """What a fit found: the state and everything the estimator keeps beside it.

    ``state`` is a ``KDEState``, ``ClassConditionalState``, ``StreamedState`` or a
    ``LazyState`` whose layout waits for its first use; ``shape`` is the data's ``(n, d)``;
    ``sorted`` the sum-updating sort (``None``: decided at the first score; ``False``: the
    engine); ``images`` the reflection images' ``(state, whitening)`` pairs (``None`` for
    the transform or without bounds); ``parts_weights`` what sampling across processes
    needs. The class fields are ``None`` without labels.
    """

    state: Any
    shape: tuple[int, int]
    bandwidth: np.ndarray
    whitening: Any
    data_range: tuple[np.ndarray, np.ndarray]
    n_degenerate: int = 0
    bandwidth_fit: Any = None
    adaptive_factors: np.ndarray | None = None
    bounds: Bounds | None = None
    images: tuple | None = None
    sorted: Any = None
    classes: np.ndarray | None = None
    class_prior: np.ndarray | None = None
    class_count: np.ndarray | None = None
    parts_weights: Any = None
    weight_totals: np.ndarray | None = None
    weighted: bool = False

    def attributes(self) -> dict:
        """The estimator's fitted attributes (the class ones only with labels)."""
        out = {
            "adaptive_factors_": self.adaptive_factors,
            "bandwidth_": self.bandwidth,
            "bandwidth_fit_": self.bandwidth_fit,
            "_whitening": self.whitening,
            "_data_range": self.data_range,
            "_sorted": self.sorted,
            "_bounds": self.bounds,
            "_images": self.images,
            "n_samples_fit_": self.shape[0],
            "n_features_in_": self.shape[1],
            "n_degenerate_features_": self.n_degenerate,
        }
        state = self.state
        if isinstance(state, LazyState) and not state.built:
            out["_lazy_state"] = state
        else:
            out["state_"] = state.state if isinstance(state, LazyState) else state
        if self.classes is not None:
            out.update(classes_=self.classes, class_prior_=self.class_prior,
                       class_count_=self.class_count)  # fmt: skip
        if self.parts_weights is not None:
            out["_parts_weights"] = self.parts_weights
        if self.weight_totals is not None:
            out.update(_weight_totals=self.weight_totals, _weighted=self.weighted)
        return out


def block_sizes(mesh) -> tuple[int, int]:
    """The engine's ``(query block, data chunk)`` defaults for the devices of ``mesh``."""
    platform = mesh.devices.flat[0].platform if isinstance(mesh, Mesh) else None
    return default_block_sizes(platform)


def check_params(params: FitParams, y) -> tuple[Kernel, int]:
    """The kernel and data chunk size of a fit; ``ValueError``/``TypeError`` naming the
    parameter that is wrong (checks that need the data come later)."""
    kernel = get_kernel(params.kernel, params.p)
    chunk = block_sizes(params.mesh)[1] if params.chunk_size is None else params.chunk_size
    chunk_size = check_positive_int(chunk, "chunk_size")
    if params.batch_size is not None:
        check_positive_int(params.batch_size, "batch_size")
    if not isinstance(params.precision, str) or params.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; got {params.precision!r}.")
    if params.mesh is not None and not isinstance(params.mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None; got {params.mesh!r}.")
    if y is None and params.priors is not None:
        raise ValueError("priors needs class labels: fit(X, y) with y, or priors=None.")
    return kernel, chunk_size


def encode_labels(y, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)``: sorted unique labels (first-seen order if unsortable), codes 0..C-1."""
    labels = check_labels(y, n)
    try:
        classes, codes = np.unique(labels, return_inverse=True)
    except TypeError:  # labels of mixed, unorderable types: order of first appearance
        index: dict = {}
        codes = np.array([index.setdefault(label, len(index)) for label in labels])
        classes = np.empty(len(index), dtype=object)
        classes[:] = list(index)
    try:  # give classes_ the natural dtype (ints, strings) when there is one
        typed = np.asarray(classes.tolist())
        if (
            typed.shape == classes.shape
            and typed.dtype != object
            and typed.tolist() == classes.tolist()
        ):
            classes = typed
    except (TypeError, ValueError):
        pass
    return classes, np.asarray(codes).reshape(-1)


def weighted_range(data: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature minimum and maximum of the rows of positive weight (float64)."""
    rows = data if weights is None else data[weights > 0]
    if rows.shape[0] == 0:
        rows = data
    if rows.shape[1] > 8:
        return rows.min(axis=0), rows.max(axis=0)
    # Column by column: NumPy's axis-0 reductions crawl over narrow C-ordered arrays.
    columns = [rows[:, k] for k in range(rows.shape[1])]
    return np.array([c.min() for c in columns]), np.array([c.max() for c in columns])


def class_priors(priors, classes: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """The class priors: ``priors`` (``None``: each class's share of ``totals``, the
    weighted row counts; else one per class, or a dict by label), checked and normalised."""
    empty = totals <= 0
    if priors is None:
        return totals / totals.sum()
    given = priors
    if isinstance(priors, dict):
        missing = [c for c in classes.tolist() if c not in priors]
        if missing:
            raise ValueError(f"priors has no entry for classes {missing}.")
        priors = [priors[c] for c in classes.tolist()]
    try:
        priors = np.asarray(priors, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"priors must be numbers, one per class; got {given!r}.") from None
    if priors.shape != classes.shape:
        raise ValueError(
            f"priors must have one entry per class, shape {classes.shape}; got {priors.shape}."
        )
    if not np.all(np.isfinite(priors)) or np.any(priors < 0) or abs(priors.sum() - 1) > 1e-6:
        raise ValueError(f"priors must be non-negative and sum to 1; got {priors.tolist()}.")
    if np.any(empty & (priors > 0)):
        bad = np.flatnonzero(empty & (priors > 0))[0]
        raise ValueError(
            f"class {classes[bad]!r} has zero total sample_weight, so its prior must be 0; "
            f"priors gives it {priors[bad]!r}."
        )
    return priors / priors.sum()


def _check_adaptive(params: FitParams, kernel: Kernel) -> None:
    if not isinstance(params.adaptive, (bool, np.bool_)):
        raise TypeError(f"adaptive must be True or False; got {params.adaptive!r}.")
    check_alpha(params.alpha)
    if not params.adaptive:
        return
    if isinstance(params.bandwidth, PointBandwidths) or (
        isinstance(params.bandwidth, dict)
        and any(isinstance(b, PointBandwidths) for b in params.bandwidth.values())
    ):
        raise ValueError("adaptive=True sets one bandwidth per row itself; it cannot be combined "
                         "with PointBandwidths.")  # fmt: skip
    if isinstance(kernel, UnivariateGaussianKernel):
        raise ValueError(
            "adaptive=True needs a normalised kernel; kernel='univariate_gaussian' is not one "
            "(use kernel='gaussian')."
        )
    names = [params.bandwidth, params.bandwidth_estimator]
    if any(isinstance(b, str) and LEARNED.get(b, ("", ""))[1] == "lscv" for b in names):
        raise ValueError(
            "adaptive=True learns H by likelihood with the factors held fixed; bandwidth="
            f"{params.bandwidth or params.bandwidth_estimator!r} (LSCV) has no closed form for "
            "adaptive kernels: use 'cv', 'cv_diagonal' or 'cv_full'."
        )


def _check_bounds(params: FitParams, data: np.ndarray, y) -> Bounds | None:
    """Validated bounds (``None`` without), the data checked against them."""
    if not isinstance(params.boundary, str) or params.boundary not in BOUNDARY_METHODS:
        raise ValueError(
            f"boundary must be one of {list(BOUNDARY_METHODS)}; got {params.boundary!r}."
        )
    if params.bounds is None:
        return None
    if y is not None:
        raise ValueError("bounds are not supported with class labels yet; fit without y.")
    if isinstance(get_kernel(params.kernel, params.p), UnivariateGaussianKernel):
        raise ValueError(
            "bounds need a normalised kernel; kernel='univariate_gaussian' is not one."
        )
    bounds = check_bounds(params.bounds, data.shape[1])
    check_inside(data, bounds, "X", strict=params.boundary == "transform")
    return bounds


def reflected_states(data, weights, state, bounds: Bounds, chunk_size: int, dtype, mesh=None):
    """The image states of reflection (the identity excluded), with their whitenings; each
    sharded over ``mesh`` when given."""
    chol = np.asarray(state.chol, np.float64)
    h = chol**2 if chol.ndim == 1 else chol @ chol.T
    basis = None if state.basis is None else np.asarray(state.basis, np.float64)
    factors = None  # the same factor for a centre and its images
    if state.log_factors is not None:
        factors = np.asarray(state.log_factors, np.float64).reshape(-1)[: data.shape[0]]
    out = []
    for signs, offsets in reflection_images(bounds)[1:]:
        if basis is not None:
            h_img, basis_img = h, signs[:, None] * basis
        else:
            h_img, basis_img = (h if h.ndim == 1 else signs[:, None] * h * signs), None
        image = build_state(data * signs + offsets, weights, h_img, state.kernel,
                            basis=basis_img, chunk_size=chunk_size, dtype=dtype,
                            log_factors=factors)  # fmt: skip
        whitening = host_whitening(image)
        out.append((image if mesh is None else shard_state(image, mesh), whitening))
    return tuple(out)


def _adapt(params: FitParams, x, w, state, fit, learned, bounds, chunk_size):
    """Abramson's ``log lambda_i`` from the fixed ``state`` as pilot (with its reflection
    images under bounds), and the learned fit redone with them held fixed."""
    parts = [(state, host_whitening(state))]
    if bounds is not None and params.boundary == "reflect":  # the pilot honours the bounds
        parts += list(reflected_states(x, w, state, bounds, chunk_size, state.dtype))
    block = params.batch_size or block_sizes(params.mesh)[0]
    log_pilot = pilot_log_density(parts, x, block_size=block, precision=params.precision)
    log_factors = abramson_log_factors(log_pilot, w, params.alpha)
    if learned is not None:  # the global H again, the factors held fixed
        fit = learn("adaptive=True", x, w, kind=learned[0], kernel=state.kernel,
                    mesh=params.mesh, dtype=state.dtype, init=fit.matrix,
                    log_factors=log_factors)  # fmt: skip
    return log_factors, fit


class _Job(NamedTuple):
    """What every class's fit of one in-memory fit shares."""

    params: FitParams
    kernel: Kernel
    data: np.ndarray
    weights: np.ndarray | None
    bounds: Bounds | None
    chunk_size: int
    dtype: Any
    source: Any  # the user's X: a lazy layout copies rows that are X itself


def _fit_one(job: _Job, rows=None, label=None, n_rows=None, lazy_extent=None):
    """``(state, n_degenerate, fit, whitening, factors)`` of the rows ``rows`` (all rows
    for ``None``; one class's with ``label``)."""
    params, kernel = job.params, job.kernel
    spec = bandwidth_spec(params, kernel, label)
    x = job.data if rows is None else job.data[rows]
    w = job.weights if job.weights is None or rows is None else job.weights[rows]
    point_log_factors = None
    if isinstance(spec, PointBandwidths):
        scales = check_point_scales(spec, job.data.shape[0])
        point_log_factors = np.log(scales if rows is None else scales[rows])
        spec, lazy_extent = spec.base, None
    empty = w is not None and not np.any(w > 0)  # a class of zero total weight
    fit = None
    learned = LEARNED.get(spec) if isinstance(spec, str) else None
    if learned is not None and empty:
        spec = "scott"
    elif learned is not None:
        where = "" if label is None else f" (class {label!r})"
        fit = learn(f"bandwidth={spec!r}{where}", x, w, kind=learned[0], objective=learned[1],
                    kernel=kernel, mesh=params.mesh, dtype=job.dtype,
                    log_factors=point_log_factors)  # fmt: skip
        spec = learned_spec(fit)
    resolve = functools.partial(resolve_bandwidth, x, None if empty else w,
                                zero_variance=params.zero_variance,
                                variance_floor=params.variance_floor)  # fmt: skip
    build = functools.partial(build_state, x, w, kernel=kernel, chunk_size=job.chunk_size,
                              dtype=job.dtype, n_rows=n_rows)  # fmt: skip
    factors = np.ones(x.shape[0]) if params.adaptive else None
    try:
        choice = resolve(spec)
        if lazy_extent is not None:  # the layout waits for its first use
            state = LazyState(x if x is not job.source else x.copy(),  # X may change after fit
                              w, choice.matrix, kernel, basis=choice.basis,
                              chunk_size=job.chunk_size, dtype=job.dtype,
                              extent=lazy_extent)  # fmt: skip
            return state, choice.n_degenerate, fit, state.whitening, factors
        state = build(bandwidth=choice.matrix, basis=choice.basis, log_factors=point_log_factors)
        if point_log_factors is not None:
            factors = np.exp(point_log_factors)
        if params.adaptive and not empty:  # the fixed state is the pilot
            log_factors, fit = _adapt(params, x, w, state, fit, learned, job.bounds,
                                      job.chunk_size)  # fmt: skip
            if learned is not None:
                choice = resolve(learned_spec(fit))
            state = build(bandwidth=choice.matrix, basis=choice.basis, log_factors=log_factors)
            factors = np.exp(log_factors)
    except ValueError as exc:
        if label is None:
            raise
        raise ValueError(f"class {label!r}: {exc}") from None
    whitening = host_whitening(state)
    if params.mesh is not None:
        state = shard_state(state, params.mesh)
    return state, choice.n_degenerate, fit, whitening, factors


def fit_in_memory(params: FitParams, X, y, sample_weight, kernel: Kernel, chunk_size: int,
                  dtype=None) -> Fitted:  # fmt: skip
    """The fit of rows in memory: one state, or one per class of ``y``. ``dtype`` overrides
    the working dtype of ``X`` (a derived KDE keeps its parent's)."""
    data, data_dtype = check_data(X, "X")
    dtype = data_dtype if dtype is None else dtype
    weights = check_weights(sample_weight, data.shape[0])
    _check_adaptive(params, kernel)
    bounds = _check_bounds(params, data, y)
    if bounds is not None and params.boundary == "transform":
        data = to_transformed(data, bounds)  # the KDE lives in z = log / logit of x
    job = _Job(params, kernel, data, weights, bounds, chunk_size, dtype, X)
    if y is not None:
        return _fit_classes(job, y)
    data_range = weighted_range(data, weights)
    extent = None
    if not params.adaptive and bounds is None and params.mesh is None:
        # The layout waits: the range of every row (the weighted one when all rows count).
        extent = data_range if weights is None else (data.min(0), data.max(0))
    state, n_degenerate, fit, whitening, factors = _fit_one(job, lazy_extent=extent)
    images = None
    if bounds is not None and params.boundary == "reflect":
        images = reflected_states(data, weights, state, bounds, chunk_size, dtype, params.mesh)
    totals = np.array([data.shape[0] if weights is None else weights.sum()], np.float64)
    return Fitted(state, data.shape, state.bandwidth_matrix(), whitening, data_range,
                  n_degenerate, fit, factors, bounds, images, weight_totals=totals,
                  weighted=weights is not None)  # fmt: skip


def _rows_of(state) -> tuple[np.ndarray, np.ndarray]:
    """The rows of positive weight of a state in original coordinates, float64 ``(n, d)``, and
    their normalised weights ``(n,)``: exact from a layout not yet built, else recovered from
    the double-word points (to about 2^-48) and the log weights (to the working dtype)."""
    if isinstance(state, LazyState) and not state.built:
        w = np.full(len(state.data), 1.0 / len(state.data)) if state.weights is None else (
            state.weights)  # fmt: skip
        return state.data[w > 0], w[w > 0]
    state = state.state if isinstance(state, LazyState) else state
    log_w = np.asarray(state.log_weights, np.float64).reshape(-1)
    return state_points(state), np.exp(log_w[np.isfinite(log_w)])


def append_rows(params: FitParams, attributes: dict, X, y, sample_weight, kernel: Kernel,
                chunk_size: int) -> Fitted:  # fmt: skip
    """The fit of a fitted KDE's rows with the rows ``X`` (labels ``y``, weights
    ``sample_weight``) appended: the rules recomputed in float64 from all of them, in the fit's
    working dtype, so the result is the fit on every row (to the recovery of the fitted rows,
    see :func:`_rows_of`; rows of weight 0 are not kept). ``attributes`` are the estimator's
    fitted attributes: a fit in memory by ``fit`` or an earlier append. ``X=None`` appends
    nothing: the fitted rows refitted with ``params`` (``set_bandwidth``)."""
    totals = attributes.get("_weight_totals")
    state = attributes.get("_lazy_state", attributes.get("state_"))
    if totals is None or state is None:
        raise ValueError("partial_fit appends to a KDE fitted in memory by fit or partial_fit; "
                         "this one was streamed from a file, fitted across processes, derived "
                         "(marginal, conditional...) or loaded from jaxkde 0.1.0: fit it "
                         "again on all the rows.")  # fmt: skip
    if params.bounds is not None and params.boundary == "transform":
        raise ValueError("partial_fit is not available with boundary='transform' (the fitted "
                         "rows are kept transformed); fit again on all the rows.")  # fmt: skip
    classes = attributes.get("classes_")
    if X is None and classes is not None:  # a refit: every class's rows, no new ones
        y = classes[:0]
    if (classes is None) != (y is None):
        raise ValueError("y must be given to partial_fit exactly when the KDE was fitted with "
                         f"labels; it was fitted {'without' if classes is None else 'with'} "
                         "them.")  # fmt: skip
    states = (state,) if classes is None else state.states
    parts = [_rows_of(s) for s in states]
    d = parts[0][0].shape[1]
    if X is None:
        new, new_w = np.empty((0, d)), None
    else:
        new, _ = check_data(X, "X", n_features=d, owner="KDE")
        new_w = check_weights(sample_weight, new.shape[0])
    rows = np.concatenate([*(p[0] for p in parts), new])
    weights = None
    if attributes["_weighted"] or new_w is not None:
        old = [w * t for (_, w), t in zip(parts, totals, strict=True)]
        weights = np.concatenate([*old, np.ones(len(new)) if new_w is None else new_w])
    labels = None
    if classes is not None:
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != new.shape[0]:
            raise ValueError(f"y must have one label per row of X ({new.shape[0]}); got "
                             f"{y.shape[0]}.")  # fmt: skip
        old_labels = [np.repeat(classes[c : c + 1], len(p[0])) for c, p in enumerate(parts)]
        labels = np.concatenate([*old_labels, y])
    dtype = (state if classes is None else states[0]).dtype
    return fit_in_memory(params, rows, labels, weights, kernel, chunk_size, dtype=dtype)


def _fit_classes(job: _Job, y) -> Fitted:
    """One state per class, sharing compiled programs between classes of similar sizes."""
    data, weights = job.data, job.weights
    classes, codes = encode_labels(y, data.shape[0])
    totals = np.bincount(codes, weights=weights, minlength=len(classes))
    priors = class_priors(job.params.priors, classes, totals)
    counts = np.bincount(codes, minlength=len(classes))
    layouts = shared_row_counts(counts)
    fits = [_fit_one(job, np.flatnonzero(codes == c), label, layouts[c])
            for c, label in enumerate(classes.tolist())]  # fmt: skip
    states = tuple(f[0] for f in fits)
    with np.errstate(divide="ignore"):
        log_priors = jnp.asarray(np.log(priors), job.dtype)
    factors = None
    if any(f[4] is not None for f in fits):  # adaptive, or PointBandwidths
        factors = np.empty(data.shape[0])
        for c, f in enumerate(fits):
            factors[codes == c] = f[4]
    return Fitted(
        ClassConditionalState(states, log_priors), data.shape,
        np.stack([s.bandwidth_matrix() for s in states]),
        tuple(f[3] for f in fits), weighted_range(data, weights),
        sum(f[1] for f in fits), [f[2] for f in fits], factors,
        classes=classes, class_prior=priors, class_count=counts,
        weight_totals=totals.astype(np.float64), weighted=weights is not None,
    )  # fmt: skip


def fit_streamed(params: FitParams, X, sample_weight, y, kernel: Kernel,
                 chunk_size: int) -> Fitted:  # fmt: skip
    """The fit of a file-backed memmap ``X``: one streamed pass for the rules' statistics;
    the rows stay in the file (:mod:`jaxkde.scale.streaming`)."""
    if params.mesh is not None:
        raise ValueError("mesh is not supported yet for X streamed from a file (a "
                         "numpy.memmap); pass mesh=None.")  # fmt: skip
    spec = rule_or_explicit(params, kernel, y, "X streamed from a file (a numpy.memmap)")
    rows = streaming.row_file(X, "X")
    weights = check_weights(sample_weight, rows.shape[0])
    full = isinstance(spec, str) and spec.endswith("_full")
    stats = streaming.streamed_moments(rows, weights, full)
    matrix = moments_bandwidth(spec, stats, rows.read(0, 1))
    state = streaming.streamed_state(rows, weights, matrix, kernel, stats,
                                     chunk_size=chunk_size,
                                     dtype=working_dtype(X.dtype))  # fmt: skip
    return Fitted(state, rows.shape, state.bandwidth_matrix(), state.whitening,
                  (stats.low, stats.high), sorted=False)  # fmt: skip


def fit_global(params: FitParams, X, sample_weight, y, kernel: Kernel, chunk_size: int) -> Fitted:
    """The fit of a global ``X`` whose rows live in several processes
    (:mod:`jaxkde.scale.distributed`): rules from merged statistics, no row gathered."""
    if params.mesh is None:
        raise ValueError("X is a global jax.Array spread over processes: pass "
                         "KDE(mesh=...) with a mesh over its devices.")  # fmt: skip
    where = "X spread over processes"
    dtype = working_dtype(X.dtype)

    def learn_spec(spec):  # a learned H, on the rows where they lie; else spec itself
        if not (isinstance(spec, str) and spec in LEARNED):
            return spec, None
        kind, objective = LEARNED[spec]
        fit = learn(f"bandwidth={spec!r}", X, sample_weight, kind=kind, objective=objective,
                    kernel=kernel, mesh=params.mesh, dtype=dtype)  # fmt: skip
        return learned_spec(fit), fit

    return fit_across_processes(
        X, sample_weight, y, kernel=kernel, mesh=params.mesh, chunk_size=chunk_size,
        dtype=dtype, spec=lambda label: rule_or_explicit(params, kernel, y, where, label),
        learn=learn_spec, priors=functools.partial(class_priors, params.priors),
    )  # fmt: skip


def fit_mixture(params: FitParams, parts: MixtureParts, dtype) -> Fitted:
    """The fit of a derived KDE (marginal, conditional) to the mixture ``parts``: its centres
    as data with their weights, in its parent's ``dtype``, with the parent's adaptive
    factors per centre."""
    params = params._replace(bandwidth=parts.bandwidth, bandwidth_estimator=None,
                             univariate_bandwidth=None, priors=None, bounds=None,
                             adaptive=False)  # fmt: skip
    kernel, chunk_size = check_params(params, None)
    # Every centre is kept (weights below float64's range are 0), so mixtures of the same
    # size share array shapes and compiled programs, call after call. The float64 centres
    # go through the host preparation (centred in float64, then cast): far from the
    # origin, a cast first would lose them.
    w = np.exp(parts.log_weights - parts.log_weights.max())
    fitted = fit_in_memory(params, parts.centres, None, w, kernel, chunk_size, dtype)
    fitted.weight_totals = None  # its rows are a mixture's centres: nothing to append to
    if parts.log_factors is not None:  # the same adaptive factors, per centre
        state = build_state(parts.centres, w, fitted.bandwidth, kernel, chunk_size=chunk_size,
                            dtype=dtype, log_factors=parts.log_factors)  # fmt: skip
        fitted.whitening = host_whitening(state)
        fitted.state = state if params.mesh is None else shard_state(state, params.mesh)
        fitted.adaptive_factors = np.exp(parts.log_factors)
    return fitted


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
) -> Fitted:
    """The fit of a :class:`jaxkde.KDE` to the global ``X`` (rows in several processes);
    nothing is gathered.

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

    common = {"shape": (int(stats.counts.sum()), x.shape[1]),
              "data_range": (stats.low, stats.high), "sorted": False}  # fmt: skip
    if y is None:
        h, fit = learn(spec(None))
        state, local = place(x, w, moments_bandwidth(h, stats, x[:1]), stats=stats)
        return Fitted(state, bandwidth=local.bandwidth_matrix(), bandwidth_fit=fit,
                      whitening=host_whitening(local),
                      parts_weights=parts(stats, w, x.shape[0]), **common)  # fmt: skip
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
    return Fitted(
        ClassConditionalState(tuple(states), log_priors),
        bandwidth=np.stack([s.bandwidth_matrix() for s in locals_]),
        bandwidth_fit=[None] * len(classes),
        whitening=tuple(host_whitening(s) for s in locals_),
        classes=classes, class_prior=class_priors,
        class_count=np.array([int(m.counts.sum()) for m in per_class]),
        parts_weights=class_parts, **common,
    )  # fmt: skip
