"""Every bandwidth name the estimators accept, in one registry, and the bandwidth a fit asks for.

A bandwidth is a rule of thumb (:data:`jaxkde.bandwidth.rules.RULES`), a selector
(:data:`jaxkde.bandwidth.selectors.SELECTORS`), a learned fit (:data:`LEARNED`: maximum
leave-one-out likelihood, :data:`CV_RULES`, or least-squares cross-validation,
:data:`LSCV_RULES`), or an explicit ``h``, per-feature deviations or matrix ``H``.

The functions here read the estimator's bandwidth parameters (``bandwidth``,
``bandwidth_estimator``, ``univariate_bandwidth``, ``kernel``) from ``params``, any object
with those attributes.
"""

from __future__ import annotations

import warnings

import numpy as np

from jaxkde.bandwidth.learned import BandwidthFit, fit_bandwidth, fit_failure
from jaxkde.bandwidth.rules import RULES, CovarianceFactor, PointBandwidths
from jaxkde.bandwidth.selectors import SELECTORS
from jaxkde.core.kernels import Kernel, UnivariateGaussianKernel

__all__ = [
    "BANDWIDTH_NAMES",
    "CV_RULES",
    "LEARNED",
    "LSCV_RULES",
    "bandwidth_spec",
    "learn",
    "learned_spec",
    "rule_or_explicit",
]

#: Bandwidth names that learn H by leave-one-out likelihood, and their parameterisation.
CV_RULES = {"cv": "scalar", "cv_diagonal": "diagonal", "cv_full": "full"}

#: Bandwidth names that learn H by least-squares cross-validation (Gaussian kernel).
LSCV_RULES = {"lscv": "scalar", "lscv_diagonal": "diagonal", "lscv_full": "full"}

#: Learned bandwidths: name -> (parameterisation, objective) of :func:`fit_bandwidth`.
LEARNED = {
    **{name: (kind, "likelihood") for name, kind in CV_RULES.items()},
    **{name: (kind, "lscv") for name, kind in LSCV_RULES.items()},
}

#: Every bandwidth name: rules, selectors, learned fits.
BANDWIDTH_NAMES = (*RULES, *SELECTORS, *LEARNED)


def learned_spec(fit: BandwidthFit) -> np.ndarray:
    """A learned ``H`` as a bandwidth argument: the matrix, or the per-feature deviations."""
    return fit.matrix if fit.matrix.ndim == 2 else np.sqrt(fit.matrix)


def bandwidth_spec(params, kernel: Kernel, label=None):
    """The bandwidth asked for: a name, a number, an array (``label``'s entry of a dict).

    ``"scott"`` when none is given; ``1.0`` for the univariate kernel. Raises ``ValueError``
    naming the parameter for two given at once, a dict without labels or without ``label``,
    or a bandwidth the kernel does not take.
    """
    given = {
        name: getattr(params, name)
        for name in ("bandwidth", "bandwidth_estimator", "univariate_bandwidth")
        if getattr(params, name) is not None
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
            f"{params.kernel!r} pass bandwidth={value!r} (the isotropic standard deviation)."
        )
    if name == "bandwidth_estimator" and (
        not isinstance(value, str) or value not in BANDWIDTH_NAMES
    ):
        raise ValueError(
            f"bandwidth_estimator must be one of {list(BANDWIDTH_NAMES)}; got {value!r}."
        )
    return "scott" if value is None else value


def rule_or_explicit(params, kernel: Kernel, y, where: str, label=None):
    """The bandwidth spec of a fit whose rows are in parts (processes, or blocks of a file):
    a rule or an explicit ``H``; what needs all rows at once is refused, naming ``where``."""
    spec = bandwidth_spec(params, kernel, label)
    streamed = where.startswith("X streamed")
    names = RULES if streamed or y is not None else (*RULES, *LEARNED)
    unsupported = {
        "y (class labels)": y is not None and streamed,
        "adaptive=True": bool(params.adaptive),
        "bounds": params.bounds is not None,
        f"bandwidth={spec!r} (only {sorted(names)} or an explicit H)": (
            (isinstance(spec, str) and spec not in names) or callable(spec)
            or isinstance(spec, (CovarianceFactor, PointBandwidths))),
        "kernel='univariate_gaussian'": isinstance(kernel, UnivariateGaussianKernel),
    }  # fmt: skip
    for what, bad in unsupported.items():
        if bad:
            raise ValueError(f"{what} is not supported yet for {where}.")
    return spec


def learn(where: str, *args, objective: str = "likelihood", **kwargs) -> BandwidthFit:
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
        warnings.warn(w.message, w.category, stacklevel=5)
    return fit
