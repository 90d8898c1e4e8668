"""The MNIST digit job: PCA, a KDE per digit, new digits drawn around chosen source images."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._validation import check_positive_int, check_real
from .kde import KDE
from .pca import PCAState, pca_fit, pca_inverse_transform, pca_transform
from .sampling import as_key, check_sample_size, sample_host

__all__ = ["SOURCES", "DigitSamples", "digit_pairs_grid", "sample_digits"]

SOURCES = ("density", "random")


@dataclasses.dataclass(frozen=True)
class DigitSamples:
    """Generated digits and where they came from.

    Attributes
    ----------
    sources : np.ndarray, float32, shape (n, 28, 28)
        The training image ``x_r`` each sample was drawn around, pixels in [0, 1].
    samples : np.ndarray, float32, shape (n, 28, 28)
        The generated images, mapped back from PCA space and clipped to [0, 1].
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
    scaling_factor: float = 0.3,
    n_components: int = 30,
    source: str = "density",
    source_quantile: float = 0.5,
    key=0,
    pca: PCAState | None = None,
) -> DigitSamples:
    """Generate new handwritten digits as the seed's report does, in log space and in JAX.

    The images are flattened to pixels in [0, 1] and reduced by a PCA fitted on all of them;
    a Gaussian KDE is fitted to the PCA scores of the requested digit (of all images when
    ``digit`` is None); each sample is drawn from ``N(x_r, scaling_factor * H)`` around a source
    image ``x_r`` and mapped back to pixels, clipped to [0, 1].

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

    The defaults (30 components, Scott's rule, density sources from the denser half, k = 0.3)
    were chosen with ``benchmarks/digit_quality.py``: over three seeds they gave a fidelity of
    0.959-0.969 and a novelty of 0.774-0.788 on the shipped test split (see the README).
    source : {"density", "random"}
        How ``x_r`` is picked: uniformly among the ``source_quantile`` fraction of the digit's
        images with the highest density under its KDE (default), or uniformly among all.
    source_quantile : float in (0, 1]
    key : JAX PRNG key or int
        The same key (and inputs) gives the same images.
    pca : PCAState, optional
        A PCA already fitted to these images (pixels in [0, 1]) with ``n_components`` axes, to
        reuse across calls; fitted here when omitted.
    """
    n_samples = check_sample_size(n_samples, 784, "n_samples")
    scaling_factor = check_real(scaling_factor, "scaling_factor", low=0.0)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}; got {source!r}.")
    check_real(source_quantile, "source_quantile", low=0.0, high=1.0, low_open=True)
    pixels = np.asarray(images)
    if pixels.ndim == 3:
        pixels = pixels.reshape(pixels.shape[0], -1)
    if pixels.ndim != 2 or pixels.shape[0] == 0:
        raise ValueError(f"images must have shape (n, 28, 28) or (n, 784); got {pixels.shape}.")
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.float32) / 255.0
    pixels = pixels.astype(np.float32)
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
    pairs_per_row = check_positive_int(pairs_per_row, "pairs_per_row")
    zoom = check_positive_int(zoom, "zoom")
    sources, samples = np.asarray(sources), np.asarray(samples)
    if samples.ndim != 3 or sources.shape != samples.shape or samples.shape[0] == 0:
        raise ValueError(
            "sources and samples must be images of one shape (n, h, w) with n >= 1; got "
            f"{sources.shape} and {samples.shape}."
        )
    n, h, w = samples.shape
    cols = min(pairs_per_row, n)
    rows = -(-n // cols)
    th, tw = h * zoom, w * zoom
    margin, gap = 6, 2
    pair_w = 2 * tw + gap
    grid = np.full((rows * (th + margin) + margin, cols * (pair_w + margin) + margin), 96, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = margin + r * (th + margin), margin + c * (pair_w + margin)
        for j, img in enumerate((sources[i], samples[i])):
            tile = np.kron(np.clip(img, 0, 1), np.ones((zoom, zoom)))
            x0 = left + j * (tw + gap)
            grid[top : top + th, x0 : x0 + tw] = np.round(tile * 255).astype(np.uint8)
        grid[top : top + th, left + tw : left + tw + gap] = 96
    return grid
