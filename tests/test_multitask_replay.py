"""The multi-task replay: task ids stored with their transitions, the ring's per-task
slot lists under overwriting, and minibatches mixed as configured ('uniform' in
proportion to the stored tasks, 'balanced' an equal share of each)."""

from __future__ import annotations

import numpy as np
import pytest

from bbf_jax.replay.multitask import MultiTaskReplay


def _fill(replay, tasks):
    for i, t in enumerate(tasks):
        s = np.full(8, i, np.float32)
        replay.add(s, i % 4, float(i), s + 0.5, i % 7 == 0, int(t))


def test_transitions_and_task_ids_are_stored():
    r = MultiTaskReplay(10, 3, 8, seed=0)
    _fill(r, [0, 1, 2, 2, 1])
    assert r.size == 5
    np.testing.assert_array_equal(r.task_ids[:5], [0, 1, 2, 2, 1])
    np.testing.assert_array_equal(r.actions[:5], [0, 1, 2, 3, 0])
    np.testing.assert_array_equal(r.rewards[:5], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(r.states[3], np.full(8, 3.0))
    np.testing.assert_array_equal(r.next_states[3], np.full(8, 3.5))
    np.testing.assert_array_equal(r.terminals[:5], [True, False, False, False, False])
    np.testing.assert_array_equal(r.task_counts(), [1, 2, 2])
    batch = r.sample(64, "uniform")
    # Every sampled row is one stored transition, its fields still together.
    idx = batch.rewards.astype(int)
    np.testing.assert_array_equal(batch.task_ids, r.task_ids[idx])
    np.testing.assert_array_equal(batch.states[:, 0], idx)
    np.testing.assert_array_equal(batch.actions, idx % 4)


@pytest.mark.parametrize("capacity", [1, 5, 16])
def test_per_task_slots_follow_the_ring(capacity):
    rng = np.random.default_rng(capacity)
    r = MultiTaskReplay(capacity, 3, 8, seed=1)
    tasks = rng.integers(0, 3, 100)
    for n, t in enumerate(tasks, 1):
        _fill_one(r, n, int(t))
        stored = r.task_ids[:r.size]
        np.testing.assert_array_equal(r.task_counts(), np.bincount(stored, minlength=3))
        if r.task_counts().all() and r.size >= 3:
            i = r.sample_indices(3 * 20, "balanced")
            np.testing.assert_array_equal(r.task_ids[i], np.repeat([0, 1, 2], 20))
            assert np.all(i < r.size)


def _fill_one(replay, n, task):
    s = np.full(8, n, np.float32)
    replay.add(s, 0, float(n), s, False, task)


def test_uniform_mixes_in_proportion_to_the_buffer():
    r = MultiTaskReplay(1000, 3, 8, seed=2)
    _fill(r, [0] * 600 + [1] * 300 + [2] * 100)
    counts = np.bincount(r.sample(30_000, "uniform").task_ids, minlength=3)
    # Binomial(30000, p): standard deviations 85, 79, 52; allow 5 of them.
    np.testing.assert_allclose(counts, [18_000, 9_000, 3_000], atol=5 * 85)


def test_balanced_draws_equally_within_each_task():
    r = MultiTaskReplay(1000, 3, 8, seed=3)
    _fill(r, [0] * 600 + [1] * 300 + [2] * 100)
    i = r.sample_indices(30_000, "balanced")
    ids = r.task_ids[i]
    np.testing.assert_array_equal(np.bincount(ids, minlength=3), [10_000] * 3)
    # Task 2's 100 slots (900..999) drawn uniformly: each 100 +- 10 times.
    counts = np.bincount(i[ids == 2] - 900, minlength=100)
    assert counts.size == 100 and counts.min() > 50 and counts.max() < 150


def test_sampling_is_reproducible_from_the_seed():
    a, b = MultiTaskReplay(100, 3, 8, seed=7), MultiTaskReplay(100, 3, 8, seed=7)
    for r in (a, b):
        _fill(r, np.arange(50) % 3)
    np.testing.assert_array_equal(a.sample_indices(32, "uniform"), b.sample_indices(32, "uniform"))
    np.testing.assert_array_equal(a.sample_indices(33, "balanced"),
                                  b.sample_indices(33, "balanced"))


def test_bad_requests_are_named():
    r = MultiTaskReplay(10, 3, 8, seed=0)
    with pytest.raises(ValueError, match="empty replay"):
        r.sample(4, "uniform")
    _fill(r, [0, 0, 1])
    with pytest.raises(ValueError, match="every task's transitions"):
        r.sample(3, "balanced")
    with pytest.raises(ValueError, match="does not split"):
        r.sample(4, "balanced")
    with pytest.raises(ValueError, match="unknown task mixing"):
        r.sample(4, "stratified")
    with pytest.raises(ValueError, match="task id 3"):
        r.add(np.zeros(8), 0, 0.0, np.zeros(8), False, 3)
