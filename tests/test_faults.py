"""Faults injected for real into the real training loop (smoke config, real ALE, real
orbax): a NaN in the replay buffer, under both ``RunConfig.on_nonfinite`` settings."""

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
from bbf_jax.faults import NonFiniteStop
from bbf_jax.runner import Runner

SMOKE = str(pathlib.Path(__file__).resolve().parents[1] / "gin_configs" / "smoke.gin")
# smoke.gin trains from agent step 81 (2 gradient steps, one dispatch, per agent step);
# its resets fall at 42 and 83.
FIRST_TRAIN_STEP = 81


def _runner(base_dir, on_nonfinite: str) -> Runner:
    cfg = gin_utils.parse([SMOKE], ["RunConfig.num_devices = 1"])
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, on_nonfinite=on_nonfinite))
    runner = Runner(cfg, base_dir, progress=False)
    runner._start_episode()
    return runner


def _steps_to(runner: Runner, agent_step: int) -> None:
    while runner.agent_step < agent_step:
        runner.step()


def _poison_replay(runner: Runner) -> None:
    """Every stored reward becomes NaN, so every n-step return sampled from now on is."""
    runner.replay.storage.reward[...] = np.nan


def _online(runner: Runner):
    return [np.asarray(x) for x in jax.tree.leaves(runner.state.online)]


def test_nan_stops_the_run_with_a_diagnostic_directory(tmp_path):
    runner = _runner(tmp_path, "stop")
    checkpointer = ckpt.RunCheckpointer(tmp_path)
    try:
        _steps_to(runner, FIRST_TRAIN_STEP + 2)
        runner._save(checkpointer)  # the last good checkpoint (agent step 83)
        _poison_replay(runner)
        # Batches are prefetched two dispatches ahead: the NaN arrives within 3 steps.
        with pytest.raises(NonFiniteStop) as e:
            _steps_to(runner, FIRST_TRAIN_STEP + 6)
    finally:
        runner.pipeline.close()
        checkpointer.close()
    message = str(e.value)
    m = re.fullmatch(r"non-finite TotalLoss, DQNLoss, TDError, GradNorm at agent step (\d+) "
                     r"\(gradient step (\d+)\)", message)
    assert m, message
    step, grad_step = int(m[1]), int(m[2])
    assert step == runner.agent_step and FIRST_TRAIN_STEP + 2 < step <= FIRST_TRAIN_STEP + 5
    assert grad_step == runner.grad_steps - 1  # the first of the dispatch's 2 steps
    directory = tmp_path / "nonfinite"
    assert e.value.directory == directory
    assert (directory / "message.txt").read_text() == message + "\n"
    report = json.loads((directory / "batch.json").read_text())
    assert report["agent_step"] == step and report["gradient_steps"] == [grad_step, grad_step + 1]
    # SPR never sees the rewards; the second step starts from the first one's NaN params.
    assert report["nonfinite"] == [["TotalLoss", "DQNLoss", "TDError", "GradNorm"],
                                   ["TotalLoss", "DQNLoss", "TDError", "SPRLoss", "GradNorm"]]
    assert np.isnan(report["metrics"]["TotalLoss"]).all()
    assert np.isfinite(report["metrics"]["SPRLoss"][0])
    indices = np.asarray(report["indices"])
    assert indices.shape == (2, 4) and ((0 <= indices) & (indices < 1000)).all()
    # The last good checkpoint, copied, loads and holds finite parameters.
    with ocp.CheckpointManager((directory / "checkpoint").resolve()) as mgr:
        assert mgr.all_steps() == [FIRST_TRAIN_STEP + 2]
        restored = mgr.restore(FIRST_TRAIN_STEP + 2, args=ocp.args.Composite(
            train_state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    assert restored["meta"]["agent_step"] == FIRST_TRAIN_STEP + 2
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
