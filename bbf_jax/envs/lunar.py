"""The three LunarLander-v3 tasks of the multi-task agents (:mod:`bbf_jax.agents.brc`).

Gymnasium's ``LunarLander-v3`` with discrete actions (8-dim float32 state, 4 actions):
'standard' (gymnasium's defaults), 'windy' (``enable_wind=True`` with the configured
wind and turbulence) and 'heavy' (stronger gravity), each with its own episode limit.
Box2D comes with the ``box2d`` extra (``pip install -e ".[box2d]"``).
"""

from __future__ import annotations

import gymnasium as gym

from bbf_jax.agents.brc.config import TASK_NAMES, LunarTasksConfig
from bbf_jax.envs.box2d_extra import require_box2d

NUM_ACTIONS = 4
STATE_DIM = 8
SOLVED_RETURN = 200.0  # gymnasium's reward_threshold


def lunar_kwargs(task: str, cfg: LunarTasksConfig) -> dict:
    """``gym.make`` arguments of ``task`` (one of ``TASK_NAMES``)."""
    if task not in TASK_NAMES:
        raise ValueError(f"unknown LunarLander task {task!r}; known: {', '.join(TASK_NAMES)}")
    kwargs = {"continuous": False, "max_episode_steps": getattr(cfg, f"{task}_max_steps")}
    if task == "windy":
        kwargs.update(enable_wind=True, wind_power=cfg.wind_power,
                      turbulence_power=cfg.turbulence_power)
    elif task == "heavy":
        kwargs.update(gravity=cfg.heavy_gravity)
    return kwargs


def make_lunar_env(task: str, cfg: LunarTasksConfig) -> gym.Env:
    """A LunarLander-v3 env of ``task``; seed it with its first ``reset(seed=...)``.

    Raises:
      ValueError: an unknown task.
      ImportError: Box2D is missing (the message says how to install it).
    """
    kwargs = lunar_kwargs(task, cfg)
    require_box2d("LunarLander")
    return gym.make("LunarLander-v3", **kwargs)
