"""CarRacing-v3 from pixels, for the continuous-control agents.

:class:`CarRacing` wraps gymnasium's ``CarRacing-v3`` (continuous actions, 96x96x3
uint8 frames, Box2D from the ``box2d`` extra) with the preprocessing of
:class:`~bbf_jax.config.CarRacingConfig`: RGB or grayscale, resize, ``action_repeat``
env steps per agent step (rewards summed) and a stack of the last ``frame_stack``
frames on the channel axis, so observations are uint8 ``(S, S, C * frame_stack)``
(C = 1 or 3). With ``reward_shaping`` the reward is shaped for training while
``info["raw_reward"]`` always holds the env's own summed reward, which is what
evaluation reports. :func:`make_vector_env` steps N of them as one gymnasium vector
env, each seeded from one seed.
"""

from __future__ import annotations

import collections

import cv2
import gymnasium as gym
import numpy as np

from bbf_jax.config import CarRacingConfig
from bbf_jax.envs.box2d_extra import require_box2d
from bbf_jax.envs.evaluation import env_seeds

GRASS_PENALTY = 0.05
OFF_PLAYFIELD_REWARD = -100.0


def on_grass(env: gym.Env) -> bool:
    """Whether the car is off the road: no wheel touches a road tile (the Box2D contact
    sets of gymnasium's ``Car``)."""
    return not any(wheel.tiles for wheel in env.unwrapped.car.wheels)


def shape_reward(reward: float, terminated: bool, grass: bool) -> float:
    """One env step's shaped reward: the -100 of leaving the playfield (a terminal step)
    dropped, and ``GRASS_PENALTY`` taken off while no wheel is on the road."""
    if terminated and reward == OFF_PLAYFIELD_REWARD:
        reward = 0.0
    return reward - (GRASS_PENALTY if grass else 0.0)


class CarRacing(gym.Wrapper):
    """One preprocessed CarRacing-v3 env (module docstring)."""

    def __init__(self, cfg: CarRacingConfig):
        require_box2d("CarRacing")
        env = gym.make("CarRacing-v3", continuous=True,
                       max_episode_steps=cfg.max_episode_steps)
        super().__init__(env)
        self.cfg = cfg
        channels = (1 if cfg.grayscale else 3) * cfg.frame_stack
        self.observation_space = gym.spaces.Box(
            0, 255, (cfg.image_size, cfg.image_size, channels), np.uint8)
        self._frames: collections.deque = collections.deque(maxlen=cfg.frame_stack)

    def process(self, frame: np.ndarray) -> np.ndarray:
        """A raw ``(96, 96, 3)`` frame -> uint8 ``(S, S, C)``."""
        size = self.cfg.image_size
        if size != frame.shape[0]:
            frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        if self.cfg.grayscale:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[..., None]
        return frame

    def _observation(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=-1)

    def reset(self, *, seed=None, options=None):
        frame, info = self.env.reset(seed=seed, options=options)
        first = self.process(frame)
        for _ in range(self.cfg.frame_stack):
            self._frames.append(first)
        return self._observation(), info

    def step(self, action):
        raw = shaped = 0.0
        terminated = truncated = False
        info: dict = {}
        for _ in range(self.cfg.action_repeat):
            frame, reward, terminated, truncated, info = self.env.step(action)
            raw += reward
            if self.cfg.reward_shaping:
                shaped += shape_reward(reward, terminated, on_grass(self.env))
            if terminated or truncated:
                break
        self._frames.append(self.process(frame))
        info = {**info, "raw_reward": raw}
        reward = shaped if self.cfg.reward_shaping else raw
        return self._observation(), reward, terminated, truncated, info


def make_vector_env(cfg: CarRacingConfig, num_envs: int, seed: int,
                    asynchronous: bool = False) -> tuple[gym.vector.VectorEnv, list[int]]:
    """``num_envs`` :class:`CarRacing` envs as one gymnasium vector env that resets an
    env in the step that ends its episode (``AutoresetMode.SAME_STEP``: the step returns
    the new episode's first observation, the final one in ``info["final_obs"]``).

    Returns the vector env and each env's seed (children of ``seed``); pass them to
    the first ``reset(seed=...)``. ``asynchronous`` runs each env in its own process.
    """
    require_box2d("CarRacing")
    kind = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    envs = kind([lambda: CarRacing(cfg) for _ in range(num_envs)],
                autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return envs, env_seeds(seed, num_envs)
