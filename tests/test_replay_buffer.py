"""Subsequence replay (spec §4.1-4.7) on hand-built episodes with hand-worked answers.

Frames are tiny (2x3) and every frame is filled with a number that names the add call
that wrote it (``add index + 1``, plus ``100 * env``), so stacks can be read off directly.
To sample one chosen start index through the public API, every other priority is set
to 0: all strata then descend to that leaf.
"""

import numpy as np
import pytest
from scipy import stats

from bbf_jax.agents.bbf.config import AgentConfig, derive
from bbf_jax.config import ReplayConfig
from bbf_jax.replay import SubsequenceReplay, sampling

FRAME = (2, 3)


def _buffer(capacity=32, seq_len=2, max_horizon=3, n_envs=1, **kw):
    return SubsequenceReplay(capacity, n_envs, seq_len, max_horizon, frame_shape=FRAME, **kw)


def _fill(rb, rows, terminals=(), ends=(), rewards=None):
    """Adds ``rows`` transitions; env b of add i gets frame value ``i + 1 + 100 b``."""
    for i in range(rows):
        envs = np.arange(rb.n_envs)
        obs = np.broadcast_to(((i + 1 + 100 * envs) % 256).astype(np.uint8)[:, None, None],
                              (rb.n_envs, *FRAME)).copy()
        r = rewards[i] if rewards is not None else 0.0
        rb.add(obs, np.full(rb.n_envs, i % 5), np.full(rb.n_envs, r, np.float32),
               np.full(rb.n_envs, i in terminals), np.full(rb.n_envs, i in ends))


def _only(rb, index):
    """Puts all priority mass on raveled ``index``."""
    n = min(rb.add_count, rb.storage.length) * rb.n_envs
    rb.update_priorities(np.arange(n), np.zeros(n))
    rb.update_priorities([index], [1.0])


def _stack_values(state):
    """(..., H, W, S) uint8 -> (..., S) frame numbers (each frame is constant)."""
    return state[..., 0, 0, :].astype(int)


REWARDS = [0.25 * (i % 7) - 0.5 for i in range(64)]


def test_nstep_terminal_inside_window_official_vs_textbook():
    for mode, expect in (
        # (t, R, terminal, newest frame of next state) with d_9 = 1, n = 3, gamma = 0.5
        ("official", [(7, None, 0.0, 10), (8, None, 1.0, 11)]),
        ("corrected", [(7, None, 1.0, 11), (8, None, 1.0, 12)]),
    ):
        rb = _buffer(nstep_bootstrap=mode)
        _fill(rb, 30, terminals={9}, rewards=REWARDS)
        for t, _, terminal, next_frame in expect:
            _only(rb, t)
            s = rb.sample(4, update_horizon=3, gamma=0.5)
            r = REWARDS
            want_return = {7: r[7] + 0.5 * r[8] + 0.25 * r[9], 8: r[8] + 0.5 * r[9]}[t]
            np.testing.assert_array_equal(s.indices, [t] * 4)
            np.testing.assert_array_equal(s.returns, np.float32(want_return))
            np.testing.assert_array_equal(s.terminal, terminal)
            np.testing.assert_array_equal(s.discount, np.float32(0.125))
            assert _stack_values(s.next_state[0])[-1] == next_frame
            assert _stack_values(s.state[0, 0]).tolist() == [t - 2, t - 1, t, t + 1]


def test_official_bootstrap_is_one_step_early_without_terminal():
    """#1851: the target sums r_t..r_{t+n-1} but bootstraps from S_{t+n-1}."""
    rb = _buffer(seq_len=4, max_horizon=3)
    _fill(rb, 30, rewards=REWARDS)
    _only(rb, 10)
    for n, next_newest in ((1, 11), (2, 12), (3, 13)):
        s = rb.sample(2, update_horizon=n, gamma=0.5)
        assert _stack_values(s.next_state[0]).tolist() == list(range(next_newest - 3,
                                                                     next_newest + 1))
        # n = 1: the next state is the current state (official).
        np.testing.assert_array_equal(s.next_state, s.state[:, n - 1])
        assert s.terminal[0] == 0.0
        want = sum(0.5**k * REWARDS[10 + k] for k in range(n))
        assert s.returns[0] == np.float32(want)


