"""Per-task reward normalisation of the official BRC: discounted Monte-Carlo values by
hand, the time-limit bootstrap, and the scales (0 before a task's first episode)."""

from __future__ import annotations

import numpy as np
import pytest

from bbf_jax.agents.brc.normalizer import RewardNormalizer, discounted_values


def test_discounted_values_by_hand():
    # V_2 = 4; V_1 = -2 + 0.5 * 4 = 0; V_0 = 1 + 0.5 * 0 = 1.
    np.testing.assert_allclose(discounted_values([1.0, -2.0, 4.0], 0.5, False), [1.0, 0.0, 4.0])


def test_truncated_episode_bootstraps_with_the_mean_reward():
    # mean 1 -> V_3 = 1 / (1 - 0.5) = 2; V_2 = 4 + 0.5 * 2 = 5; V_1 = -2 + 2.5; V_0 = 1.25.
    np.testing.assert_allclose(discounted_values([1.0, -2.0, 4.0], 0.5, True),
                               [1.25, 0.5, 5.0])


def test_scales_follow_the_largest_absolute_value_per_task():
    n = RewardNormalizer(3, gamma=0.5, v_max=10.0)
    np.testing.assert_array_equal(n.scales(), [0.0, 0.0, 0.0])
    n.add_episode(0, [1.0, -2.0, 4.0], truncated=False)   # max |V| = 4
    n.add_episode(2, [-8.0], truncated=False)               # max |V| = 8
    n.add_episode(0, [1.0, 1.0], truncated=False)           # max |V| = 1.5: no change
    np.testing.assert_allclose(n.scales(), [2.5, 0.0, 1.25])
    assert n.scales().dtype == np.float32
    n.add_episode(0, [20.0], truncated=False)
    assert n.scales()[0] == pytest.approx(0.5)
