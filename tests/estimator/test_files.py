"""Safe model files: bit-for-bit round trips, and every bad file refused without running code."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import jax
import numpy as np
import pytest

import jaxkde
from jaxkde import KDE, KDEClassifier, ModelFileError
from jaxkde.estimator import files


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int), rng.normal(size=(17, 3)).astype(np.float32)


# Estimators of every kind, each fitted by its test: (x, y) -> fitted estimator.
MODELS = {
    "plain": lambda x, y: KDE().fit(x),
    "labelled": lambda x, y: KDE(bandwidth="silverman", priors=[0.3, 0.7]).fit(x, y),
    "bounded": lambda x, y: KDE(bounds=[(0.0, None)] * 3).fit(np.abs(x)),
    "adaptive": lambda x, y: KDE(adaptive=True, kernel="epanechnikov").fit(x),
    "learned": lambda x, y: KDE(bandwidth="cv").fit(x),
    "univariate": lambda x, y: KDE(kernel="univariate_gaussian", univariate_bandwidth=0.5,
                                   p=1).fit(x),
    "weighted_full": lambda x, y: KDE(bandwidth="scott_full").fit(
        x, sample_weight=np.arange(1, 201)),
    "marginal": lambda x, y: KDE().fit(x).marginal([0, 2]),
    "classifier": lambda x, y: KDEClassifier(bandwidth={0: 0.5, 1: "scott"}).fit(x, y),
}  # fmt: skip


def _outputs(model, q):
    if isinstance(model, KDEClassifier):
        return [model.predict_log_proba(q)]
    q = np.abs(q[:, : model.n_features_in_]) if model.bounds else q[:, : model.n_features_in_]
    key = jax.random.key(4)
    return [model.score_samples(q), np.asarray(model.sample(5, key=key))]


FAST = ("plain", "labelled", "classifier")


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=() if k in FAST else pytest.mark.slow) for k in MODELS]
)
def test_round_trip_is_bit_for_bit(tmp_path, kind):
    x, y, q = _data()
    model = MODELS[kind](x, y)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = jaxkde.load(path)
    assert type(loaded) is type(model)
    assert repr(loaded) == repr(model)
    for got, want in zip(_outputs(loaded, q), _outputs(model, q), strict=True):
        np.testing.assert_array_equal(got, want)


def test_round_trip_in_float64_and_unfitted(tmp_path):
    x, _, q = _data()
    with jax.enable_x64(True):
        model = KDE(bandwidth="silverman_full").fit(x.astype(np.float64))
        model.save(tmp_path / "m64")  # the path as given: no suffix added
        loaded = jaxkde.load(tmp_path / "m64")
        assert loaded.state_.dtype == np.float64
        np.testing.assert_array_equal(loaded.score_samples(q), model.score_samples(q))
    KDE(bandwidth=0.3).save(tmp_path / "unfitted.npz")
    loaded = jaxkde.load(tmp_path / "unfitted.npz")
    assert loaded.get_params() == KDE(bandwidth=0.3).get_params()
    with pytest.raises(jaxkde.NotFittedError):
        loaded.score_samples(q)


def _write(path, header=None, **arrays):
    members = {} if header is None else {"header": np.array(json.dumps(header))}
    members.update(arrays)
    with open(path, "wb") as f:
        np.savez(f, **members)


def _header(tree, version=files.VERSION):
    return {"format": files.FORMAT, "version": version, "jaxkde": "x", "tree": tree}


@pytest.mark.parametrize(
    ("header", "arrays", "match"),
    [
        (None, {"a0": np.zeros(3)}, "no header"),
        ({"format": "other"}, {}, "format 'other'"),
        (_header(None, version=2), {}, "layout version 2; this jaxkde reads versions up to 1"),
        (_header(None, version="1"), {}, "no valid layout version"),
        (_header({"object": "system", "fields": {}}), {}, "unknown record type 'system'"),
        (_header({"object": "KDE", "fields": {"dict": [[{"array": 0}, 1]]}}), {},
         "missing array 0"),
        (_header({"eval": "1"}), {}, "unknown tag 'eval'"),
        (_header({"object": "Bounds", "fields": {"lo": 1, "hi": 2, "x": 3}}), {}, "no fields"),
        (_header([1, 2]), {}, "holds no estimator"),
    ],
)  # fmt: skip
def test_files_of_another_layout_are_refused(tmp_path, header, arrays, match):
    path = tmp_path / "bad.npz"
    _write(path, header, **arrays)
    with pytest.raises(ModelFileError, match=match):
        jaxkde.load(path)


class _Trap:
    """Unpickling this would create the folder ``target``: the proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_file_crafted_to_run_code_is_refused_and_runs_nothing(tmp_path):
    target = str(tmp_path / "code-ran")
    raw = tmp_path / "evil.npz"
    raw.write_bytes(pickle.dumps(_Trap(target)))
    with pytest.raises(ModelFileError, match="pickle"):
        jaxkde.load(raw)
    inner = tmp_path / "evil-member.npz"
    trap = np.empty(1, dtype=object)
    trap[0] = _Trap(target)
    _write(inner, _header({"array": 0}), a0=trap)
    with pytest.raises(ModelFileError, match="could not be read"):
        jaxkde.load(inner)
    assert not os.path.exists(target)


def test_truncated_and_damaged_files_are_refused(tmp_path):
    model = KDE().fit(_data()[0])
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    (tmp_path / "short.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="could not be read"):
        jaxkde.load(tmp_path / "short.npz")
    with zipfile.ZipFile(path) as z:  # one byte of an array changed: its checksum fails
        info = z.getinfo("a3.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    damaged = bytearray(data)
    damaged[start] ^= 0xFF
    (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
    with pytest.raises(ModelFileError):
        jaxkde.load(tmp_path / "damaged.npz")
    with pytest.raises(FileNotFoundError, match="no model file"):
        jaxkde.load(tmp_path / "absent.npz")


def test_save_is_atomic_and_refuses_what_it_cannot_write(tmp_path):
    x, _, _ = _data()
    path = tmp_path / "m.npz"
    KDE().fit(x).save(path)
    before = path.read_bytes()
    view = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                     shape=x.shape)  # fmt: skip
    view[:] = x
    view.flush()
    streamed = KDE(out_of_core=True).fit(np.load(tmp_path / "x.npy", mmap_mode="r"))
    with pytest.raises(ValueError, match="save is not available for a KDE streamed"):
        streamed.save(path)
    unsaveable = KDE().fit(x)
    unsaveable.extra_ = object()  # an attribute with no place in the layout
    with pytest.raises(TypeError, match="cannot save a value of type object"):
        unsaveable.save(path)
    assert path.read_bytes() == before  # the old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "x.npy"]  # no temporary left
    with pytest.raises(TypeError, match="path must be a str"):
        KDE().fit(x).save(3)
    with pytest.raises(FileNotFoundError):
        KDE().fit(x).save(tmp_path / "no-such-folder" / "m.npz")


def test_new_kernels_norms_and_covariance_factors_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 2))
    kde = jaxkde.KDE("tricube", bandwidth=jaxkde.CovarianceFactor(0.6), p=3).fit(x)
    kde.save(tmp_path / "m.npz")
    back = jaxkde.load(tmp_path / "m.npz")
    assert back.bandwidth == jaxkde.CovarianceFactor(0.6) and back.p == 3
    np.testing.assert_array_equal(back.score_samples(x), kde.score_samples(x))
    with pytest.raises(TypeError, match="cannot save the callable"):
        jaxkde.KDE(bandwidth=lambda ctx: 0.5).fit(x).save(tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()
