"""``KDE``: the thin stateful wrapper, compatible with KDE.py and scikit-learn conventions."""

from __future__ import annotations

import functools
import sys

import numpy as np

from jaxkde._validation import (
    check_data,
    check_positive_int,
    check_real,
    check_weights,
    not_fitted,
)
from jaxkde.bandwidth.rules import CovarianceFactor
from jaxkde.core.sampling import as_key, check_sample_size
from jaxkde.core.sharding import sharded_log_density
from jaxkde.core.state import ClassConditionalState, KDEState, state_points
from jaxkde.estimator import draw, evaluation, files, fitting
from jaxkde.estimator._params import Params
from jaxkde.estimator.evaluation import check_local
from jaxkde.scale import distributed, streaming
from jaxkde.scale.streaming import StreamedState
from jaxkde.stats import geometry, information, integrals, marginals, probability
from jaxkde.stats.grid import GridDensity, default_axes, grid_log_density
from jaxkde.variants.classes import class_log_density, class_log_posterior

__all__ = ["KDE", "KDEClassifier", "load"]


class KDE(Params):
    """Kernel density estimator on JAX, exact and stable in hundreds of dimensions.

    Parameters
    ----------
    kernel : str or jaxkde.Kernel
        A user kernel (a frozen dataclass subclassing :class:`jaxkde.Kernel`, checked by
        :func:`jaxkde.core.kernels.check_kernel`), or scikit-learn's ``"gaussian"``,
        ``"tophat"``, ``"epanechnikov"``, ``"exponential"``, ``"linear"``, ``"cosine"`` and
        KDEpy's ``"biweight"``, ``"triweight"``, ``"tricube"``
        (normalised in d dimensions, with scalar, diagonal or full bandwidth; compact kernels
        give log density ``-inf`` outside their support), the seed's
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
        deviation per feature, the matrix ``H``, SciPy's factor
        (:class:`jaxkde.CovarianceFactor`, or a callable returning it), or one bandwidth per
        row (:class:`jaxkde.PointBandwidths`, KDEpy's ``bw`` array). For
        ``"univariate_gaussian"``, the positive scalar ``h`` (default 1.0). When fitting with
        labels, a rule is applied within each class, and a dict maps each class label to its
        own bandwidth.
    priors : array-like of shape (n_classes,) or dict, optional
        Class priors when fitting with labels (in the order of ``classes_``, or by label);
        default: each class's share of the (weighted) rows.
    bandwidth_estimator : str, optional
        The seed's spelling of a rule name; give this or ``bandwidth``, not both.
    univariate_bandwidth : float, optional
        The seed's spelling of ``h`` for ``kernel="univariate_gaussian"``.
    p : float >= 1 or inf
        The norm of the whitened differences (default 2): every kernel is normalised and
        sampled in any p-norm, as KDEpy's; see :func:`jaxkde.get_kernel`.
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
        rows' order, each from its class's pilot); with :class:`jaxkde.PointBandwidths`, its
        scales; ``None`` otherwise.

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

    def _params(self) -> fitting.FitParams:
        """The parameters as the pure fit functions read them."""
        return fitting.FitParams(**self.get_params())

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
        params = self._params()
        kernel, chunk_size = fitting.check_params(params, y)
        if distributed.is_global(X) or distributed.is_global(sample_weight):
            fitted = fitting.fit_global(params, X, sample_weight, y, kernel, chunk_size)
        elif streaming.should_stream(X, self.out_of_core):
            fitted = fitting.fit_streamed(params, X, sample_weight, y, kernel, chunk_size)
        else:
            fitted = fitting.fit_in_memory(params, X, y, sample_weight, kernel, chunk_size)
        return self._store_fit(fitted)

    def partial_fit(self, X, y=None, sample_weight=None) -> KDE:
        """Append the rows ``X`` (with labels ``y`` and weights ``sample_weight`` as for
        :meth:`fit`) to a fitted KDE: the rules are recomputed in float64 from all the rows,
        so the result is the fit on every row so far (the fitted rows recovered from the state
        to about 2^-48, their weights to the working dtype). Costs a fit of all the rows. An
        unfitted KDE is fitted to ``X``. Not for KDEs streamed from a file, fitted across
        processes, derived (``marginal``...), or with ``boundary="transform"``.
        """
        if not self.__sklearn_is_fitted__():
            return self.fit(X, y, sample_weight)
        params = self._params()
        kernel, chunk_size = fitting.check_params(params, y)
        fitted = fitting.append_rows(params, self.__dict__, X, y, sample_weight, kernel,
                                     chunk_size)  # fmt: skip
        return self._store_fit(fitted)

    def set_bandwidth(self, bw_method=None) -> KDE:
        """SciPy's ``gaussian_kde.set_bandwidth``: ``bw_method`` in SciPy's meanings, each a
        full-covariance rule: ``None`` or ``"scott"`` is ``bandwidth="scott_full"``,
        ``"silverman"`` is ``"silverman_full"``, a number ``c`` is
        :class:`jaxkde.CovarianceFactor` ``(c)`` (``H = c^2 Cov``), a callable is kept (called
        with a :class:`jaxkde.BandwidthContext`, it returns that factor). Sets ``bandwidth``
        (as ``set_params`` would) and refits a fitted KDE on its rows, recovered from the state
        as :meth:`partial_fit` does; returns self."""
        if isinstance(bw_method, (bool, np.bool_)):
            raise TypeError(f"bw_method must be None, 'scott', 'silverman', a number or a "
                            f"callable; got {bw_method!r}.")  # fmt: skip
        if bw_method is None or isinstance(bw_method, str):
            names = {None: "scott_full", "scott": "scott_full", "silverman": "silverman_full"}
            if bw_method not in names:
                raise ValueError(f"bw_method must be None, 'scott', 'silverman', a number or a "
                                 f"callable; got {bw_method!r}.")  # fmt: skip
            spec = names[bw_method]
        elif callable(bw_method):
            spec = bw_method
        elif isinstance(bw_method, (int, float, np.integer, np.floating)):
            spec = CovarianceFactor(bw_method)
        else:
            raise TypeError(f"bw_method must be None, 'scott', 'silverman', a number or a "
                            f"callable; got {bw_method!r}.")  # fmt: skip
        before = {"bandwidth": self.bandwidth, "bandwidth_estimator": self.bandwidth_estimator}
        self.set_params(bandwidth=spec, bandwidth_estimator=None)
        if self.__sklearn_is_fitted__():
            try:
                kernel, chunk_size = fitting.check_params(self._params(), None)
                refit = fitting.append_rows(self._params(), self.__dict__, None, None, None,
                                            kernel, chunk_size)  # fmt: skip
            except (TypeError, ValueError):  # nothing half-written: the old bandwidth stays
                self.set_params(**before)
                raise
            self._store_fit(refit)
        return self

    def _store_fit(self, fitted: fitting.Fitted) -> KDE:
        """Replace the fitted attributes by those of ``fitted`` (labels' attributes dropped
        unless it has them)."""
        for name in ("state_", "_lazy_state", "classes_", "class_prior_", "class_count_",
                     "_parts_weights", "_sampling_scales", "_weight_totals",
                     "_weighted"):  # fmt: skip
            self.__dict__.pop(name, None)
        self.__dict__.update(fitted.attributes())
        self._fit_mesh = self.mesh
        return self

    def _default_block_sizes(self) -> tuple[int, int]:
        """Backend defaults for the devices of the fitted state (of ``mesh`` before a fit)."""
        return fitting.block_sizes(self.__dict__.get("_fit_mesh", self.mesh))

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
            check_local(self.state_, what or sys._getframe(1).f_code.co_name)
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
            state, whitening = fitted, self._whitening
        if batch_size is None:
            batch_size = self.batch_size
        if batch_size is None:
            batch_size = default_block or self._default_block_sizes()[0]
        block = check_positive_int(batch_size, "batch_size")
        queries, _ = check_data(X, "X", n_features=self.n_features_in_, owner=owner)
        return evaluation.evaluate_blocks(fn, queries, state, whitening, block=block,
                                          precision=self.precision,
                                          mesh=self._fit_mesh)  # fmt: skip

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
        if isinstance(state, StreamedState) or self._bounds is not None:
            return self._score_whole(state, X, batch_size)
        fn, block, self._sorted = evaluation.score_program(
            state, labelled=hasattr(self, "classes_"), mesh=self._fit_mesh,
            sorted_data=self._sorted)  # fmt: skip
        return self._evaluate(fn, X, batch_size, default_block=block)

    def _score_whole(self, state, X, batch_size) -> np.ndarray:
        """:meth:`score_samples` of a streamed state, or with bounds (-inf outside them)."""
        queries, _ = check_data(X, "X", n_features=self.n_features_in_, owner="KDE")
        if isinstance(state, StreamedState):
            block = batch_size or self.batch_size
            return streaming.streamed_log_density(
                state, queries, block_size=block, precision=self.precision
            )
        fn = evaluation.deferred_log_density if self._fit_mesh is None else sharded_log_density
        evaluate = functools.partial(self._evaluate, fn, batch_size=batch_size)
        return evaluation.bounded_score(evaluate, queries, self._bounds, self._images, state.dtype)

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
        check_local(self.__dict__.get("state_"), "score_grid")
        # The binned method reads the data themselves: a lazy fit's layout waits.
        state = self.__dict__.get("_lazy_state") or self._check_fitted()
        if self._bounds is not None:
            return evaluation.bounded_grid(self.state_, self._images, self._bounds,
                                           self._data_range, grid_size, cut, method,
                                           axes=axes)  # fmt: skip
        if axes is None:
            axes = default_axes(state, grid_size, cut, data_range=self._data_range)
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
        if self._bounds is not None:
            raise ValueError(f"{what} is not available for a KDE fitted with bounds yet.")
        return evaluation.over_classes(state, fn)

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

    def integrate_gaussian(self, mean, cov) -> float:
        """``int f(x) N(x; mean, cov) dx`` (SciPy's ``gaussian_kde.integrate_gaussian``): exact
        for a Gaussian KDE, in float64 (see :mod:`jaxkde.stats.integrals`)."""
        parts = self._parts("integrate_gaussian")
        return float(np.exp(integrals.log_integrate_gaussian(parts, mean, cov)))

    def integrate_kde(self, other: KDE) -> float:
        """``int f(x) g(x) dx`` with ``g`` another fitted Gaussian KDE (SciPy's
        ``gaussian_kde.integrate_kde``): exact, by the engine in the working dtype."""
        if not isinstance(other, KDE):
            raise TypeError(f"other must be a fitted jaxkde.KDE; got {type(other).__name__}.")
        state = self._check_fitted(what="integrate_kde")
        log_value = integrals.log_integrate_kde(
            self._parts("integrate_kde"), other._parts("integrate_kde"), dtype=state.dtype,
            chunk_size=self.chunk_size or self._default_block_sizes()[1])  # fmt: skip
        return float(np.exp(log_value))

    # ------------------------------------------------------------------ information measures
    def _information_state(self, what: str):
        check_local(self.__dict__.get("state_"), what)
        return self._unlabelled(what)

    def entropy(self, method: str = "loo") -> float:
        """Differential entropy in nats, ``-sum_i w_i log f(x_i)`` over the fitted rows, by
        leave-one-out (default) or resubstitution densities; their biases are stated in
        :mod:`jaxkde.stats.information`."""
        return information.entropy(self._information_state("entropy"), method)

    def kl_divergence(self, other: KDE, method: str = "loo") -> float:
        """``KL(f || g)`` in nats with ``g`` the fitted KDE ``other``, averaged over this KDE's
        rows (``f`` at its own rows by ``method``, see :meth:`entropy`)."""
        if not isinstance(other, KDE):
            raise TypeError(f"other must be a fitted jaxkde.KDE; got {type(other).__name__}.")
        return information.kl_divergence(
            self._information_state("kl_divergence"),
            other._information_state("kl_divergence"),
            method,
        )

    def mutual_information(self, dims_a, dims_b, method: str = "loo") -> float:
        """``I(X_A; X_B)`` in nats between the feature sets ``dims_a`` and ``dims_b``
        (disjoint), from the marginal KDEs of ``A``, ``B`` and ``A + B`` (exact for the
        Gaussian kernel, see :meth:`marginal`), averaged over the rows by ``method``."""
        a, b = list(np.atleast_1d(dims_a)), list(np.atleast_1d(dims_b))
        if set(a) & set(b):
            raise ValueError(f"dims_a and dims_b must be disjoint; both hold "
                             f"{sorted(set(a) & set(b))}.")  # fmt: skip
        joint, first, second = (self.marginal(a + b), self.marginal(a), self.marginal(b))
        return information.mutual_information(joint.state_, first.state_, second.state_, method)

    def quantile(self, probs) -> np.ndarray:
        """The ``p``-quantiles of a 1-D KDE, shape of ``probs`` (to about 1e-6 in ``p`` in
        float32, the float32 CDF's own error; see :func:`jaxkde.stats.probability.quantile`)."""
        state = self._unlabelled("quantile", "an unlabelled, unbounded 1-D KDE")
        return probability.quantile(state, probs)

    def density_levels(self, probs=(0.25, 0.5, 0.75, 0.95), n_samples: int = 100_000,
                       key=0) -> probability.DensityLevels:  # fmt: skip
        """Density thresholds whose superlevel sets hold the masses ``probs`` (contour levels
        for plots; HDR): from the densities of ``n_samples`` draws from the KDE, whose
        ``stderr`` (``sqrt(p (1 - p) / n)``) is the error in mass to expect."""
        draws = self.sample(check_positive_int(n_samples, "n_samples"), key=key)
        return probability.density_levels(self.score_samples(draws), probs)

    # ----------------------------------------------------------------------------- geometry
    def _unlabelled(self, what: str, kind: str = "a KDE fitted without labels and bounds"):
        """The fitted state; a ``ValueError`` naming ``what`` for labels or bounds."""
        state = self._check_fitted(what=what)
        if isinstance(state, ClassConditionalState) or self._bounds is not None:
            raise ValueError(f"{what} is available for {kind}.")
        return state

    def score_function(self, X, batch_size: int | None = None) -> np.ndarray:
        """``grad log f`` at each row of ``X``, float64 ``(n_queries, n_features_in_)``, by
        a second weighted sum over the same blocks (:mod:`jaxkde.stats.geometry`)."""
        state = self._unlabelled("score_function")
        block = batch_size or self.batch_size or self._default_block_sizes()[0]
        return geometry.score_function(state, X, block_size=block)

    def modes(self, X0=None, *, max_iter: int = 500, tol: float = 1e-4,
              merge_tol: float = 0.1) -> geometry.Modes:  # fmt: skip
        """Mean shift from each row of ``X0`` (default: the training data) to a mode: the
        distinct modes and a label per start (clustering, as ``ks::kms``; see
        :func:`jaxkde.stats.geometry.mean_shift`)."""
        state = self._unlabelled("modes")
        X0 = state_points(state, self._whitening) if X0 is None else X0
        block = self.batch_size or self._default_block_sizes()[0]
        return geometry.mean_shift(state, X0, max_iter=max_iter, tol=tol, merge_tol=merge_tol,
                                   block_size=block)  # fmt: skip

    # --------------------------------------------------------- marginals and conditionals
    def _parts(self, what: str) -> marginals.MixtureParts:
        check_local(self.__dict__.get("state_"), what)
        return marginals.mixture_parts(self._unlabelled(what), what)

    def _from_parts(self, parts: marginals.MixtureParts) -> KDE:
        """A KDE fitted to the mixture ``parts`` (its centres as data, with their weights)."""
        params = self._params()._replace(bandwidth=parts.bandwidth, bandwidth_estimator=None,
                                         univariate_bandwidth=None, priors=None, bounds=None,
                                         adaptive=False)  # fmt: skip
        kde = type(self)(**params._asdict())
        return kde._store_fit(fitting.fit_mixture(params, parts, self.state_.dtype))

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
        index = draw.class_index(getattr(self, "classes_", None),
                                 getattr(self, "class_prior_", None), label)  # fmt: skip
        parts = self.__dict__.get("_parts_weights")  # across processes
        codes, centres, samples = draw.draw(
            state, self._whitening, key, n_samples, scaling_factor, index=index, centres=centres,
            parts_weights=parts, class_prior=getattr(self, "class_prior_", None),
            bounds=self._bounds, images=self._images,
            scales=None if parts is not None else self._scales(state))  # fmt: skip
        return (None if codes is None else self.classes_[codes]), centres, samples

    def _scales(self, state):
        """The sampling scales of an in-memory, unlabelled fit, on the device (once per fit)."""
        if isinstance(state, KDEState) and "_sampling_scales" not in self.__dict__:
            self._sampling_scales = draw.device_scales(self._whitening, state.dtype)
        return self.__dict__.get("_sampling_scales")

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


class KDEClassifier(Params):
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
        return self._store(KDE(**self.get_params()).fit(X, y, sample_weight=sample_weight))

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> KDEClassifier:
        """Append labelled rows to the fit (see :meth:`KDE.partial_fit`); returns self.

        ``classes`` (scikit-learn's protocol): every label the calls may bring; a label of
        ``y`` outside it is refused. A class gets its KDE with its first rows.
        """
        if classes is not None:
            unknown = set(np.asarray(y).reshape(-1).tolist()) - set(np.asarray(classes).tolist())
            if unknown:
                raise ValueError(f"y has labels {sorted(unknown, key=str)!r} that are not in "
                                 f"classes {list(np.asarray(classes).tolist())!r}.")  # fmt: skip
        if not hasattr(self, "kde_"):
            return self.fit(X, y, sample_weight)
        return self._store(self.kde_.partial_fit(X, y, sample_weight))

    def _store(self, kde: KDE) -> KDEClassifier:
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


def load(path) -> KDE | KDEClassifier:
    """Read an estimator written by ``KDE.save`` or ``KDEClassifier.save``.

    The file is read with ``allow_pickle=False`` and only jaxkde's own record types are
    rebuilt from it (:mod:`jaxkde.estimator.files`): loading never runs code from the file.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    jaxkde.ModelFileError
        A pickle or another kind of file, a truncated or damaged one, one of a newer layout
        version, or one whose layout this release cannot read.
    """
    return files.load_estimator(path, {"KDE": KDE, "KDEClassifier": KDEClassifier})
