"""Vectorised subsequence sampling rules over a :class:`CircularStorage` (spec §4.3-4.6).

All functions take start rows ``t`` ((N,) int64 in ``[0, L)``) and envs ``b`` ((N,)
int64) and never loop over samples in Python. Row arithmetic is modulo ``L``; where
the official code compares *unwrapped* row numbers (stack censoring), that is copied
exactly, including its wrap-around behaviour (spec §4.4 (c)).
"""

from __future__ import annotations

import math

import numpy as np

from bbf_jax.replay.storage import CircularStorage

NSTEP_MODES = ("official", "corrected")
MASK_MODES = ("official", "corrected")


def candidate_range(storage: CircularStorage, max_horizon: int, seq_len: int, stack_size: int):
    """``[min_id, max_id)`` of start rows a uniform draw uses (unwrapped; spec §4.3)."""
    max_id = storage.cursor - max_horizon - seq_len
    if storage.is_full:
        min_id = storage.cursor - storage.length + stack_size - 1
    else:
        min_id = stack_size - 1
    return min_id, max_id


def valid_starts(
    storage: CircularStorage, t, b, *, max_horizon: int, seq_len: int, stack_size: int
) -> np.ndarray:
    """(N,) bool: may a subsequence start at row ``t`` of env ``b`` (spec §4.3)?

    Invalid if ``t`` is outside ``[0, L)``; or, before the buffer is full,
    ``t >= cursor - max_horizon - seq_len`` or ``t < stack_size - 1``; or ``t`` is in the
    cursor window ``{cursor - max_horizon, ..., cursor + stack_size - 1} mod L``; or an
    episode ended without a terminal (truncation) in rows ``t .. t + max_horizon - 1``.
    """
    length, cursor = storage.length, storage.cursor
    ok = (t >= 0) & (t < length)
    if not storage.is_full:
        ok &= (t < cursor - max_horizon - seq_len) & (t >= stack_size - 1)
    ok &= (t - (cursor - max_horizon)) % length >= stack_size + max_horizon
    rows = (t[:, None] + np.arange(max_horizon)) % length
    bb = b[:, None]
    truncated = storage.ended[rows, bb] & ~storage.terminal[rows, bb]
    return ok & ~truncated.any(axis=1)


def episode_starts(storage: CircularStorage, t, b, stack_size: int) -> np.ndarray:
    """(N,) int64 ``ep_start``: frames at unwrapped rows below it are zeroed (spec §4.4).

    Looks at ``d`` of rows ``t - stack_size + 1 .. t - 1`` (rows below 0 count as 0);
    with the first set one at offset ``k`` the episode starts at ``t - stack_size + k + 2``,
    otherwise ``ep_start = 0``.
    """
    rows = t[:, None] - (stack_size - 1) + np.arange(stack_size - 1)
    d = storage.terminal[rows % storage.length, b[:, None]] & (rows >= 0)
    first = np.argmax(d, axis=1)
    return np.where(d.any(axis=1), t - stack_size + first + 2, 0).astype(np.int64)


# Samples are stacked in chunks of about this many bytes of input frames, so that the
# frames, the uint16 pairs and the output words of a chunk stay in the L2 cache.
_CHUNK_BYTES = 1 << 19


def _interleave(frames: np.ndarray, out: np.ndarray) -> None:
    """Sliding stacks: ``out[n, j, p, i] = frames[n, j + i, p]`` (channel 0 oldest).

    Args:
      frames: (n, W + S - 1, P) uint8.
      out: (n, W, P, S) uint8, written.

    For stacks of 4 the channels of one pixel are assembled as one little-endian uint32
    (frame pairs first), several times faster than four byte-strided copies.
    """
    n, windows, p, stack_size = out.shape
    if stack_size == 4:
        pairs = frames[:, 1:].astype("<u2")
        pairs <<= 8
        pairs |= frames[:, :-1]  # pairs[:, f] = frame f | frame f+1 << 8
        words = out.view("<u4").reshape(n, windows, p)
        np.copyto(words, pairs[:, 2 : 2 + windows])
        words <<= 16
        words |= pairs[:, :windows]
    else:
        for i in range(stack_size):
            out[..., i] = frames[:, i : i + windows]


def _censor(stacks: np.ndarray, last_rows: np.ndarray, ep_start: np.ndarray) -> None:
    """Zeroes channel i of stack (n, j) when its unwrapped row is below ``ep_start[n]``.

    Args:
      stacks: (N, W, *frame_shape, S) uint8, modified in place.
      last_rows: (N, W) wrapped row of each stack's newest frame.
      ep_start: (N,) first uncensored unwrapped row.
    """
    stack_size = stacks.shape[-1]
    rows = last_rows[:, :, None] - (stack_size - 1) + np.arange(stack_size)
    n, j, i = np.nonzero(rows < ep_start[:, None, None])
    if n.size:
        stacks[n, j, ..., i] = 0


