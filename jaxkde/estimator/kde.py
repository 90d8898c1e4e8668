"""``KDE``: the thin stateful wrapper, compatible with KDE.py and scikit-learn conventions."""

from __future__ import annotations

import functools
import inspect
import numbers
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxkde._validation import (
    check_data,
    check_labels,
    check_positive_int,
    check_real,
    check_weights,
    not_fitted,
    working_dtype,
)
from jaxkde.bandwidth.choice import CV_RULES, LSCV_RULES
from jaxkde.bandwidth.learned import fit_bandwidth, fit_failure
from jaxkde.bandwidth.rules import RULES, moments_bandwidth, resolve_bandwidth
from jaxkde.bandwidth.selectors import SELECTORS
from jaxkde.core.engine import PRECISIONS, default_block_sizes, log_density, settled
from jaxkde.core.kernels import UnivariateGaussianKernel, get_kernel
from jaxkde.core.sampling import as_key, check_sample_size, sample_host, sampling_scales
from jaxkde.core.sharding import shard_state, sharded_log_density
from jaxkde.core.state import (
    KDEState,
    LazyState,
    build_state,
    host_whitening,
    shared_row_counts,
    unwhiten_host,
)
from jaxkde.core.sum_updating import (
    SUM_UPDATING_BLOCK,
    sort_data,
    sum_updating_log_density,
    supports_sum_updating,
)
from jaxkde.estimator.evaluation import bounded_grid
from jaxkde.estimator.fitting import fit_across_processes
from jaxkde.scale import distributed, streaming
from jaxkde.scale.streaming import StreamedState
from jaxkde.stats import geometry, marginals, probability
from jaxkde.stats.grid import GridDensity, default_axes, grid_log_density
from jaxkde.variants.adaptive import abramson_log_factors, check_alpha, pilot_log_density
from jaxkde.variants.bounds import (
    BOUNDARY_METHODS,
    Bounds,
    check_bounds,
    check_inside,
    fold,
    from_transformed,
    inside,
    log_jacobian,
    reflection_images,
    to_transformed,
)
from jaxkde.variants.classes import (
    ClassConditionalState,
    class_log_density,
    class_log_posterior,
    mixture_log_density,
    sample_classes_host,
)

__all__ = ["KDE", "KDEClassifier"]

#: Learned bandwidths: name -> (parameterisation, objective) of :func:`fit_bandwidth`.
_LEARNED = {
    **{name: (kind, "likelihood") for name, kind in CV_RULES.items()},
    **{name: (kind, "lscv") for name, kind in LSCV_RULES.items()},
}
_BANDWIDTH_NAMES = (*RULES, *SELECTORS, *_LEARNED)


def _learned_spec(fit) -> np.ndarray:
    """A learned ``H`` as a bandwidth argument: the matrix, or the per-feature deviations."""
    return fit.matrix if fit.matrix.ndim == 2 else np.sqrt(fit.matrix)


def _check_local(estimator, what: str) -> None:
    """Refuse ``what``, which reads the whole state on the host, for a KDE fitted across
    processes (:mod:`jaxkde.scale.distributed`), whose rows no single process holds, or streamed
    from a file (:mod:`jaxkde.scale.streaming`), whose rows stay on disk."""
    state = estimator.__dict__.get("state_")
    if isinstance(state, StreamedState):
        raise ValueError(f"{what} is not available for a KDE streamed from a file (X was a "
                         "numpy.memmap; its rows stay on disk): it offers score_samples, "
                         "predict, score and sample. Fit in memory on the rows you need "
                         "(np.asarray(X[rows])) for the rest.")  # fmt: skip
    if isinstance(state, KDEState) and distributed.is_global(state.points):
        raise ValueError(f"{what} is not available for a KDE fitted across processes (its rows "
                         "are in several processes); fit one process's KDE on the rows it "
                         "needs.")  # fmt: skip


