"""Per-task reward normalisation of the official BRC (``jaxrl/normalizer.py``).

Each task's rewards are multiplied by ``v_max / M_k``, ``M_k`` the largest absolute
discounted Monte-Carlo value ``V_t = r_t + gamma V_{t+1}`` over every state of every
finished episode of task k, so that the task's values fit the support [-v_max, v_max]
whatever its reward scale. An episode cut by its time limit bootstraps its last value
with ``mean(r) / (1 - gamma)`` (the official rule). Until a task has finished an
episode its scale is 0 (the official code divides by an infinite ``M_k``). The
official code also subtracts an entropy term from ``M_k``; a DQN agent has none.
"""

from __future__ import annotations

import numpy as np


def discounted_values(rewards: np.ndarray, gamma: float, truncated: bool) -> np.ndarray:
    """``V_t = r_t + gamma V_{t+1}`` for one episode's rewards ``(T,)``, float64 ``(T,)``;
    ``V_T = mean(r) / (1 - gamma)`` after a time-limit cut, else 0."""
    rewards = np.asarray(rewards, np.float64)
    values = np.empty_like(rewards)
    bootstrap = rewards.mean() / (1.0 - gamma) if truncated and len(rewards) else 0.0
    for t in range(len(rewards) - 1, -1, -1):
        bootstrap = values[t] = rewards[t] + gamma * bootstrap
    return values


class RewardNormalizer:
    """The running ``M_k`` of each task and the reward scales it gives.

    Args:
      num_tasks: task ids ``0 .. num_tasks - 1``.
      gamma: discount of the values.
      v_max: half-width of the support the values must fit.
    """

    def __init__(self, num_tasks: int, gamma: float, v_max: float):
        self.gamma = gamma
        self.v_max = v_max
        self.max_abs_value = np.zeros(num_tasks)  # 0: no episode finished yet

    def add_episode(self, task: int, rewards, truncated: bool) -> None:
        values = discounted_values(rewards, self.gamma, truncated)
        if len(values):
            self.max_abs_value[task] = max(self.max_abs_value[task], np.abs(values).max())

    def scales(self) -> np.ndarray:
        """float32 ``(num_tasks,)``: ``v_max / M_k``, 0 for a task with no episode."""
        seen = self.max_abs_value > 0
        out = np.where(seen, self.v_max / np.where(seen, self.max_abs_value, 1.0), 0.0)
        return out.astype(np.float32)
