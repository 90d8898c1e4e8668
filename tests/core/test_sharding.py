"""Sharded evaluation equals the single-device engine (simulated host devices in a subprocess)."""

from __future__ import annotations

import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import jaxkde

ROOT = pathlib.Path(__file__).resolve().parents[2]


def one_device_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:1]), ("data",))


def test_one_device_mesh_equals_unsharded():
    mesh = one_device_mesh()
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(500, 3)), rng.normal(size=(40, 3))
    y = rng.integers(0, 3, size=500)
    a = jaxkde.KDE(bandwidth="scott_full", chunk_size=64, mesh=mesh).fit(x)
    b = jaxkde.KDE(bandwidth="scott_full", chunk_size=64).fit(x)
    np.testing.assert_allclose(a.score_samples(q), b.score_samples(q), rtol=1e-6)
    np.testing.assert_array_equal(a.sample(7, key=2), b.sample(7, key=2))
    a = jaxkde.KDE(chunk_size=64, mesh=mesh).fit(x, y)
    b = jaxkde.KDE(chunk_size=64).fit(x, y)
    np.testing.assert_allclose(a.class_log_density(q), b.class_log_density(q), rtol=1e-6)
    np.testing.assert_array_equal(a.sample(7, key=2, label=1), b.sample(7, key=2, label=1))


def test_pickled_sharded_model_evaluates_on_one_device():
    rng = np.random.default_rng(3)
    x, q = rng.normal(size=(300, 2)), rng.normal(size=(9, 2))
    kde = jaxkde.KDE(chunk_size=64, mesh=one_device_mesh()).fit(x)
    loaded = pickle.loads(pickle.dumps(kde))
    assert loaded.mesh is None
    np.testing.assert_allclose(loaded.score_samples(q), kde.score_samples(q), rtol=1e-6)
    clf = jaxkde.KDEClassifier(mesh=one_device_mesh()).fit(x, x[:, 0] > 0)
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(loaded.predict_proba(q), clf.predict_proba(q), rtol=1e-6)


def test_mesh_argument_is_validated():
    x = np.random.default_rng(1).normal(size=(20, 2))
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        jaxkde.KDE(mesh="gpu").fit(x)
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        jaxkde.fit_bandwidth(x, mesh=4)


