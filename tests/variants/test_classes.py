"""Class-conditional KDE and the KDE Bayes classifier."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.neighbors import KernelDensity

import jaxkde


@pytest.fixture
def three_classes():
    rng = np.random.default_rng(0)
    x = np.vstack([
        rng.normal(size=(120, 2)),
        rng.normal(size=(60, 2)) * 0.5 + [3.0, 0.0],
        rng.normal(size=(90, 2)) * [1.5, 0.3] + [0.0, 4.0],
    ])  # fmt: skip
    y = np.array(["cat"] * 120 + ["dog"] * 60 + ["emu"] * 90)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


@pytest.mark.parametrize("bandwidth", ["scott", "silverman_full", 0.4])
def test_class_log_density_equals_separate_fits(dtype, three_classes, bandwidth):
    x, y = three_classes
    x = x.astype(dtype)
    q = np.random.default_rng(1).normal(size=(40, 2)).astype(dtype) * 2
    kde = jaxkde.KDE(bandwidth=bandwidth, chunk_size=32).fit(x, y)
    got = kde.class_log_density(q)
    assert got.shape == (40, 3)
    for j, label in enumerate(["cat", "dog", "emu"]):
        alone = jaxkde.KDE(bandwidth=bandwidth, chunk_size=32).fit(x[y == label])
        np.testing.assert_array_equal(got[:, j], alone.score_samples(q))
    np.testing.assert_allclose(kde.class_prior_, [120 / 270, 60 / 270, 90 / 270])
    mixture = logsumexp(got.astype(np.float64) + np.log(kde.class_prior_), axis=1)
    np.testing.assert_allclose(kde.score_samples(q), mixture, rtol=1e-5)


def test_per_class_bandwidths_from_a_dict(three_classes):
    x, y = three_classes
    bw = {"cat": 0.3, "dog": 0.6, "emu": "scott"}
    kde = jaxkde.KDE(bandwidth=bw).fit(x, y)
    np.testing.assert_allclose(kde.bandwidth_[0], 0.09 * np.eye(2))
    np.testing.assert_allclose(kde.bandwidth_[1], 0.36 * np.eye(2))
    scott = jaxkde.KDE(bandwidth="scott").fit(x[y == "emu"]).bandwidth_
    np.testing.assert_allclose(kde.bandwidth_[2], scott)
    with pytest.raises(ValueError, match="no entry for class 'emu'"):
        jaxkde.KDE(bandwidth={"cat": 0.3, "dog": 0.6}).fit(x, y)
    with pytest.raises(ValueError, match="fit with labels"):
        jaxkde.KDE(bandwidth=bw).fit(x)


def test_classifier_matches_sklearn_densities_and_bayes_rule(three_classes):
    x, y = three_classes
    q = np.random.default_rng(2).normal(size=(50, 2)) * 2
    clf = jaxkde.KDEClassifier(bandwidth=0.5).fit(x, y)
    log_joint = np.column_stack([
        KernelDensity(bandwidth=0.5, algorithm="ball_tree").fit(x[y == c]).score_samples(q)
        + np.log(np.mean(y == c))
        for c in clf.classes_
    ])  # fmt: skip
    ref = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    proba = clf.predict_proba(q)
    np.testing.assert_allclose(proba, ref, atol=1e-5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(q), clf.classes_[np.argmax(ref, axis=1)])
    assert clf.score(x, y) > 0.95
    assert clf.score(x, y) == pytest.approx(np.mean(clf.predict(x) == y))


def test_posteriors_stay_finite_in_784_dimensions():
    """Class log densities thousands of nats apart: the log-softmax keeps the posterior exact."""
    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(size=(50, 784)), rng.normal(size=(50, 784)) + 1.0])
    y = np.r_[np.zeros(50, int), np.ones(50, int)]
    clf = jaxkde.KDEClassifier(bandwidth=0.5).fit(x, y)
    log_p = clf.predict_log_proba(x[[0, 60]])
    assert np.all(np.isfinite(log_p))
    np.testing.assert_allclose(np.exp(log_p).sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(x[[0, 60]]), [0, 1])


def test_labels_of_any_hashable_type_round_trip():
    rng = np.random.default_rng(4)
    x = np.vstack([rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 6])
    for labels in (["a", "b"], [7, -1], [(1, "x"), (2, "y")], ["z", 3]):
        y = [labels[0]] * 30 + [labels[1]] * 30
        clf = jaxkde.KDEClassifier(bandwidth=0.8).fit(x, y)
        assert set(clf.classes_.tolist()) == set(labels)
        pred = clf.predict(x[[0, 45]]).tolist()
        assert pred == [labels[0], labels[1]]
        assert clf.score(x, y) == 1.0
        kde = jaxkde.KDE(bandwidth=0.8).fit(x, y)
        drawn = kde.sample(20, key=1, label=labels[1])
        assert np.all(drawn.mean(axis=1) > 3)


def test_given_priors_array_and_dict(three_classes):
    x, y = three_classes
    q = np.random.default_rng(5).normal(size=(10, 2))
    a = jaxkde.KDEClassifier(bandwidth=0.5, priors=[0.2, 0.3, 0.5]).fit(x, y)
    b = jaxkde.KDEClassifier(bandwidth=0.5, priors={"emu": 0.5, "cat": 0.2, "dog": 0.3}).fit(x, y)
    np.testing.assert_allclose(a.class_prior_, [0.2, 0.3, 0.5])
    np.testing.assert_array_equal(a.predict_log_proba(q), b.predict_log_proba(q))
    kde = jaxkde.KDE(bandwidth=0.5).fit(x, y)
    dens = kde.class_log_density(q)
    joint = dens + np.log([0.2, 0.3, 0.5])
    want = joint - logsumexp(joint, axis=1, keepdims=True)
    np.testing.assert_allclose(a.predict_log_proba(q), want, atol=1e-5)


@pytest.mark.parametrize(
    ("priors", "match"),
    [
        ([0.5, 0.5], r"shape \(3,\)"),
        ([0.5, 0.6, -0.1], "non-negative"),
        ([0.2, 0.2, 0.2], "sum to 1"),
        ({"cat": 1.0}, "no entry"),
    ],
)
def test_bad_priors(three_classes, priors, match):
    x, y = three_classes
    with pytest.raises(ValueError, match=match):
        jaxkde.KDEClassifier(priors=priors).fit(x, y)


def test_class_sampling_by_label_and_by_prior(three_classes):
    x, y = three_classes
    kde = jaxkde.KDE(bandwidth=0.2).fit(x, y)
    dog = kde.sample(500, key=2, label="dog")
    assert np.abs(dog.mean(0) - x[y == "dog"].mean(0)).max() < 0.1
    labels, _, samples = kde._sample(30000, 3, 1.0)
    freq = [np.mean(labels == c) for c in kde.classes_]
    np.testing.assert_allclose(freq, kde.class_prior_, atol=0.01)
    near = samples[labels == "emu"].mean(0)
    assert np.abs(near - x[y == "emu"].mean(0)).max() < 0.05
    original, _ = kde.random_sample(0.01, key=4, label="cat")
    assert np.abs(x[y == "cat"] - original).max(1).min() < 1e-5
    np.testing.assert_array_equal(kde.sample(5, key=9, label="cat"),
                                  kde.sample(5, key=9, label="cat"))  # fmt: skip
    with pytest.raises(ValueError, match="not a class"):
        kde.sample(2, key=0, label="cow")


def test_compact_kernel_query_outside_every_class_falls_back_to_priors(three_classes):
    x, y = three_classes
    clf = jaxkde.KDEClassifier(kernel="tophat", bandwidth=0.5).fit(x, y)
    far = np.array([[100.0, 100.0], [0.0, 0.0]])
    proba = clf.predict_proba(far)
    assert not np.any(np.isnan(proba))
    np.testing.assert_allclose(proba[0], clf.class_prior_, rtol=1e-6)
    assert np.all(clf.kde_.class_log_density(far[:1]) == -np.inf)


def test_errors():
    x = np.random.default_rng(6).normal(size=(10, 2))
    with pytest.raises(ValueError, match="class 'b': bandwidth rule 'scott' needs at least 2"):
        jaxkde.KDE(bandwidth="scott").fit(x, ["a"] * 9 + ["b"])
    with pytest.raises(ValueError, match=r"one label per row of X, shape \(10,\)"):
        jaxkde.KDE().fit(x, ["a"] * 9)
    with pytest.raises(jaxkde.NotFittedError, match="fitted with labels"):
        jaxkde.KDE().fit(x).class_log_density(x)
    with pytest.raises(ValueError, match="label needs a KDE fitted with labels"):
        jaxkde.KDE().fit(x).sample(2, label="a")
    with pytest.raises(jaxkde.NotFittedError):
        jaxkde.KDEClassifier().predict(x)
    with pytest.raises(ValueError, match="requires y"):
        jaxkde.KDEClassifier().fit(x, None)


def test_classifier_params_clone_and_pickle(three_classes):
    import pickle

    from sklearn.base import clone

    x, y = three_classes
    clf = jaxkde.KDEClassifier(kernel="epanechnikov", bandwidth=1.0)
    assert clone(clf).get_params() == clf.get_params()
    assert repr(clf) == "KDEClassifier(kernel='epanechnikov', bandwidth=1.0)"
    clf.fit(x, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(x[:5]), clf.predict_proba(x[:5]))


def test_a_class_of_zero_weight_has_prior_zero_and_no_nan():
    rng = np.random.default_rng(20)
    x = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) + 3])
    y = np.array(["a"] * 40 + ["b"] * 30)
    w = np.where(y == "b", 0.0, 1.0)
    q = rng.normal(size=(15, 2)) + 1.5
    kde = jaxkde.KDE().fit(x, y, sample_weight=w)
    assert kde.class_prior_.tolist() == [1.0, 0.0]
    dens = kde.class_log_density(q)
    assert np.all(np.isfinite(dens[:, 0])) and np.all(dens[:, 1] == -np.inf)
    np.testing.assert_allclose(kde.score_samples(q), dens[:, 0], rtol=1e-6)
    clf = jaxkde.KDEClassifier().fit(x, y, sample_weight=w)
    proba = clf.predict_proba(q)
    assert not np.any(np.isnan(proba)) and np.all(proba[:, 1] == 0)
    assert set(clf.predict(q).tolist()) == {"a"}
    assert set(kde.sample(50, key=0).ravel().tolist()) and np.all(np.isfinite(kde.sample(50)))
    with pytest.raises(ValueError, match="prior 0"):
        kde.sample(3, label="b")
    with pytest.raises(ValueError, match="zero total sample_weight"):
        jaxkde.KDE(priors=[0.5, 0.5]).fit(x, y, sample_weight=w)


def test_label_columns_are_ravelled_and_nan_labels_refused():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(30, 2))
    y = np.repeat([0, 1, 2], 10)
    flat = jaxkde.KDE().fit(x, y)
    with pytest.warns(UserWarning, match="column-vector y"):
        column = jaxkde.KDE().fit(x, y[:, None])
    assert column.classes_.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(column.class_log_density(x), flat.class_log_density(x))
    rows = jaxkde.KDE().fit(x, [[label] for label in y.tolist()])  # a list of [label] rows
    assert rows.classes_.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="y contains NaN"):
        jaxkde.KDE().fit(x[:5], [0.0, np.nan, 0.0, 1.0, np.nan])
    with pytest.raises(ValueError, match="requires y"):
        jaxkde.KDEClassifier().fit(x, None)


def test_shared_row_counts_pad_little_and_group_similar_sizes():
    from jaxkde.core.state import shared_row_counts

    sizes = [5421, 6742, 5958, 6131, 100, 105, 50, 6742]
    rows = shared_row_counts(sizes)
    for size, r in zip(sizes, rows, strict=True):
        assert size <= r <= 1.1 * size
        assert r in sizes
    assert len(set(rows)) == 4  # {6742, 6131 group}, {5958, 5421 group}, {105, 100}, {50}
    assert shared_row_counts([7]) == [7]


def test_classes_of_similar_size_share_one_compiled_program():
    """Ten classes of 95-104 rows: one layout, so the per-class evaluation compiles once."""
    rng = np.random.default_rng(11)
    sizes = rng.integers(95, 105, size=10)
    x = rng.normal(size=(int(sizes.sum()), 7))  # d = 7: shapes no other test uses
    y = np.repeat(np.arange(10), sizes)
    clf = jaxkde.KDEClassifier(bandwidth=0.8, chunk_size=48, batch_size=32).fit(x, y)
    shapes = {s.points.shape for s in clf.kde_.state_.states}
    assert len(shapes) == 1
    before = jaxkde.core.engine._first_pass_program._cache_size()
    got = clf.predict_log_proba(x[:32])
    assert jaxkde.core.engine._first_pass_program._cache_size() - before == 1
    # Padding changes nothing: each class against its own unpadded fit, in float64.
    ref = np.stack(
        [
            jaxkde.KDE(bandwidth=0.8).fit(x[y == c]).score_samples(x[:32]).astype(np.float64)
            for c in range(10)
        ],
        axis=1,
    ) + np.log(sizes / sizes.sum())
    np.testing.assert_allclose(got, ref - logsumexp(ref, axis=1, keepdims=True), atol=2e-5)
