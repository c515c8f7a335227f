"""Faults injected for real (smoke config, real ALE, real orbax, real processes): a
diverging run and a NaN in the replay buffer under both ``RunConfig.on_nonfinite``
settings, a full disk and a killed save, an unpickling check, a replay too large for
the machine."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bbf_jax import checkpoint as ckpt
from bbf_jax import gin_utils
from bbf_jax.runner import Runner

SMOKE = str(pathlib.Path(__file__).resolve().parents[1] / "gin_configs" / "smoke.gin")
# smoke.gin trains from agent step 81 (2 gradient steps, one dispatch, per agent step);
# its resets fall at 42 and 83.
FIRST_TRAIN_STEP = 81


def _runner(base_dir, on_nonfinite: str) -> Runner:
    cfg = gin_utils.parse([SMOKE], ["RunConfig.num_devices = 1"])
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, on_nonfinite=on_nonfinite))
    runner = Runner(cfg, base_dir, progress=False)
    runner._start_episodes()
    return runner


def _steps_to(runner: Runner, agent_step: int) -> None:
    while runner.agent_step < agent_step:
        runner.step()


def _poison_replay(runner: Runner) -> None:
    """Every stored reward becomes NaN, so every n-step return sampled from now on is."""
    runner.replay.storage.reward[...] = np.nan


def _online(runner: Runner):
    return [np.asarray(x) for x in jax.tree.leaves(runner.state.online)]


def test_divergence_stops_the_run_with_a_diagnostic_directory(tmp_path, capsys):
    """A learning rate of 1e38 makes the first update's parameters infinite, so the second
    gradient step (agent step 81) is NaN: bbf-train stops with exit status 3, one line,
    and a diagnostic directory holding the last periodic checkpoint (agent step 60)."""
    from bbf_jax import train

    base = tmp_path / "run"
    rc = train.main(["--gin_files", SMOKE, "--base_dir", str(base), "--seed", "0",
                     "--no_progress", "--gin_bindings", "AgentConfig.learning_rate = 1e38",
                     "AgentConfig.encoder_learning_rate = 1e38"])
    assert rc == 3
    directory = base / "nonfinite"
    message = ("non-finite TotalLoss, DQNLoss, TDError, SPRLoss, GradNorm at agent step "
               f"{FIRST_TRAIN_STEP} (gradient step 2)")
    assert capsys.readouterr().err.strip().splitlines() == [
        f"bbf-train: stopped: {message}; diagnostics and the last good checkpoint in "
        f"{directory} (exit status 3)"]
    assert (directory / "message.txt").read_text() == message + "\n"
    report = json.loads((directory / "batch.json").read_text())
    assert report["agent_step"] == FIRST_TRAIN_STEP and report["gradient_steps"] == [1, 2]
    assert report["nonfinite"] == [[], ["TotalLoss", "DQNLoss", "TDError", "SPRLoss",
                                        "GradNorm"]]
    assert np.isfinite(report["metrics"]["TotalLoss"][0])
    assert np.isinf(report["metrics"]["PNorm"][0])  # the update that broke the parameters
    indices = np.asarray(report["indices"])
    assert indices.shape == (2, 4) and ((0 <= indices) & (indices < FIRST_TRAIN_STEP)).all()
    assert not (base / "eval.json").exists()
    # The last good checkpoint, copied, loads and holds finite parameters.
    with ocp.CheckpointManager((directory / "checkpoint").resolve()) as mgr:
        assert mgr.all_steps() == [60]
        restored = mgr.restore(60, args=ocp.args.Composite(
            train_state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    assert restored["meta"]["agent_step"] == 60
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["train_state"]["online"]))


def test_nan_updates_are_skipped_on_request(tmp_path, capsys):
    runner = _runner(tmp_path, "skip")
    try:
        _steps_to(runner, FIRST_TRAIN_STEP + 2)
        _poison_replay(runner)
        _steps_to(runner, FIRST_TRAIN_STEP + 6)  # past the reset at 83 and the prefetch lag
        skipped, before = runner.skipped_updates, _online(runner)
        opt_before = jax.tree.leaves(runner.state.opt_state)
        _steps_to(runner, FIRST_TRAIN_STEP + 8)
    finally:
        runner.pipeline.close()
    assert skipped >= 2 and runner.skipped_updates == skipped + 4
    for a, b in zip(before, _online(runner), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(opt_before, jax.tree.leaves(runner.state.opt_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(np.isfinite(x).all() for x in before)
    # No NaN reached the priorities: the sum tree is as finite as before.
    assert np.isfinite(runner.replay.sum_tree.nodes).all()
    # One line at 1, 2, 4, ... skipped steps (2 per dispatch here).
    err = capsys.readouterr().err.splitlines()
    counts = [2**k for k in range(1, runner.skipped_updates.bit_length())]
    assert [int(re.search(r"\((\d+) skipped so far\)$", e)[1]) for e in err] == counts
    assert all(e.startswith("bbf-train: skipped the update: non-finite TotalLoss") for e in err)


# ------------------------------------------------------------------ checkpoints under faults
# A child process writes checkpoint 1, then tries checkpoint 2 with its file size limited
# (RLIMIT_FSIZE: a too-small file system, without privileges), then writes checkpoints
# 3, 4, ... (120 MB each) until it is killed in the middle of one.
SAVER = """
import resource, signal, sys
import numpy as np
from bbf_jax.checkpoint import CheckpointError, RunCheckpointer