SCRIPT = textwrap.dedent(
    """
    import numpy as np, jax, jax.numpy as jnp, jaxkde
    from jax.sharding import Mesh
    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1003, 4)) * [1.0, 2.0, 0.5, 1.0]
    w = rng.uniform(0.1, 2.0, size=1003)
    y = rng.integers(0, 3, size=1003)
    q = rng.normal(size=(77, 4))

    def close(a, b, what, rtol=1e-5, atol=1e-6):
        a, b = np.asarray(a), np.asarray(b)
        assert np.array_equal(np.isfinite(a), np.isfinite(b)), what
        fin = np.isfinite(b)
        assert np.allclose(a[fin], b[fin], rtol=rtol, atol=atol), (what, np.abs(a - b).max())

    # Evaluation and sampling; 1003 rows in chunks of 100: 11 chunks over 4 devices (padded to 12).
    for kernel, bw in [("gaussian", "scott_full"), ("epanechnikov", 1.5), ("tophat", 0.4)]:
        a = jaxkde.KDE(kernel, bandwidth=bw, chunk_size=100, mesh=mesh).fit(x, sample_weight=w)
        b = jaxkde.KDE(kernel, bandwidth=bw, chunk_size=100).fit(x, sample_weight=w)
        assert a.state_.points.shape[0] == 12
        assert len(a.state_.points.sharding.device_set) == 4
        close(a.score_samples(q), b.score_samples(q), kernel)
        assert not np.isnan(a.score_samples(q[:2] + 1e3)).any()
        assert np.array_equal(a.sample(9, key=3), b.sample(9, key=3)), kernel

    # Ten rows in chunks of 8: two devices hold only padding.
    a = jaxkde.KDE(chunk_size=8, mesh=mesh).fit(x[:10])
    b = jaxkde.KDE(chunk_size=8).fit(x[:10])
    close(a.score_samples(q), b.score_samples(q), "mostly padding")

    # Class-conditional densities, posteriors and class samples.
    a = jaxkde.KDE(chunk_size=64, mesh=mesh).fit(x, y, sample_weight=w)
    b = jaxkde.KDE(chunk_size=64).fit(x, y, sample_weight=w)
    close(a.class_log_density(q), b.class_log_density(q), "class_log_density")
    close(a.score_samples(q), b.score_samples(q), "mixture")
    for label in (None, 2):
        assert np.array_equal(a.sample(11, key=4, label=label), b.sample(11, key=4, label=label))
    # Adaptive bandwidths: the per-centre factors are sharded with the data.
    a = jaxkde.KDE(bandwidth="scott_full", adaptive=True, chunk_size=100,
                   mesh=mesh).fit(x, sample_weight=w)
    b = jaxkde.KDE(bandwidth="scott_full", adaptive=True, chunk_size=100).fit(x, sample_weight=w)
    assert len(a.state_.log_factors.sharding.device_set) == 4
    close(a.adaptive_factors_, b.adaptive_factors_, "adaptive factors")
    close(a.score_samples(q), b.score_samples(q), "adaptive")
    assert np.array_equal(a.sample(9, key=3), b.sample(9, key=3)), "adaptive samples"
    ca = jaxkde.KDEClassifier(chunk_size=64, mesh=mesh).fit(x, y)
    cb = jaxkde.KDEClassifier(chunk_size=64).fit(x, y)
    close(ca.predict_log_proba(q), cb.predict_log_proba(q), "posterior")

    # Leave-one-out objective and its gradient, rows padded to 4 equal shards (1003 -> 1024).
    with jax.enable_x64(True):
        xc = jnp.asarray(x - x.mean(0))
        lw = jnp.log(jnp.asarray(w / w.sum()))
        rows = jnp.arange(1003)
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        xs = jax.device_put(jnp.pad(xc, ((0, 21), (0, 0))), sharding)
        lws = jax.device_put(jnp.pad(lw, (0, 21), constant_values=-jnp.inf), sharding)
        params_from_bandwidth = jaxkde.bandwidth.objectives.params_from_bandwidth
        for kind in ("diagonal", "full"):  # "scalar" is the diagonal with one parameter
            p = jnp.asarray(params_from_bandwidth(np.eye(4) * 0.3, kind))
            f = lambda p, m, data, lws: jaxkde.loo_log_likelihood(
                p, data, lws, rows, kind=kind, chunk_size=64, block_size=1003, mesh=m)
            va, ga = jax.value_and_grad(f)(p, mesh, xs, lws)
            vb, gb = jax.value_and_grad(f)(p, None, xc, lw)
            close(va, vb, ("loo", kind), rtol=1e-12, atol=1e-12)
            close(ga, gb, ("grad", kind), rtol=1e-10, atol=1e-12)
        # Learned bandwidths, directly and through KDE (minibatches included).
        fa = jaxkde.fit_bandwidth(x, w, kind="diagonal", chunk_size=64, batch_size=512, mesh=mesh)
        fb = jaxkde.fit_bandwidth(x, w, kind="diagonal", chunk_size=64, batch_size=512)
        assert fa.steps == fb.steps and fa.converged == fb.converged, (fa.steps, fb.steps)
        close(fa.matrix, fb.matrix, "fit_bandwidth", rtol=1e-8)
        ka = jaxkde.KDE(bandwidth="cv", chunk_size=64, mesh=mesh).fit(x[:300])
        kb = jaxkde.KDE(bandwidth="cv", chunk_size=64).fit(x[:300])
        close(ka.bandwidth_, kb.bandwidth_, "KDE cv", rtol=1e-8)
        close(ka.score_samples(q), kb.score_samples(q), "KDE cv scores", rtol=1e-8)
        ka = jaxkde.KDE(bandwidth="cv", adaptive=True, chunk_size=64, mesh=mesh).fit(x[:300])
        kb = jaxkde.KDE(bandwidth="cv", adaptive=True, chunk_size=64).fit(x[:300])
        close(ka.bandwidth_, kb.bandwidth_, "adaptive cv", rtol=1e-8)
    print("SHARDED OK")
    """
)


@pytest.mark.slow
def test_four_simulated_devices_match_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SHARDED OK" in done.stdout
