"""Subsequence replay memory with deterministic prioritized sampling (spec §4).

The numpy counterpart of the official ``PrioritizedJaxSubsequenceParallelEnvReplayBuffer``
(and of its uniform parent, for DrQ(eps)-style configs). One seeded
``np.random.Generator`` drives all draws.

Differences in the random stream (not in distribution or semantics): the official
buffer draws the stratified queries with ``fold_in(key, i)`` of a JAX key handed in by
the agent and redraws each invalid index one at a time (a fresh split, one U[0,1)
query each, in sample order). Here the queries come from the buffer's own Generator and
the invalid indices of a group are redrawn together in vectorised rounds (each round
draws one U[0,1) query per still-invalid position, in position order), so the indices
drawn for the same seed differ from the official ones while following the same rules.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from bbf_jax.replay import sampling
from bbf_jax.replay.storage import CircularStorage
from bbf_jax.replay.sum_tree import SumTree

MAX_SAMPLE_ATTEMPTS = 1000


class ReplaySample(NamedTuple):
    """One sampled group of N = batch_size * batches_to_group subsequences (spec §4.7).

    Frames travel once each (T + 2S - 1 per subsequence instead of (T + 1) * S): the
    stacks are built where they are used, on the device in the train step or by the
    :attr:`state` / :attr:`next_state` properties.

    Attributes:
      frames: (N, T + 2S - 1, H, W) uint8: ``o_{t-S+1} .. o_{t+T-1}``, then the S frames
        of the bootstrap state (:func:`~bbf_jax.replay.sampling.gather_frames`).
      stack_mask: (N, T + 1, S) bool: channel i of state j (j = T: the bootstrap state)
        is kept; False where the frame is from an earlier episode or life (spec §4.4).
      action: (N, T) int32 actions ``a_t .. a_{t+T-1}``.
      returns: (N,) float32 n-step return of position 0.
      discount: (N,) float32 ``gamma**n`` (also for terminal samples).
      terminal: (N,) float32 0/1, an episode/life ended inside the n-step window.
      same_trajectory: (N, T) float32 SPR mask (spec §4.6).
      sampling_priority: (N,) float32 raw leaf priorities (1.0 for uniform sampling).
      indices: (N,) int64 raveled start indices ``t * n_envs + b``.
    """

    frames: np.ndarray
    stack_mask: np.ndarray
    action: np.ndarray
    returns: np.ndarray
    discount: np.ndarray
    terminal: np.ndarray
    same_trajectory: np.ndarray
    sampling_priority: np.ndarray
    indices: np.ndarray

    @property
    def state(self) -> np.ndarray:
        """(N, T, H, W, S) uint8 states ``S_t .. S_{t+T-1}`` (oldest frame in channel 0)."""
        return sampling.stack_frames(self.frames, self.stack_mask)[0]

    @property
    def next_state(self) -> np.ndarray:
        """(N, H, W, S) uint8 bootstrap state of position 0."""
        return sampling.stack_frames(self.frames, self.stack_mask)[1]


class SubsequenceReplay:
    """Circular replay of single frames; samples subsequences with frame stacks.

    Args:
      capacity: transitions stored over all envs (rows per env: ``capacity // n_envs``).
      n_envs: parallel environments writing one row each per ``add``.
      seq_len: subsequence length T (SPR jumps + 1; 1 without SPR).
      max_horizon: largest n-step horizon ever requested; validity always uses it.
      stack_size: frames per state.
      prioritized: sum-tree stratified sampling (else uniform start rows).
      nstep_bootstrap: 'official' (bootstrap one step early, #1851) or 'corrected'.
      same_trajectory_mask: 'official' (group row 0 never masked) or 'corrected'.
      seed: seed of the buffer's numpy Generator.
      frame_shape: shape of one frame.
    """

    def __init__(
        self,
        capacity: int,
        n_envs: int,
        seq_len: int,
        max_horizon: int,
        stack_size: int = 4,
        prioritized: bool = True,
        nstep_bootstrap: str = "official",
        same_trajectory_mask: str = "official",
        seed: int = 0,
        frame_shape=(84, 84),
    ):
        if nstep_bootstrap not in sampling.NSTEP_MODES:
            raise ValueError(
                f"nstep_bootstrap must be one of {sampling.NSTEP_MODES}, got {nstep_bootstrap!r}"
            )
        if same_trajectory_mask not in sampling.MASK_MODES:
            raise ValueError(
                f"same_trajectory_mask must be one of {sampling.MASK_MODES}, "
                f"got {same_trajectory_mask!r}"
            )
        for name, value in (("seq_len", seq_len), ("max_horizon", max_horizon),
                            ("stack_size", stack_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.storage = CircularStorage(capacity, n_envs, frame_shape)
        needed = max_horizon + seq_len + stack_size
        if self.storage.length < needed:
            raise ValueError(
                f"capacity {capacity} gives {self.storage.length} rows per env; sampling "
                f"needs at least max_horizon + seq_len + stack_size = {needed}"
            )
        self.capacity = int(capacity)
        self.n_envs = int(n_envs)
        self.seq_len = int(seq_len)
        self.max_horizon = int(max_horizon)
        self.stack_size = int(stack_size)
        self.prioritized = bool(prioritized)
        self.nstep_bootstrap = nstep_bootstrap
        self.same_trajectory_mask = same_trajectory_mask
        self.sum_tree = SumTree(self.capacity) if self.prioritized else None
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_config(cls, replay_cfg, derived, n_envs: int, seed: int) -> SubsequenceReplay:
        """Builds the buffer from a ``ReplayConfig`` and ``derive(AgentConfig)`` values."""
        return cls(
            capacity=replay_cfg.capacity,
            n_envs=n_envs,
            seq_len=derived.seq_len,
            max_horizon=derived.max_horizon,
            stack_size=replay_cfg.stack_size,
            prioritized=replay_cfg.prioritized,
            nstep_bootstrap=replay_cfg.nstep_bootstrap,
            same_trajectory_mask=replay_cfg.same_trajectory_mask,
            seed=seed,
        )

    @property
    def add_count(self) -> int:
        """Rows written (one per ``add`` call, all envs together)."""
        return self.storage.add_count

    def can_sample(self) -> bool:
        """Whether some start row passes the cursor rules of spec §4.3."""
        if self.storage.is_full:
            return True
        lo, hi = sampling.candidate_range(
            self.storage, self.max_horizon, self.seq_len, self.stack_size
        )
        return hi > lo

    def add(self, observation, action, reward, terminal, episode_end) -> None:
        """Appends one transition per env (spec §4.1).

        Args:
          observation: (n_envs, H, W) uint8 newest frame of the state ``a`` was chosen in.
          action: (n_envs,) int.
          reward: (n_envs,) float, already clipped.
          terminal: (n_envs,) bool, life loss or game over.
          episode_end: (n_envs,) bool, game over or truncation.

        Prioritized buffers give the new transitions the tree's ``max_recorded_priority``.
        """
        row = self.storage.cursor
        self.storage.add(observation, action, reward, terminal, episode_end)
        if self.prioritized:
            leaves = row * self.n_envs + np.arange(self.n_envs)
            self.sum_tree.set(leaves, np.full(self.n_envs, self.sum_tree.max_recorded_priority))

    def update_priorities(self, indices, priorities) -> None:
        """Sets the leaves of raveled ``indices`` to ``priorities`` (in order)."""
        if not self.prioritized:
            raise ValueError("update_priorities called on a uniform (non-prioritized) buffer")
        self.sum_tree.set(indices, priorities)

    def sample(self, num: int, update_horizon: int, gamma: float) -> ReplaySample:
        """Samples ``num`` valid subsequences with the scheduled ``n`` and ``gamma``.

        Prioritized: ``num`` strata over the whole group (spec §4.2), invalid draws redrawn
        with U[0,1) queries; uniform: start rows ``~ U[min_id, max_id)`` (spec §4.3).

        Raises:
          ValueError: bad ``num``/``update_horizon``.
          RuntimeError: nothing can be sampled yet, or more than 1000 redraws needed.
        """
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        n = int(update_horizon)
        if not 1 <= n <= self.max_horizon:
            raise ValueError(
                f"update_horizon must be in [1, max_horizon={self.max_horizon}], "
                f"got {update_horizon}"
            )
        if not self.can_sample():
            raise RuntimeError(
                f"cannot sample: {self.add_count} rows added, need more than "
                f"max_horizon + seq_len + stack_size - 1 = "
                f"{self.max_horizon + self.seq_len + self.stack_size - 1}"
            )
        t, b = self._draw_indices(num)
        ep_start = sampling.episode_starts(self.storage, t, b, self.stack_size)
        returns, discount, terminal, next_rows = sampling.nstep_targets(
            self.storage, t, b, n, gamma, self.nstep_bootstrap
        )
        rows = (t[:, None] + np.arange(self.seq_len)) % self.storage.length
        indices = t * self.n_envs + b
        if self.prioritized:
            priority = self.sum_tree.get(indices).astype(np.float32)
        else:
            priority = np.ones(num, np.float32)
        return ReplaySample(
            frames=sampling.gather_frames(
                self.storage, t, b, next_rows, self.seq_len, self.stack_size
            ),
            stack_mask=sampling.stack_mask(
                self.storage, t, next_rows, ep_start, self.seq_len, self.stack_size
            ),
            action=self.storage.action[rows, b[:, None]],
            returns=returns,
            discount=discount,
            terminal=terminal,
            same_trajectory=sampling.same_trajectory(
                self.storage, t, b, self.seq_len, self.same_trajectory_mask
            ),
            sampling_priority=priority,
            indices=indices,
        )

    def sample_states(self, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``num`` states from start rows drawn uniformly (with replacement) among the
        valid ones, with the caller's ``rng``: the buffer's Generator and priorities are
        untouched (held-out batches for diagnostics).

        Returns:
          ``(num, H, W, S)`` uint8 frame stacks (censored at episode starts, as in
          :meth:`sample`) and ``(num,)`` int32 actions taken in them.

        Raises:
          RuntimeError: nothing can be sampled yet, or more than 1000 redraws needed.
        """
        if not self.can_sample():
            raise RuntimeError(f"cannot sample states: only {self.add_count} rows added")
        t, b = self._uniform_draw(num, rng)
        for _ in range(MAX_SAMPLE_ATTEMPTS):
            bad = ~sampling.valid_starts(self.storage, t, b, max_horizon=self.max_horizon,
                                         seq_len=self.seq_len, stack_size=self.stack_size)
            if not bad.any():
                break
            t[bad], b[bad] = self._uniform_draw(int(bad.sum()), rng)
        else:
            raise RuntimeError(f"Max sample attempts: no {num} valid states in "
                               f"{MAX_SAMPLE_ATTEMPTS} rounds")
        ep_start = sampling.episode_starts(self.storage, t, b, self.stack_size)
        # A subsequence of length 1 whose bootstrap rows are its own (unused).
        frames = sampling.gather_frames(self.storage, t, b, t, 1, self.stack_size)
        mask = sampling.stack_mask(self.storage, t, t, ep_start, 1, self.stack_size)
        state = sampling.stack_frames(frames, mask)[0][:, 0]
        return state, self.storage.action[t, b].astype(np.int32)

    def _draw_indices(self, num: int):
        """(t, b) of ``num`` valid start indices, redrawing invalid ones in rounds."""
        idx = self._initial_draw(num)
        attempts = 0
        while True:
            t, b = np.divmod(idx, self.n_envs)
            bad = np.flatnonzero(
                ~sampling.valid_starts(
                    self.storage, t, b, max_horizon=self.max_horizon,
                    seq_len=self.seq_len, stack_size=self.stack_size,
                )
            )
            if bad.size == 0:
                return t, b
            attempts += bad.size
            if attempts > MAX_SAMPLE_ATTEMPTS:
                raise RuntimeError(
                    f"Max sample attempts: {MAX_SAMPLE_ATTEMPTS} redraws did not give "
                    f"{num} valid indices ({bad.size} still invalid)"
                )
            idx[bad] = self._redraw(bad.size)

    def _initial_draw(self, num: int) -> np.ndarray:
        if self.prioritized:
            return self.sum_tree.stratified_sample(num, self.rng)
        t, b = self._uniform_draw(num, self.rng)
        return t * self.n_envs + b

    def _redraw(self, k: int) -> np.ndarray:
        if self.prioritized:
            return self.sum_tree.sample(self.rng.random(k, dtype=np.float32))
        t, b = self._uniform_draw(k, self.rng)
        return t * self.n_envs + b

    def _uniform_draw(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = sampling.candidate_range(
            self.storage, self.max_horizon, self.seq_len, self.stack_size
        )
        t = rng.integers(lo, hi, k) % self.storage.length
        b = rng.integers(0, self.n_envs, k)
        return t, b

    def state_dict(self) -> dict[str, np.ndarray]:
        """Complete buffer state as a flat dict of arrays (no pickle; arrays shared).

        Keys: ``storage/*`` (the written rows of frames, actions, rewards, terminals and
        episode ends, and add_count: :meth:`CircularStorage.state_dict`),
        ``sum_tree/*`` (prioritized only), ``rng`` (0-d bytes, JSON of the Generator's
        bit-generator state) and ``config`` (0-d bytes, JSON of the settings that shape
        the stored arrays: capacity, n_envs, stack_size, prioritized, frame_shape).
        """
        state = {f"storage/{k}": v for k, v in self.storage.state_dict().items()}
        if self.prioritized:
            state.update({f"sum_tree/{k}": v for k, v in self.sum_tree.state_dict().items()})
        state["rng"] = np.array(json.dumps(self.rng.bit_generator.state).encode())
        state["config"] = np.array(json.dumps(self._config()).encode())
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restores :meth:`state_dict` output; settings must match this buffer's."""
        if "config" not in state or "rng" not in state:
            raise KeyError("replay state needs 'config' and 'rng' entries")
        saved = json.loads(bytes(np.asarray(state["config"]).item()).decode())
        if saved != self._config():
            diff = {k: (saved.get(k), v) for k, v in self._config().items() if saved.get(k) != v}
            raise ValueError(f"replay state was saved with other settings (saved, here): {diff}")
        self.storage.load_state_dict(
            {k[len("storage/"):]: v for k, v in state.items() if k.startswith("storage/")}
        )
        if self.prioritized:
            self.sum_tree.load_state_dict(
                {k[len("sum_tree/"):]: v for k, v in state.items() if k.startswith("sum_tree/")}
            )
        rng_state = json.loads(bytes(np.asarray(state["rng"]).item()).decode())
        self.rng.bit_generator.state = rng_state

    def _config(self) -> dict:
        """The settings that shape the stored state (sampling switches may differ)."""
        return {
            "capacity": self.capacity,
            "n_envs": self.n_envs,
            "stack_size": self.stack_size,
            "prioritized": self.prioritized,
            "frame_shape": list(self.storage.frame_shape),
        }