def stack_states(
    storage: CircularStorage, t, b, ep_start, seq_len: int, stack_size: int
) -> np.ndarray:
    """(N, seq_len, *frame_shape, stack_size) uint8 states ``S_{t+j}``, censored (§4.4).

    Channel i of state j is frame ``o_{s - stack_size + 1 + i}`` with ``s = (t + j) mod L``.
    """
    length = storage.length
    rows = (t[:, None] - (stack_size - 1) + np.arange(seq_len + stack_size - 1)) % length
    bb = b[:, None]
    pixels = int(np.prod(storage.frame_shape))
    n = t.shape[0]
    stacks = np.empty((n, seq_len, pixels, stack_size), np.uint8)
    chunk = max(1, _CHUNK_BYTES // (rows.shape[1] * pixels))
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        frames = storage.observation[rows[lo:hi], bb[lo:hi]].reshape(hi - lo, -1, pixels)
        _interleave(frames, stacks[lo:hi])
    stacks = stacks.reshape(n, seq_len, *storage.frame_shape, stack_size)
    last_rows = (t[:, None] + np.arange(seq_len)) % length
    _censor(stacks, last_rows, ep_start)
    return stacks


def stack_at(storage: CircularStorage, rows, b, ep_start, stack_size: int) -> np.ndarray:
    """(N, *frame_shape, stack_size) uint8 single states ending at wrapped ``rows``."""
    return stack_states(storage, rows, b, ep_start, 1, stack_size)[:, 0]


def discount_powers(gamma: float, n: int) -> np.ndarray:
    """(n + 1,) float32 ``gamma**k`` computed in Python doubles (official rounding)."""
    return np.array([math.pow(gamma, k) for k in range(n + 1)], dtype=np.float32)


def nstep_targets(storage: CircularStorage, t, b, n: int, gamma: float, bootstrap: str):
    """n-step return, discount, terminal and bootstrap row of position 0 (spec §4.5).

    ``R = sum_{k<n} gamma^k m_k r_{t+k}`` with ``m_k = prod_{i<k} (1 - d_{t+i})``, summed
    in float64 over float32 ``gamma^k`` as the official code does, then rounded to float32.
    ``discount = float32(gamma^n)`` for every sample, terminal or not.

    bootstrap:
      'official': ``terminal = any(d_t .. d_{t+n-2})`` and the next state ends at row
        ``t + n - 1`` (google-research/google-research#1851: one step early).
      'corrected': textbook, ``terminal = any(d_t .. d_{t+n-1})``, next state at ``t + n``.

    Returns:
      returns (N,) float32, discount (N,) float32, terminal (N,) float32 (0/1) and
      next_rows (N,) int64 wrapped row of the bootstrap state's newest frame.
    """
    if bootstrap not in NSTEP_MODES:
        raise ValueError(f"nstep_bootstrap must be one of {NSTEP_MODES}, got {bootstrap!r}")
    g = discount_powers(gamma, n)
    rows = (t[:, None] + np.arange(n)) % storage.length
    rewards = storage.reward[rows, b[:, None]].astype(np.float64)
    dones = storage.terminal[rows, b[:, None]]
    alive = np.ones(t.shape, np.bool_)
    acc = np.zeros(t.shape, np.float64)
    for k in range(n):
        acc += np.where(alive, np.float64(g[k]) * rewards[:, k], 0.0)
        alive &= ~dones[:, k]
    last = n - 1 if bootstrap == "official" else n
    terminal = dones[:, :last].any(axis=1)
    next_rows = (t + last) % storage.length
    discount = np.full(t.shape, g[n], np.float32)
    return acc.astype(np.float32), discount, terminal.astype(np.float32), next_rows


def same_trajectory(storage: CircularStorage, t, b, seq_len: int, mode: str) -> np.ndarray:
    """(N, seq_len) float32 SPR mask: is state ``S_{t+j}`` in the episode of ``S_t`` (§4.6).

    mode:
      'official': ``M[n, j] = prod_{i<=j} (1 - d_{t+i})`` with sample row 0 of the group
        forced to all ones (the official code zeroes row 0 of the flags instead of
        column 0), which also drops ``S_{t+j}`` when it is the last state of its episode.
      'corrected': ``M[n, 0] = 1``, ``M[n, j] = prod_{i<j} (1 - d_{t+i})`` for every row.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"same_trajectory_mask must be one of {MASK_MODES}, got {mode!r}")
    rows = (t[:, None] + np.arange(seq_len)) % storage.length
    alive = ~storage.terminal[rows, b[:, None]]
    if mode == "official":
        alive[0, :] = True
        mask = np.logical_and.accumulate(alive, axis=1)
    else:
        mask = np.ones_like(alive)
        mask[:, 1:] = np.logical_and.accumulate(alive[:, :-1], axis=1)
    return mask.astype(np.float32)
