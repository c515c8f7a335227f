"""BatchPipeline (spec §5.2): official two-call lag vs fresh batches, bit-reproducibility
against sampling in the caller's thread, error propagation, bounds, shutdown, sharding."""

import os
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from bbf_jax.replay import BatchPipeline, ReplaySample, SubsequenceReplay

N = 8


def _buffer(seed=0):
    rb = SubsequenceReplay(64, 1, seq_len=2, max_horizon=3, seed=seed, frame_shape=(2, 2))
    _add(rb, 30, start=0)
    return rb


def _add(rb, count, start):
    for i in range(start, start + count):
        rb.add(np.full((1, 2, 2), i % 256, np.uint8), [i % 4], [0.1 * (i % 3)],
               [i % 11 == 5], [False])


def _schedule(call):
    """(n, gamma) in force at train call ``call`` (changes every call)."""
    return 1 + call % 3, 0.9 + 0.01 * call


def _train_loop(rb, pipeline, calls):
    """The caller's protocol: get, (train), launch, sync, update priorities, add."""
    used = []
    for call in range(calls):
        batch = pipeline.get(*_schedule(call))
        used.append(batch)
        pipeline.launch(*_schedule(call + 1))
        pipeline.sync()
        rb.update_priorities(batch.indices[:2], [0.5 + 0.1 * call, 2.0])
        _add(rb, 1, start=30 + call)
    return used


def _reference_loop(rb, calls, lag):
    """Same protocol, sampling in this thread: batch of call i sampled at call i - lag."""
    queue, used = [], []
    for call in range(calls):
        if not queue:
            queue = [rb.sample(N, *_schedule(call)) for _ in range(lag)]
        used.append(queue.pop(0))
        if lag == 2:
            queue.append(rb.sample(N, *_schedule(call + 1)))
        rb.update_priorities(used[-1].indices[:2], [0.5 + 0.1 * call, 2.0])
        _add(rb, 1, start=30 + call)
    return used


def _assert_same(a, b):
    for name in ReplaySample._fields:
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), getattr(b, name),
                                      err_msg=name)


@pytest.mark.parametrize("mode,lag", [("official", 2), ("corrected", 1)])
def test_pipeline_is_bit_identical_to_sampling_in_order(mode, lag):
    rb = _buffer()
    with BatchPipeline(lambda n, g: rb.sample(N, n, g), lambda s: s, mode) as pipe:
        used = _train_loop(rb, pipe, 6)
    expected = _reference_loop(_buffer(), 6, lag)
    for got, want in zip(used, expected, strict=True):
        _assert_same(got, want)


def test_official_lag_uses_stale_schedule_and_fresh_uses_current():
    seen = {}
    for mode in ("official", "corrected"):
        rb = _buffer()
        horizons = []

        def sample(n, g, rb=rb, horizons=horizons):
            horizons.append(n)
            return rb.sample(N, n, g)

        with BatchPipeline(sample, lambda s: s, mode) as pipe:
            _train_loop(rb, pipe, 4)
        seen[mode] = horizons
    # official: calls 0 and 0 (first get), then the launches of calls 1, 2, 3, 4
    assert seen["official"] == [_schedule(c)[0] for c in (0, 0, 1, 2, 3, 4)]
    assert seen["corrected"] == [_schedule(c)[0] for c in range(4)]


def test_sampling_runs_in_the_background_thread():
    rb = _buffer()
    threads = []

    def sample(n, g):
        threads.append(threading.current_thread())
        return rb.sample(N, n, g)

    with BatchPipeline(sample, lambda s: s) as pipe:
        pipe.get(1, 0.9)
        pipe.launch(2, 0.9)
        pipe.sync()
    assert threads[0] is threading.main_thread() and threads[1] is threading.main_thread()
    assert threads[2] is not threading.main_thread()