def test_return_rounding_matches_official_float64_sum_of_float32_powers():
    rb = _buffer(capacity=64, max_horizon=10)
    rewards = [0.1 * ((i * 7) % 11) - 0.5 for i in range(40)]
    _fill(rb, 40, terminals={17}, rewards=rewards)
    _only(rb, 9)
    s = rb.sample(1, update_horizon=10, gamma=0.97)
    g = np.array([0.97**k for k in range(11)], np.float32)
    r = np.asarray(rewards, np.float32).astype(np.float64)
    # rows 9..17 (d_17 ends the life, rewards after it dropped), bootstrap at row 18
    want = np.float32(sum(np.float64(g[k]) * r[9 + k] for k in range(9)))
    assert s.returns[0] == want and s.discount[0] == g[10]
    assert s.terminal[0] == 1.0


def test_censoring_at_life_loss_uses_first_terminal_of_the_stack():
    rb = _buffer(seq_len=2, max_horizon=3)
    _fill(rb, 30, terminals={9})
    cases = {
        # t: (state 0, state 1) frame numbers, 0 = censored
        10: ([0, 0, 0, 11], [0, 0, 11, 12]),
        11: ([0, 0, 11, 12], [0, 11, 12, 13]),
        12: ([0, 11, 12, 13], [11, 12, 13, 14]),
        13: ([11, 12, 13, 14], [12, 13, 14, 15]),
        # The stack before the terminal is not censored (it is in the old life).
        9: ([7, 8, 9, 10], [8, 9, 10, 11]),
    }
    for t, (s0, s1) in cases.items():
        _only(rb, t)
        s = rb.sample(1, update_horizon=3, gamma=0.5)
        assert _stack_values(s.state[0]).tolist() == [s0, s1], t
    # Official n = 3 bootstrap of t = 10 ends at row 12, censored with the same ep_start.
    _only(rb, 10)
    s = rb.sample(1, update_horizon=3, gamma=0.5)
    assert _stack_values(s.next_state[0]).tolist() == [0, 11, 12, 13]

    # Two terminals in the stack window: only frames before the first one's successor go.
    rb = _buffer()
    _fill(rb, 30, terminals={9, 11})
    _only(rb, 12)
    s = rb.sample(1, update_horizon=1, gamma=0.5)
    assert _stack_values(s.state[0, 0]).tolist() == [0, 11, 12, 13]


def test_truncated_episodes_and_cursor_window_validity():
    rb = _buffer(capacity=32, seq_len=2, max_horizon=3)
    _fill(rb, 30, terminals={5, 20}, ends={12, 20})  # row 12 truncated, row 20 game over
    t = np.arange(32)
    valid = sampling.valid_starts(rb.storage, t, np.zeros_like(t), max_horizon=3,
                                  seq_len=2, stack_size=4)
    # Not full: 3 <= t < cursor - N - T = 25; rows 10, 11, 12 see the truncation at 12.
    want = set(range(3, 25)) - {10, 11, 12}
    assert set(np.flatnonzero(valid)) == want

    # Full buffer: cursor 4, window {cursor - N .. cursor + 3} = {1 .. 7} is invalid.
    rb = _buffer(capacity=16, seq_len=2, max_horizon=3)
    _fill(rb, 20)
    valid = sampling.valid_starts(rb.storage, np.arange(16), np.zeros(16, int),
                                  max_horizon=3, seq_len=2, stack_size=4)
    assert set(np.flatnonzero(valid)) == {0, *range(8, 16)}
    # Overwriting a truncated row with a plain one forgets the episode end.
    rb = _buffer(capacity=16, seq_len=2, max_horizon=3)
    _fill(rb, 30, ends={9})  # row 9 written by add 9 (end) then add 25 (not an end)
    assert not rb.storage.ended.any()


def test_wrap_around_reads_and_official_censoring_of_negative_rows():
    rb = _buffer(capacity=16, seq_len=2, max_horizon=3)
    _fill(rb, 20, rewards=REWARDS)  # rows 0..3 hold adds 16..19 (frames 17..20)
    _only(rb, 15)
    s = rb.sample(1, update_horizon=3, gamma=0.5)
    # Position 1 is row 0: its older frames have negative unwrapped rows -> zeroed
    # (spec §4.4 (c), copied from the official code).
    assert _stack_values(s.state[0]).tolist() == [[13, 14, 15, 16], [0, 0, 0, 17]]
    assert s.returns[0] == np.float32(REWARDS[15] + 0.5 * REWARDS[16] + 0.25 * REWARDS[17])
    assert _stack_values(s.next_state[0]).tolist() == [0, 0, 17, 18]  # row 1
    np.testing.assert_array_equal(s.action[0], [15 % 5, 16 % 5])
    _only(rb, 0)
    s = rb.sample(1, update_horizon=3, gamma=0.5)
    assert _stack_values(s.state[0]).tolist() == [[0, 0, 0, 17], [0, 0, 17, 18]]