ck = RunCheckpointer(sys.argv[1])
ck.save(1, {"w": np.zeros(30_000_000, np.float32)}, {"x": np.ones(3, np.uint8)},
        {"agent_step": 1})
big = np.random.default_rng(0).standard_normal(30_000_000).astype(np.float32)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))
try:
    ck.save(2, {"w": big}, {"x": np.ones(3, np.uint8)}, {"agent_step": 2})
    ck.wait()  # the files are written in the background
except CheckpointError as e:
    print("ERROR", e, flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("SAVING", flush=True)
for step in range(3, 100):
    ck.save(step, {"w": big + step}, {"x": np.full(3, step, np.uint8)}, {"agent_step": step})
"""


def test_full_disk_and_killed_save_leave_the_previous_checkpoint(tmp_path):
    import os
    import subprocess
    import sys
    import time

    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(pathlib.Path(__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    while proc.poll() is None and not (lines and lines[-1] == "SAVING"):
        lines.append(proc.stdout.readline().strip())
    # Kill once the arrays of checkpoint 3 or a later one are being written (the next
    # save if this poll misses one; the failed checkpoint 2 left its temporary directory).
    pattern = "*.orbax-checkpoint-tmp/train_state*/ocdbt*/d/*"
    deadline = time.time() + 300
    writing = []
    while proc.poll() is None and time.time() < deadline and not writing:
        time.sleep(0.001)
        writing = [int(p.relative_to(tmp_path / "checkpoints").parts[0].split(".")[0])
                   for p in (tmp_path / "checkpoints").glob(pattern)]
        writing = [step for step in writing if step >= 3]
    assert proc.poll() is None, "the saves ended before one could be killed"
    proc.kill()
    proc.communicate()
    killed = writing[0]
    error = [ln for ln in lines if ln.startswith("ERROR")]
    assert error == [f"ERROR could not write checkpoint 2 in {tmp_path.resolve()}/checkpoints: "
                     "File too large; the newest complete checkpoint (1) is intact"], lines
    # max_to_keep = 2: the two newest complete checkpoints remain; neither 2 nor the
    # killed one is among them.
    kept = [1] if killed == 3 else [1, 3] if killed == 4 else [killed - 2, killed - 1]
    checkpointer = ckpt.RunCheckpointer(tmp_path)  # removes the temporary directories
    try:
        assert checkpointer.all_steps() == kept
        latest = kept[-1]
        state, host, meta = checkpointer.restore(latest, {"w": np.zeros(30_000_000, np.float32)})
    finally:
        checkpointer.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [str(k) for k in kept]
    assert meta == {"agent_step": latest}
    np.testing.assert_array_equal(host["x"], np.full(3, latest, np.uint8))
    if latest > 1:
        expected = np.random.default_rng(0).standard_normal(30_000_000).astype(np.float32)
        np.testing.assert_array_equal(state["w"], expected + latest)


def test_checkpoint_loading_never_unpickles(tmp_path):
    """Python reports every class an unpickler looks up (audit event pickle.find_class);
    none may occur while a checkpoint with nested dicts, tuples and strings loads."""
    import sys

    seen = []
    watching = [True]
    sys.addaudithook(lambda event, args: watching[0] and event.startswith("pickle.")
                     and seen.append((event, args)))
    checkpointer = ckpt.RunCheckpointer(tmp_path)
    try:
        tree = {"a": (np.ones(3, np.float32), {"b": np.arange(4)}), "c": np.array(7, np.int32)}
        checkpointer.save(5, tree, {"s": np.zeros(2, np.uint8)}, {"nested": {"k": [1, "x"]}})
        seen.clear()
        restored = checkpointer.restore(5, tree)
    finally:
        watching[0] = False
        checkpointer.close()
    assert restored[2] == {"nested": {"k": [1, "x"]}}
    assert seen == []
    # The hook does see unpickling: a class lookup of a plain pickle.
    import pickle

    watching[0] = True
    pickle.loads(pickle.dumps(dataclasses.replace))
    watching[0] = False
    assert seen and seen[0][0] == "pickle.find_class"


@pytest.mark.parametrize("steps, resume_from, expected", [
    ([60, 121], None, [121]),
    ([60, 121], "latest_valid", [121, 60]),
    ([60, 121], 60, [60]),
    ([], None, []),
    ([], "latest_valid", []),
])
def test_resume_candidates(steps, resume_from, expected):
    assert ckpt.resume_candidates(steps, resume_from) == expected


def test_resume_from_a_missing_step_names_the_steps_there():
    with pytest.raises(ckpt.CheckpointError, match=r"--resume_from 7: no such checkpoint; "
                       r"the complete checkpoints are at steps \[60, 121\]"):
        ckpt.resume_candidates([121, 60], 7)


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize("prioritized", [True, False])
def test_replay_bytes_is_the_size_of_a_full_buffer(prioritized):
    from bbf_jax import memory
    from bbf_jax.agents.bbf.config import derive
    from bbf_jax.replay import SubsequenceReplay

    cfg = gin_utils.parse([SMOKE], [f"ReplayConfig.prioritized = {prioritized}"])
    replay = SubsequenceReplay.from_config(cfg.replay, derive(cfg.agent), n_envs=1, seed=0)
    arrays = [getattr(replay.storage, k) for k in ("observation", "action", "reward",
                                                   "terminal", "ended")]
    if prioritized:
        arrays += [replay.sum_tree.nodes, replay.sum_tree._nodes32]
    assert memory.replay_bytes(cfg) == sum(a.nbytes for a in arrays)


def test_a_replay_that_does_not_fit_is_refused_with_numbers(tmp_path, capsys):
    from bbf_jax import train

    rc = train.main(["--gin_files", SMOKE, "--base_dir", str(tmp_path / "run"), "--seed", "0",
                     "--gin_bindings", "ReplayConfig.capacity = 1000000000"])
    assert rc == 2
    # 10**9 transitions of 7,066 bytes and a sum tree of 2**31 - 1 nodes of 12 bytes,
    # twice (the copy a checkpoint is written from).
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(
        r"bbf-train: error: this configuration needs 13209\.45 GiB of host memory \(replay "
        r"6604\.73 GiB for ReplayConfig\.capacity = 1,000,000,000, model 0\.001 GiB x 1, "
        r"and a copy of both while a checkpoint is written\) but [\d.]+ GiB are available "
        r"\(.+\); lower ReplayConfig\.capacity or use a larger machine", err[0]), err
    assert not (tmp_path / "run" / "checkpoints").exists()
