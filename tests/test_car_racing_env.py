"""CarRacing-v3 from pixels: preprocessing shapes, the frame stack, action repeat
against the bare env, reward shaping on and off (raw returns kept), and the seeded
vector env that resets in the ending step. Needs Box2D (the ``box2d`` extra)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("Box2D", reason="CarRacing needs the box2d extra")

from bbf_jax.config import CarRacingConfig  # noqa: E402
from bbf_jax.envs.car_racing import (  # noqa: E402
    GRASS_PENALTY,
    CarRacing,
    make_vector_env,
    on_grass,
    shape_reward,
)

GAS = np.array([0.0, 0.5, 0.0], np.float32)


@pytest.mark.parametrize("grayscale, size, stack, shape", [
    (False, 96, 3, (96, 96, 9)), (True, 84, 4, (84, 84, 4)), (False, 64, 1, (64, 64, 3))])
def test_observation_shapes(grayscale, size, stack, shape):
    env = CarRacing(CarRacingConfig(grayscale=grayscale, image_size=size, frame_stack=stack))
    obs, _ = env.reset(seed=0)
    assert obs.shape == shape == env.observation_space.shape and obs.dtype == np.uint8
    assert env.step(GAS)[0].shape == shape
    env.close()


def test_frame_stack_shifts_one_frame_per_step():
    env = CarRacing(CarRacingConfig(grayscale=True, image_size=84, frame_stack=4))
    obs, _ = env.reset(seed=1)
    assert all(np.array_equal(obs[..., i], obs[..., 0]) for i in range(4))  # reset: 4 copies
    frames = [obs]
    for _ in range(3):
        frames.append(env.step(GAS)[0])
    np.testing.assert_array_equal(frames[3][..., :3], frames[2][..., 1:])
    np.testing.assert_array_equal(frames[3][..., :2], frames[1][..., 2:])
    env.close()


@pytest.mark.parametrize("repeat", [2, 4])
def test_action_repeat_sums_the_bare_env(repeat):
    cfg = CarRacingConfig(image_size=96, frame_stack=1, action_repeat=repeat)
    env = CarRacing(cfg)
    bare = gym.make("CarRacing-v3", continuous=True)
    env.reset(seed=3)
    bare.reset(seed=3)
    for _ in range(5):
        obs, reward, _, _, info = env.step(GAS)
        total = 0.0
        for _ in range(repeat):
            frame, r, *_ = bare.step(GAS)
            total += r
        assert reward == pytest.approx(total, abs=1e-9) and info["raw_reward"] == reward
        np.testing.assert_array_equal(obs, frame)  # 96x96 RGB, stack 1: the raw frame
    env.close()
    bare.close()


def test_shape_reward_by_hand():
    assert shape_reward(3.0, False, False) == 3.0
    assert shape_reward(-0.1, False, True) == pytest.approx(-0.1 - GRASS_PENALTY)
    assert shape_reward(-100.0, True, True) == pytest.approx(-GRASS_PENALTY)
    assert shape_reward(-100.0, False, False) == -100.0  # not the off-playfield terminal


def test_reward_shaping_keeps_the_raw_reward():
    steer_off = np.array([1.0, 0.6, 0.0], np.float32)
    runs = {}
    for shaping in (False, True):
        env = CarRacing(CarRacingConfig(frame_stack=1, reward_shaping=shaping))
        env.reset(seed=0)
        rows = []
        for i in range(120):  # straight on, then off the road onto grass
            _, reward, _, _, info = env.step(steer_off if i > 50 else GAS)
            rows.append((reward, info["raw_reward"], on_grass(env)))
        runs[shaping] = rows
        env.close()
    for (r0, raw0, grass0), (r1, raw1, grass1) in zip(runs[False], runs[True], strict=True):
        assert raw0 == raw1 == r0 and grass0 == grass1
        assert r1 == pytest.approx(r0 - (GRASS_PENALTY if grass1 else 0.0))
    assert any(g for *_, g in runs[True]) and not runs[True][0][2]


def test_vector_env_is_seeded_and_resets_in_the_ending_step():
    cfg = CarRacingConfig(grayscale=True, image_size=32, frame_stack=2, max_episode_steps=6)
    first = []
    for _ in range(2):
        envs, seeds = make_vector_env(cfg, 3, seed=11)
        assert len(set(seeds)) == 3
        obs, _ = envs.reset(seed=seeds)
        first.append(obs)
        for _ in range(6):
            obs, _, terminated, truncated, info = envs.step(np.tile(GAS, (3, 1)))
        # The 6th step ends every episode (time limit) and returns the next first frame.
        assert truncated.all() and not terminated.any()
        assert "final_obs" in info and info["final_obs"][0].shape == (32, 32, 2)
        assert all(np.array_equal(o[..., 0], o[..., 1]) for o in obs)
        envs.close()
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0][0], first[0][1])


def test_action_repeat_must_be_a_power_of_two_up_to_8():
    with pytest.raises(ValueError, match="action_repeat must be one of"):
        CarRacingConfig(action_repeat=3)