def test_same_trajectory_mask_official_row_zero_and_corrected():
    for mode, rows_after_first, first_row in (
        ("official", [1, 1, 0, 0], [1, 1, 1, 1]),
        ("corrected", [1, 1, 1, 0], [1, 1, 1, 0]),
    ):
        rb = _buffer(seq_len=4, max_horizon=3, same_trajectory_mask=mode)
        _fill(rb, 30, terminals={9})
        _only(rb, 7)  # flags d_7..d_10 = 0, 0, 1, 0
        s = rb.sample(3, update_horizon=3, gamma=0.5)
        np.testing.assert_array_equal(s.same_trajectory[0], first_row)
        np.testing.assert_array_equal(s.same_trajectory[1:], [rows_after_first] * 2)
        assert s.same_trajectory.dtype == np.float32


def test_several_envs_read_their_own_rows():
    rb = _buffer(capacity=64, n_envs=2, seq_len=2, max_horizon=3)
    for i in range(30):
        obs = np.stack([np.full(FRAME, i + 1), np.full(FRAME, i + 101)]).astype(np.uint8)
        rb.add(obs, np.array([i % 5, (i + 1) % 5]), np.array([0.0, 0.25 * (i % 3)]),
               np.array([False, i == 9]), np.array([False, False]))
    _only(rb, 10 * 2 + 1)  # t = 10, env 1: just after env 1's terminal at row 9
    s = rb.sample(2, update_horizon=2, gamma=0.5)
    assert _stack_values(s.state[0]).tolist() == [[0, 0, 0, 111], [0, 0, 111, 112]]
    np.testing.assert_array_equal(s.action[0], [(10 + 1) % 5, (11 + 1) % 5])
    assert s.returns[0] == np.float32(0.25 * 1 + 0.5 * 0.25 * 2)
    _only(rb, 10 * 2 + 0)
    s = rb.sample(1, update_horizon=2, gamma=0.5)
    assert _stack_values(s.state[0]).tolist() == [[8, 9, 10, 11], [9, 10, 11, 12]]


def test_new_transitions_get_max_recorded_priority():
    rb = _buffer()
    _fill(rb, 10)
    np.testing.assert_array_equal(rb.sum_tree.get(np.arange(10)), 1.0)
    rb.update_priorities([2, 3], [2.5, 0.5])
    _fill(rb, 2)
    np.testing.assert_array_equal(rb.sum_tree.get(np.array([10, 11, 2, 3])),
                                  [2.5, 2.5, 2.5, 0.5])
    s = _sample_after_only(rb, 3)
    np.testing.assert_array_equal(s.sampling_priority, np.float32(1.0))


def _sample_after_only(rb, index):
    _only(rb, index)
    return rb.sample(2, update_horizon=1, gamma=0.9)


def test_prioritized_frequencies_follow_priorities_over_valid_indices():
    rb = _buffer(capacity=40, seq_len=2, max_horizon=3, seed=3)
    _fill(rb, 36, ends={15})  # valid: 3 <= t < 31, minus 13..15
    rng = np.random.default_rng(0)
    pri = rng.uniform(0.2, 3.0, 36)
    rb.update_priorities(np.arange(36), pri)
    valid = np.array(sorted(set(range(3, 31)) - {13, 14, 15}))
    draws = np.concatenate([rb.sample(64, 3, 0.99).indices for _ in range(250)])
    assert set(draws) <= set(valid)
    counts = np.array([(draws == v).sum() for v in valid])
    expected = draws.size * pri[valid] / pri[valid].sum()
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < stats.chi2.ppf(0.999, valid.size - 1)


def test_uniform_sampling_variant():
    rb = _buffer(capacity=40, seq_len=2, max_horizon=3, prioritized=False, seed=5)
    _fill(rb, 36, ends={15})
    valid = sorted(set(range(3, 31)) - {13, 14, 15})
    s = rb.sample(64, 2, 0.99)
    np.testing.assert_array_equal(s.sampling_priority, 1.0)
    draws = np.concatenate([rb.sample(64, 2, 0.99).indices for _ in range(200)])
    assert set(draws) == set(valid)
    counts = np.array([(draws == v).sum() for v in valid])
    chi2 = np.sum((counts - draws.size / len(valid)) ** 2 / (draws.size / len(valid)))
    assert chi2 < stats.chi2.ppf(0.999, len(valid) - 1)
    with pytest.raises(ValueError, match="non-prioritized"):
        rb.update_priorities([3], [1.0])
    assert rb.sum_tree is None


