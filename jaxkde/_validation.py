"""Input validation shared by the public API: every error names the argument and the problem."""

from __future__ import annotations

import math
import numbers
import sys
import warnings

import jax
import numpy as np

__all__ = [
    "NotFittedError",
    "check_data",
    "check_labels",
    "check_positive_int",
    "check_real",
    "check_weights",
    "not_fitted",
    "working_dtype",
]


class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted estimator is called before ``fit``.

    A subclass of ``ValueError`` and ``AttributeError``; once scikit-learn has been imported,
    the error raised is also an instance of ``sklearn.exceptions.NotFittedError`` (so
    scikit-learn's model selection and checks recognise it) without jaxkde importing
    scikit-learn itself.
    """


_BOTH: dict[type, type] = {}


def not_fitted(message: str) -> NotFittedError:
    """A :class:`NotFittedError`, also scikit-learn's when scikit-learn is loaded."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    base = getattr(sklearn_exceptions, "NotFittedError", None)
    if base is None:
        return NotFittedError(message)
    if base not in _BOTH:
        _BOTH[base] = type("NotFittedError", (NotFittedError, base), {"__module__": __name__})
    return _BOTH[base](message)


def working_dtype(dtype) -> np.dtype:
    """The dtype computations run in: float64 for floating input of 64 bits or more
    (``numpy.longdouble`` included) under x64 mode, float32 otherwise (integers: the default
    float)."""
    dtype = np.dtype(dtype)
    x64 = bool(jax.config.jax_enable_x64)
    if np.issubdtype(dtype, np.floating):
        return np.dtype(np.float64 if (x64 and dtype.itemsize >= 8) else np.float32)
    return np.dtype(np.float64 if x64 else np.float32)


def _warning_class(name: str, fallback: type[Warning]) -> type[Warning]:
    """scikit-learn's warning class ``name`` when scikit-learn is loaded, else ``fallback``."""
    return getattr(sys.modules.get("sklearn.exceptions"), name, fallback)


def check_data(
    X, name: str = "X", n_features: int | None = None, owner: str = "the estimator"
) -> tuple[np.ndarray, np.dtype]:
    """Validate a data matrix of shape ``(n, d)``.

    Parameters
    ----------
    X : array-like, shape (n, d)
        Finite real numbers; integer (e.g. uint8 image), boolean and numeric object arrays are
        accepted. Sparse matrices and complex numbers are refused.
    name : str
        Name of the argument, used in error messages.
    n_features : int, optional
        Required number of columns (the number seen in ``fit``).
    owner : str
        Who expects ``n_features`` (the estimator's class name), for the error message.

    Returns
    -------
    data : np.ndarray of float64, shape (n, d)
        The values in float64 on the host (statistics and whitening are computed from these,
        before any cast to the working dtype).
    dtype : np.dtype
        The working dtype for ``X`` (:func:`working_dtype`).
    """
    if X is None:
        raise TypeError(f"{name} must be an array of shape (n_samples, n_features); got None.")
    if type(X).__module__.startswith("scipy.sparse") or hasattr(X, "tocsr"):
        raise TypeError(
            f"{name} is a sparse matrix; sparse input is not supported (kernel densities need "
            f"dense data): pass {name}.toarray()."
        )
    try:
        arr = np.asarray(X)
    except Exception as exc:
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(
            f"Complex data not supported: {name} has dtype {arr.dtype}; pass real numbers."
        )
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} could not be converted to numbers: {exc}") from None
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
    if arr.ndim != 2:
        hint = (
            f" Reshape your data with {name}.reshape(-1, 1) for one feature, or "
            f"{name}.reshape(1, -1) for one sample."
            if arr.ndim == 1
            else ""
        )
        raise ValueError(
            f"{name} must be 2-D of shape (n_samples, n_features); got shape {arr.shape}.{hint}"
        )
    if arr.shape[0] == 0:
        raise ValueError(
            f"{name} is empty: 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if arr.shape[1] == 0:
        raise ValueError(
            f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, but {owner} is expecting {n_features} "
            "features as input."
        )
    dtype = working_dtype(arr.dtype)
    with np.errstate(over="ignore"):
        data = arr.astype(np.float64, copy=False)  # longdouble beyond float64's range: inf
    if not np.isfinite(data).all():  # whole-array test first: a per-row pass is slow on narrow data
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        more = f" (and {bad.size - 1} other rows)" if bad.size > 1 else ""
        raise ValueError(
            f"{name} contains NaN or infinity (or a value beyond float64's range) in row "
            f"{int(bad[0])}{more}."
        )
    return data, dtype


def check_weights(sample_weight, n: int) -> np.ndarray | None:
    """Validate ``sample_weight`` of shape ``(n,)``: finite, non-negative, not all zero.

    Returned in float64 (normalise with :func:`jaxkde.core.state.normalized_log_weights`, which
    neither underflows nor overflows).
    """
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"sample_weight must be an array of numbers; got {sample_weight!r}."
        ) from None
    if w.ndim == 0:
        w = np.full((n,), float(w))
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), one per row of X; got {w.shape}.")
    if not np.isfinite(w).all():
        raise ValueError(
            f"sample_weight contains NaN or inf at index {int(np.flatnonzero(~np.isfinite(w))[0])}."
        )
    if (w < 0).any():
        i = int(np.flatnonzero(w < 0)[0])
        raise ValueError(f"sample_weight must be non-negative; index {i} is {w[i]!r}.")
    if not (w > 0).any():
        raise ValueError("sample_weight must not be all zero.")
    return w


