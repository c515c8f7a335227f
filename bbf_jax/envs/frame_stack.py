"""The agent's frame stack (spec §8, "The agent's stack")."""

from __future__ import annotations

import numpy as np

from bbf_jax.envs.atari import SCREEN_SIZE


class FrameStack:
    """States of N parallel envs: (N, 84, 84, stack_size) uint8.

    A new frame rolls each stack left and is written to the last channel. A row that is
    ``zero``-ed (terminal, life loss included, or episode start) therefore reads
    ``[0, 0, 0, o]`` after the next ``push``. The official stack is float64; the values
    are whole numbers 0..255, so uint8 holds them exactly.

    Args:
      num_envs: N, rows of the stack.
      stack_size: frames per state (4 in BBF).
    """

    def __init__(self, num_envs: int, stack_size: int = 4):
        if num_envs < 0 or stack_size < 1:
            raise ValueError(
                f"FrameStack needs num_envs >= 0 and stack_size >= 1, "
                f"got {num_envs} and {stack_size}"
            )
        self.state = np.zeros((num_envs, SCREEN_SIZE, SCREEN_SIZE, stack_size), np.uint8)

    def __len__(self) -> int:
        return self.state.shape[0]

    def push(self, frames: np.ndarray) -> np.ndarray:
        """Rolls every row left and writes ``frames`` (N, 84, 84) uint8 into the last
        channel; returns the new state."""
        frames = np.asarray(frames)
        if frames.shape != self.state.shape[:3]:
            raise ValueError(
                f"FrameStack.push expects frames {self.state.shape[:3]}, got {frames.shape}"
            )
        self.state[..., :-1] = self.state[..., 1:]
        self.state[..., -1] = frames
        return self.state

    def zero(self, rows) -> None:
        """Clears the history of ``rows`` (an index, a list of indices or a bool mask)."""
        self.state[rows] = 0

    def keep(self, rows) -> None:
        """Keeps only ``rows`` (indices in order, or a bool mask), e.g. the envs still
        running in one-episode-per-env evaluation."""
        self.state = self.state[rows]
