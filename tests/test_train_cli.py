"""End-to-end tests of ``bbf-train`` on a real ALE game (gin_configs/smoke.gin)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "gin_configs" / "smoke.gin")
GIN_FILES = sorted((ROOT / "gin_configs").glob("*.gin"))


CACHE = ROOT / ".pytest_cache" / "jax_compilation_cache"


def _env():
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    # Compiled programs are reused across the test's processes (results are unchanged).
    env["JAX_COMPILATION_CACHE_DIR"] = str(CACHE)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["BBF_JAX_CACHE_DIR"] = str(ROOT / ".pytest_cache" / "bbf_jax")  # random baselines
    return env


def _train(base_dir, *extra, timeout=600):
    cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", SMOKE, "--base_dir",
           str(base_dir), "--no_progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=timeout)


def _final_params(base_dir):
    """The final checkpoint's train state, as flat numpy arrays."""
    import jax
    import orbax.checkpoint as ocp

    directory = pathlib.Path(base_dir) / "checkpoints"
    step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    with ocp.CheckpointManager(directory.resolve()) as mgr:
        restored = mgr.restore(step, args=ocp.args.Composite(
            train_state=ocp.args.StandardRestore()))
    leaves = jax.tree_util.tree_leaves_with_path(restored["train_state"])
    return step, {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("smoke_full")
    proc = _train(base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, proc


def test_smoke_run_writes_results(uninterrupted):
    base, proc = uninterrupted
    result = json.loads((base / "eval.json").read_text())
    for key in ("game", "seed", "agent_steps", "grad_steps", "eval_episodes", "returns",
                "mean_return", "human_normalized_score", "config", "bbf_jax_version"):
        assert key in result, key
    assert result["game"] == "Breakout"
    assert result["agent_steps"] == 121  # the official loop runs num_train_steps + 1 steps
    # Training from add_count > 80: steps 81..120, 2 gradient steps each.
    assert result["grad_steps"] == 2 * 40
    assert result["eval_episodes"] == len(result["returns"]) == 2
    assert result["mean_return"] == pytest.approx(np.mean(result["returns"]))
    assert result["config"] == ["smoke.gin"]
    log = (base / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("agent_step,grad_steps,num_resets")
    rows = [dict(zip(log[0].split(","), r.split(","), strict=True)) for r in log[1:]]
    assert [int(r["agent_step"]) for r in rows] == [100, 120]
    assert int(rows[-1]["num_resets"]) == 2  # resets at 42 and 83
    assert all(np.isfinite(float(r["TotalLoss"])) for r in rows)
    assert "AgentConfig.batch_size = 4" in (base / "config.gin").read_text()
    assert list((base / "tb").glob("events.out.tfevents.*"))
    assert "mean return" in proc.stdout
    # Every run ends with the verdict (a short run: against a random policy) and the plot.
    verdict = result["verdict"]
    assert verdict["label"] in ("above random", "below random", "not distinguishable from random")
    assert verdict["random_policy"]["episodes"] == 2 and verdict["official"] is None
    assert f"verdict: Breakout seed 0, 121 agent steps: {verdict['label']}" in proc.stdout
    assert (base / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_kill_and_resume_is_bit_identical(uninterrupted, tmp_path):
    base_full, _ = uninterrupted
    base = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", SMOKE, "--base_dir",
           str(base), "--no_progress"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    first = base / "checkpoints" / "60"
    deadline = time.time() + 400
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (base / "eval.json").exists()
    resumed = _train(base)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full = json.loads((base_full / "eval.json").read_text())
    again = json.loads((base / "eval.json").read_text())
    assert again["returns"] == full["returns"]
    assert again["grad_steps"] == full["grad_steps"]
    step_a, params_a = _final_params(base_full)
    step_b, params_b = _final_params(base)
    assert step_a == step_b == 121
    assert params_a.keys() == params_b.keys()
    for k in params_a:
        np.testing.assert_array_equal(params_a[k], params_b[k], err_msg=k)
    assert (base / "episodes.csv").read_text() == (base_full / "episodes.csv").read_text()
    log_a = (base_full / "train_log.csv").read_text().splitlines()
    log_b = (base / "train_log.csv").read_text().splitlines()
    # Same rows except the wall-clock column (steps_per_second).
    strip = lambda rows: [r.split(",")[:3] + r.split(",")[4:] for r in rows]  # noqa: E731
    assert strip(log_a) == strip(log_b)


def test_mismatched_checkpoint_is_a_clear_error(uninterrupted, tmp_path):
    base_full, _ = uninterrupted
    base = tmp_path / "other"
    import shutil

    shutil.copytree(base_full / "checkpoints", base / "checkpoints")
    proc = _train(base, "--gin_bindings", "AgentConfig.spr_weight = 2.0")
    assert proc.returncode == 2
    assert "belongs to another run" in proc.stderr and "spr_weight" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error(uninterrupted, tmp_path):
    base_full, _ = uninterrupted
    base = tmp_path / "corrupt"
    import shutil

    shutil.copytree(base_full / "checkpoints", base / "checkpoints")
    step_dir = base / "checkpoints" / "121"
    for f in step_dir.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "train_state" in str(f):
            f.write_bytes(b"\0" * 16)
    proc = _train(base)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "checkpoint" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--gin_bindings", "AgentConfig.batch_sise = 4"], "batch_sise"),
        (["--gin_bindings", "NoSuchConfig.x = 1"], "NoSuchConfig"),
        (["--gin_bindings", "AgentConfig.replay_ratio = 6"], "invalid replay ratio"),
        (["--gin_bindings", "EnvConfig.game = 'Zork'"], "unknown Atari 100k game"),
        (["--gin_bindings", "ReplayConfig.prefetch = 'sometimes'"], "prefetch"),
    ],
)
def test_bad_configuration_fails_cleanly(tmp_path, extra, message):
    proc = _train(tmp_path / "run", *extra, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_gin_file_fails_cleanly(tmp_path):
    cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", str(tmp_path / "nope.gin"),
           "--base_dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "gin file not found" in proc.stderr


@pytest.mark.parametrize("gin_file", GIN_FILES, ids=[f.name for f in GIN_FILES])
def test_every_gin_config_builds(gin_file, monkeypatch):
    import jax

    from bbf_jax import gin_utils
    from bbf_jax.atari_games import canonical_game_name
    from bbf_jax.config import derive
    from bbf_jax.learner import make_learner

    monkeypatch.chdir(ROOT)  # include lines are relative to the project root
    cfg = gin_utils.parse([str(gin_file)])
    derived = derive(cfg.agent)
    canonical_game_name(cfg.env.game)
    learner = make_learner(cfg.agent, cfg.network, 6)
    params = jax.eval_shape(learner.init_params, jax.random.PRNGKey(0))
    assert ("transition_model" in params) == cfg.agent.use_spr
    assert derived.group_size == derived.batches_to_group * cfg.agent.batch_size


def test_two_process_run_on_localhost(tmp_path):
    """Multi-host wiring: two CPU processes join one job through --coordinator_address,
    train one data-parallel learner (each feeding half of every minibatch from its own
    env and replay) and end with the same replicated parameters."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for pid in range(2):
        cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", SMOKE, "--base_dir",
               str(tmp_path / f"p{pid}"), "--no_progress", "--coordinator_address",
               f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(pid)]
        procs.append(subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "2 device(s)" in outs[0][0]
    assert "write no checkpoints" in outs[0][1]
    results = [json.loads((tmp_path / f"p{pid}" / "eval.json").read_text()) for pid in (0, 1)]
    # The learner state is replicated: both processes end with the same parameters.
    assert results[0]["params_sha256"] == results[1]["params_sha256"]
    assert results[0]["grad_steps"] == results[1]["grad_steps"] == 2 * 40
    # Metrics are global-batch means, the same on both processes (wall-clock column aside).
    logs = [(tmp_path / f"p{pid}" / "train_log.csv").read_text().splitlines() for pid in range(2)]
    strip = lambda rows: [r.split(",")[:3] + r.split(",")[4:] for r in rows]  # noqa: E731
    assert len(logs[0]) == 3 and strip(logs[0]) == strip(logs[1])
