"""A multi-task replay of single transitions with task ids (one seed's buffer).

One ring buffer of ``capacity`` transitions shared by every task, each stored with its
task id. Minibatches mix the tasks as configured: 'uniform' draws indices uniformly
from everything stored (each task in proportion to its share of the buffer);
'balanced' draws the same number from each task's transitions. For 'balanced', every
task keeps a FIFO of its slots: the ring overwrites slots in the order it wrote them,
so the slot overwritten is always the oldest of its task's FIFO.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """``B`` transitions: float32 states ``(B, D)``, int32 actions ``(B,)``, float32
    rewards ``(B,)``, float32 next states ``(B, D)``, bool terminals ``(B,)`` (a true
    end of the episode; a time-limit cut is not one) and int32 task ids ``(B,)``."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_states: np.ndarray
    terminals: np.ndarray
    task_ids: np.ndarray


class MultiTaskReplay:
    """Transitions ``(s, a, r, s', terminal, task)`` in numpy arrays.

    Args:
      capacity: transitions kept (the oldest are overwritten).
      num_tasks: task ids are ``0 .. num_tasks - 1``.
      state_dim: length D of a state vector.
      seed: seed of the numpy Generator that draws minibatch indices.
    """

    def __init__(self, capacity: int, num_tasks: int, state_dim: int, seed: int):
        self.capacity = capacity
        self.num_tasks = num_tasks
        self.states = np.zeros((capacity, state_dim), np.float32)
        self.actions = np.zeros(capacity, np.int32)
        self.rewards = np.zeros(capacity, np.float32)
        self.next_states = np.zeros((capacity, state_dim), np.float32)
        self.terminals = np.zeros(capacity, bool)
        self.task_ids = np.zeros(capacity, np.int32)
        self.size = 0
        self.cursor = 0
        # Per task: a ring of the slots holding its transitions, oldest at the head.
        self._slots = np.zeros((num_tasks, capacity), np.int64)
        self._head = np.zeros(num_tasks, np.int64)
        self._count = np.zeros(num_tasks, np.int64)
        self.rng = np.random.default_rng(seed)

    def add(self, state, action: int, reward: float, next_state, terminal: bool, task: int):
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task id {task} is outside 0..{self.num_tasks - 1}")
        i = self.cursor
        if self.size == self.capacity:  # drop slot i from its old task's FIFO (its head)
            old = self.task_ids[i]
            self._head[old] = (self._head[old] + 1) % self.capacity
            self._count[old] -= 1
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.terminals[i], self.task_ids[i] = next_state, terminal, task
        self._slots[task, (self._head[task] + self._count[task]) % self.capacity] = i
        self._count[task] += 1
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def task_counts(self) -> np.ndarray:
        """Transitions stored per task, int64 ``(num_tasks,)``."""
        return self._count.copy()

    def sample_indices(self, batch_size: int, mixing: str) -> np.ndarray:
        """Slots of one minibatch, int64 ``(batch_size,)``.

        Raises:
          ValueError: an empty buffer; for 'balanced', a task without transitions or a
            batch size that is no multiple of the number of tasks.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay")
        if mixing == "uniform":
            return self.rng.integers(0, self.size, batch_size)
        if mixing != "balanced":
            raise ValueError(f"unknown task mixing {mixing!r}; use 'uniform' or 'balanced'")
        if batch_size % self.num_tasks:
            raise ValueError(f"a balanced batch of {batch_size} does not split over "
                             f"{self.num_tasks} tasks")
        if not self._count.all():
            raise ValueError(f"a balanced batch needs every task's transitions; stored per "
                             f"task: {self._count.tolist()}")
        per_task = batch_size // self.num_tasks
        offsets = self.rng.integers(0, self._count[:, None], (self.num_tasks, per_task))
        rings = (self._head[:, None] + offsets) % self.capacity
        return np.take_along_axis(self._slots, rings, axis=1).reshape(-1)

    def sample(self, batch_size: int, mixing: str) -> Batch:
        """A minibatch of ``batch_size`` transitions (see :meth:`sample_indices`)."""
        return self.gather(self.sample_indices(batch_size, mixing))

    def gather(self, indices: np.ndarray) -> Batch:
        """The transitions at ``indices`` (any shape ``I``): fields ``(*I, ...)``."""
        return Batch(*(getattr(self, field)[indices] for field in Batch._fields))
