"""Sharded evaluation equals the single-device engine (simulated host devices in a subprocess)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import jaxkde

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_one_device_mesh_equals_unsharded():
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(500, 3)), rng.normal(size=(40, 3))
    a = jaxkde.KDE(bandwidth="scott_full", chunk_size=64, mesh=mesh).fit(x)
    b = jaxkde.KDE(bandwidth="scott_full", chunk_size=64).fit(x)
    np.testing.assert_allclose(a.score_samples(q), b.score_samples(q), rtol=1e-6)
    np.testing.assert_array_equal(a.sample(7, key=2), b.sample(7, key=2))


def test_mesh_argument_is_validated():
    x = np.random.default_rng(1).normal(size=(20, 2))
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        jaxkde.KDE(mesh="gpu").fit(x)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match="not yet supported for class-conditional"):
        jaxkde.KDE(mesh=mesh).fit(x, [0] * 10 + [1] * 10)


SCRIPT = textwrap.dedent(
    """
    import numpy as np, jax, jaxkde
    from jax.sharding import Mesh
    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1003, 4)) * [1.0, 2.0, 0.5, 1.0]
    w = rng.uniform(0.1, 2.0, size=1003)
    q = rng.normal(size=(77, 4))
    for kernel, bw in [("gaussian", "scott_full"), ("epanechnikov", 1.5), ("tophat", 0.4)]:
        # 1003 rows in chunks of 100: 11 chunks over 4 devices (uneven; padded to 12).
        a = jaxkde.KDE(kernel, bandwidth=bw, chunk_size=100, mesh=mesh).fit(x, sample_weight=w)
        b = jaxkde.KDE(kernel, bandwidth=bw, chunk_size=100).fit(x, sample_weight=w)
        assert a.state_.points.shape[0] == 12
        la, lb = a.score_samples(q), b.score_samples(q)
        assert np.array_equal(np.isfinite(la), np.isfinite(lb)), kernel
        fin = np.isfinite(lb)
        assert np.allclose(la[fin], lb[fin], rtol=1e-5, atol=1e-6), (kernel, np.abs(la - lb).max())
        far = a.score_samples(q[:2] + 1e3)
        assert not np.isnan(far).any()
        assert np.array_equal(a.sample(9, key=3), b.sample(9, key=3)), kernel
    print("SHARDED OK")
    """
)


def test_four_simulated_devices_match_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SHARDED OK" in done.stdout