def test_errors_name_the_problem():
    rb = _buffer(capacity=32, seq_len=2, max_horizon=3)
    assert not rb.can_sample()
    with pytest.raises(RuntimeError, match="cannot sample"):
        rb.sample(4, 3, 0.9)
    _fill(rb, 9)  # candidates need add_count > N + T + S - 1 = 8
    assert rb.can_sample()
    with pytest.raises(ValueError, match="update_horizon"):
        rb.sample(4, 4, 0.9)
    with pytest.raises(ValueError, match="observation must be uint8"):
        rb.add(np.zeros((1, *FRAME), np.float32), [0], [0.0], [False], [False])
    with pytest.raises(ValueError, match=r"action must have shape \(1,\)"):
        rb.add(np.zeros((1, *FRAME), np.uint8), [0, 1], [0.0], [False], [False])
    with pytest.raises(ValueError, match="nstep_bootstrap"):
        _buffer(nstep_bootstrap="textbook")
    with pytest.raises(ValueError, match="same_trajectory_mask"):
        _buffer(same_trajectory_mask="fixed")
    with pytest.raises(ValueError, match="at least max_horizon"):
        _buffer(capacity=8)
    # All mass on an invalid start (t >= cursor - N - T): redraws run out.
    _fill(rb, 10)
    _only(rb, 18)
    with pytest.raises(RuntimeError, match="Max sample attempts"):
        rb.sample(4, 3, 0.9)


def test_from_config_uses_derived_values():
    rb = SubsequenceReplay.from_config(ReplayConfig(capacity=1000), derive(AgentConfig()),
                                       n_envs=2, seed=1)
    assert (rb.seq_len, rb.max_horizon, rb.stack_size, rb.n_envs) == (6, 10, 4, 2)
    assert rb.storage.observation.shape == (500, 2, 84, 84)
    assert rb.prioritized and rb.nstep_bootstrap == "official"


def test_save_restore_round_trip_gives_identical_samples(tmp_path):
    rb = _buffer(capacity=32, seq_len=3, max_horizon=3, seed=11)
    _fill(rb, 45, terminals={7, 30, 38}, ends={30, 20}, rewards=REWARDS)
    rb.update_priorities(np.arange(32), np.linspace(0.1, 2.0, 32))
    rb.sample(16, 3, 0.9)
    path = tmp_path / "replay.npz"
    np.savez(path, **rb.state_dict())
    with np.load(path, allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}
    restored = _buffer(capacity=32, seq_len=3, max_horizon=3, seed=999)
    restored.load_state_dict(state)
    for step in range(3):
        a, b = rb.sample(16, 2, 0.95), restored.sample(16, 2, 0.95)
        for name, x in a._asdict().items():
            np.testing.assert_array_equal(x, getattr(b, name), err_msg=f"{name} @ {step}")
        for buf in (rb, restored):
            buf.update_priorities(a.indices[:2], [0.7, 1.9])
            _fill(buf, 1, terminals={0})
    with pytest.raises(ValueError, match="capacity"):
        _buffer(capacity=48, seq_len=3, max_horizon=3).load_state_dict(state)
    with pytest.raises(ValueError, match="prioritized"):
        _buffer(capacity=32, prioritized=False).load_state_dict(state)


def test_full_size_frames_stack_like_a_per_sample_reference():
    """84x84 frames gathered once and stacked: compare with plain indexing."""
    rb = SubsequenceReplay(300, 1, seq_len=6, max_horizon=10, seed=4)
    rng = np.random.default_rng(2)
    for i in range(280):
        rb.add(rng.integers(0, 256, (1, 84, 84), dtype=np.uint8), [i % 3], [0.0],
               [i % 37 == 0], [False])
    s = rb.sample(64, 10, 0.99)
    state, next_state = s.state, s.next_state
    obs, term = rb.storage.observation[:, 0], rb.storage.terminal[:, 0]
    for k, t in enumerate(s.indices):
        prev = [r for r in range(t - 3, t) if r >= 0 and term[r]]
        ep_start = prev[0] + 1 if prev else 0
        for j in range(6):
            for i in range(4):
                row = t + j - 3 + i
                want = obs[row] if row >= ep_start else 0
                np.testing.assert_array_equal(state[k, j, :, :, i], want)
        # official n = 10: the bootstrap stack ends at row t + 9 (beyond the subsequence)
        for i in range(4):
            row = t + 6 + i
            want = obs[row] if row >= ep_start else 0
            np.testing.assert_array_equal(next_state[k, :, :, i], want)