def test_background_exception_surfaces_in_sync():
    rb = _buffer()
    with BatchPipeline(lambda n, g: rb.sample(N, n, g), lambda s: s) as pipe:
        pipe.get(1, 0.9)
        pipe.launch(7, 0.9)  # beyond max_horizon: the real buffer refuses it
        with pytest.raises(ValueError, match="update_horizon"):
            pipe.sync()
        pipe.get(1, 0.9)  # the failed job left the pipeline usable


def test_bounded_and_closed():
    rb = _buffer()
    pipe = BatchPipeline(lambda n, g: rb.sample(N, n, g), lambda s: s)
    pipe.get(1, 0.9)
    pipe.launch(1, 0.9)
    with pytest.raises(RuntimeError, match="2 pending"):
        pipe.launch(1, 0.9)
    pipe.close()
    assert not any(t.name.startswith("replay-prefetch") for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="closed"):
        pipe.get(1, 0.9)
    pipe.close()  # idempotent
    with pytest.raises(ValueError, match="prefetch mode"):
        BatchPipeline(lambda n, g: None, lambda s: s, "fresh")


def test_pending_round_trip_restores_the_same_batches():
    rb = _buffer()
    pipe = BatchPipeline(lambda n, g: rb.sample(N, n, g), lambda s: s)
    pipe.get(1, 0.9)
    pipe.launch(2, 0.95)
    saved = pipe.pending()  # includes the in-flight sample
    assert len(saved) == 2
    after = [pipe.get(1, 0.9), pipe.get(1, 0.9)]
    pipe.close()
    other = BatchPipeline(lambda n, g: rb.sample(N, n, g), lambda s: s)
    other.restore_pending(saved)
    for want in after:
        _assert_same(other.get(1, 0.9), want)
    with pytest.raises(ValueError, match="cannot be restored"):
        BatchPipeline(lambda n, g: None, lambda s: s, "corrected").restore_pending(saved)
    other.close()


def test_pipeline_feeds_device_batches_through_make_put_fn():
    from bbf_jax import parallel
    from bbf_jax.agents.bbf.learner import FrameBatch, to_train_batch

    rb = _buffer()
    mesh = parallel.make_mesh(1)
    put = parallel.make_put_fn(mesh, batches_to_group=2, batch_size=N // 2)
    with BatchPipeline(lambda n, g: rb.sample(N, n, g), put, "corrected") as pipe:
        batch = pipe.get(2, 0.9)
    assert isinstance(batch, FrameBatch) and isinstance(batch.frames, jax.Array)
    # Each frame once: T + 2S - 1 = 9 frames per subsequence (T = 2, stacks of 4).
    assert batch.frames.shape == (2, N // 2, 9, 2, 2)
    host = to_train_batch(rb.sample(N, 2, 0.9), 2, N // 2)
    assert host.frames.shape == batch.frames.shape


def test_make_put_fn_shards_minibatch_rows_over_several_devices():
    code = (
        "import numpy as np, jax\n"
        "from bbf_jax import parallel\n"
        "from bbf_jax.agents.bbf.learner import to_train_batch\n"
        "from bbf_jax.replay import SubsequenceReplay\n"
        "rb = SubsequenceReplay(64, 1, 2, 3, frame_shape=(84, 84))\n"
        "for i in range(30):\n"
        "    rb.add(np.full((1, 84, 84), i, np.uint8), [0], [0.0], [False], [False])\n"
        "s = rb.sample(8, 2, 0.9)\n"
        "mesh = parallel.make_mesh(2)\n"
        "b = parallel.make_put_fn(mesh, 2, 4)(s)\n"
        "assert len(b.frames.sharding.device_set) == 2\n"
        "assert b.frames.addressable_shards[0].data.shape[:2] == (2, 2)\n"
        "assert (np.asarray(b.frames) == to_train_batch(s, 2, 4).frames).all()\n"
        "try:\n"
        "    parallel.make_put_fn(mesh, 1, 3)\n"
        "except ValueError as e:\n"
        "    assert 'does not divide' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
        "print('ok')\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
