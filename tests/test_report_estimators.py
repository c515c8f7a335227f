"""Estimators of bbf_jax.report on hand-computed matrices, and against rliable when importable."""

import numpy as np
import pytest
import scipy.stats

from bbf_jax.report import estimators as E

# 2 runs x 3 games. Pooled and sorted: 0.1 0.2 0.3 0.5 0.9 10; per-game means 0.2 5.1 0.7.
X = np.array([[0.1, 10.0, 0.5],
              [0.3, 0.2, 0.9]])


def test_iqm_hand_computed():
    # n = 6, floor(0.25 * 6) = 1 dropped at each end: mean(0.2, 0.3, 0.5, 0.9).
    assert E.iqm(X) == pytest.approx(0.475, abs=1e-15)
    # n = 8: 2 dropped at each end -> mean(2, 3, 4, 5), whatever the layout.
    assert E.iqm(np.arange(8.0).reshape(4, 2)[::-1]) == pytest.approx(3.5, abs=1e-15)


def test_median_mean_optimality_gap_hand_computed():
    assert E.median(X) == pytest.approx(0.7, abs=1e-15)
    assert E.mean(X) == pytest.approx(2.0, abs=1e-15)
    # min(x, 1) sums to 0.1 + 1 + 0.5 + 0.3 + 0.2 + 0.9 = 3.0 over 6 entries.
    assert E.optimality_gap(X) == pytest.approx(0.5, abs=1e-15)
    # min(x, 0.5): 0.1 + 0.5 + 0.5 + 0.3 + 0.2 + 0.5 = 2.1.
    assert E.optimality_gap(X, gamma=0.5) == pytest.approx(0.5 - 2.1 / 6, abs=1e-15)


def test_probability_of_improvement_hand_computed():
    # Game 1: pairs (2,2) tie 1/2, (2,1) (3,2) (3,1) wins: 3.5 / 4. Game 2: x always lower: 0.
    x = np.array([[2.0, 0.0], [3.0, 0.0]])
    y = np.array([[2.0, 1.0], [1.0, 1.0]])
    assert E.probability_of_improvement(x, y) == pytest.approx(0.4375, abs=1e-15)
    assert E.probability_of_improvement(y, x) == pytest.approx(0.5625, abs=1e-15)
    assert E.probability_of_improvement(x, x) == pytest.approx(0.5, abs=1e-15)
    # Different run counts: x 1 run, y 3 runs on one game: 4 beats 1 and 3, ties 4.
    assert E.probability_of_improvement(np.array([[4.0]]), np.array([[1.0], [3.0], [4.0]])) \
        == pytest.approx(2.5 / 3, abs=1e-15)


def test_score_distribution_hand_computed():
    taus = np.array([0.0, 0.2, 0.5, 1.0, 20.0])
    # Strictly greater than tau: 0.2 is not above 0.2.
    expected = np.array([6, 4, 2, 1, 0]) / 6
    np.testing.assert_allclose(E.score_distribution(X, taus), expected, atol=1e-15)
    batched = E.score_distribution(np.stack([X, X + 100]), taus)
    np.testing.assert_allclose(batched, [expected, np.ones(5)], atol=1e-15)


def test_iqm_equals_scipy_trim_mean():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 5), (7, 26), (52, 26)]:
        x = rng.standard_normal(shape) ** 3
        assert E.iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25, axis=None), rel=1e-12)


def test_batched_statistics_match_per_matrix_calls():
    rng = np.random.default_rng(1)
    batch = rng.gamma(1.0, size=(4, 6, 5))
    other = rng.gamma(1.0, size=(4, 3, 5))
    for f in E.AGGREGATES.values():
        np.testing.assert_allclose(f(batch), [f(b) for b in batch], rtol=1e-14)
    np.testing.assert_allclose(E.probability_of_improvement(batch, other),
                               [E.probability_of_improvement(a, b)
                                for a, b in zip(batch, other, strict=True)], rtol=1e-14)


def test_stratified_resample_draws_within_each_game():
    x = np.array([[0.0, 10.0, 20.0], [1.0, 11.0, 21.0], [2.0, 12.0, 22.0]])
    res = E.stratified_resample(x, np.random.default_rng(0), 500)
    assert res.shape == (500, 3, 3)
    for m in range(3):
        assert set(np.unique(res[:, :, m])) == set(x[:, m])
    # Runs are drawn independently per game: the column pattern is not shared.
    assert not np.array_equal(res[:, :, 0] - 0, res[:, :, 1] - 10)


