"""derive(): gradient steps and update period from the replay ratio (spec §5.1)."""

import pytest

from bbf_jax.agents.bbf.config import AgentConfig, derive


@pytest.mark.parametrize(
    "replay_ratio, n_envs, updates, period, group",
    [
        # BBF.gin (RR2): 64 samples per env step = 2 gradient steps, both in one dispatch.
        (64, 1, 2, 1, 2),
        # RR8: 256 // 32 = 8 steps, G = 2 -> 4 dispatches.
        (256, 1, 8, 1, 2),
        # One gradient step every 32 // 16 = 2 env steps.
        (16, 1, 1, 2, 1),
        # n_envs > 1, official operator precedence (B // RR) * n_envs:
        # 64 * 4 // 32 = 8 steps; max(1, (32 // 64) * 4) = max(1, 0) = 1.
        (64, 4, 8, 1, 2),
        # 16 * 4 // 32 = 2 steps; (32 // 16) * 4 = 8 env steps (not 32 // (16 * 4) = 0 -> 1).
        (16, 4, 2, 8, 2),
        # 8 * 2 // 32 = 0 -> 1 step; (32 // 8) * 2 = 8 env steps (not 32 // (8 * 2) = 2).
        (8, 2, 1, 8, 1),
    ],
)
def test_update_counts_follow_the_official_formula(replay_ratio, n_envs, updates, period, group):
    d = derive(AgentConfig(replay_ratio=replay_ratio, batch_size=32, batches_to_group=2), n_envs)
    assert (d.gradient_steps_per_update, d.update_period, d.batches_to_group) == (
        updates, period, group)
    assert d.dispatches_per_update == updates // group
    assert d.group_size == group * 32


@pytest.mark.parametrize(
    "replay_ratio, n_envs, message",
    [
        (48, 1, "is not a whole number of gradient steps (1.5)"),
        (6, 1, "one gradient step every 5.33333 env steps"),
        (12, 4, "is not a whole number of gradient steps (1.5)"),
        (12, 2, "one gradient step every 2.66667 env steps"),
    ],
)
def test_fractional_replay_ratio_is_an_error(replay_ratio, n_envs, message):
    with pytest.raises(ValueError, match="invalid replay ratio") as err:
        derive(AgentConfig(replay_ratio=replay_ratio, batch_size=32), n_envs)
    assert message in str(err.value)
