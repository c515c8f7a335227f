"""Sticky actions (EnvConfig.repeat_action_probability): the ALE's own per-frame
stickiness, seeded from the run seed, in training and evaluation envs."""

from __future__ import annotations

import ale_py
import numpy as np
import pytest

from bbf_jax.atari_games import rom_id
from bbf_jax.config import EnvConfig
from bbf_jax.envs import AtariEnv, evaluate
from bbf_jax.envs.atari import ale_seed, sticky_seed

STEPS = 150


def _play(p: float, seed: int, game: str = "Breakout") -> np.ndarray:
    """Observations of STEPS agent steps of a fixed random action sequence."""
    env = AtariEnv(game, EnvConfig(max_noops=0, repeat_action_probability=p), seed=seed)
    env.reset(np.random.default_rng(0))
    actions = np.random.default_rng(1).integers(env.num_actions, size=STEPS)
    return np.stack([env.step(a).observation for a in actions])


def test_default_is_no_sticky_actions():
    assert EnvConfig().repeat_action_probability == 0.0


def test_without_sticky_actions_the_emulator_seed_does_not_matter():
    np.testing.assert_array_equal(_play(0.0, seed=3), _play(0.0, seed=9))


def test_same_seed_same_sticky_frames():
    np.testing.assert_array_equal(_play(0.25, seed=3), _play(0.25, seed=3))


def test_sticky_actions_change_the_game():
    sticky = _play(0.25, seed=3)
    assert not np.array_equal(sticky, _play(0.0, seed=3))
    assert not np.array_equal(sticky, _play(0.25, seed=4))


def _raw_ale(p: float, seed: int = 5) -> ale_py.ALEInterface:
    raw = ale_py.ALEInterface()
    raw.setInt("random_seed", ale_seed(seed))
    raw.setFloat("repeat_action_probability", p)
    raw.loadROM(str(ale_py.roms.get_rom_path(rom_id("Breakout"))))
    raw.reset_game()
    return raw


def test_sticky_rule_frame_by_frame():
    """A plain emulator driven with the ALE's rule written out (per emulated frame: keep
    the previous frame's action if u < p, u from the documented stream; NOOP after a
    game reset) shows the same screen after every agent step, across a reset."""
    p, seed = 0.25, 5
    env = AtariEnv("Breakout", EnvConfig(max_noops=0, repeat_action_probability=p), seed=seed)
    env.reset(np.random.default_rng(0))
    raw, draws = _raw_ale(0.0), np.random.default_rng(sticky_seed(seed))
    minimal, applied, lives = raw.getMinimalActionSet(), ale_py.Action.NOOP, raw.lives()
    sticky_frames = 0
    for step, a in enumerate(np.random.default_rng(1).integers(env.num_actions, size=120)):
        if step == 60:
            env.reset(np.random.default_rng(0))
            raw.reset_game()
            applied, lives = ale_py.Action.NOOP, raw.lives()
        env.step(a)
        for _ in range(4):
            if draws.random() >= p:
                applied = minimal[a]
            else:
                sticky_frames += applied != minimal[a]
            raw.act(applied)
            terminal = raw.game_over() or raw.lives() < lives
            lives = raw.lives()
            if terminal:
                break
        np.testing.assert_array_equal(env.ale.getScreenGrayscale(), raw.getScreenGrayscale())
    assert sticky_frames > 10  # the stretch really exercises stickiness


def test_always_sticky_matches_the_ales_own_stickiness():
    """p = 1 against the ALE's own sticky actions: both only ever apply NOOP."""
    env = AtariEnv("Breakout", EnvConfig(max_noops=0, repeat_action_probability=1.0), seed=5)
    env.reset(np.random.default_rng(0))
    raw = _raw_ale(1.0)
    minimal = raw.getMinimalActionSet()
    for a in np.random.default_rng(1).integers(env.num_actions, size=60):
        env.step(a)
        for _ in range(4):
            raw.act(minimal[a])
        np.testing.assert_array_equal(env.ale.getScreenGrayscale(), raw.getScreenGrayscale())


@pytest.mark.parametrize("p, clone_at", [(0.25, 20), (0.25, 90), (0.9, 50)])
def test_clone_restore_keeps_the_sticky_state(p, clone_at):
    """The sticky draws' RNG and the last applied action travel with the clone: a
    restored env (built with another seed, last applying another action) continues
    identically."""
    config = EnvConfig(max_noops=0, repeat_action_probability=p)
    actions = np.random.default_rng(1).integers(4, size=clone_at + 60)
    actions[clone_at - 20:clone_at] = 3  # LEFT: the cloned env applies LEFT at the clone
    env = AtariEnv("Breakout", config, seed=3)
    env.reset(np.random.default_rng(0))
    for a in actions[:clone_at]:
        env.step(a)
    saved = env.clone_state()
    other = AtariEnv("Breakout", config, seed=11)
    other.reset(np.random.default_rng(0))
    for _ in range(30):
        other.step(2)  # RIGHT
    other.restore_state(saved)
    for a in actions[clone_at:]:
        np.testing.assert_array_equal(env.step(a).observation, other.step(a).observation)


def _eval_states(p: float, seed: int) -> list[np.ndarray]:
    """The stacks the policy sees in a 2-env evaluation with the same random action for
    both envs at each call."""
    seen, actions = [], np.random.default_rng(2)

    def policy(states):
        seen.append(states.copy())
        return np.full(len(states), actions.integers(4))

    config = EnvConfig(max_noops=0, max_steps_per_episode=60, repeat_action_probability=p)
    evaluate("Breakout", config, 2, policy, np.random.default_rng(0), seed)
    return seen


def test_evaluation_envs_use_sticky_actions():
    sticky = _eval_states(0.25, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(sticky, _eval_states(0.25, seed=1),
                                                      strict=True))
    plain = _eval_states(0.0, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(sticky, plain, strict=True))
    # Without stickiness the two eval envs (same no-op count 0, same actions) agree;
    # with it, each env's emulator draws its own sticky frames.
    assert all(np.array_equal(s[0], s[1]) for s in plain)
    assert not all(np.array_equal(s[0], s[1]) for s in sticky)


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.25", True])
def test_bad_probability_is_rejected(p):
    with pytest.raises(ValueError, match="EnvConfig.repeat_action_probability"):
        EnvConfig(repeat_action_probability=p)
