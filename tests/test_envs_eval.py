"""FrameStack and the evaluation protocol (spec §8, §9.5)."""

from __future__ import annotations

import numpy as np
import pytest

from bbf_jax.config import EnvConfig
from bbf_jax.envs import AtariEnv, FrameStack, env_seeds, evaluate


def frame(value: int) -> np.ndarray:
    return np.full((84, 84), value, np.uint8)


def test_frame_stack_rolls_left_and_zeroes():
    stack = FrameStack(2)
    assert stack.state.shape == (2, 84, 84, 4) and stack.state.dtype == np.uint8
    for v in (1, 2, 3, 4, 5):
        stack.push(np.stack([frame(v), frame(10 + v)]))
    np.testing.assert_array_equal(stack.state[0, 0, 0], [2, 3, 4, 5])
    np.testing.assert_array_equal(stack.state[1, 0, 0], [12, 13, 14, 15])
    stack.zero(1)
    stack.push(np.stack([frame(6), frame(16)]))
    np.testing.assert_array_equal(stack.state[0, 5, 7], [3, 4, 5, 6])
    np.testing.assert_array_equal(stack.state[1, 5, 7], [0, 0, 0, 16])
    stack.keep(np.array([False, True]))
    assert len(stack) == 1
    np.testing.assert_array_equal(stack.state[0, 0, 0], [0, 0, 0, 16])
    with pytest.raises(ValueError, match=r"expects frames \(1, 84, 84\)"):
        stack.push(np.stack([frame(1), frame(2)]))


def reference_evaluation(game, config, num_episodes, policy_seed, rng, seed):
    """The runner loop of spec §9.2 (one_to_one) written out with per-env lists."""
    policy = np.random.default_rng(policy_seed)
    envs = [AtariEnv(game, config, s) for s in env_seeds(seed, num_episodes)]
    stacks = {}
    for i, env in enumerate(envs):
        stacks[i] = np.zeros((84, 84, 4), np.uint8)
        stacks[i][..., 3] = env.reset(rng)
    calls, results = [], {}
    while stacks:
        live = sorted(stacks)
        batch = np.stack([stacks[i] for i in live])
        calls.append(batch)
        actions = policy.integers(envs[0].num_actions, size=len(live))
        for a, i in zip(actions, live, strict=True):
            r = envs[i].step(a)
            if r.episode_over:
                results[i] = (envs[i].episode_return, envs[i].episode_length)
                del stacks[i]
                continue
            if r.terminal:
                stacks[i][:] = 0
            stacks[i] = np.concatenate([stacks[i][..., 1:], r.observation[..., None]], axis=-1)
    return calls, [results[i] for i in range(num_episodes)]


def test_evaluate_matches_reference_loop(capsys):
    """Breakout, 3 episodes capped at 190 steps: the callback sees exactly the stacks of
    the reference loop (zeroed on life loss, rows removed as envs finish)."""
    config = EnvConfig(max_steps_per_episode=190)
    calls = []
    policy = np.random.default_rng(4)

    def select_actions(states):
        calls.append(states.copy())
        return policy.integers(4, size=len(states))

    result = evaluate(
        "breakout", config, 3, select_actions, np.random.default_rng(8), seed=5, progress=True
    )
    assert "eval Breakout" in capsys.readouterr().err
    ref_calls, ref_results = reference_evaluation(
        "Breakout", config, 3, 4, np.random.default_rng(8), seed=5
    )
    assert len(result.returns) == len(result.lengths) == 3
    assert list(zip(result.returns, result.lengths, strict=True)) == ref_results
    assert len(calls) == len(ref_calls) == max(result.lengths)
    for got, want in zip(calls, ref_calls, strict=True):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
    # Call j holds the envs whose episode is longer than j steps.
    lengths = result.lengths
    assert [len(c) for c in calls] == [sum(n > j for n in lengths) for j in range(max(lengths))]
    assert min(lengths) < 190  # at least one game over before the cap
    # A life loss zeroed a stack mid-episode: some state after the first four steps
    # has an empty history.
    assert any((c[:, :, :, :3] == 0).all(axis=(1, 2, 3)).any() for c in calls[4:])
    assert result.mean_return == pytest.approx(np.mean(result.returns))


def test_evaluate_runs_to_game_over_and_checks_callback():
    """Uncapped Pong with a do-nothing policy runs to game over (21 points against)."""
    result = evaluate(
        "Pong",
        EnvConfig(frame_skip=16),
        2,
        lambda s: np.zeros(len(s), int),
        np.random.default_rng(0),
        seed=0,
    )
    assert result.returns == [-19.0, -20.0]  # deterministic given the seeds
    assert all(n < 27_000 for n in result.lengths)
    with pytest.raises(ValueError, match=r"returned shape \(1,\) for 2 live envs"):
        evaluate("Pong", None, 2, lambda s: np.zeros(1, int), np.random.default_rng(0), seed=0)
    with pytest.raises(ValueError, match="num_episodes"):
        evaluate("Pong", None, 0, lambda s: s, np.random.default_rng(0), seed=0)
