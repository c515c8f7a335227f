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


def gather_frames(storage: CircularStorage, t, b, next_rows, seq_len: int,
                  stack_size: int) -> np.ndarray:
    """(N, T + 2S - 1, *frame_shape) uint8: each sample's frames, each once.

    Frames ``0 .. T + S - 2`` are ``o_{t-S+1} .. o_{t+T-1}`` (the T states ``S_{t+j}``),
    the last S are the frames of the bootstrap state ending at wrapped ``next_rows``
    (rows modulo ``L``). :func:`stack_frames` builds the stacks from them.
    """
    length = storage.length
    rows = np.concatenate(
        [t[:, None] - (stack_size - 1) + np.arange(seq_len + stack_size - 1),
         next_rows[:, None] - (stack_size - 1) + np.arange(stack_size)],
        axis=1,
    ) % length
    flat = storage.observation.reshape(length * storage.n_envs, *storage.frame_shape)
    return np.take(flat, rows * storage.n_envs + b[:, None], axis=0)


def stack_mask(storage: CircularStorage, t, next_rows, ep_start, seq_len: int,
               stack_size: int) -> np.ndarray:
    """(N, T + 1, S) bool: is channel i of state j kept (else zeroed, spec §4.4)?

    States ``j < T`` are ``S_{t+j}``, state ``T`` the bootstrap state. Channel i of the
    state whose newest frame is at wrapped row ``s`` holds the frame of unwrapped row
    ``s - S + 1 + i`` relative to ``s``; it is zeroed when that row is below
    ``ep_start``, as the official code compares them (spec §4.4 (c)).
    """
    last_rows = np.concatenate(
        [(t[:, None] + np.arange(seq_len)) % storage.length, next_rows[:, None]], axis=1
    )
    rows = last_rows[:, :, None] - (stack_size - 1) + np.arange(stack_size)
    return rows >= ep_start[:, None, None]


def stack_frames(frames, mask, xp=np):
    """Frame stacks of :func:`gather_frames` output, censored by :func:`stack_mask`'s.

    Args:
      frames: (..., T + 2S - 1, *frame_shape) uint8.
      mask: (..., T + 1, S) bool (same leading axes).
      xp: the array module, ``numpy`` or ``jax.numpy`` (on the device, in the train step).

    Returns:
      states (..., T, *frame_shape, S) with channel i of state j = frame ``j + i``, and
      next_states (..., *frame_shape, S) with channel i = frame ``T + S - 1 + i``; channel
      0 is the oldest frame, censored channels are 0.
    """
    seq_len, stack_size = mask.shape[-2] - 1, mask.shape[-1]
    lead = (slice(None),) * (mask.ndim - 2)
    states = xp.stack([frames[lead + (slice(i, i + seq_len),)] for i in range(stack_size)],
                      axis=-1)
    first_next = seq_len + stack_size - 1
    next_states = xp.stack([frames[lead + (first_next + i,)] for i in range(stack_size)],
                           axis=-1)
    extra = (None,) * (frames.ndim - mask.ndim + 1)  # the frame axes
    keep = mask[lead + (slice(None),) + extra + (slice(None),)]
    zero = xp.zeros((), frames.dtype)
    return (xp.where(keep[lead + (slice(0, seq_len),)], states, zero),
            xp.where(keep[lead + (seq_len,)], next_states, zero))


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
