"""Circular transition storage ``[L, n_envs]`` of single frames (spec §4.1).

Row ``t`` of env ``b`` holds ``(o_t, a_t, r_t, d_t)``: ``o_t`` the newest frame of the
state in which ``a_t`` was chosen, ``r_t`` the clipped reward of that step and ``d_t`` = 1
if the step ended the episode or lost a life. Frame stacks are built where they are used
(on the device in the train step), so 200,000 transitions of 84x84 frames take 1.41 GB.

``ended[t, b]`` records ``terminal or episode_end`` of the row currently stored there; it
is the array form of the official ``episode_end_indices`` set (an entry is dropped when
its row is overwritten by a transition that does not end an episode).
"""

from __future__ import annotations

import numpy as np

# name -> dtype of every per-row array, in checkpoint order.
_FIELDS = {
    "observation": np.uint8,
    "action": np.int32,
    "reward": np.float32,
    "terminal": np.bool_,
    "ended": np.bool_,
}


class CircularStorage:
    """Numpy ring buffer with ``L = capacity // n_envs`` rows per env.

    Attributes:
      observation: (L, n_envs, *frame_shape) uint8 single frames.
      action: (L, n_envs) int32.
      reward: (L, n_envs) float32 (clipped by the caller).
      terminal: (L, n_envs) bool, life loss or game over.
      ended: (L, n_envs) bool, terminal or episode end (incl. truncation).
      add_count: rows written so far (one per ``add`` call, all envs together).
    """

    def __init__(self, capacity: int, n_envs: int, frame_shape=(84, 84)):
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if capacity < n_envs:
            raise ValueError(f"capacity {capacity} is smaller than n_envs {n_envs}")
        self.n_envs = int(n_envs)
        self.length = int(capacity) // self.n_envs
        self.frame_shape = tuple(int(s) for s in frame_shape)
        shape = (self.length, self.n_envs)
        # np.zeros maps untouched pages lazily: memory grows as rows are written.
        self.observation = np.zeros(shape + self.frame_shape, np.uint8)
        self.action = np.zeros(shape, np.int32)
        self.reward = np.zeros(shape, np.float32)
        self.terminal = np.zeros(shape, np.bool_)
        self.ended = np.zeros(shape, np.bool_)
        self.add_count = 0

    @property
    def cursor(self) -> int:
        """Row the next ``add`` writes."""
        return self.add_count % self.length

    @property
    def is_full(self) -> bool:
        return self.add_count >= self.length

    def add(self, observation, action, reward, terminal, episode_end) -> int:
        """Writes one row for every env; returns the row index written.

        Args:
          observation: (n_envs, *frame_shape) uint8.
          action: (n_envs,) integer.
          reward: (n_envs,) float (already clipped).
          terminal: (n_envs,) bool, life loss or game over.
          episode_end: (n_envs,) bool, episode finished (game over or truncation).
        """
        n = self.n_envs
        observation = np.asarray(observation)
        if observation.shape != (n, *self.frame_shape) or observation.dtype != np.uint8:
            raise ValueError(
                f"observation must be uint8 {[n, *self.frame_shape]}, "
                f"got {observation.dtype}{list(observation.shape)}"
            )
        action = _vector("action", action, n)
        if action.dtype.kind not in "iu":
            raise ValueError(f"action must be integers, got dtype {action.dtype}")
        reward = _vector("reward", reward, n)
        terminal = _vector("terminal", terminal, n).astype(np.bool_)
        episode_end = _vector("episode_end", episode_end, n).astype(np.bool_)
        row = self.cursor
        self.observation[row] = observation
        self.action[row] = action
        self.reward[row] = reward
        self.terminal[row] = terminal
        self.ended[row] = terminal | episode_end
        self.add_count += 1
        return row

    @property
    def rows_written(self) -> int:
        """Rows holding transitions: ``min(add_count, L)``. Row ``t`` is written by add
        number ``t`` (then ``t + L``, ...), so they are rows ``0 .. rows_written - 1``;
        the rest of the store is still zero."""
        return min(self.add_count, self.length)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The written rows of every array (views ``[:max(rows_written, 1)]``, not copies)
        and ``add_count`` as a 0-d int64 array: a buffer saved before it fills costs only
        what it holds. (An empty store keeps its zero row 0: orbax cannot write zero-size
        arrays.)"""
        n = max(self.rows_written, 1)
        state = {name: getattr(self, name)[:n] for name in _FIELDS}
        state["add_count"] = np.asarray(self.add_count, np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restores :meth:`state_dict` output into new arrays: the written rows, and zeros
        after them, so the whole store is as it was, bit for bit."""
        if "add_count" not in state:
            raise KeyError("replay state has no 'add_count'")
        add_count = int(state["add_count"])
        n = max(min(add_count, self.length), 1)
        for name, dtype in _FIELDS.items():
            if name not in state:
                raise KeyError(f"replay state has no {name!r} array")
            src = np.asarray(state[name])
            want = (n,) + getattr(self, name).shape[1:]
            if src.shape != want or src.dtype != dtype:
                raise ValueError(
                    f"replay state {name!r} is {src.dtype}{list(src.shape)}, this buffer "
                    f"(length {self.length}, {self.n_envs} envs) with add_count {add_count} "
                    f"needs its {n} saved rows: {np.dtype(dtype)}{list(want)}"
                )
        for name, dtype in _FIELDS.items():
            # A fresh np.zeros store (lazily mapped, like a new buffer's) rather than
            # zeroing the old one's tail, which would touch every page.
            store = np.zeros(getattr(self, name).shape, dtype)
            store[:n] = state[name]
            setattr(self, name, store)
        self.add_count = add_count


def _vector(name: str, x, n: int) -> np.ndarray:
    x = np.asarray(x)
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {list(x.shape)}")
    return x
