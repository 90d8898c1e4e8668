"""Every bandwidth name the estimators accept, in one registry.

A bandwidth is a rule of thumb (:data:`jaxkde.bandwidth.rules.RULES`), a 1-D selector
(:data:`jaxkde.bandwidth.selectors.SELECTORS`) or a learned fit (:data:`CV_RULES`,
:data:`LSCV_RULES`).
"""

from __future__ import annotations

__all__ = [
    "CV_RULES",
    "LSCV_RULES",
]

#: Bandwidth names that learn H by leave-one-out likelihood, and their parameterisation.
CV_RULES = {"cv": "scalar", "cv_diagonal": "diagonal", "cv_full": "full"}


#: Bandwidth names that learn H by least-squares cross-validation (Gaussian kernel).
LSCV_RULES = {"lscv": "scalar", "lscv_diagonal": "diagonal", "lscv_full": "full"}
