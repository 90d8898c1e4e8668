"""The digit job: class-aware sources, determinism, pixels in [0, 1], the picture grid."""

from __future__ import annotations

import numpy as np
import pytest

import jaxkde
from jaxkde.apps.datasets import load_mnist
from jaxkde.apps.digits import (
    apply_intensity_map,
    digit_pairs_grid,
    inpaint_digits,
    intensity_map,
    observed_mask,
    sample_digits,
)


@pytest.fixture(scope="module")
def mnist_subset():
    images, labels = load_mnist("test")
    return images[:3000], labels[:3000]


def test_same_key_same_images_and_sources_of_the_digit(mnist_subset):
    images, labels = mnist_subset
    a = sample_digits(images, labels, digit=4, n_samples=6, key=3)
    b = sample_digits(images, labels, digit=4, n_samples=6, key=3)
    c = sample_digits(images, labels, digit=4, n_samples=6, key=4)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)
    assert np.all(labels[a.source_indices] == 4)
    np.testing.assert_array_equal(a.sources, images[a.source_indices] / np.float32(255))
    assert a.samples.shape == (6, 28, 28) and a.samples.dtype == np.float32
    assert a.samples.min() >= 0 and a.samples.max() <= 1
    assert np.all(np.isfinite(a.log_density))


@pytest.mark.slow
def test_zero_scaling_factor_returns_the_sources_reconstruction(mnist_subset):
    images, labels = mnist_subset
    kwargs = {"n_samples": 4, "scaling_factor": 0.0, "n_components": 20, "key": 5}
    r = sample_digits(images, labels, digit=1, intensity="linear", **kwargs)
    pixels = images.reshape(-1, 784).astype(np.float32) / 255
    pca = jaxkde.pca_fit(pixels, 20)
    recon = jaxkde.pca_inverse_transform(pca, jaxkde.pca_transform(pca, pixels[r.source_indices]))
    np.testing.assert_allclose(r.samples.reshape(4, -1), np.clip(recon, 0, 1), atol=1e-4)
    calibrated = sample_digits(images, labels, digit=1, **kwargs)  # the default intensities
    mapping = intensity_map(pca, pixels[labels == 1])
    np.testing.assert_allclose(calibrated.samples, apply_intensity_map(r.samples, mapping),
                               atol=1e-4)  # fmt: skip


def test_the_intensity_map_gives_reconstructions_the_images_ink(mnist_subset):
    images, _ = mnist_subset
    pixels = images.reshape(-1, 784).astype(np.float32) / 255
    pca = jaxkde.pca_fit(pixels, 30)
    mapping = intensity_map(pca, pixels)
    assert np.all(np.diff(mapping.recon) >= 0) and np.all(np.diff(mapping.pixels) >= 0)
    recon = np.clip(np.asarray(jaxkde.pca_inverse_transform(
        pca, jaxkde.pca_transform(pca, pixels[:500]))), 0, 1)  # fmt: skip
    mapped = apply_intensity_map(recon, mapping)
    assert mapped.dtype == recon.dtype and mapped.shape == recon.shape

    def mid_grey_share(x):
        return ((x > 0.15) & (x < 0.85)).sum() / (x > 0.15).sum()

    real = mid_grey_share(pixels[:500])
    assert mid_grey_share(recon) > real + 0.25  # the blur of 30 components
    assert abs(mid_grey_share(mapped) - real) < 0.05  # restored, by a monotone map
    order = np.argsort(recon.reshape(-1), kind="stable")
    assert np.all(np.diff(mapped.reshape(-1)[order]) >= 0)  # the order of intensities kept
    with pytest.raises(ValueError, match="n_quantiles"):
        intensity_map(pca, pixels, n_quantiles=0)


@pytest.mark.slow
def test_density_sources_come_from_the_denser_half(mnist_subset):
    images, labels = mnist_subset
    rows = np.flatnonzero(labels == 2)
    r = sample_digits(images, labels, digit=2, n_samples=40, n_components=10, key=1)
    pixels = images.reshape(-1, 784).astype(np.float32) / 255
    pca = jaxkde.pca_fit(pixels, 10)
    scores = np.asarray(jaxkde.pca_transform(pca, pixels[rows]))
    log_f = jaxkde.KDE().fit(scores).score_samples(scores)
    threshold = np.sort(log_f)[::-1][int(np.ceil(0.5 * rows.size)) - 1]
    picked = log_f[np.searchsorted(rows, r.source_indices)]
    assert np.all(picked >= threshold)


