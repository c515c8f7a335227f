"""RunCheckpointer in-process (real orbax, a real replay buffer): only the written rows of
the replay are stored and restore rebuilds the whole store bit for bit; saves are
asynchronous, snapshot their arrays, and report their size and times."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bbf_jax import checkpoint as ckpt
from bbf_jax.replay import SubsequenceReplay

CAPACITY = 300  # rows of 84x84 frames (one env)


def _replay(seed: int = 0) -> SubsequenceReplay:
    return SubsequenceReplay(CAPACITY, 1, seq_len=3, max_horizon=3, seed=seed)


def _add(rb: SubsequenceReplay, rows: int, rng: np.random.Generator) -> None:
    """``rows`` transitions of random frames, actions, rewards and episode ends."""
    for _ in range(rows):
        rb.add(rng.integers(0, 256, (1, 84, 84), dtype=np.uint8), rng.integers(0, 6, 1),
               rng.choice([-1.0, 0.0, 1.0], 1).astype(np.float32), rng.random(1) < 0.05,
               rng.random(1) < 0.02)


def _used(rows: int, seed: int = 0) -> SubsequenceReplay:
    """A buffer after ``rows`` adds, priority updates and a sample (which moves its
    Generator)."""
    rng = np.random.default_rng(seed)
    rb = _replay(seed)
    _add(rb, rows, rng)
    n = min(rows, CAPACITY)
    rb.update_priorities(np.arange(0, n, 3), rng.uniform(0.1, 2.0, len(range(0, n, 3))))
    if rb.can_sample():
        rb.sample(8, 3, 0.97)
    return rb


def _host(rb: SubsequenceReplay) -> dict:
    return {"replay": ckpt.flat_to_tree(rb.state_dict())}


def _train_state():
    """A small stand-in for a train state (numpy, as the runner fetches it)."""
    return {"w": np.arange(12, dtype=np.float32).reshape(3, 4),
            "opt": {"mu": np.linspace(0.0, 1.0, 7, dtype=np.float32),
                    "count": np.array(5, np.int32)}}


def _full_state(rb: SubsequenceReplay) -> dict:
    """Every array of the buffer, whole (the capacity-row store and the sum tree), and
    its Generator state: what must come back exactly."""
    s = rb.storage
    return {"observation": s.observation.copy(), "action": s.action.copy(),
            "reward": s.reward.copy(), "terminal": s.terminal.copy(), "ended": s.ended.copy(),
            "add_count": s.add_count, "nodes": rb.sum_tree.nodes.copy(),
            "highest_set": rb.sum_tree.highest_set,
            "max_priority": rb.sum_tree.max_recorded_priority,
            "rng": json.dumps(rb.rng.bit_generator.state)}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# Empty (row 0 is stored: orbax cannot write zero-size arrays); part-filled; full and
# wrapped.
@pytest.mark.parametrize("rows", [0, 120, CAPACITY + 70])
def test_saves_the_written_rows_and_restores_the_whole_store(tmp_path, rows):
    rb = _used(rows)
    want = _full_state(rb)
    checkpointer = ckpt.RunCheckpointer(tmp_path)
    try:
        assert checkpointer.save(rows, _train_state(), _host(rb), {"agent_step": rows}) is None
        report = checkpointer.wait()
        _, host, meta = checkpointer.restore(rows, _train_state())
    finally:
        checkpointer.close()
    assert meta == {"agent_step": rows}
    state = ckpt.tree_to_flat(host["replay"])
    written = max(min(rows, CAPACITY), 1)
    assert state["storage/observation"].shape == (written, 1, 84, 84)
    assert state["storage/action"].shape == (written, 1)
    # The checkpoint holds the written rows' frames (random bytes, incompressible), not
    # the capacity's.
    assert min(rows, CAPACITY) * 84 * 84 <= report.size_bytes < (written + 50) * 84 * 84
    # Into a buffer of other contents (its rows beyond those written must become zero).
    other = _used(CAPACITY + 10, seed=1)
    other.load_state_dict(state)
    _assert_same(_full_state(other), want)
    if rows:
        a, b = rb.sample(8, 2, 0.99), other.sample(8, 2, 0.99)
        for name, x in a._asdict().items():
            np.testing.assert_array_equal(x, getattr(b, name), err_msg=name)


def test_save_is_asynchronous_on_a_snapshot(tmp_path):
    """Everything handed to save may change as soon as it returns (the replay is written
    in place): the checkpoint holds the values at the call. Reports come from poll, the
    next save, wait and close."""
    rng = np.random.default_rng(3)
    rb = _used(CAPACITY + 5)
    train_state = {"w": np.arange(1_000_000, dtype=np.float32)}
    want_replay, want_w = _full_state(rb), train_state["w"].copy()
    checkpointer = ckpt.RunCheckpointer(tmp_path, max_to_keep=3)
    try:
        checkpointer.save(1, train_state, _host(rb), {"agent_step": 1})
        # At once, while the files are written: every array changes in place.
        train_state["w"] += 1.0
        storage = rb.storage
        storage.observation ^= 0xFF
        storage.action += 1
        storage.reward += 1.0
        storage.terminal ^= True
        storage.ended ^= True
        rb.sum_tree.nodes *= 2.0
        _add(rb, 20, rng)  # real adds over the saved rows (the buffer is full)
        rb.update_priorities(np.arange(10), np.full(10, 5.0))
        changed = _full_state(rb)
        report = None
        while report is None:
            time.sleep(0.001)
            report = checkpointer.poll()
        assert report.step == 1 and checkpointer.poll() is None
        assert 0 < report.blocking_seconds <= report.total_seconds
        size = sum(p.stat().st_size for p in (tmp_path / "checkpoints" / "1").rglob("*")
                   if p.is_file())
        assert report.size_bytes == size
        assert report.line() == (f"bbf-train: checkpoint 1: {size / 1e6:.1f} MB, "
                                 f"{report.blocking_seconds:.2f} s blocking, "
                                 f"{report.total_seconds:.2f} s until committed")
        assert checkpointer.save(2, train_state, _host(rb), {"agent_step": 2}) is None
        assert checkpointer.save(3, train_state, _host(rb), {"agent_step": 3}).step == 2
        assert checkpointer.close().step == 3
        target = {"w": np.zeros(1_000_000, np.float32)}
        (state1, host1, _), (state3, host3, _) = (checkpointer.restore(s, target)
                                                  for s in (1, 3))
    finally:
        checkpointer.close()
    np.testing.assert_array_equal(state1["w"], want_w)
    np.testing.assert_array_equal(state3["w"], want_w + 1.0)
    for host, want in ((host1, want_replay), (host3, changed)):
        restored = _replay()
        restored.load_state_dict(ckpt.tree_to_flat(host["replay"]))
        _assert_same(_full_state(restored), want)
    assert not np.array_equal(changed["observation"], want_replay["observation"])


def test_replay_state_with_other_rows_is_a_clear_error():
    state = _used(120).state_dict()
    state["storage/add_count"] = np.asarray(130, np.int64)
    with pytest.raises(ValueError, match=r"^replay state 'observation' is uint8\[120, 1, 84, "
                       r"84\], this buffer \(length 300, 1 envs\) with add_count 130 needs "
                       r"its 130 saved rows: uint8\[130, 1, 84, 84\]$"):
        _replay().load_state_dict(state)
