"""``KDE``: the thin stateful wrapper, compatible with KDE.py and scikit-learn conventions."""

from __future__ import annotations

import inspect
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from ._validation import NotFittedError, check_data, check_positive_int, check_weights
from .bandwidths import RULES, resolve_bandwidth
from .engine import PRECISIONS, log_density
from .kernels import UnivariateGaussianKernel, get_kernel
from .sampling import as_key, sample_with_centres
from .state import KDEState, build_state

__all__ = ["KDE"]


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


class KDE:
    """Kernel density estimator on JAX, exact and stable in hundreds of dimensions.

    Parameters
    ----------
    kernel : {"gaussian", "multivariate_gaussian", "univariate_gaussian"}
        ``"gaussian"`` (the seed's ``"multivariate_gaussian"`` is an alias) is the normalised
        Gaussian kernel with bandwidth matrix ``H``. ``"univariate_gaussian"`` is the seed's
        extended univariate kernel ``1/(n h) sum phi(||x - x_i||_p / h)`` (not normalised for
        d > 1; see :class:`jaxkde.kernels.UnivariateGaussianKernel`).
    bandwidth : str, float, array of shape (d,) or (d, d), optional
        A rule name (``"scott"`` (default), ``"silverman"``, ``"scott_full"``,
        ``"silverman_full"``, ``"identity"``), the isotropic standard deviation ``h``, one
        standard deviation per feature, or the matrix ``H``. For ``"univariate_gaussian"``, the
        positive scalar ``h`` (default 1.0).
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
    batch_size : int
        Queries evaluated together (default 1024); memory is ``O(batch_size * chunk_size)``.
    chunk_size : int
        Data points reduced per step (default 4096).
    precision : {"highest", "high", "default"}
        Matrix-product precision of the distances; ``"highest"`` is true float32 on GPUs too.

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
        Constant features floored or removed by the rule (0 for user bandwidths).

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
        bandwidth_estimator: str | None = None,
        univariate_bandwidth: float | None = None,
        p: float | str = 2,
        zero_variance: str = "floor",
        variance_floor: float = 1e-6,
        batch_size: int = 1024,
        chunk_size: int = 4096,
        precision: str = "highest",
    ):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.bandwidth_estimator = bandwidth_estimator
        self.univariate_bandwidth = univariate_bandwidth
        self.p = p
        self.zero_variance = zero_variance
        self.variance_floor = variance_floor
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.precision = precision

    # ----------------------------------------------------------------- scikit-learn protocol
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [name for name in sig.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Parameters of this estimator, as passed to ``__init__``."""
        del deep
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> KDE:
        """Set parameters (validated at the next ``fit``); returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for KDE; valid parameters: {valid}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {k: v.default for k, v in inspect.signature(KDE.__init__).parameters.items()}
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
        return f"KDE({', '.join(changed)})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if "state_" in state:
            state["state_"] = jax.tree.map(np.asarray, state["state_"])
        return state

    def __setstate__(self, state: dict) -> None:
        if "state_" in state:
            state["state_"] = jax.tree.map(jnp.asarray, state["state_"])
        self.__dict__.update(state)

    # ------------------------------------------------------------------------------ fitting
    def _bandwidth_spec(self, kernel):
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
        if name == "bandwidth_estimator" and (not isinstance(value, str) or value not in RULES):
            raise ValueError(f"bandwidth_estimator must be one of {list(RULES)}; got {value!r}.")
        return "scott" if value is None else value

    def fit(self, X, y=None, sample_weight=None) -> KDE:
        """Fit the KDE to ``X`` of shape ``(n_samples, n_features)``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Finite data; integer (e.g. uint8 pixel) input is converted to float.
        y : ignored
            Accepted for compatibility with KDE.py and scikit-learn pipelines.
        sample_weight : array-like, shape (n_samples,), optional
            Non-negative weights, not all zero.

        Returns
        -------
        self
        """
        del y
        kernel = get_kernel(self.kernel, self.p)
        spec = self._bandwidth_spec(kernel)
        chunk_size = check_positive_int(self.chunk_size, "chunk_size")
        check_positive_int(self.batch_size, "batch_size")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {list(PRECISIONS)}; got {self.precision!r}."
            )
        data = check_data(X, "X")
        weights = check_weights(sample_weight, data.shape[0], data.dtype)
        data_j = jnp.asarray(data)
        weights_j = None if weights is None else jnp.asarray(weights)
        choice = resolve_bandwidth(
            data_j, weights_j, spec,
            zero_variance=self.zero_variance, variance_floor=self.variance_floor,
        )  # fmt: skip
        state = build_state(
            data_j, weights_j, choice.matrix, kernel, basis=choice.basis, chunk_size=chunk_size
        )
        self.state_ = state
        self.bandwidth_ = state.bandwidth_matrix()
        self.n_features_in_ = data.shape[1]
        self.n_samples_fit_ = data.shape[0]
        self.n_degenerate_features_ = choice.n_degenerate
        return self

    def _check_fitted(self) -> KDEState:
        if not hasattr(self, "state_"):
            raise NotFittedError("This KDE is not fitted yet; call fit(X) before using it.")
        return self.state_

    # --------------------------------------------------------------------------- evaluation
    def score_samples(self, X, batch_size: int | None = None) -> np.ndarray:
        """Log density at each row of ``X``, shape ``(n_queries,)``.

        Queries go through the engine ``batch_size`` rows at a time (one compiled program per
        block shape, reused by every later call).
        """
        state = self._check_fitted()
        block = check_positive_int(
            self.batch_size if batch_size is None else batch_size, "batch_size"
        )
        queries = check_data(X, "X", n_features=self.n_features_in_, dtype=state.dtype)
        out = []
        for start in range(0, queries.shape[0], block):
            chunk = queries[start : start + block]
            rows = chunk.shape[0]
            padded = _query_block_rows(rows, block)
            if padded != rows:
                chunk = np.concatenate(
                    [chunk, np.zeros((padded - rows, chunk.shape[1]), chunk.dtype)]
                )
            out.append((log_density(state, chunk, precision=self.precision), rows))
        # Blocks were dispatched asynchronously; slicing on the host adds no compiled programs.
        return np.concatenate([np.asarray(block_out)[:rows] for block_out, rows in out])

    def predict(self, X, batch_size: int | None = None) -> np.ndarray:
        """Density at each row of ``X`` (``exp`` of :meth:`score_samples`), shape ``(n_queries,)``.

        Computed in log space and exponentiated in float64 only here, so a density is returned
        whenever float64 can represent it (about ``exp(-745)`` to ``exp(709)``); outside that
        range it is 0 or inf. In hundreds of dimensions prefer :meth:`score_samples`.
        """
        log_dens = self.score_samples(X, batch_size=batch_size).astype(np.float64)
        with np.errstate(over="ignore"):  # densities beyond float64's range are inf, by design
            return np.exp(log_dens)

    def predict_proba(self, X, batch_size: int | None = None) -> np.ndarray:
        """The seed's name for :meth:`predict`: densities, shape ``(n_queries,)``."""
        return self.predict(X, batch_size=batch_size)

    def score(self, X, y=None) -> float:
        """Total log-likelihood of ``X`` under the model (the sum of :meth:`score_samples`)."""
        del y
        return float(np.sum(self.score_samples(X), dtype=np.float64))

    # ----------------------------------------------------------------------------- sampling
    def _sample(self, n_samples, key, scaling_factor):
        state = self._check_fitted()
        n_samples = check_positive_int(n_samples, "n_samples")
        if (
            isinstance(scaling_factor, bool)
            or not isinstance(scaling_factor, numbers.Real)
            or not (math.isfinite(scaling_factor) and scaling_factor >= 0)
        ):
            raise ValueError(
                f"scaling_factor must be a finite number >= 0; got {scaling_factor!r}."
            )
        return sample_with_centres(state, as_key(key), n_samples, float(scaling_factor))

    def sample(self, n_samples: int = 1, key=None, scaling_factor: float = 1.0) -> np.ndarray:
        """Draw ``n_samples`` points from the KDE, shape ``(n_samples, n_features_in_)``.

        Parameters
        ----------
        n_samples : int
        key : JAX PRNG key or int, optional
            The same key gives the same samples; ``None`` draws fresh entropy.
        scaling_factor : float
            ``k`` in ``N(x_r, k H)``: scales the kernel's covariance (default 1).
        """
        return np.asarray(self._sample(n_samples, key, scaling_factor)[2])

    def random_sample(self, scaling_factor: float = 1.0, key=None) -> tuple[np.ndarray, np.ndarray]:
        """The seed's sampler: a training point ``x_r`` (by weight) and a draw from ``N(x_r, kH)``.

        Returns
        -------
        original : np.ndarray, shape (n_features_in_,)
        sample : np.ndarray, shape (n_features_in_,)
        """
        _, centres, samples = self._sample(1, key, scaling_factor)
        return np.asarray(centres[0]), np.asarray(samples[0])
