"""A replay of single-env transitions that stores each frame once (SAC + DrQ).

An observation is a stack of the last ``stack`` frames; storing stacks would keep each
frame ``2 * stack`` times (in ``s`` and ``s'`` of several transitions). Here every
frame has one slot in a ring, with the action, reward and terminal of the transition
that starts from it, and stacks are gathered at sampling time. An episode's stack
repeats its first frame before the episode's start, as the env's frame stack does
(:class:`~bbf_jax.envs.car_racing.CarRacing`).

Writing: :meth:`FrameReplay.add_first` at each reset, then :meth:`FrameReplay.add_step`
for every step with the step's newest frame. A slot is a sampleable transition once its
step has been added (its next frame is the following slot) and while none of the
``stack - 1`` frames before it has been overwritten.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """uint8 obs and next obs ``(B, H, W, stack * C)``, float32 actions ``(B, A)``,
    rewards ``(B,)``, bool terminals ``(B,)`` (a time-limit cut is none)."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminals: np.ndarray


class FrameReplay:
    """Frames ``(H, W, C)`` uint8 in a ring of ``capacity`` slots.

    Args:
      capacity: frames kept (transitions are at most ``capacity - 1``).
      frame_shape: ``(H, W, C)`` of one frame.
      stack: frames per observation, stacked on the channel axis (oldest first).
      action_dim: length of an action.
      seed: seed of the Generator that draws minibatch indices.
    """

    def __init__(self, capacity: int, frame_shape: tuple, stack: int, action_dim: int,
                 seed: int):
        if capacity < stack + 1:
            raise ValueError(f"a frame replay needs capacity >= stack + 1 = {stack + 1}, "
                             f"got {capacity}")
        self.capacity, self.stack = capacity, stack
        self.frames = np.zeros((capacity, *frame_shape), np.uint8)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminals = np.zeros(capacity, bool)
        self.has_step = np.zeros(capacity, bool)  # the slot starts a stored transition
        self.since_start = np.zeros(capacity, np.int64)  # steps since its episode's first
        self.cursor = 0  # the next slot to write
        self.written = 0
        self.rng = np.random.default_rng(seed)

    def _write_frame(self, frame, since_start: int) -> None:
        i = self.cursor
        self.frames[i] = frame
        self.has_step[i] = False
        self.since_start[i] = since_start
        self.cursor = (i + 1) % self.capacity
        self.written += 1

    def add_first(self, frame) -> None:
        """The first frame of an episode."""
        self._write_frame(frame, 0)

    def add_step(self, action, reward: float, terminal: bool, next_frame) -> None:
        """The step from the newest frame: its action, reward, terminal (a true end,
        not a time-limit cut) and the frame it led to."""
        if self.written == 0:
            raise ValueError("add_step before add_first: no frame to start from")
        i = (self.cursor - 1) % self.capacity
        self.actions[i], self.rewards[i], self.terminals[i] = action, reward, terminal
        self.has_step[i] = True
        self._write_frame(next_frame, self.since_start[i] + 1)

    def valid(self) -> np.ndarray:
        """Slots that start a sampleable transition, int64 ``(V,)``."""
        ok = self.has_step.copy()
        if self.written > self.capacity:  # the oldest stack - 1 slots lack earlier frames
            oldest = (self.cursor + np.arange(self.stack - 1)) % self.capacity
            ok[oldest] = False
        return np.flatnonzero(ok)

    def _stacks(self, slots: np.ndarray) -> np.ndarray:
        """uint8 ``(B, H, W, stack * C)`` observations ending at ``slots``."""
        back = np.arange(self.stack - 1, -1, -1)  # oldest first
        offsets = np.minimum(back[None, :], self.since_start[slots][:, None])
        frames = self.frames[(slots[:, None] - offsets) % self.capacity]  # (B, k, H, W, C)
        b, k, h, w, c = frames.shape
        return frames.transpose(0, 2, 3, 1, 4).reshape(b, h, w, k * c)

    def gather(self, slots: np.ndarray) -> Batch:
        return Batch(obs=self._stacks(slots), actions=self.actions[slots],
                     rewards=self.rewards[slots],
                     next_obs=self._stacks((slots + 1) % self.capacity),
                     terminals=self.terminals[slots])

    def sample(self, batch_size: int) -> Batch:
        valid = self.valid()
        if not len(valid):
            raise ValueError("cannot sample: no stored transition")
        return self.gather(valid[self.rng.integers(0, len(valid), batch_size)])
