"""Shared fixtures: dtypes (float64 runs under ``jax.enable_x64``), the shipped MNIST images.

The float64 references live in ``reference.py`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import jax
import pytest

from jaxkde.apps.datasets import load_mnist


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program after each test module.

    Each XLA executable keeps memory mappings of its code; the whole suite compiles thousands
    of programs, and without this their mappings pass the kernel's limit per process
    (``vm.max_map_count``, 65,530 here), at which LLVM fails with "Cannot allocate memory".
    """
    yield
    jax.clear_caches()


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Working dtype; float64 cases run with JAX's x64 mode switched on."""
    with jax.enable_x64(request.param == "float64"):
        yield request.param


@pytest.fixture(scope="session")
def mnist_test_images():
    """The 10,000 MNIST test images as uint8 (10000, 784): the copy shipped with jaxkde."""
    return load_mnist("test")[0].reshape(-1, 784)
