"""Importance weights and priority updates (spec §4.8), both quirk settings."""

import numpy as np
import pytest

from bbf_jax.replay import importance_weights, priorities_to_set


def test_importance_weights_are_normalised_over_the_whole_group():
    p = np.array([1.0, 4.0, 0.25, 1.0], np.float32)
    # 1/sqrt(p) = 1, 0.5, 2, 1 -> divided by the group max 2
    np.testing.assert_array_equal(importance_weights(p), np.float32([0.5, 0.25, 1.0, 0.5]))
    w = importance_weights(np.array([0.0, 1.0], np.float32))  # 1e-10 keeps it finite
    assert w.dtype == np.float32 and np.all(np.isfinite(w)) and w[0] == 1.0
    # float32 arithmetic as the official agent: (p + 1e-10) rounds back to p here
    p = np.float32([2.0, 3.0])
    want = (np.float32(1) / np.sqrt(p)) / (np.float32(1) / np.sqrt(p)).max()
    np.testing.assert_array_equal(importance_weights(p), want)


def test_official_pairs_indices_with_minibatch_means():
    indices = np.array([7, 3, 9, 1], np.int64)
    per_sample = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    means = np.array([1.5, 3.5], np.float32)
    idx, pri = priorities_to_set(indices, per_sample, means, "official")
    np.testing.assert_array_equal(idx, [7, 3])  # only the first G indices change
    np.testing.assert_array_equal(pri, np.sqrt(np.float32([1.5, 3.5]) + np.float32(1e-10)))
    assert pri.dtype == np.float32 and idx.dtype == np.int64


def test_corrected_gives_every_index_its_own_loss():
    indices = np.array([7, 3, 9, 1])
    per_sample = np.array([1.0, 0.0, 9.0, 4.0], np.float32)
    idx, pri = priorities_to_set(indices, per_sample, np.float32([9.9, 9.9]), "corrected")
    np.testing.assert_array_equal(idx, indices)
    np.testing.assert_array_equal(pri, np.float32([1.0, 1e-5, 3.0, 2.0]))
    with pytest.raises(ValueError, match="3 values for 4 indices"):
        priorities_to_set(indices, per_sample[:3], None, "corrected")
    with pytest.raises(ValueError, match="priority_update"):
        priorities_to_set(indices, per_sample, per_sample, "fixed")
