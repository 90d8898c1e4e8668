"""Input validation shared by the public API: every error names the argument and the problem."""

from __future__ import annotations

import numbers

import jax
import numpy as np

__all__ = ["NotFittedError", "check_data", "check_positive_int", "check_weights", "working_dtype"]


class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted estimator is called before ``fit``."""


def working_dtype(dtype: np.dtype) -> np.dtype:
    """float64 for float64 input under x64 mode, else float32 (integers: the default float)."""
    x64 = bool(jax.config.jax_enable_x64)
    if np.issubdtype(dtype, np.floating):
        return np.dtype(np.float64 if (x64 and dtype == np.float64) else np.float32)
    return np.dtype(np.float64 if x64 else np.float32)


def check_data(X, name: str = "X", n_features: int | None = None, dtype=None) -> np.ndarray:
    """Validate a data matrix of shape ``(n, d)`` and return it as a float numpy array.

    Parameters
    ----------
    X : array-like, shape (n, d)
        Finite numbers; integer (e.g. uint8 image) and boolean dtypes are accepted.
    name : str
        Name of the argument, used in error messages.
    n_features : int, optional
        Required number of columns (the number seen in ``fit``).
    dtype : numpy dtype, optional
        Output dtype; default :func:`working_dtype` of the input's.
    """
    if X is None:
        raise TypeError(f"{name} must be an array of shape (n_samples, n_features); got None.")
    try:
        arr = np.asarray(X)
    except Exception as exc:
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
    if arr.ndim != 2:
        hint = " Reshape 1-D data with X.reshape(-1, 1)." if arr.ndim == 1 else ""
        raise ValueError(
            f"{name} must be 2-D of shape (n_samples, n_features); got shape {arr.shape}.{hint}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 rows (shape {arr.shape}).")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features (shape {arr.shape}).")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, but the estimator was fitted with {n_features}."
        )
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            more = f" (and {bad.size - 1} other rows)" if bad.size > 1 else ""
            raise ValueError(f"{name} contains NaN or inf in row {int(bad[0])}{more}.")
    return arr.astype(dtype if dtype is not None else working_dtype(arr.dtype), copy=False)


def check_weights(sample_weight, n: int, dtype) -> np.ndarray | None:
    """Validate ``sample_weight`` of shape ``(n,)``: finite, non-negative, not all zero."""
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
    return w.astype(dtype)


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)
