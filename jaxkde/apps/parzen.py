"""The Parzen-window protocol for scoring a generative model by its samples."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jaxkde._validation import (
    check_data,
    check_positive_int,
)
from jaxkde.bandwidth.objectives import grid_log_likelihood
from jaxkde.estimator.kde import KDE

__all__ = [
    "ParzenResult",
    "parzen_log_likelihood",
]


class ParzenResult(NamedTuple):
    """Result of :func:`parzen_log_likelihood`.

    Attributes
    ----------
    mean : float
        Mean log-likelihood of the test points (nats).
    stderr : float
        Population standard deviation of the per-point log-likelihoods / sqrt(n_test).
    sigma : float
        The window width used.
    sigmas : np.ndarray
        The grid searched.
    validation_means : np.ndarray or None
        Mean validation log-likelihood for each sigma of the grid.
    """

    mean: float
    stderr: float
    sigma: float
    sigmas: np.ndarray
    validation_means: np.ndarray | None


def parzen_log_likelihood(
    samples, test, validation=None, sigmas=None, *, block_size: int = 256, mesh=None
) -> ParzenResult:
    """The Parzen-window estimate of a generative model's test log-likelihood.

    The protocol of Breuleux et al. (2011), used by Goodfellow et al. (2014, Table 1): an
    isotropic Gaussian KDE with the model's ``samples`` as centres,
    ``log p(x) = logsumexp_i(-|x - s_i|^2 / (2 sigma^2)) - log n - (d/2) log(2 pi sigma^2)``;
    ``sigma`` is the value of the grid (default ``numpy.logspace(-1, 0, 10)``, as the original
    code) with the highest mean log-likelihood on ``validation``; the result is the mean over
    ``test`` with its standard error, the population standard deviation over sqrt(n_test).

    Parameters
    ----------
    samples : array-like, shape (n, d)
        Generated points (for MNIST: pixels in [0, 1]).
    test : array-like, shape (m, d)
    validation : array-like, shape (k, d), optional
        Needed when ``sigmas`` has more than one value.
    sigmas : array-like, optional
    block_size : int
        Queries per block.
    mesh : jax.sharding.Mesh, optional
        With ``samples`` a global ``jax.Array`` whose rows are spread over processes
        (:mod:`jaxkde.scale.distributed`): each sigma is a
        ``KDE(bandwidth=sigma, mesh=mesh)`` fitted
        across processes, the same estimate (every process gets the result).
    """
    if mesh is not None:
        return _parzen_across_processes(samples, test, validation, sigmas, block_size, mesh)
    samples = check_data(samples, "samples")[0]
    test, validation, grid = _parzen_inputs(samples.shape[1], test, validation, sigmas, block_size)
    val_means = None
    if validation is not None:
        val = grid_log_likelihood(samples, validation, grid, block_size=block_size)
        val_means = val.mean(axis=0)
        sigma = float(grid[int(np.argmax(val_means))])
    else:
        sigma = float(grid[0])
    ll = grid_log_likelihood(samples, test, [sigma], block_size=block_size)[:, 0]
    return _parzen_result(ll, sigma, grid, val_means)


def _parzen_inputs(d, test, validation, sigmas, block_size):
    test = check_data(test, "test", n_features=d, owner="samples")[0]
    if validation is not None:
        validation = check_data(validation, "validation", n_features=d, owner="samples")[0]
    if sigmas is None:
        grid = np.logspace(-1, 0, 10)
    else:
        try:
            grid = np.asarray(sigmas, np.float64).ravel()
        except (TypeError, ValueError):
            raise TypeError(f"sigmas must be positive numbers; got {sigmas!r}.") from None
        if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
            raise ValueError(f"sigmas must be positive numbers; got {sigmas!r}.")
    check_positive_int(block_size, "block_size")
    if validation is None and grid.size != 1:
        raise ValueError("validation is needed to choose sigma from a grid; or pass one sigma.")
    return test, validation, grid


def _parzen_across_processes(samples, test, validation, sigmas, block_size, mesh):
    """:func:`parzen_log_likelihood` of samples spread over processes: a KDE per sigma."""

    test, validation, grid = _parzen_inputs(samples.shape[1], test, validation, sigmas,
                                            block_size)  # fmt: skip

    def scores(sigma, queries):
        kde = KDE(bandwidth=float(sigma), mesh=mesh, batch_size=block_size).fit(samples)
        return kde.score_samples(queries.astype(np.float32)).astype(np.float64)

    val_means = None
    if validation is not None:
        val_means = np.array([scores(s, validation).mean() for s in grid])
        sigma = float(grid[int(np.argmax(val_means))])
    else:
        sigma = float(grid[0])
    return _parzen_result(scores(sigma, test), sigma, grid, val_means)


def _parzen_result(ll, sigma, grid, val_means) -> ParzenResult:
    return ParzenResult(
        mean=float(ll.mean()),
        stderr=float(ll.std() / math.sqrt(ll.size)),
        sigma=sigma,
        sigmas=grid,
        validation_means=val_means,
    )
