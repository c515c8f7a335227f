"""The frame replay (each frame stored once): stacks gathered at sampling equal the
stacks an env's frame stack builds (first frame repeated at an episode's start), next
observations, terminals, validity under overwriting, and seeded sampling."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from bbf_jax.replay.frames import FrameReplay


def _frame(episode: int, t: int) -> np.ndarray:
    return np.full((2, 3, 1), 10 * episode + t, np.uint8)


def _play(replay, episode_lengths, stack, terminal_last=True):
    """Writes episodes of frames ``10 e + t``; returns every transition as the env's
    frame stack sees it: (obs stack, action, reward, next stack, terminal)."""
    out = []
    for e, length in enumerate(episode_lengths):
        frames = collections.deque([_frame(e, 0)] * stack, maxlen=stack)
        replay.add_first(_frame(e, 0))
        for t in range(length):
            obs = np.concatenate(frames, axis=-1)
            frames.append(_frame(e, t + 1))
            terminal = terminal_last and t == length - 1
            action = np.array([e, t, 0.5], np.float32)
            replay.add_step(action, float(e + t), terminal, _frame(e, t + 1))
            out.append((obs, action, float(e + t), np.concatenate(frames, axis=-1), terminal))
    return out


@pytest.mark.parametrize("capacity", [7, 12, 1000])
@pytest.mark.parametrize("stack", [1, 3])
def test_stacks_equal_the_envs_frame_stack(capacity, stack):
    replay = FrameReplay(capacity, (2, 3, 1), stack, 3, seed=0)
    transitions = _play(replay, [4, 1, 6, 3], stack)
    valid = replay.valid()
    assert len(valid) > 0
    by_action = {(int(a[0]), int(a[1])): (o, r, n, d) for o, a, r, n, d in transitions}
    batch = replay.gather(valid)
    for i in range(len(valid)):
        key = (int(batch.actions[i, 0]), int(batch.actions[i, 1]))
        obs, reward, next_obs, terminal = by_action[key]
        np.testing.assert_array_equal(batch.obs[i], obs)
        np.testing.assert_array_equal(batch.next_obs[i], next_obs)
        assert batch.rewards[i] == reward and batch.terminals[i] == terminal
    # Global slot of transition (e, t): the episodes before take length + 1 slots each.
    lengths = [4, 1, 6, 3]
    written = sum(n + 1 for n in lengths)
    expected = {(e, t) for e, n in enumerate(lengths) for t in range(n)
                if sum(m + 1 for m in lengths[:e]) + t >= written - capacity + stack - 1}
    got = {(int(a[0]), int(a[1])) for a in batch.actions}
    assert got == expected
    if capacity == 1000:  # nothing overwritten: every transition is there
        assert len(got) == len(transitions) == 14


def test_final_frames_start_no_transition():
    replay = FrameReplay(100, (2, 3, 1), 2, 3, seed=0)
    _play(replay, [2, 2], 2)
    # slots: e0 f0, f1, f2 (final), e1 f0, f1, f2 (final): transitions at 0, 1, 3, 4.
    np.testing.assert_array_equal(replay.valid(), [0, 1, 3, 4])


def test_sampling_is_seeded_and_needs_a_transition():
    a, b = (FrameReplay(50, (2, 3, 1), 3, 3, seed=9) for _ in range(2))
    with pytest.raises(ValueError, match="no stored transition"):
        a.sample(4)
    with pytest.raises(ValueError, match="add_step before add_first"):
        a.add_step(np.zeros(3), 0.0, False, _frame(0, 0))
    for r in (a, b):
        _play(r, [5, 5], 3)
    np.testing.assert_array_equal(a.sample(16).actions, b.sample(16).actions)
    with pytest.raises(ValueError, match="capacity >= stack \\+ 1"):
        FrameReplay(3, (2, 3, 1), 3, 3, seed=0)
