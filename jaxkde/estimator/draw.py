"""The estimator's sampling: draws from a fitted state of any kind (in memory, across
processes, streamed, bounded, per class)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxkde.core.sampling import sample_host, sampling_scales
from jaxkde.core.state import ClassConditionalState
from jaxkde.scale import distributed, streaming
from jaxkde.scale.streaming import StreamedState
from jaxkde.variants.bounds import fold, from_transformed
from jaxkde.variants.classes import sample_classes_host

__all__ = ["class_index", "device_scales", "draw"]


def class_index(classes, class_prior, label) -> int | None:
    """The index of ``label`` among ``classes`` (``None`` for ``label`` ``None``); a
    ``ValueError`` for a label that is not a class or has prior 0, or for a label without
    classes."""
    if label is None:
        return None
    if classes is None:
        raise ValueError("label needs a KDE fitted with labels: fit(X, y).")
    hits = [i for i, c in enumerate(classes.tolist()) if c == label]
    if not hits:
        raise ValueError(f"label {label!r} is not a class; classes: {classes.tolist()}.")
    if not class_prior[hits[0]] > 0:
        raise ValueError(
            f"class {label!r} has prior 0 (zero total sample_weight or a prior of 0): "
            "there is nothing to sample from it."
        )
    return hits[0]


def device_scales(whitening, dtype):
    """The sampling scales of an unlabelled fit, on the device in the working ``dtype``
    (computed once per fit and kept by the estimator)."""
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), sampling_scales(whitening))


def draw(state, whitening, key, n_samples: int, scaling_factor: float, *, index=None,
         centres: bool = True, parts_weights=None, class_prior=None, bounds=None,
         images=None, scales=None):  # fmt: skip
    """``(codes, centres, samples)`` drawn from a fitted state (checked arguments).

    ``codes`` are class indices (``None`` unlabelled), ``centres`` the chosen centres
    (``None`` where not formed); ``index`` draws from one class only. ``parts_weights``
    (across processes) gives the same draws for any split of the rows; with ``bounds``, the
    samples are mapped back from ``z`` (``images`` ``None``: the transform) or folded into
    the bounds (reflection).
    """
    if isinstance(state, ClassConditionalState):
        if parts_weights is not None:  # across processes: the same draws, any split
            return distributed.global_sample_classes(
                state.states, whitening, parts_weights, class_prior, key, n_samples,
                scaling_factor, index)  # fmt: skip
        codes, _, drawn, samples = sample_classes_host(
            state, key, n_samples, scaling_factor, label=index, whitenings=whitening,
            centres=centres)  # fmt: skip
        return np.asarray(codes), drawn, samples
    if isinstance(state, StreamedState):
        return None, *streaming.streamed_sample(state, key, n_samples, scaling_factor)[1:]
    if parts_weights is not None:
        part_weights, cumulative = parts_weights
        drawn = distributed.global_sample(state, whitening, part_weights, cumulative, key,
                                          n_samples, scaling_factor)  # fmt: skip
        return None, *drawn
    _, drawn, samples = sample_host(state, key, n_samples, scaling_factor, whitening,
                                    centres=centres, scales=scales)  # fmt: skip
    if bounds is not None and images is None:  # drawn in z = log / logit of x
        samples = from_transformed(samples, bounds)
        drawn = None if drawn is None else from_transformed(drawn, bounds)
    elif bounds is not None:  # folding is the exact law of the reflected estimate
        samples = fold(samples, bounds)
    return None, drawn, samples
