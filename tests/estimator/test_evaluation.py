"""Evaluation as pure functions (``jaxkde.estimator.evaluation``): blocks, dispatch, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from reference import brute_log_density

import jaxkde
from jaxkde.core.state import host_whitening
from jaxkde.estimator import evaluation
from jaxkde.variants.bounds import check_bounds

rng = np.random.default_rng(1)
X = rng.normal(size=(500, 3))
H = 0.3 * np.eye(3)


def test_query_block_padding_uses_few_shapes():
    shapes = {evaluation.query_block_rows(r, 1024) for r in range(1, 3000)}
    assert len(shapes) <= 16
    for r in range(1, 3000):
        padded = evaluation.query_block_rows(r, 1024)
        assert min(r, 1024) <= padded <= 1024
        assert padded - min(r, 1024) <= max(128, min(r, 1024))  # waste below a step
    assert evaluation.query_block_rows(5, 4) == 4


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_evaluate_blocks_equals_brute_force_for_any_block(block):
    state = jaxkde.build_state(X, None, H, jaxkde.GaussianKernel(), chunk_size=128)
    q = rng.normal(size=(37, 3))
    got = evaluation.evaluate_blocks(evaluation.deferred_log_density, q, state,
                                     host_whitening(state), block=block,
                                     precision="highest")  # fmt: skip
    assert got.shape == (37,)
    np.testing.assert_allclose(got, brute_log_density(X, q, H), rtol=1e-5)


def test_score_program_picks_the_path():
    state = jaxkde.build_state(X[:, :1], None, np.eye(1), jaxkde.get_kernel("epanechnikov"))
    fn, block, sorted_data = evaluation.score_program(state, labelled=False, mesh=None,
                                                      sorted_data=None)  # fmt: skip
    assert sorted_data is not False and block is not None  # 1-D compact: sum updating
    gauss = jaxkde.build_state(X, None, H, jaxkde.GaussianKernel())
    fn, block, sorted_data = evaluation.score_program(gauss, labelled=False, mesh=None,
                                                      sorted_data=None)  # fmt: skip
    assert fn is evaluation.deferred_log_density and sorted_data is False and block is None


def test_over_classes_is_the_prior_weighted_mixture():
    y = (X[:, 0] > 0).astype(int)
    kde = jaxkde.KDE(bandwidth=0.5).fit(X, y)
    parts = evaluation.over_classes(kde.state_, lambda s: np.zeros(4))
    np.testing.assert_allclose(parts, np.zeros(4), atol=1e-6)  # log sum_c P(c) = 0


def test_bounded_score_is_minus_infinity_outside_and_sums_images_inside():
    bounds = check_bounds([(0.0, None)], 1)
    calls = []

    def evaluate(x, state=None, whitening=None):
        calls.append(state)
        return np.full(x.shape[0], np.log(0.25))

    images = ((object(), None),)
    q = np.array([[-1.0], [0.5], [2.0]])
    got = evaluation.bounded_score(evaluate, q, bounds, images, np.float32)
    assert got[0] == -np.inf
    np.testing.assert_allclose(got[1:], np.log(0.5), rtol=1e-6)
    assert len(calls) == 2 and got.dtype == np.float32


def test_check_local_refuses_a_streamed_state(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, X.astype(np.float32))
    kde = jaxkde.KDE(bandwidth=1.0, out_of_core=True).fit(np.load(path, mmap_mode="r"))
    with pytest.raises(ValueError, match="score_grid is not available for a KDE streamed"):
        evaluation.check_local(kde.state_, "score_grid")
    evaluation.check_local(jaxkde.KDE().fit(X).state_, "score_grid")  # in memory: fine