def check_labels(y, n: int) -> np.ndarray:
    """Validate class labels: one per row, hashable, no NaN; ``(n, 1)`` columns are ravelled.

    Returns
    -------
    np.ndarray of object, shape (n,)
    """
    if y is None or isinstance(y, (str, bytes)):
        raise TypeError(f"y must be a sequence of {n} labels; got {y!r}.")
    if isinstance(y, np.ndarray) or hasattr(y, "__array__"):
        arr = np.asarray(y)
        if arr.ndim == 2 and arr.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected; it is ravelled.",
                _warning_class("DataConversionWarning", UserWarning),
                stacklevel=3,
            )
            arr = arr.reshape(-1)
        if arr.ndim != 1:
            raise ValueError(
                f"y must be one label per row of X, shape ({n},) or ({n}, 1); got shape "
                f"{arr.shape}."
            )
        items = arr.tolist()
    elif hasattr(y, "__len__"):  # a sequence: tuples are labels; [label] rows form a column
        items = [
            item[0] if isinstance(item, (list, np.ndarray)) and len(item) == 1 else item
            for item in y
        ]
    else:
        raise TypeError(f"y must be a sequence of {n} labels; got {y!r}.")
    if len(items) != n:
        raise ValueError(f"y must have one label per row of X, shape ({n},); got {len(items)}.")
    labels = np.empty(n, dtype=object)
    for i, label in enumerate(items):
        if isinstance(label, (float, np.floating)):
            if not math.isfinite(label):
                raise ValueError(f"y contains NaN or infinity at index {i}; every row needs a "
                                 "class label.")  # fmt: skip
            if label != int(label):
                raise ValueError(
                    f"Unknown label type: continuous (y[{i}] = {label!r}); class labels must be "
                    "discrete: integers, strings or other hashable values."
                )
        try:
            hash(label)
        except TypeError:
            raise TypeError(f"y[{i}] = {label!r} is not a hashable label.") from None
        labels[i] = label
    return labels


def check_positive_definite(a: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless float64 ``a`` is a symmetric positive-definite
    matrix (symmetric to ``rtol=1e-10`` relative to its largest entry)."""
    if not np.allclose(a, a.T, rtol=1e-10, atol=1e-12 * np.abs(a).max()):
        raise ValueError(f"{name} must be symmetric.")
    try:
        np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} must be positive definite.") from None


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def check_real(value, name: str, *, low: float = -math.inf, high: float = math.inf,
               low_open: bool = False) -> float:  # fmt: skip
    """Return ``value`` as a float if it is a finite real in ``[low, high]`` (``(low, high]``
    with ``low_open``), else raise naming ``name``. Booleans are refused."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number in {bounds}; got {value!r}.")
    return value
