"""The MNIST digit job: PCA, a KDE per digit, new digits drawn around chosen source images."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxkde._validation import check_positive_int, check_real
from jaxkde.apps.pca import PCAState, pca_fit, pca_inverse_transform, pca_transform
from jaxkde.core.sampling import as_key, check_sample_size, sample_host
from jaxkde.estimator.kde import KDE

__all__ = [
    "INTENSITIES",
    "KEEP",
    "SOURCES",
    "DigitSamples",
    "InpaintedDigits",
    "IntensityMap",
    "apply_intensity_map",
    "digit_grid",
    "digit_pairs_grid",
    "inpaint_digits",
    "intensity_map",
    "observed_mask",
    "sample_digits",
]

SOURCES = ("density", "random")
INTENSITIES = ("calibrated", "linear")


class IntensityMap(NamedTuple):
    """A monotone map of pixel intensities, by quantiles: ``recon[j] -> pixels[j]``.

    Attributes
    ----------
    recon : np.ndarray, shape (q,)
        Quantiles of the pixels of the images' PCA reconstructions (clipped to [0, 1]).
    pixels : np.ndarray, shape (q,)
        The same quantiles of the images' own pixels.
    """

    recon: np.ndarray
    pixels: np.ndarray


def intensity_map(pca: PCAState, pixels: np.ndarray, *, n_quantiles: int = 256,
                  max_rows: int = 2000) -> IntensityMap:  # fmt: skip
    """The quantile map that gives the PCA reconstructions of ``pixels`` the intensity
    distribution of ``pixels`` themselves.

    A map back from a few principal components spreads each stroke's ink over mid-grey
    pixels: 85% of the inked pixels of PCA-30 reconstructions of MNIST digits are mid-grey
    (0.15-0.85), 46% of the digits' own. Mapping each reconstructed intensity to the image
    intensity of the same quantile (one monotone curve for all pixels, fitted once from the
    images and their reconstructions) restores that distribution; it is not a threshold: the
    order of intensities is kept and the curve is learnt from the data.

    Parameters
    ----------
    pca : PCAState
    pixels : np.ndarray, shape (n, p)
        Images in [0, 1] (at most ``max_rows`` of them, evenly spaced, are used).
    n_quantiles : int
    max_rows : int
    """
    n_quantiles = check_positive_int(n_quantiles, "n_quantiles")
    max_rows = check_positive_int(max_rows, "max_rows")
    rows = np.linspace(0, pixels.shape[0] - 1, min(max_rows, pixels.shape[0])).astype(int)
    sub = np.asarray(pixels[rows], np.float32)
    recon = np.clip(np.asarray(pca_inverse_transform(pca, pca_transform(pca, sub))), 0.0, 1.0)
    probs = np.linspace(0.0, 1.0, n_quantiles)
    return IntensityMap(np.quantile(recon, probs), np.quantile(sub, probs))


def apply_intensity_map(x: np.ndarray, mapping: IntensityMap) -> np.ndarray:
    """``x`` (pixels in [0, 1]) through the monotone map, piecewise linear between quantiles
    (a run of equal reconstruction quantiles, e.g. the zeros of the background, maps to the
    first of its image quantiles). Same shape and dtype as ``x``."""
    recon, index = np.unique(mapping.recon, return_index=True)
    if recon.size < 2:  # a constant reconstruction: nothing to map
        return x
    return np.interp(x, recon, mapping.pixels[index]).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class DigitSamples:
    """Generated digits and where they came from.

    Attributes
    ----------
    sources : np.ndarray, float32, shape (n, 28, 28)
        The training image ``x_r`` each sample was drawn around, pixels in [0, 1].
    samples : np.ndarray, float32, shape (n, 28, 28)
        The generated images, mapped back from PCA space, clipped to [0, 1] and, with
        calibrated intensities, through :func:`intensity_map`.
    source_indices : np.ndarray, int, shape (n,)
        Row of each source in the images passed in.
    log_density : np.ndarray, shape (n,)
        Log density of each sample (in PCA space, before clipping) under the KDE it came from.
    digit : int or None
        The digit requested (``None``: any class).
    """

    sources: np.ndarray
    samples: np.ndarray
    source_indices: np.ndarray
    log_density: np.ndarray
    digit: int | None


def sample_digits(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    digit: int | None = None,
    n_samples: int = 16,
    bandwidth="scott",
    scaling_factor: float = 0.45,
    n_components: int = 45,
    source: str = "density",
    source_quantile: float = 0.5,
    intensity: str = "calibrated",
    key=0,
    pca: PCAState | None = None,
) -> DigitSamples:
    """Generate new handwritten digits as the seed's report does, in log space and in JAX.

    The images are flattened to pixels in [0, 1] and reduced by a PCA fitted on all of them;
    a Gaussian KDE is fitted to the PCA scores of the requested digit (of all images when
    ``digit`` is None); each sample is drawn from ``N(x_r, scaling_factor * H)`` around a source
    image ``x_r`` and mapped back to pixels, clipped to [0, 1], then (by default) through the
    intensity map of :func:`intensity_map`, which gives the blurred reconstruction the ink of
    real strokes.

    Parameters
    ----------
    images : array, shape (n, 28, 28) or (n, 784)
        uint8 pixels (0-255) or floats in [0, 1].
    labels : array, shape (n,), optional
        Digit of each image; required when ``digit`` is given.
    digit : int, optional
        The digit to draw (a label present in ``labels``).
    n_samples : int
    bandwidth : str, float or array
        Bandwidth of the KDE in PCA space (see :class:`jaxkde.KDE`); Scott's rule by default.
    scaling_factor : float
        ``k`` in ``N(x_r, k H)``: smaller stays closer to the source image.
    n_components : int
        Number of principal components.
    source : {"density", "random"}
        How ``x_r`` is picked: uniformly among the ``source_quantile`` fraction of the digit's
        images with the highest density under its KDE (default), or uniformly among all.
    source_quantile : float in (0, 1]
    intensity : {"calibrated", "linear"}
        ``"calibrated"`` (default): pixel intensities through :func:`intensity_map` of the
        digit's images; ``"linear"``: the reconstruction as it is, clipped (the seed's; with
        ``n_components=30, scaling_factor=0.3``, this release's former defaults).
    key : JAX PRNG key or int
        The same key (and inputs) gives the same images.
    pca : PCAState, optional
        A PCA already fitted to these images (pixels in [0, 1]) with ``n_components`` axes, to
        reuse across calls; fitted here when omitted.

    Notes
    -----
    The defaults (45 components, Scott's rule, density sources from the denser half,
    k = 0.45, calibrated intensities) were chosen with ``benchmarks/digit_quality.py``
    (docs/benchmarks.md, "Digit quality").
    """
    n_samples = check_sample_size(n_samples, 784, "n_samples")
    scaling_factor = check_real(scaling_factor, "scaling_factor", low=0.0)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}; got {source!r}.")
    if intensity not in INTENSITIES:
        raise ValueError(f"intensity must be one of {list(INTENSITIES)}; got {intensity!r}.")
    check_real(source_quantile, "source_quantile", low=0.0, high=1.0, low_open=True)
    pixels = _as_pixels(images, "images")
    side = math.isqrt(pixels.shape[1])
    if digit is None:
        rows = np.arange(pixels.shape[0])
    else:
        if labels is None:
            raise ValueError("labels are required to sample a given digit.")
        labels = np.asarray(labels)
        if labels.shape != (pixels.shape[0],):
            raise ValueError(f"labels must have shape ({pixels.shape[0]},); got {labels.shape}.")
        rows = np.flatnonzero(labels == digit)
        if rows.size < 2:
            present = sorted(set(labels.tolist()))
            raise ValueError(f"digit {digit!r} has {rows.size} images; labels present: {present}.")
    if pca is None:
        pca = pca_fit(pixels, n_components)
    elif pca.components.shape != (n_components, pixels.shape[1]):
        raise ValueError(
            f"pca has {pca.components.shape[0]} components of {pca.components.shape[1]} features; "
            f"expected {n_components} of {pixels.shape[1]}."
        )
    scores = np.asarray(pca_transform(pca, pixels[rows]))
    kde = KDE(bandwidth=bandwidth).fit(scores)
    key_pick, key_draw = jax.random.split(as_key(key))
    if source == "density":
        order = np.argsort(-kde.score_samples(scores), kind="stable")
        pool = order[: max(1, int(np.ceil(source_quantile * rows.size)))]
    else:
        pool = np.arange(rows.size)
    picks = np.asarray(jax.random.choice(key_pick, jnp.asarray(pool), (n_samples,)))
    _, _, drawn = sample_host(kde.state_, key_draw, n_samples, scaling_factor, indices=picks)
    log_density = kde.score_samples(drawn)
    recon = np.clip(np.asarray(pca_inverse_transform(pca, drawn)), 0.0, 1.0)
    if intensity == "calibrated":
        recon = apply_intensity_map(recon, intensity_map(pca, pixels[rows]))
    return DigitSamples(
        sources=pixels[rows[picks]].reshape(-1, side, side),
        samples=recon.astype(np.float32).reshape(-1, side, side),
        source_indices=rows[picks],
        log_density=log_density,
        digit=digit,
    )


def digit_pairs_grid(
    sources: np.ndarray, samples: np.ndarray, *, pairs_per_row: int = 8, zoom: int = 2
) -> np.ndarray:
    """Lay out (source, sample) pairs as one uint8 image: white digits on black, pairs framed.

    Each pair is the source then the sample, side by side, with a 2-pixel gap between them and
    a 6-pixel grey margin around every pair.

    Returns
    -------
    np.ndarray of uint8, shape (rows * (h * zoom + 6) + 6, cols * (2 * w * zoom + 8) + 6)
        where ``cols = min(pairs_per_row, n)`` and ``rows = ceil(n / cols)``.
    """
    sources, samples = np.asarray(sources), np.asarray(samples)
    if samples.ndim != 3 or sources.shape != samples.shape or samples.shape[0] == 0:
        raise ValueError(
            "sources and samples must be images of one shape (n, h, w) with n >= 1; got "
            f"{sources.shape} and {samples.shape}."
        )
    pairs_per_row = check_positive_int(pairs_per_row, "pairs_per_row")
    return digit_grid([sources, samples], items_per_row=pairs_per_row, zoom=zoom)


#: Which half of a digit :func:`inpaint_digits` keeps (observes).
KEEP = ("top", "bottom", "left", "right")


def _as_pixels(images, name: str) -> np.ndarray:
    """Images ``(n, 28, 28)`` or ``(n, 784)``, uint8 or floats in [0, 1], as float32
    ``(n, 784)``."""
    pixels = np.asarray(images)
    if pixels.ndim == 3:
        pixels = pixels.reshape(pixels.shape[0], -1)
    if pixels.ndim != 2 or pixels.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, 28, 28) or (n, 784); got {pixels.shape}.")
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    return pixels.astype(np.float32)


def observed_mask(keep: str, side: int = 28) -> np.ndarray:
    """Boolean ``(side, side)`` mask of the pixels kept: the ``keep`` half of the image."""
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {list(KEEP)}; got {keep!r}.")
    mask = np.zeros((side, side), bool)
    half = side // 2
    if keep == "top":
        mask[:half] = True
    elif keep == "bottom":
        mask[half:] = True
    elif keep == "left":
        mask[:, :half] = True
    else:
        mask[:, half:] = True
    return mask


@dataclasses.dataclass(frozen=True)
class InpaintedDigits:
    """Digits completed from one half.

    Attributes
    ----------
    observed : np.ndarray, float32, shape (n, 28, 28)
        What was given: the kept half, the other half 0.
    completions : np.ndarray, float32, shape (n, 28, 28)
        The kept half as given, the other half drawn from the conditional KDE, in [0, 1].
    originals : np.ndarray, float32, shape (n, 28, 28)
    mask : np.ndarray of bool, shape (28, 28)
        True on the kept pixels.
    """

    observed: np.ndarray
    completions: np.ndarray
    originals: np.ndarray
    mask: np.ndarray


def inpaint_digits(
    train_images,
    images,
    *,
    keep: str = "top",
    n_components: int = 50,
    bandwidth="scott",
    bandwidth_scale: float = 0.5,
    key=0,
    pca: PCAState | None = None,
) -> InpaintedDigits:
    """Complete each digit of ``images`` from its ``keep`` half by exact conditional sampling.

    A PCA of ``train_images`` (pixels in [0, 1]) with ``n_components`` axes, and a Gaussian KDE
    of their scores (``bandwidth``, its ``H`` multiplied by ``bandwidth_scale``), model a digit
    as ``x = mean + W^T s + e`` with ``e ~ N(0, diag(sigma^2))``, ``sigma_j^2`` the PCA's
    residual variance at pixel ``j`` on the training images (floored at 1% of their mean). The
    kept pixels are then a linear observation of ``s``, so the KDE conditioned on them is
    exact (:meth:`KDE.condition_on`: a Kalman update per centre); one ``s`` is drawn from it
    per image, and the hidden half is ``mean + W^T s`` there, clipped to [0, 1].

    The defaults (50 components, half Scott's ``H``) were chosen in a side run on 300 test
    digits (20 to 120 components, ``H`` scaled by 0.25 to 1); ``benchmarks/digit_quality.py
    --inpaint`` measures them on 1,000 (see the README).
    """
    mask = observed_mask(keep)
    n_components = check_positive_int(n_components, "n_components")
    bandwidth_scale = check_real(bandwidth_scale, "bandwidth_scale", low=0.0, low_open=True)
    train = _as_pixels(train_images, "train_images")
    pixels = _as_pixels(images, "images")
    if pixels.shape[1] != mask.size or train.shape[1] != mask.size:
        raise ValueError("inpaint_digits needs 28 x 28 images.")
    if pca is None:
        pca = pca_fit(train, n_components)
    scores = np.asarray(pca_transform(pca, train), np.float64)
    w = np.asarray(pca.components, np.float64)
    mean = np.asarray(pca.mean, np.float64)
    # each pixel's own residual variance (the strokes' edges are noisier than the background),
    # floored at 1% of their mean where a pixel is never inked
    sigma2 = np.mean((train.astype(np.float64) - (scores @ w + mean)) ** 2, axis=0)
    sigma2 = np.maximum(sigma2, 0.01 * sigma2.mean())
    rule = KDE(bandwidth=bandwidth).fit(scores)
    kde = KDE(bandwidth=rule.bandwidth_ * bandwidth_scale).fit(scores)
    obs = mask.reshape(-1)
    matrix = w[:, obs].T
    keys = jax.random.split(as_key(key), pixels.shape[0])
    completions = pixels.copy()
    for i in range(pixels.shape[0]):
        post = kde.condition_on(matrix, pixels[i, obs] - mean[obs], sigma2[obs])
        s = post.sample(1, key=keys[i])[0]
        completions[i, ~obs] = np.clip(s @ w[:, ~obs] + mean[~obs], 0.0, 1.0)
    observed = np.where(obs, pixels, 0.0).astype(np.float32)
    side = mask.shape[0]
    return InpaintedDigits(observed.reshape(-1, side, side),
                           completions.astype(np.float32).reshape(-1, side, side),
                           pixels.reshape(-1, side, side), mask)  # fmt: skip


def digit_grid(columns, *, items_per_row: int = 6, zoom: int = 2) -> np.ndarray:
    """Lay out groups of images side by side (e.g. observed, completion, original) as one
    uint8 image: white digits on black, each group framed in grey.

    ``columns`` is a sequence of arrays of one shape ``(n, h, w)``; group ``i`` holds the
    ``i``-th image of each.
    """
    items_per_row = check_positive_int(items_per_row, "items_per_row")
    zoom = check_positive_int(zoom, "zoom")
    cols = [np.asarray(c) for c in columns]
    if not cols or cols[0].ndim != 3 or any(c.shape != cols[0].shape for c in cols):
        raise ValueError("columns must be arrays of one shape (n, h, w).")
    n, h, w = cols[0].shape
    per_row = min(items_per_row, n)
    rows = -(-n // per_row)
    th, tw = h * zoom, w * zoom
    margin, gap = 6, 2
    group_w = len(cols) * tw + (len(cols) - 1) * gap
    grid = np.full((rows * (th + margin) + margin, per_row * (group_w + margin) + margin), 96,
                   np.uint8)  # fmt: skip
    for i in range(n):
        r, c = divmod(i, per_row)
        top, left = margin + r * (th + margin), margin + c * (group_w + margin)
        for j, col in enumerate(cols):
            tile = np.kron(np.clip(col[i], 0, 1), np.ones((zoom, zoom)))
            x0 = left + j * (tw + gap)
            grid[top : top + th, x0 : x0 + tw] = np.round(tile * 255).astype(np.uint8)
    return grid