def test_any_digit_without_labels(mnist_subset):
    images, _ = mnist_subset
    r = sample_digits(images, None, n_samples=3, source="random", key=2)
    assert r.digit is None and r.samples.shape == (3, 28, 28)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"digit": 3, "labels": None}, "labels are required"),
        ({"digit": 12}, "digit 12 has 0 images"),
        ({"source": "best"}, "source must be one of"),
        ({"intensity": "sharp"}, "intensity must be one of"),
        ({"source_quantile": 0.0}, "source_quantile"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_bad_arguments(mnist_subset, kwargs, match):
    images, labels = mnist_subset
    kwargs = {"labels": labels, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_digits(images, **kwargs)


def test_grid_layout():
    sources = np.zeros((5, 28, 28), np.float32)
    samples = np.ones((5, 28, 28), np.float32)
    grid = digit_pairs_grid(sources, samples, pairs_per_row=3, zoom=2)
    assert grid.shape == (2 * (56 + 6) + 6, 3 * (2 * 56 + 8) + 6)
    assert grid.dtype == np.uint8
    assert grid[6:62, 6:62].max() == 0  # first source tile: black
    assert grid[6:62, 64:120].min() == 255  # first sample tile: white
    assert grid[0, 0] == 96  # frame


def test_bad_arguments_are_named_not_a_bare_arithmetic_error():
    from jaxkde.apps.digits import digit_pairs_grid

    tiles = np.zeros((2, 28, 28))
    with pytest.raises(ValueError, match="pairs_per_row must be a positive integer"):
        digit_pairs_grid(tiles, tiles, pairs_per_row=0)
    with pytest.raises(ValueError, match="zoom must be a positive integer"):
        digit_pairs_grid(tiles, tiles, zoom=0)
    with pytest.raises(ValueError, match=r"images of one shape \(n, h, w\)"):
        digit_pairs_grid(np.zeros((2, 28)), np.zeros((2, 28)))
    images = np.random.default_rng(0).integers(0, 256, size=(40, 784)).astype(np.uint8)
    with pytest.raises(ValueError, match=r"n_samples=.* is too many"):
        sample_digits(images, n_samples=10**12, n_components=5)
    with pytest.raises(ValueError, match="scaling_factor"):
        sample_digits(images, n_samples=2, n_components=5, scaling_factor=float("inf"))


@pytest.mark.parametrize("keep", ["top", "bottom", "left", "right"])
def test_observed_mask_keeps_one_half(keep):
    mask = observed_mask(keep)
    assert mask.shape == (28, 28) and mask.sum() == 392
    assert mask[0, 0] if keep in ("top", "left") else mask[-1, -1]


@pytest.mark.slow
def test_inpainting_keeps_the_half_and_completes_the_other(mnist_test_images):
    images = mnist_test_images
    train, queries = images[:3000], images[3000:3020]
    result = inpaint_digits(train, queries, keep="top", n_components=30, key=4)
    mask = result.mask
    pixels = queries.reshape(-1, 28, 28).astype(np.float32) / 255
    np.testing.assert_array_equal(result.completions[:, mask], pixels[:, mask])
    np.testing.assert_array_equal(result.observed[:, ~mask], 0.0)
    assert result.completions.dtype == np.float32
    assert result.completions.min() >= 0 and result.completions.max() <= 1
    # the completion is informed by the kept half: nearer the truth than an empty half, and
    # than the completion of another digit's half
    err = np.sqrt(np.mean((result.completions[:, ~mask] - pixels[:, ~mask]) ** 2))
    shuffled = np.sqrt(np.mean((result.completions[::-1][:, ~mask] - pixels[:, ~mask]) ** 2))
    empty = np.sqrt(np.mean(pixels[:, ~mask] ** 2))
    assert err < 0.8 * empty and err < 0.8 * shuffled
    again = inpaint_digits(train, queries, keep="top", n_components=30, key=4)
    np.testing.assert_array_equal(again.completions, result.completions)
    with pytest.raises(ValueError, match="keep must be one of"):
        inpaint_digits(train, queries, keep="middle")
    with pytest.raises(ValueError, match="bandwidth_scale"):
        inpaint_digits(train, queries, bandwidth_scale=0.0)