def _weighted_range(data: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature minimum and maximum of the rows of positive weight (float64)."""
    rows = data if weights is None else data[weights > 0]
    if rows.shape[0] == 0:
        rows = data
    if rows.shape[1] > 8:
        return rows.min(axis=0), rows.max(axis=0)
    # Column by column: NumPy's axis-0 reductions crawl over narrow C-ordered arrays.
    columns = [rows[:, k] for k in range(rows.shape[1])]
    return np.array([c.min() for c in columns]), np.array([c.max() for c in columns])


def _query_block_rows(rows: int, block: int) -> int:
    """Padded size of a block of ``rows`` queries, from a small fixed set of shapes.

    Full blocks stay ``block``; a partial block is padded to the next multiple of ``block / 8``
    (waste below 1/8 of a block), or to a power of two >= 8 when it is smaller than that, so
    any number of queries compiles at most about ``8 + log2(block / 8)`` programs.
    """
    if rows >= block:
        return block
    step = max(8, block // 8)
    if rows > step:
        return min(block, step * -(-rows // step))
    return min(block, max(8, 1 << (rows - 1).bit_length()))


class _Params:
    """get_params / set_params / repr from the ``__init__`` signature (scikit-learn protocol)."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [name for name in sig.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Parameters of this estimator, as passed to ``__init__``."""
        del deep
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set parameters (validated at the next ``fit``); returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters: {valid}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            k: v.default for k, v in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = []
        for name, value in self.get_params().items():
            default = defaults[name]
            same = value is default or (
                isinstance(value, (str, numbers.Number))
                and type(value) is type(default)
                and value == default
            )
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    # --------------------------------------------------------------- scikit-learn protocol
    # scikit-learn is optional: it is imported here only when scikit-learn itself asks.
    _estimator_type: str | None = None

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        classifier = self._estimator_type == "classifier"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=classifier),
            transformer_tags=None,
            classifier_tags=ClassifierTags() if classifier else None,
            regressor_tags=None,
            input_tags=InputTags(),
        )

    def __sklearn_is_fitted__(self) -> bool:
        return any(name in self.__dict__ for name in ("state_", "_lazy_state", "kde_"))

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(cls._param_names())

    def __getattr__(self, name: str):
        # A fit's layout is built on first use (jaxkde.core.state.LazyState): ``state_`` then.
        lazy = self.__dict__.get("_lazy_state")
        if name == "state_" and lazy is not None:
            self.__dict__["state_"] = lazy.state
            del self.__dict__["_lazy_state"]
            return self.__dict__["state_"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict:
        # Devices do not pickle: the state is gathered to the host and the mesh dropped, so a
        # loaded model evaluates on one device.
        _check_local(self, "pickling")
        if "_lazy_state" in self.__dict__:
            self.state_  # noqa: B018 -- a pickle holds the laid-out state
        state = self.__dict__.copy()
        if "mesh" in state:
            state["mesh"] = state["_fit_mesh"] = None
        if "state_" in state:
            state["state_"] = jax.tree.map(np.asarray, state["state_"])
        if "_sorted" in state:  # a cache, rebuilt at the next call
            state["_sorted"] = None
        state.pop("_sampling_scales", None)  # a cache of device arrays, rebuilt likewise
        if state.get("_images") is not None:
            state["_images"] = tuple((jax.tree.map(np.asarray, s), w) for s, w in state["_images"])
        return state

    def __setstate__(self, state: dict) -> None:
        if "state_" in state:
            state["state_"] = jax.tree.map(jnp.asarray, state["state_"])
        if state.get("_images") is not None:
            state["_images"] = tuple((jax.tree.map(jnp.asarray, s), w) for s, w in state["_images"])
        self.__dict__.update(state)


#: The engine on one block of a block loop: its first pass dispatched, settled at the gather.
_deferred_log_density = functools.partial(log_density, defer=True)


def _encode_labels(y, n: int) -> tuple[np.ndarray, np.ndarray]:
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


def _fit_or_raise(where: str, *args, objective: str = "likelihood", **kwargs):
    """:func:`fit_bandwidth`; a ``ValueError`` that starts with ``where`` when it finds no
    bandwidth (its warning, which speaks of a returned start, withheld), its other warnings
    passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_bandwidth(*args, objective=objective, **kwargs)
    failure = fit_failure(fit.status, objective)
    if failure is not None:
        raise ValueError(f"{where}: {failure}")
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=4)
    return fit


class KDE(_Params):
    """Kernel density estimator on JAX, exact and stable in hundreds of dimensions.

    Parameters
    ----------
    kernel : str
        scikit-learn's ``"gaussian"``, ``"tophat"``, ``"epanechnikov"``, ``"exponential"``,
        ``"linear"``, ``"cosine"`` (normalised in d dimensions, with scalar, diagonal or full
        bandwidth; compact kernels give log density ``-inf`` outside their support), the seed's
        ``"multivariate_gaussian"`` (an alias of ``"gaussian"``) and ``"univariate_gaussian"``,
        the seed's extended univariate kernel ``1/(n h) sum phi(||x - x_i||_p / h)`` (not
        normalised for d > 1; see :class:`jaxkde.core.kernels.UnivariateGaussianKernel`).
    bandwidth : str, float, array of shape (d,) or (d, d), or dict, optional
        A rule name (``"scott"`` (default), ``"silverman"``, ``"scott_full"``,
        ``"silverman_full"``, ``"identity"``), a selector (``"silverman_robust"``, ``"isj"``,
        ``"sj"`` per feature, ``"plugin"`` full matrix up to 6 features; see
        :mod:`jaxkde.bandwidth.selectors`), a learned bandwidth (``"cv"``, ``"cv_diagonal"``,
        ``"cv_full"``: maximum leave-one-out likelihood; ``"lscv"``, ``"lscv_diagonal"``,
        ``"lscv_full"``: least-squares cross-validation, gaussian kernel; see
        :func:`jaxkde.fit_bandwidth`), the isotropic standard deviation ``h``, one standard
        deviation per feature, or the matrix ``H``. For ``"univariate_gaussian"``, the positive
        scalar ``h`` (default 1.0). When fitting with labels, a rule is applied within each
        class, and a dict maps each class label to its own bandwidth.
    priors : array-like of shape (n_classes,) or dict, optional
        Class priors when fitting with labels (in the order of ``classes_``, or by label);
        default: each class's share of the (weighted) rows.
    bandwidth_estimator : str, optional
        The seed's spelling of a rule name; give this or ``bandwidth``, not both.
    univariate_bandwidth : float, optional
        The seed's spelling of ``h`` for ``kernel="univariate_gaussian"``.
    p : {1, 2, inf}
        Norm of the univariate kernel (default 2).
    zero_variance : {"floor", "subspace"}
        Handling of constant features under a data rule (see
        :func:`jaxkde.resolve_bandwidth`); ``"floor"`` by default, with a warning.
    variance_floor : float
        Relative variance below which a feature counts as constant (default 1e-6).
    batch_size : int, optional
        Queries evaluated together; memory is ``O(batch_size * chunk_size)``. Default by the
        backend of the data's devices (:func:`jaxkde.default_block_sizes`): 1024 on CPU, 4096
        on GPU.
    chunk_size : int, optional
        Data points reduced per step; default 4096 on CPU, 16384 on GPU.
    precision : {"highest", "high", "default"}
        Matrix-product precision of the distances; ``"highest"`` is true float32 on GPUs too.
    mesh : jax.sharding.Mesh, optional
        Shard the data over the mesh's first axis: each device reduces its own chunks and the
        partial sums are combined exactly (see :mod:`jaxkde.core.sharding`); with labels, every
        class's data is sharded so. Learned bandwidths (``"cv"``...) are fitted on the sharded
        data too, and sampling draws from the sharded state.
    bounds : sequence of (lo, hi) pairs, optional
        One pair per feature (``None`` for an open end); see :mod:`jaxkde.variants.bounds`.
    boundary : {"reflect", "transform"}
        How bounds are honoured: reflection at the bounds, or a log / logit transform.
    adaptive : bool
        Abramson's sample-point estimator (:mod:`jaxkde.variants.adaptive`): centre ``i`` gets the
        bandwidth ``lambda_i^2 H``, ``lambda_i = (f_pilot(x_i) / g)^(-alpha)`` from the fixed
        KDE with ``H`` as pilot. A likelihood-learned ``H`` (``"cv"``...) is learned again
        with the factors held fixed. Not for ``"univariate_gaussian"`` or ``"lscv"``.
    alpha : float in [0, 1]
        Sensitivity of the adaptive factors (default 1/2, Abramson's law).
    out_of_core : bool, optional
        For ``X`` a :class:`numpy.memmap` over a file: ``True`` leaves the rows in the file and
        streams them to the device block by block at every pass (:mod:`jaxkde.scale.streaming`; it
        offers ``score_samples``, ``predict``, ``score`` and ``sample``), ``False`` reads them
        into memory as any array. ``None`` (default) streams only a memmap whose in-memory fit
        would need more than half of this machine's memory (about ``32 n d`` bytes), so small
        memmaps (joblib's, in scikit-learn's parallel model selection) fit as arrays.

    Attributes
    ----------
    state_ : KDEState
        The fitted state, for the pure functions :func:`jaxkde.log_density` and
        :func:`jaxkde.sample`.
    bandwidth_ : np.ndarray, shape (n_features_in_, n_features_in_)
        The bandwidth matrix ``H`` in the data's coordinates.
    n_features_in_ : int
    n_samples_fit_ : int
    n_degenerate_features_ : int
        Constant features floored or removed by the rule (0 for user bandwidths); summed over
        classes when fitted with labels.
    classes_ : np.ndarray, shape (n_classes,)
        The labels, when fitted with ``y`` (then ``state_`` is a
        :class:`jaxkde.ClassConditionalState` and ``bandwidth_`` has shape
        ``(n_classes, d, d)``).
    class_prior_ : np.ndarray, shape (n_classes,)
    bandwidth_fit_ : BandwidthFit or None
        With a learned bandwidth (``"cv"``, ``"lscv"``...): the cross-validation fit,
        with the trace of its objective (a list, one per class, when fitted with labels).
    adaptive_factors_ : np.ndarray of shape (n_samples_fit_,), or None
        With ``adaptive=True``, each training row's ``lambda_i`` (float64; with labels, in the
        rows' order, each from its class's pilot); ``None`` otherwise.

    Examples
    --------
    >>> import numpy as np, jaxkde
    >>> X = np.random.default_rng(0).normal(size=(500, 3))
    >>> kde = jaxkde.KDE(bandwidth="scott").fit(X)
    >>> kde.score_samples(X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        kernel: str = "gaussian",
        bandwidth=None,
        *,
        priors=None,
        bandwidth_estimator: str | None = None,
        univariate_bandwidth: float | None = None,
        p: float | str = 2,
        zero_variance: str = "floor",
        variance_floor: float = 1e-6,
        batch_size: int | None = None,
        chunk_size: int | None = None,
        precision: str = "highest",
        mesh=None,
        bounds=None,
        boundary: str = "reflect",
        adaptive: bool = False,
        alpha: float = 0.5,
        out_of_core: bool | None = None,
    ):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.priors = priors
        self.mesh = mesh
        self.bounds = bounds
        self.boundary = boundary
        self.adaptive = adaptive
        self.alpha = alpha
        self.out_of_core = out_of_core
        self.bandwidth_estimator = bandwidth_estimator
        self.univariate_bandwidth = univariate_bandwidth
        self.p = p
        self.zero_variance = zero_variance
        self.variance_floor = variance_floor
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.precision = precision

    # ------------------------------------------------------------------------------ fitting
    def _bandwidth_spec(self, kernel, label=None):
        given = {
            name: getattr(self, name)
            for name in ("bandwidth", "bandwidth_estimator", "univariate_bandwidth")
            if getattr(self, name) is not None
        }
        if len(given) > 1:
            raise ValueError(
                "give one of bandwidth, bandwidth_estimator, univariate_bandwidth; "
                f"got {sorted(given)}."
            )
        name, value = next(iter(given.items())) if given else (None, None)
        if isinstance(value, dict):
            if label is None:
                raise ValueError(
                    f"{name} is a dict of per-class bandwidths; fit with labels y to use it."
                )
            if label not in value:
                raise ValueError(f"{name} has no entry for class {label!r}.")
            value = value[label]
        if isinstance(kernel, UnivariateGaussianKernel):
            if value is None:
                return 1.0
            if name == "bandwidth_estimator" or isinstance(value, str) or np.ndim(value) != 0:
                raise ValueError(
                    f"kernel='univariate_gaussian' takes a positive scalar bandwidth h; got "
                    f"{name}={value!r}."
                )
            return value
        if name == "univariate_bandwidth":
            raise ValueError(
                "univariate_bandwidth applies to kernel='univariate_gaussian' only; for kernel "
                f"{self.kernel!r} pass bandwidth={value!r} (the isotropic standard deviation)."
            )
        if name == "bandwidth_estimator" and (
            not isinstance(value, str) or value not in _BANDWIDTH_NAMES
        ):
            raise ValueError(
                f"bandwidth_estimator must be one of {list(_BANDWIDTH_NAMES)}; got {value!r}."
            )
        return "scott" if value is None else value

    def fit(self, X, y=None, sample_weight=None) -> KDE:
        """Fit the KDE to ``X`` of shape ``(n_samples, n_features)``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Finite data; integer (e.g. uint8 pixel) input is converted to float. Centring,
            rules and whitening are computed in float64 on the host, then cast to the working
            dtype (float32, or float64 for float64 input under x64).
        y : array-like of shape (n_samples,) or (n_samples, 1), optional
            Class labels of any hashable type (not NaN). With labels, one KDE is fitted per
            class (rules applied within each class) for :meth:`class_log_density` and class
            sampling; :meth:`score_samples` is then the prior-weighted mixture of the classes.
        sample_weight : array-like, shape (n_samples,), optional
            Non-negative weights, not all zero. A class whose rows all weigh 0 gets prior 0.

        Returns
        -------
        self
        """
        kernel = get_kernel(self.kernel, self.p)
        default_chunk = self._default_block_sizes()[1]
        chunk_size = check_positive_int(
            default_chunk if self.chunk_size is None else self.chunk_size, "chunk_size"
        )
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {list(PRECISIONS)}; got {self.precision!r}."
            )
        if self.mesh is not None and not isinstance(self.mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh or None; got {self.mesh!r}.")
        if y is None and self.priors is not None:
            raise ValueError("priors needs class labels: fit(X, y) with y, or priors=None.")
        if distributed.is_global(X) or distributed.is_global(sample_weight):
            return self._fit_global(X, sample_weight, y, kernel, chunk_size)
        if streaming.should_stream(X, self.out_of_core):
            return self._fit_streamed(X, sample_weight, y, kernel, chunk_size)
        data, dtype = check_data(X, "X")
        # A derived KDE (marginal, conditional) is fitted to float64 centres in its parent's dtype.
        dtype = self.__dict__.pop("_derived_dtype", dtype)
        weights = check_weights(sample_weight, data.shape[0])
        self._check_adaptive(kernel)
        bounds = self._check_bounds(data, y)
        if bounds is not None and self.boundary == "transform":
            data = to_transformed(data, bounds)  # the KDE lives in z = log / logit of x

        def fit_one(rows, label=None, n_rows=None, lazy_extent=None):
            spec = self._bandwidth_spec(kernel, label)
            x = data if rows is None else data[rows]
            w = None if weights is None else (weights if rows is None else weights[rows])
            empty = w is not None and not np.any(w > 0)  # a class of zero total weight
            rule_w = None if empty else w
            fit = None
            learned = _LEARNED.get(spec) if isinstance(spec, str) else None
            if isinstance(spec, str) and spec in _LEARNED:
                if empty:
                    spec = "scott"
                else:
                    kind, objective = _LEARNED[spec]
                    where = "" if label is None else f" (class {label!r})"
                    fit = _fit_or_raise(f"bandwidth={spec!r}{where}", x, w, kind=kind,
                                        objective=objective, kernel=kernel, mesh=self.mesh,
                                        dtype=dtype)  # fmt: skip
                    spec = _learned_spec(fit)
            resolve = functools.partial(resolve_bandwidth, x, rule_w,
                                        zero_variance=self.zero_variance,
                                        variance_floor=self.variance_floor)  # fmt: skip
            build = functools.partial(build_state, x, w, kernel=kernel, chunk_size=chunk_size,
                                      dtype=dtype, n_rows=n_rows)  # fmt: skip
            factors = np.ones(x.shape[0]) if self.adaptive else None
            try:
                choice = resolve(spec)
                if lazy_extent is not None:  # the layout waits for its first use
                    state = LazyState(
                        x if x is not X else x.copy(),  # X may change after fit
                        w,
                        choice.matrix,
                        kernel,
                        basis=choice.basis,
                        chunk_size=chunk_size,
                        dtype=dtype,
                        extent=lazy_extent,
                    )
                    return state, choice.n_degenerate, fit, state.whitening, factors
                state = build(bandwidth=choice.matrix, basis=choice.basis)
                if self.adaptive and not empty:  # the fixed state is the pilot
                    log_factors, fit = self._adapt(x, w, state, fit, learned, bounds, chunk_size)
                    if learned is not None:
                        choice = resolve(_learned_spec(fit))
                    state = build(bandwidth=choice.matrix, basis=choice.basis,
                                  log_factors=log_factors)  # fmt: skip
                    factors = np.exp(log_factors)
            except ValueError as exc:
                if label is None:
                    raise
                raise ValueError(f"class {label!r}: {exc}") from None
            whitening = host_whitening(state)
            if self.mesh is not None:
                state = shard_state(state, self.mesh)
            return state, choice.n_degenerate, fit, whitening, factors

        if y is None:
            data_range = _weighted_range(data, weights)
            lazy = not self.adaptive and bounds is None and self.mesh is None
            extent = None
            if lazy:  # the range of every row: the weighted one when all rows count
                extent = data_range if weights is None else (data.min(0), data.max(0))
            state, n_degenerate, fit, whitening, factors = fit_one(None, lazy_extent=extent)
            fitted = {
                "adaptive_factors_": factors,
                "bandwidth_": state.bandwidth_matrix(),
                "bandwidth_fit_": fit,
                "_whitening": whitening,
                "_data_range": data_range,
                "_sorted": None,
                "_bounds": bounds,
                "_images": None,
            }
            if isinstance(state, LazyState) and not state.built:
                fitted["_lazy_state"] = state
            else:
                fitted["state_"] = state.state if isinstance(state, LazyState) else state
            if bounds is not None and self.boundary == "reflect":
                fitted["_images"] = self._reflected_states(data, weights, state, bounds,
                                                           chunk_size, dtype)  # fmt: skip
        else:
            classes, codes = _encode_labels(y, data.shape[0])
            totals = np.bincount(codes, weights=weights, minlength=len(classes))
            priors = self._class_priors(classes, totals)
            counts = np.bincount(codes, minlength=len(classes))
            # Classes of similar sizes share a layout, so one compiled program serves them.
            layouts = shared_row_counts(counts)
            fits = [
                fit_one(np.flatnonzero(codes == c), label, layouts[c])
                for c, label in enumerate(classes.tolist())
            ]
            states = tuple(f[0] for f in fits)
            n_degenerate = sum(f[1] for f in fits)
            with np.errstate(divide="ignore"):
                log_priors = jnp.asarray(np.log(priors), dtype)
            factors = None
            if self.adaptive:
                factors = np.empty(data.shape[0])
                for c, f in enumerate(fits):
                    factors[codes == c] = f[4]
            fitted = {
                "adaptive_factors_": factors,
                "state_": ClassConditionalState(states, log_priors),
                "bandwidth_": np.stack([s.bandwidth_matrix() for s in states]),
                "classes_": classes,
                "class_prior_": priors,
                "class_count_": counts,
                "bandwidth_fit_": [f[2] for f in fits],
                "_whitening": tuple(f[3] for f in fits),
                "_data_range": _weighted_range(data, weights),
                "_sorted": None,
                "_bounds": None,
                "_images": None,
            }
        return self._store_fit(fitted, data.shape, n_degenerate)

    def _store_fit(self, fitted: dict, shape: tuple[int, int], n_degenerate: int) -> KDE:
        """Replace the fitted attributes by ``fitted`` (labels' attributes dropped unless
        given) and the counts of data ``shape``."""
        for name in (
            "state_",
            "_lazy_state",
            "classes_",
            "class_prior_",
            "class_count_",
            "_parts_weights",
            "_sampling_scales",
        ):
            self.__dict__.pop(name, None)
        self.__dict__.update(fitted)
        self._fit_mesh = self.mesh
        self.n_samples_fit_, self.n_features_in_ = shape
        self.n_degenerate_features_ = n_degenerate
        return self

    def _rule_or_explicit(self, kernel, y, where: str, label=None):
        """The bandwidth spec of a fit whose rows are in parts (processes, or blocks of a
        file): a rule or an explicit ``H``; what needs all rows at once is refused."""
        spec = self._bandwidth_spec(kernel, label)
        streamed = where.startswith("X streamed")
        names = RULES if streamed or y is not None else (*RULES, *_LEARNED)
        unsupported = {
            "y (class labels)": y is not None and streamed,
            "adaptive=True": bool(self.adaptive),
            "bounds": self.bounds is not None,
            f"bandwidth={spec!r} (only {sorted(names)} or an explicit H)": (
                isinstance(spec, str) and spec not in names),
            "kernel='univariate_gaussian'": isinstance(kernel, UnivariateGaussianKernel),
        }  # fmt: skip
        for what, bad in unsupported.items():
            if bad:
                raise ValueError(f"{what} is not supported yet for {where}.")
        return spec

    def _fit_global(self, X, sample_weight, y, kernel, chunk_size):
        """``fit`` of a global ``X`` whose rows live in several processes
        (:mod:`jaxkde.scale.distributed`): rules from merged statistics, no row gathered."""
        if self.mesh is None:
            raise ValueError("X is a global jax.Array spread over processes: pass "
                             "KDE(mesh=...) with a mesh over its devices.")  # fmt: skip
        where = "X spread over processes"
        dtype = working_dtype(X.dtype)

        def learn(spec):  # a learned H, on the rows where they lie; else spec itself
            if not (isinstance(spec, str) and spec in _LEARNED):
                return spec, None
            kind, objective = _LEARNED[spec]
            fit = _fit_or_raise(f"bandwidth={spec!r}", X, sample_weight, kind=kind,
                                objective=objective, kernel=kernel, mesh=self.mesh,
                                dtype=dtype)  # fmt: skip
            return _learned_spec(fit), fit

        fitted, shape = fit_across_processes(
            X, sample_weight, y, kernel=kernel, mesh=self.mesh, chunk_size=chunk_size,
            dtype=dtype, spec=lambda label: self._rule_or_explicit(kernel, y, where, label),
            learn=learn, priors=self._class_priors,
        )  # fmt: skip
        return self._store_fit(fitted, shape, 0)

    def _fit_streamed(self, X, sample_weight, y, kernel, chunk_size):
        """``fit`` of a file-backed memmap ``X``: one streamed pass for the rules' statistics;
        the rows stay in the file (:mod:`jaxkde.scale.streaming`)."""
        if self.mesh is not None:
            raise ValueError("mesh is not supported yet for X streamed from a file (a "
                             "numpy.memmap); pass mesh=None.")  # fmt: skip
        spec = self._rule_or_explicit(kernel, y, "X streamed from a file (a numpy.memmap)")
        rows = streaming.row_file(X, "X")
        weights = check_weights(sample_weight, rows.shape[0])
        full = isinstance(spec, str) and spec.endswith("_full")
        stats = streaming.streamed_moments(rows, weights, full)
        matrix = moments_bandwidth(spec, stats, rows.read(0, 1))
        state = streaming.streamed_state(rows, weights, matrix, kernel, stats,
                                         chunk_size=chunk_size,
                                         dtype=working_dtype(X.dtype))  # fmt: skip
        fitted = {
            "adaptive_factors_": None, "state_": state, "bandwidth_": state.bandwidth_matrix(),
            "bandwidth_fit_": None, "_whitening": state.whitening,
            "_data_range": (stats.low, stats.high), "_sorted": False, "_bounds": None,
            "_images": None,
        }  # fmt: skip
        return self._store_fit(fitted, rows.shape, 0)

    def _default_block_sizes(self) -> tuple[int, int]:
        """Backend defaults for the devices of the fitted state (of ``mesh`` before a fit)."""
        mesh = self.__dict__.get("_fit_mesh", self.mesh)
        platform = mesh.devices.flat[0].platform if isinstance(mesh, Mesh) else None
        return default_block_sizes(platform)

    def _check_adaptive(self, kernel) -> None:
        if not isinstance(self.adaptive, (bool, np.bool_)):
            raise TypeError(f"adaptive must be True or False; got {self.adaptive!r}.")
        check_alpha(self.alpha)
        if not self.adaptive:
            return
        if isinstance(kernel, UnivariateGaussianKernel):
            raise ValueError(
                "adaptive=True needs a normalised kernel; kernel='univariate_gaussian' is not one "
                "(use kernel='gaussian')."
            )
        names = [self.bandwidth, self.bandwidth_estimator]
        if any(isinstance(b, str) and _LEARNED.get(b, ("", ""))[1] == "lscv" for b in names):
            raise ValueError(
                "adaptive=True learns H by likelihood with the factors held fixed; bandwidth="
                f"{self.bandwidth or self.bandwidth_estimator!r} (LSCV) has no closed form for "
                "adaptive kernels: use 'cv', 'cv_diagonal' or 'cv_full'."
            )

    def _adapt(self, x, w, state, fit, learned, bounds, chunk_size):
        """Abramson's ``log lambda_i`` from the fixed ``state`` as pilot (with its reflection
        images under bounds), and the learned fit redone with them held fixed."""
        parts = [(state, host_whitening(state))]
        if bounds is not None and self.boundary == "reflect":  # the pilot honours the bounds
            parts += list(self._reflected_states(x, w, state, bounds, chunk_size, state.dtype,
                                                 shard=False))  # fmt: skip
        block = self.batch_size or self._default_block_sizes()[0]
        log_pilot = pilot_log_density(parts, x, block_size=block, precision=self.precision)
        log_factors = abramson_log_factors(log_pilot, w, self.alpha)
        if learned is not None:  # the global H again, the factors held fixed
            fit = _fit_or_raise("adaptive=True", x, w, kind=learned[0], kernel=state.kernel,
                                mesh=self.mesh, dtype=state.dtype, init=fit.matrix,
                                log_factors=log_factors)  # fmt: skip
        return log_factors, fit

    def _check_bounds(self, data: np.ndarray, y) -> Bounds | None:
        """Validated bounds (``None`` without), the data checked against them."""
        if not isinstance(self.boundary, str) or self.boundary not in BOUNDARY_METHODS:
            raise ValueError(
                f"boundary must be one of {list(BOUNDARY_METHODS)}; got {self.boundary!r}."
            )
        if self.bounds is None:
            return None
        if y is not None:
            raise ValueError("bounds are not supported with class labels yet; fit without y.")
        if isinstance(get_kernel(self.kernel, self.p), UnivariateGaussianKernel):
            raise ValueError(
                "bounds need a normalised kernel; kernel='univariate_gaussian' is not one."
            )
        bounds = check_bounds(self.bounds, data.shape[1])
        check_inside(data, bounds, "X", strict=self.boundary == "transform")
        return bounds

    def _reflected_states(self, data, weights, state, bounds, chunk_size, dtype, shard=True):
        """The image states of reflection (the identity excluded), with their whitenings."""
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
            if self.mesh is not None and shard:
                image = shard_state(image, self.mesh)
            out.append((image, whitening))
        return tuple(out)

    def _class_priors(self, classes: np.ndarray, totals: np.ndarray) -> np.ndarray:
        empty = totals <= 0
        if self.priors is None:
            return totals / totals.sum()
        if isinstance(self.priors, dict):
            missing = [c for c in classes.tolist() if c not in self.priors]
            if missing:
                raise ValueError(f"priors has no entry for classes {missing}.")
            values = [self.priors[c] for c in classes.tolist()]
        else:
            values = self.priors
        try:
            priors = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"priors must be numbers, one per class; got {self.priors!r}."
            ) from None
        if priors.shape != classes.shape:
            raise ValueError(
                f"priors must have one entry per class, shape {classes.shape}; got {priors.shape}."
            )
        if not np.all(np.isfinite(priors)) or np.any(priors < 0) or abs(priors.sum() - 1) > 1e-6:
            raise ValueError(f"priors must be non-negative and sum to 1; got {priors.tolist()}.")
        if np.any(empty & (priors > 0)):
            bad = classes[np.flatnonzero(empty & (priors > 0))[0]]
            raise ValueError(
                f"class {bad!r} has zero total sample_weight, so its prior must be 0; "
                f"priors gives it {priors[np.flatnonzero(empty & (priors > 0))[0]]!r}."
            )
        return priors / priors.sum()

    def _check_fitted(
        self, streamed: bool = False, what: str | None = None
    ) -> KDEState | ClassConditionalState:
        """The fitted state; a streamed one (:mod:`jaxkde.scale.streaming`) only where ``streamed``
        (refused otherwise, naming ``what``: default the calling method)."""
        if "state_" not in self.__dict__ and "_lazy_state" not in self.__dict__:
            raise not_fitted(
                f"This {type(self).__name__} is not fitted yet; call fit before using it."
            )
        if not streamed and isinstance(self.state_, StreamedState):
            _check_local(self, what or sys._getframe(1).f_code.co_name)
        return self.state_

    def _evaluate(
        self, fn, X, batch_size: int | None, owner: str = "KDE", default_block: int | None = None,
        *, state=None, whitening=None,
    ) -> np.ndarray:  # fmt: skip
        """Apply ``fn(state, block, precision=..., [mesh=...], whitening(s)=...)`` to ``X`` by
        blocks (``batch_size``, else the constructor's, else ``default_block``, else the
        engine's query block): each block is whitened in float64 on the host, then evaluated by
        one compiled program per block shape, reused by every later call."""
        fitted = self._check_fitted()
        if state is None:
            state, whitening = fitted, self.__dict__.get("_whitening")
        kwargs = {"precision": self.precision}
        mesh = self.__dict__.get("_fit_mesh")
        if mesh is not None:
            kwargs["mesh"] = mesh
        per_class = isinstance(state, ClassConditionalState)
        kwargs["whitenings" if per_class else "whitening"] = whitening
        if batch_size is None:
            batch_size = self.batch_size
        if batch_size is None:
            batch_size = default_block or self._default_block_sizes()[0]
        block = check_positive_int(batch_size, "batch_size")
        queries, _ = check_data(X, "X", n_features=self.n_features_in_, owner=owner)
        out = []
        for start in range(0, queries.shape[0], block):
            chunk = queries[start : start + block]
            rows = chunk.shape[0]
            padded = _query_block_rows(rows, block)
            if padded != rows:  # padded with copies of the first row: a real, harmless query
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], padded - rows, axis=0)])
            out.append((fn(state, chunk, **kwargs), rows))
        # Blocks were dispatched asynchronously (first passes deferred: settled only now, so
        # the device never waits for the host between blocks); slicing on the host adds no
        # compiled programs.
        return np.concatenate([np.asarray(settled(block_out))[:rows] for block_out, rows in out])

    def score_samples(self, X, batch_size: int | None = None) -> np.ndarray:
        """Log density at each row of ``X``, shape ``(n_queries,)``, in the working dtype.

        Fitted with labels, this is the density of the prior-weighted mixture of the classes.
        Within ``1e-5 * s(q)`` of the exact value in float32 (``1e-10`` in float64), where
        ``s(q) = max(|log f(q)|, |largest log term|, 1)`` (see :mod:`jaxkde.core.engine`).
        1-D data with the tophat, epanechnikov, linear, cosine or exponential kernel (no labels,
        no mesh) are summed exactly by sum updating (:mod:`jaxkde.core.sum_updating`), in
        ``O((n + m) log n)``; the data are sorted at the first call after a fit. Its error
        bound differs near the edge of a compact kernel's support: a few tens of eps of the
        window's weight, absolute in kernel units (see that module).
        """
        state = self._check_fitted(streamed=True)
        if distributed.is_global(X):  # queries sharded over processes: scored by all, kept by own
            queries, mine = distributed.gather_rows(X)
            return distributed.like_rows(self.score_samples(queries, batch_size)[mine], X)
        if isinstance(state, StreamedState):
            queries, _ = check_data(X, "X", n_features=self.n_features_in_, owner="KDE")
            return streaming.streamed_log_density(
                state, queries, block_size=batch_size or self.batch_size,
                precision=self.precision)  # fmt: skip
        if self.__dict__.get("_bounds") is not None:
            return self._bounded_score(X, batch_size)
        if hasattr(self, "classes_"):
            fn = mixture_log_density
        elif self.__dict__.get("_fit_mesh") is not None:
            fn = sharded_log_density
        else:
            if self.__dict__.get("_sorted") is None:  # decided once per fit (False: engine)
                self._sorted = supports_sum_updating(state) and sort_data(state)
            if self._sorted is not False:
                fn = functools.partial(sum_updating_log_density, self._sorted)
                return self._evaluate(fn, X, batch_size, default_block=SUM_UPDATING_BLOCK)
            fn = _deferred_log_density
        return self._evaluate(fn, X, batch_size)

    def _bounded_score(self, X, batch_size):
        """Log density with bounds: -inf outside; the images' sum (reflection) or the
        transformed density plus its log Jacobian (transform)."""
        bounds = self._bounds
        fn = (_deferred_log_density if self.__dict__.get("_fit_mesh") is None
              else sharded_log_density)  # fmt: skip
        queries, _ = check_data(X, "X", n_features=self.n_features_in_, owner="KDE")
        transform = self._images is None
        keep = inside(queries, bounds, strict=transform)
        out = np.full(queries.shape[0], -np.inf)
        if keep.any():
            x = queries[keep]
            if transform:
                z = to_transformed(x, bounds)
                out[keep] = self._evaluate(fn, z, batch_size) + log_jacobian(x, bounds)
            else:
                parts = [self._evaluate(fn, x, batch_size)]
                parts += [self._evaluate(fn, x, batch_size, state=s, whitening=w)
                          for s, w in self._images]  # fmt: skip
                out[keep] = np.logaddexp.reduce(np.stack(parts).astype(np.float64), axis=0)
        return out.astype(self.state_.dtype)

    def score_grid(
        self, grid_size=1024, *, axes=None, cut: float = 3.0, method: str = "auto"
    ) -> GridDensity:
        """Log density on a rectilinear grid: ``axes, log_density = kde.score_grid()``.

        Parameters
        ----------
        grid_size : int or sequence of int
            Points per axis when ``axes`` is None (at least 2).
        axes : sequence of d increasing 1-D arrays, optional
            The grid's coordinates; default: the data's range extended by ``cut`` kernel
            standard deviations on each side, ``grid_size`` points per axis.
        cut : float
            See ``axes``.
        method : {"auto", "binned", "exact"}
            See :mod:`jaxkde.stats.grid`; the result's ``method`` says what ran.

        Returns
        -------
        GridDensity
            ``axes`` and ``log_density`` of shape ``(len(axes[0]), ..., len(axes[-1]))``
            (float64 host arrays); fitted with labels, the prior-weighted mixture.
        """
        _check_local(self, "score_grid")
        # The binned method reads the data themselves: a lazy fit's layout waits.
        state = self.__dict__.get("_lazy_state") or self._check_fitted()
        if axes is None:
            data_range = self.__dict__.get("_data_range")
            if self.__dict__.get("_bounds") is not None:
                return bounded_grid(self, grid_size, cut, method)
            axes = default_axes(state, grid_size, cut, data_range=data_range)
        if self.__dict__.get("_bounds") is not None:
            return bounded_grid(self, None, cut, method, axes=axes)
        return grid_log_density(state, axes, method)

    def class_log_density(self, X, batch_size: int | None = None) -> np.ndarray:
        """Log density of each row of ``X`` under each class's KDE, ``(n_queries, n_classes)``.

        Columns follow ``classes_``; all classes are evaluated in one pass over the data.
        """
        if not hasattr(self, "classes_"):
            self._check_fitted()
            raise not_fitted("class_log_density needs a KDE fitted with labels: fit(X, y).")
        return self._evaluate(class_log_density, X, batch_size)

    def predict(self, X, batch_size: int | None = None) -> np.ndarray:
        """Density at each row of ``X`` (``exp`` of :meth:`score_samples`), shape ``(n_queries,)``.

        Computed in log space and exponentiated in float64 only here, so a density is returned
        whenever float64 can represent it (about ``exp(-745)`` to ``exp(709)``); outside that
        range it is 0 or inf. In hundreds of dimensions prefer :meth:`score_samples`.
        """
        if distributed.is_global(X):
            queries, mine = distributed.gather_rows(X)
            return distributed.like_rows(self.predict(queries, batch_size)[mine], X)
        log_dens = self.score_samples(X, batch_size=batch_size).astype(np.float64)
        with np.errstate(over="ignore"):  # densities beyond float64's range are inf, by design
            return np.exp(log_dens)

    def predict_proba(self, X, batch_size: int | None = None) -> np.ndarray:
        """The seed's name for :meth:`predict`: densities, shape ``(n_queries,)``."""
        return self.predict(X, batch_size=batch_size)

    def score(self, X, y=None, sample_weight=None) -> float:
        """Total log-likelihood of ``X`` under the model (the sum of :meth:`score_samples`,
        weighted by ``sample_weight`` when given); ``-inf`` if a row has density 0."""
        del y
        if distributed.is_global(X):
            X = distributed.gather_rows(X)[0]
        log_dens = self.score_samples(X).astype(np.float64)
        w = check_weights(sample_weight, log_dens.shape[0])
        if w is None:
            return float(np.sum(log_dens))
        return float(np.sum(np.where(w > 0, w * log_dens, 0.0)))

    # ------------------------------------------------------------------------ probabilities
    def _over_classes(self, fn, what: str) -> np.ndarray:
        """``fn(state)`` for an unlabelled fit; the prior-weighted mixture over classes."""
        state = self._check_fitted(what=what)
        if self.__dict__.get("_bounds") is not None:
            raise ValueError(f"{what} is not available for a KDE fitted with bounds yet.")
        if not isinstance(state, ClassConditionalState):
            return fn(state)
        priors = np.asarray(state.log_priors, np.float64)
        parts = [p + fn(s) for s, p in zip(state.states, priors, strict=True) if p > -np.inf]
        return np.logaddexp.reduce(np.stack(parts), axis=0)

    def log_cdf(self, X) -> np.ndarray:
        """``log P(X_1 <= x_1, ..., X_d <= x_d)`` at each row of ``X``, float64 ``(n_queries,)``.

        Every kernel in 1-D; the Gaussian with a diagonal ``H`` in any dimension (exact, in log
        space, so tail probabilities of 1e-30 keep their digits), with a full one by Genz's
        separation of variables in log space (within 1e-7 nats in 2-D and 3-D, tails
        included; see :mod:`jaxkde.stats.probability` for more dimensions).
        """
        return self._over_classes(lambda s: probability.log_cdf(s, X), "log_cdf")

    def cdf(self, X) -> np.ndarray:
        """``P(X_1 <= x_1, ..., X_d <= x_d)`` at each row of ``X`` (``exp`` of :meth:`log_cdf`)."""
        return np.exp(self.log_cdf(X))

    def integrate_box(self, low, high):
        """Probability of the box ``low <= x <= high`` (one box ``(d,)`` gives a float, boxes
        ``(m, d)`` an array); bounds may be infinite, ``low > high`` is an error. Coverage
        as :meth:`log_cdf`."""
        one = np.ndim(low) == 1 and np.ndim(high) == 1
        out = np.exp(self._over_classes(
            lambda s: probability.log_box_probability(s, low, high), "integrate_box"))  # fmt: skip
        return float(out[0]) if one else out

    def quantile(self, probs) -> np.ndarray:
        """The ``p``-quantiles of a 1-D KDE, shape of ``probs`` (to about 1e-6 in ``p`` in
        float32, the float32 CDF's own error; see :func:`jaxkde.stats.probability.quantile`)."""
        state = self._check_fitted()
        if isinstance(state, ClassConditionalState) or self.__dict__.get("_bounds") is not None:
            raise ValueError("quantile is available for an unlabelled, unbounded 1-D KDE.")
        return probability.quantile(state, probs)

    def density_levels(self, probs=(0.25, 0.5, 0.75, 0.95), n_samples: int = 100_000,
                       key=0) -> probability.DensityLevels:  # fmt: skip
        """Density thresholds whose superlevel sets hold the masses ``probs`` (contour levels
        for plots; HDR): from the densities of ``n_samples`` draws from the KDE, whose
        ``stderr`` (``sqrt(p (1 - p) / n)``) is the error in mass to expect."""
        draws = self.sample(check_positive_int(n_samples, "n_samples"), key=key)
        return probability.density_levels(self.score_samples(draws), probs)

    # ----------------------------------------------------------------------------- geometry
    def score_function(self, X, batch_size: int | None = None) -> np.ndarray:
        """``grad log f`` at each row of ``X``, float64 ``(n_queries, n_features_in_)``, by
        a second weighted sum over the same blocks (:mod:`jaxkde.stats.geometry`)."""
        state = self._check_fitted()
        if isinstance(state, ClassConditionalState) or self.__dict__.get("_bounds") is not None:
            raise ValueError("score_function is available for a KDE fitted without labels and "
                             "bounds.")  # fmt: skip
        block = batch_size or self.batch_size or self._default_block_sizes()[0]
        return geometry.score_function(state, X, block_size=block)

    def modes(self, X0=None, *, max_iter: int = 500, tol: float = 1e-4,
              merge_tol: float = 0.1) -> geometry.Modes:  # fmt: skip
        """Mean shift from each row of ``X0`` (default: the training data) to a mode: the
        distinct modes and a label per start (clustering, as ``ks::kms``; see
        :func:`jaxkde.stats.geometry.mean_shift`)."""
        state = self._check_fitted()
        if isinstance(state, ClassConditionalState) or self.__dict__.get("_bounds") is not None:
            raise ValueError("modes is available for a KDE fitted without labels and bounds.")
        if X0 is None:
            hw = self._whitening
            k = state.dim
            lo = None if state.points_lo is None else np.asarray(state.points_lo).reshape(-1, k)
            keep = np.isfinite(np.asarray(state.log_weights, np.float64).reshape(-1))
            X0 = unwhiten_host(state, np.asarray(state.points).reshape(-1, k), lo, hw)[keep]
        block = self.batch_size or self._default_block_sizes()[0]
        return geometry.mean_shift(state, X0, max_iter=max_iter, tol=tol, merge_tol=merge_tol,
                                   block_size=block)  # fmt: skip

    # --------------------------------------------------------- marginals and conditionals
    def _parts(self, what: str) -> marginals.MixtureParts:
        _check_local(self, what)
        state = self._check_fitted()
        if isinstance(state, ClassConditionalState) or self.__dict__.get("_bounds") is not None:
            raise ValueError(f"{what} is available for a KDE fitted without labels and bounds.")
        return marginals.mixture_parts(state, what)

    def _from_parts(self, parts: marginals.MixtureParts) -> KDE:
        """A KDE fitted to the mixture ``parts`` (its centres as data, with their weights)."""
        params = {**self.get_params(), "bandwidth": parts.bandwidth, "bandwidth_estimator": None,
                  "univariate_bandwidth": None, "priors": None, "bounds": None,
                  "adaptive": False}  # fmt: skip
        kde = type(self)(**params)
        # Every centre is kept (weights below float64's range are 0), so mixtures of the same
        # size share array shapes and compiled programs, call after call.
        w = np.exp(parts.log_weights - parts.log_weights.max())
        # The float64 centres go through fit's host preparation (centred in float64, then
        # cast): far from the origin, a cast first would lose them.
        kde.__dict__["_derived_dtype"] = self.state_.dtype
        kde.fit(parts.centres, sample_weight=w)
        if parts.log_factors is not None:  # the same adaptive factors, per centre
            chunk = self.chunk_size or self._default_block_sizes()[1]
            state = build_state(parts.centres, w, kde.bandwidth_, kde.state_.kernel,
                                chunk_size=chunk, dtype=self.state_.dtype,
                                log_factors=parts.log_factors)  # fmt: skip
            kde._whitening = host_whitening(state)
            kde.state_ = state if self.mesh is None else shard_state(state, self.mesh)
            kde.adaptive_factors_ = np.exp(parts.log_factors)
        return kde

    def marginal(self, dims) -> KDE:
        """The marginal KDE over the features ``dims`` (in that order), exact for the Gaussian
        kernel: the same centres' coordinates and weights, and the sub-matrix of ``H``."""
        return self._from_parts(marginals.marginalize(self._parts("marginal"), dims))

    def conditional(self, dims, values) -> KDE:
        """The KDE of the other features given ``x[dims] = values``, exact for a Gaussian KDE
        with any ``H`` (see :mod:`jaxkde.stats.marginals`); it scores and samples like any KDE."""
        return self._from_parts(marginals.condition(self._parts("conditional"), dims, values))

    def condition_on(self, matrix, observation, noise) -> KDE:
        """The posterior KDE given a linear observation ``observation = matrix @ x + e``,
        ``e ~ N(0, noise)``: a Kalman update per centre (Gaussian kernel)."""
        parts = self._parts("condition_on")
        return self._from_parts(marginals.condition_linear(parts, matrix, observation, noise))

    # ----------------------------------------------------------------------------- sampling
    def _sample(self, n_samples, key, scaling_factor, label=None, centres=True):
        state = self._check_fitted(streamed=True)
        n_samples = check_sample_size(n_samples, self.n_features_in_)
        scaling_factor = check_real(scaling_factor, "scaling_factor", low=0.0)
        key = as_key(key)
        whitening = self.__dict__.get("_whitening")
        if not hasattr(self, "classes_"):
            if label is not None:
                raise ValueError("label needs a KDE fitted with labels: fit(X, y).")
            if isinstance(state, StreamedState):
                return None, *streaming.streamed_sample(state, key, n_samples, scaling_factor)[1:]
            if "_parts_weights" in self.__dict__:  # across processes: the same draws, any split
                part_weights, cumulative = self._parts_weights
                drawn = distributed.global_sample(state, whitening, part_weights, cumulative, key,
                                                  n_samples, scaling_factor)  # fmt: skip
                return None, *drawn
            if self.__dict__.get("_sampling_scales") is None:  # once per fit, on the device
                scales = sampling_scales(whitening)
                self._sampling_scales = jax.tree.map(lambda a: jnp.asarray(a, state.dtype),
                                                     scales)  # fmt: skip
            _, drawn_centres, samples = sample_host(state, key, n_samples, scaling_factor,
                                                    whitening, centres=centres,
                                                    scales=self._sampling_scales)  # fmt: skip
            bounds = self.__dict__.get("_bounds")
            if bounds is not None and self._images is None:  # drawn in z = log / logit of x
                samples = from_transformed(samples, bounds)
                if drawn_centres is not None:
                    drawn_centres = from_transformed(drawn_centres, bounds)
            elif bounds is not None:  # folding is the exact law of the reflected estimate
                samples = fold(samples, bounds)
            return None, drawn_centres, samples
        index = None
        if label is not None:
            hits = [i for i, c in enumerate(self.classes_.tolist()) if c == label]
            if not hits:
                raise ValueError(
                    f"label {label!r} is not a class; classes: {self.classes_.tolist()}."
                )
            index = hits[0]
            if not self.class_prior_[index] > 0:
                raise ValueError(
                    f"class {label!r} has prior 0 (zero total sample_weight or a prior of 0): "
                    "there is nothing to sample from it."
                )
        if "_parts_weights" in self.__dict__:  # across processes: the same draws, any split
            codes, drawn_centres, samples = distributed.global_sample_classes(
                state.states, whitening, self._parts_weights, self.class_prior_, key, n_samples,
                scaling_factor, index)  # fmt: skip
            return self.classes_[codes], drawn_centres, samples
        codes, _, drawn_centres, samples = sample_classes_host(
            state, key, n_samples, scaling_factor, label=index, whitenings=whitening,
            centres=centres,
        )  # fmt: skip
        return self.classes_[np.asarray(codes)], drawn_centres, samples

    def sample(
        self, n_samples: int = 1, key=None, scaling_factor: float = 1.0, label=None
    ) -> np.ndarray:
        """Draw ``n_samples`` points from the KDE, shape ``(n_samples, n_features_in_)``, float64.

        The centre and kernel noise are drawn on the device, and the point formed there where
        a bound on its rounding is within ``jaxkde.core.sampling.DEVICE_SAMPLING_TOL`` of the
        kernel's standard deviation; otherwise (data far from the origin) the same draws are
        formed in float64 on the host, so every sample keeps float64's precision.

        Parameters
        ----------
        n_samples : int
            Refused (``ValueError``) when the draws would not fit in memory.
        key : JAX PRNG key or int, optional
            The same key gives the same samples; ``None`` draws fresh entropy.
        scaling_factor : float
            ``k`` in ``N(x_r, k H)``: scales the kernel's covariance (default 1); for other
            kernels the kernel's spread is scaled by ``sqrt(k)`` likewise.
        label : optional
            Fitted with labels: draw from this class only (default: classes by prior).
        """
        return self._sample(n_samples, key, scaling_factor, label, centres=False)[2]

    def random_sample(
        self, scaling_factor: float = 1.0, key=None, label=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The seed's sampler: a training point ``x_r`` (by weight) and a draw around it.

        Returns
        -------
        original : np.ndarray, shape (n_features_in_,)
        sample : np.ndarray, shape (n_features_in_,)
            For the Gaussian kernel, a draw from ``N(x_r, scaling_factor * H)``.
        """
        _, centres, samples = self._sample(1, key, scaling_factor, label)
        return centres[0], samples[0]


class KDEClassifier(_Params):
    """Bayes classifier on class-conditional kernel density estimates.

    ``P(c | x) ~ P(c) f_c(x)`` with ``f_c`` the KDE of class ``c``'s rows, computed as a
    log-softmax of log densities (numerically safe in any dimension).

    Parameters
    ----------
    kernel, bandwidth, priors, zero_variance, variance_floor, batch_size, chunk_size, precision,
    mesh
        As for :class:`KDE`; ``bandwidth`` may be a dict of per-class bandwidths, and a rule is
        applied within each class.

    Attributes
    ----------
    classes_ : np.ndarray, shape (n_classes,)
    class_prior_ : np.ndarray, shape (n_classes,)
    bandwidth_fit_ : BandwidthFit or None
        With a learned bandwidth (``"cv"``, ``"lscv"``...): the cross-validation fit,
        with the trace of its objective (a list, one per class, when fitted with labels).
    kde_ : KDE
        The class-conditional density model.
    n_features_in_ : int
    """

    _estimator_type = "classifier"

    def __init__(
        self,
        kernel: str = "gaussian",
        bandwidth=None,
        *,
        priors=None,
        zero_variance: str = "floor",
        variance_floor: float = 1e-6,
        batch_size: int | None = None,
        chunk_size: int | None = None,
        precision: str = "highest",
        mesh=None,
    ):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.priors = priors
        self.mesh = mesh
        self.zero_variance = zero_variance
        self.variance_floor = variance_floor
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.precision = precision

    def fit(self, X, y, sample_weight=None) -> KDEClassifier:
        """Fit one KDE per class of ``y`` to the rows of ``X``; returns self."""
        if y is None:
            raise ValueError("KDEClassifier requires y to be passed, but the target y is None.")
        kde = KDE(**self.get_params()).fit(X, y, sample_weight=sample_weight)
        self.kde_ = kde
        self.classes_ = kde.classes_
        self.class_prior_ = kde.class_prior_
        self.n_features_in_ = kde.n_features_in_
        return self

    def _kde(self) -> KDE:
        if not hasattr(self, "kde_"):
            raise not_fitted("This KDEClassifier is not fitted yet; call fit(X, y) first.")
        return self.kde_

    def predict_log_proba(self, X, batch_size: int | None = None) -> np.ndarray:
        """``log P(c | x)`` for each row and class, shape ``(n_queries, n_classes)``."""
        return self._kde()._evaluate(class_log_posterior, X, batch_size, "KDEClassifier")

    def predict_proba(self, X, batch_size: int | None = None) -> np.ndarray:
        """``P(c | x)`` for each row and class; rows sum to 1."""
        return np.exp(self.predict_log_proba(X, batch_size).astype(np.float64))

    def predict(self, X, batch_size: int | None = None) -> np.ndarray:
        """The most probable class of each row, shape ``(n_queries,)``."""
        best = np.argmax(self.predict_log_proba(X, batch_size), axis=1)
        return self.classes_[best]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against labels ``y``."""
        truth = np.empty(len(y), dtype=object)
        truth[:] = list(y)
        hits = np.array([p == t for p, t in zip(self.predict(X).tolist(), truth, strict=True)])
        return float(np.average(hits, weights=sample_weight))