def test_bootstrap_distribution_of_two_runs():
    # Mean of 2 runs {0, 1} resampled: 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    stats = E.bootstrap_distribution(E.mean, (np.array([[0.0], [1.0]]),), reps=20000, seed=3)
    values, counts = np.unique(stats, return_counts=True)
    np.testing.assert_array_equal(values, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(counts / 20000, [0.25, 0.5, 0.25], atol=0.015)


def test_percentile_interval_is_linear_interpolation():
    low, high = E.percentile_interval(np.arange(101.0)[::-1])
    assert (low, high) == (pytest.approx(2.5, abs=1e-12), pytest.approx(97.5, abs=1e-12))
    low, high = E.percentile_interval(np.arange(11.0), size=0.5)
    assert (low, high) == (pytest.approx(2.5, abs=1e-12), pytest.approx(7.5, abs=1e-12))


def test_estimate_is_deterministic_and_degenerates_to_point():
    rng = np.random.default_rng(2)
    x = rng.gamma(1.0, size=(5, 4))
    a = E.estimate(E.iqm, x, reps=2000, seed=11)
    assert a == E.estimate(E.iqm, x, reps=2000, seed=11)
    assert a != E.estimate(E.iqm, x, reps=2000, seed=12)
    assert a.low < a.value < a.high
    one_run = E.estimate(E.mean, x[:1], reps=200, seed=0)
    assert one_run.low == pytest.approx(one_run.value) == pytest.approx(one_run.high)


def test_chunked_bootstrap_equals_single_chunk(monkeypatch):
    x = np.random.default_rng(4).gamma(1.0, size=(4, 3))
    whole = E.bootstrap_distribution(E.iqm, (x,), reps=50, seed=5)
    monkeypatch.setattr(E, "_CHUNK_ELEMENTS", 12 * 4 * 7)  # 7 resamples per chunk
    np.testing.assert_array_equal(E.bootstrap_distribution(E.iqm, (x,), reps=50, seed=5), whole)


def test_performance_profile_band_contains_profile():
    x = np.random.default_rng(6).gamma(1.0, size=(6, 5))
    taus = np.linspace(0, 2, 21)
    p, low, high = E.performance_profile(x, taus, reps=500, seed=0)
    np.testing.assert_array_equal(p, E.score_distribution(x, taus))
    assert np.all(low <= p + 1e-12) and np.all(p <= high + 1e-12)


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros(3), np.array([[np.nan, 1.0]])])
def test_estimate_rejects_bad_matrices(bad):
    with pytest.raises(ValueError, match="sample 0"):
        E.estimate(E.iqm, bad, reps=10, seed=0)


def test_estimate_rejects_mismatched_games_and_reps():
    with pytest.raises(ValueError, match="different numbers of games"):
        E.estimate(E.probability_of_improvement, np.ones((2, 3)), np.ones((2, 4)), reps=10,
                   seed=0)
    with pytest.raises(ValueError, match="reps"):
        E.estimate(E.iqm, np.ones((2, 3)), reps=0, seed=0)


# ---- rliable's own functions (optional dependency: compared only where it imports) ----


@pytest.fixture(scope="module")
def rliable():
    pytest.importorskip("rliable", reason="rliable is optional; hand-computed tests above")
    from rliable import library, metrics

    return library, metrics


def test_point_estimates_match_rliable(rliable):
    library, metrics = rliable
    rng = np.random.default_rng(8)
    for shape in [(3, 5), (10, 26)]:
        x = rng.gamma(0.7, size=shape)
        y = np.round(rng.gamma(0.7, size=(shape[0] + 2, shape[1])), 1)  # with ties
        assert E.iqm(x) == pytest.approx(metrics.aggregate_iqm(x), rel=1e-12)
        assert E.median(x) == pytest.approx(metrics.aggregate_median(x), rel=1e-12)
        assert E.mean(x) == pytest.approx(metrics.aggregate_mean(x), rel=1e-12)
        assert E.optimality_gap(x) == pytest.approx(metrics.aggregate_optimality_gap(x),
                                                    rel=1e-12)
        xr = np.round(x, 1)
        assert E.probability_of_improvement(xr, y) == pytest.approx(
            metrics.probability_of_improvement(xr, y), rel=1e-12)
        taus = np.linspace(0, 2, 11)
        np.testing.assert_allclose(E.score_distribution(x, taus),
                                   library.score_distributions(x, taus), rtol=1e-12)


def test_bootstrap_interval_matches_rliable_on_same_resamples(rliable):
    # rliable's StratifiedBootstrap draws np.random.choice(N, (N, M)) from the global numpy
    # state once per resample; replaying those indices must give its interval exactly.
    library, metrics = rliable
    x = np.random.default_rng(9).gamma(1.0, size=(5, 4))
    reps = 300
    for ours, theirs in [(E.iqm, metrics.aggregate_iqm), (E.median, metrics.aggregate_median)]:
        np.random.seed(7)
        _, ci = library.get_interval_estimates(
            {"a": x}, lambda s, f=theirs: np.array([f(s)]), reps=reps)
        np.random.seed(7)
        idx = np.stack([np.random.choice(5, (5, 4), replace=True) for _ in range(reps)])
        low, high = E.percentile_interval(ours(np.take_along_axis(x[None], idx, axis=1)))
        np.testing.assert_allclose([low, high], ci["a"].ravel(), rtol=1e-12)
