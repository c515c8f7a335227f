"""End-to-end tests of ``bbf-train`` on a real ALE game (gin_configs/smoke.gin)."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "gin_configs" / "smoke.gin")
GIN_FILES = sorted((ROOT / "gin_configs").glob("*.gin"))


CACHE = ROOT / ".pytest_cache" / "jax_compilation_cache"


def _env(devices: int = 2):
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONUNBUFFERED"] = "1"
    # Compiled programs are reused across the test's processes (results are unchanged).
    env["JAX_COMPILATION_CACHE_DIR"] = str(CACHE)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["BBF_JAX_CACHE_DIR"] = str(ROOT / ".pytest_cache" / "bbf_jax")  # random baselines
    return env


def _command(base_dir, *bindings, args=(), seeds=("--seed", "0")):
    """One-process bbf-train of the smoke config. These runs use a mesh of 2 CPU devices,
    so that a job of two processes with 1 device each can be compared with them bit for
    bit (test_two_processes_compute_the_one_process_run)."""
    return [sys.executable, "-m", "bbf_jax.train", "--gin_files", SMOKE, "--base_dir",
            str(base_dir), *seeds, "--no_progress", *args, "--gin_bindings",
            "RunConfig.num_devices = 2", *bindings]


def _train(base_dir, *bindings, args=(), seeds=("--seed", "0"), timeout=600):
    return subprocess.run(_command(base_dir, *bindings, args=args, seeds=seeds),
                          capture_output=True, text=True, env=_env(), cwd=ROOT,
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
    assert result["seed"] == 0 and result["num_processes"] == 1
    assert "2 device(s)" in proc.stdout
    # 1,000 transitions of 7,066 bytes and a sum tree of 2,047 nodes of 12 bytes.
    assert "bbf-train: memory: replay 0.01 GiB when full (ReplayConfig.capacity = 1,000), " \
        "model 0.001 GiB (parameters, target and optimizer state) x 2 in host memory, " \
        "0.02 GiB at most with the copies a checkpoint is written from" in proc.stdout
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
    # Each checkpoint (periodic at 60 and 120, final at 121; written in the background) is
    # reported once committed: on stdout and in checkpoints.csv, with its size on disk.
    with (base / "checkpoints.csv").open() as f:
        saves = list(csv.DictReader(f))
    assert [int(r["agent_step"]) for r in saves] == [60, 120, 121]
    for r in saves:
        step_dir = base / "checkpoints" / r["agent_step"]  # the two newest are kept
        if r["agent_step"] != "60":
            size = sum(p.stat().st_size for p in step_dir.rglob("*") if p.is_file())
            assert int(r["size_bytes"]) == size
        blocking, total = float(r["blocking_seconds"]), float(r["total_seconds"])
        assert 0 < blocking <= total
        line = re.search(rf"^bbf-train: checkpoint {r['agent_step']}: ([\d.]+) MB, "
                         r"([\d.]+) s blocking, ([\d.]+) s until committed$", proc.stdout,
                         re.MULTILINE)
        assert line[1] == f"{int(r['size_bytes']) / 1e6:.1f}", line[0]
        # The line rounds to 0.01 s, the CSV to 7 significant digits.
        assert abs(float(line[2]) - blocking) <= 0.005 + 1e-6 * blocking, line[0]
        assert abs(float(line[3]) - total) <= 0.005 + 1e-6 * total, line[0]


def _wait_for(path, proc, predicate=lambda p: p.exists(), timeout=400):
    deadline = time.time() + timeout
    while not predicate(path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be signalled"


def _logged_rows(path) -> int:
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def test_preempt_and_resume_is_bit_identical(uninterrupted, tmp_path):
    """A preemption (SIGTERM at a random moment of training) resumes to the uninterrupted
    run, bit for bit. (A hard kill, SIGKILL after a periodic checkpoint, is resumed by
    test_two_processes_compute_the_one_process_run, through the same resume path.)"""
    base_full, _ = uninterrupted
    base = tmp_path / "preempted"

    # SIGTERM once training has logged its first row (agent step 100; training runs from
    # step 81 to 121), after a random delay far shorter than the 21 steps left.
    proc = subprocess.Popen(_command(base), env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(base / "train_log.csv", proc, lambda p: _logged_rows(p) >= 1)
    delay = np.random.default_rng().uniform(0.0, 0.25)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 75, (delay, err[-3000:])
    line = out.strip().splitlines()[-1]
    assert line.startswith("bbf-train: stopped by SIGTERM after agent step ") and \
        "rerun the same command to resume (exit status 75)" in line, out
    stopped = int(line.split("agent step ")[1].split()[0])
    assert 100 <= stopped <= 121, (delay, stopped)
    assert (base / "checkpoints" / str(stopped)).is_dir()
    assert not (base / "eval.json").exists()

    resumed = _train(base)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at agent step {stopped}" in resumed.stdout
    full = json.loads((base_full / "eval.json").read_text())
    again = json.loads((base / "eval.json").read_text())
    for key in ("returns", "lengths", "grad_steps", "params_sha256"):
        assert again[key] == full[key], (key, delay, stopped)
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
    assert len(log_a) == 3 and strip(log_a) == strip(log_b)


def test_signals_ask_the_runner_to_stop_once():
    """SIGTERM and SIGINT set the runner's stop flag (a second signal would end the
    process: the default action is back); the handlers in force before are restored."""
    from bbf_jax.train import _stop_on_signals

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for signum in (signal.SIGINT, signal.SIGTERM):
        runner = types.SimpleNamespace(stop_signal=None)  # what the handler sets
        with _stop_on_signals(runner):
            os.kill(os.getpid(), signum)
            time.sleep(0.01)  # the handler runs between bytecodes of this thread
            assert runner.stop_signal == signum
            assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) \
                == signal.SIG_DFL
        assert {s: signal.getsignal(s) for s in before} == before


def test_mismatched_checkpoint_is_a_clear_error(uninterrupted, tmp_path):
    base_full, _ = uninterrupted
    base = tmp_path / "other"
    import shutil

    shutil.copytree(base_full / "checkpoints", base / "checkpoints")
    proc = _train(base, "AgentConfig.spr_weight = 2.0")
    assert proc.returncode == 2
    assert "belongs to another run" in proc.stderr and "spr_weight" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error_and_latest_valid_resumes(uninterrupted, tmp_path):
    """A corrupt newest checkpoint stops the run with one line; --resume_from latest_valid
    falls back to the one before (moving the broken one aside) and completes the run as
    the uninterrupted one did."""
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
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "(--resume_from latest_valid falls back to an older checkpoint)")
    proc = _train(base, args=("--resume_from", "latest_valid"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bbf-train: skipping checkpoint 121: checkpoint " in proc.stdout
    assert "resumed at agent step 120" in proc.stdout  # max_to_keep = 2: 120 and 121
    assert f"moved checkpoints [121] to {base / 'checkpoints_discarded'}" in proc.stdout
    assert (base / "checkpoints_discarded" / "121").is_dir()
    got, want = (json.loads((d / "eval.json").read_text()) for d in (base, base_full))
    for key in ("returns", "lengths", "grad_steps", "params_sha256"):
        assert got[key] == want[key], key


@pytest.mark.parametrize(
    "binding, message",
    [
        ("AgentConfig.batch_sise = 4", "batch_sise"),
        ("NoSuchConfig.x = 1", "NoSuchConfig"),
        ("AgentConfig.replay_ratio = 6", "invalid replay ratio"),
        ("EnvConfig.game = 'Zork'", "unknown Atari game 'Zork'"),
        ("EnvConfig.repeat_action_probability = 1.5",
         "EnvConfig.repeat_action_probability must be a number in [0, 1], got 1.5"),
        ("ResetConfig.reset_head = 'no'", "ResetConfig.reset_head must be True or False, got 'no'"),
        ("ReplayConfig.prefetch = 'sometimes'", "prefetch"),
    ],
)
def test_bad_configuration_fails_cleanly(tmp_path, binding, message):
    proc = _train(tmp_path / "run", binding, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_gin_file_fails_cleanly(tmp_path):
    cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", str(tmp_path / "nope.gin"),
           "--base_dir", str(tmp_path / "run"), "--seed", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "gin file not found" in proc.stderr


def test_seed_is_required_and_checked(tmp_path):
    cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", SMOKE, "--base_dir",
           str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "one of the arguments --seed --seeds is required" in proc.stderr
    proc = subprocess.run(cmd + ["--seed", "-1"], capture_output=True, text=True, env=_env(),
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "seed must be an integer in [0, 2**32), got -1" in lines[0]
    for seeds, message in ((["--seeds", "3", "3"], "RunConfig.seeds must be distinct, got (3, 3)"),
                           (["--seeds", "0", "1", "--coordinator_address", "127.0.0.1:1"],
                            "--seeds with --coordinator_address is not supported")):
        proc = subprocess.run(cmd + seeds, capture_output=True, text=True, env=_env(), cwd=ROOT,
                              timeout=120)
        assert proc.returncode == 2
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], proc.stderr


# Agents with their own runner (bbf_jax.train.OWN_RUNNERS) are built by their own tests
# (test_brc_*, test_ppo_*, test_sac_*); here the Atari replay agents.
ATARI_GIN_FILES = [f for f in GIN_FILES
                   if not any(f.name.lower().startswith(p) for p in ("brc", "ppo", "sac",
                                                                    "shareddqn",
                                                                    "independentdqn"))]


def test_own_runner_gin_files_name_their_agent(monkeypatch):
    from bbf_jax import agents, gin_utils
    from bbf_jax.train import OWN_RUNNERS

    monkeypatch.chdir(ROOT)
    for gin_file in sorted(set(GIN_FILES) - set(ATARI_GIN_FILES)):
        assert agents.agent_name(gin_utils.parse([str(gin_file)])) in OWN_RUNNERS, gin_file


@pytest.mark.parametrize("gin_file", ATARI_GIN_FILES, ids=[f.name for f in ATARI_GIN_FILES])
def test_every_gin_config_builds(gin_file, monkeypatch):
    import jax

    from bbf_jax import agents, gin_utils
    from bbf_jax.atari_games import canonical_game_name

    monkeypatch.chdir(ROOT)  # include lines are relative to the project root
    cfg = gin_utils.parse([str(gin_file)])
    agent = agents.make_agent(cfg, 6)
    derived = agents.derive(cfg)
    assert derived == agent.derived
    canonical_game_name(cfg.env.game)
    state = jax.eval_shape(lambda: agent.learner.init(0))
    if agents.agent_name(cfg) == "bbf":
        assert ("transition_model" in state.online) == cfg.agent.use_spr
    assert derived.group_size == derived.batches_to_group * cfg.agent.batch_size


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_job(base_dir, num_processes: int) -> list[subprocess.Popen]:
    """One bbf-train job of ``num_processes`` CPU processes (1 device each) on localhost."""
    port = _free_port()
    procs = []
    for pid in range(num_processes):
        cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", SMOKE, "--base_dir",
               str(base_dir), "--seed", "0", "--no_progress", "--coordinator_address",
               f"127.0.0.1:{port}", "--num_processes", str(num_processes),
               "--process_id", str(pid)]
        procs.append(subprocess.Popen(cmd, env=_env(devices=1), cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs, timeout=600) -> list[tuple[str, str]]:
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outs


@pytest.fixture(scope="module")
def two_processes_killed_and_resumed(tmp_path_factory):
    """Two processes x 1 device on localhost, both killed after the checkpoint of step 60
    and resumed; returns the run directory and the resumed processes' outputs."""
    base = tmp_path_factory.mktemp("two_processes")
    procs = _start_job(base, 2)
    first = base / "checkpoints" / "60"
    deadline = time.time() + 400
    try:
        while not first.exists() and all(p.poll() is None for p in procs) \
                and time.time() < deadline:
            time.sleep(0.05)
        assert all(p.poll() is None for p in procs), "the job ended before it could be killed"
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.communicate()
    assert not (base / "eval.json").exists()
    return base, _finish(_start_job(base, 2))


def test_two_processes_compute_the_one_process_run(uninterrupted,
                                                   two_processes_killed_and_resumed):
    """Two processes (killed at step 60 and resumed) compute the run of one process on
    the same 2-device mesh: same env stream, same global minibatches and priorities, same
    gradient all-reduce (two operands, so even the float sums agree bit for bit)."""
    ref, _ = uninterrupted
    base, outs = two_processes_killed_and_resumed
    assert "resumed at agent step 60" in outs[0][0]
    assert "mean return" in outs[0][0] and "process 1 done" in outs[1][0]
    got, want = (json.loads((d / "eval.json").read_text()) for d in (base, ref))
    assert got["num_processes"] == 2 and want["num_processes"] == 1
    for key in ("returns", "lengths", "agent_steps", "grad_steps", "params_sha256"):
        assert got[key] == want[key], key
    assert (base / "episodes.csv").read_text() == (ref / "episodes.csv").read_text()
    logs = [(d / "train_log.csv").read_text().splitlines() for d in (base, ref)]
    strip = lambda rows: [r.split(",")[:3] + r.split(",")[4:] for r in rows]  # noqa: E731
    assert len(logs[0]) == 3 and strip(logs[0]) == strip(logs[1])
    step_a, params_a = _final_params(base)
    step_b, params_b = _final_params(ref)
    assert step_a == step_b == 121 and params_a.keys() == params_b.keys()
    for k in params_a:
        np.testing.assert_array_equal(params_a[k], params_b[k], err_msg=k)


# ------------------------------------------------------------------ vectorised seeds
# Seed 0 second: the group member that is not its lead is the one compared with its
# single run (the module's uninterrupted run of seed 0).
GROUP_SEEDS = (1, 0)
MAP = "RunConfig.seed_batching = 'map'"


@pytest.fixture(scope="module")
def seed_group_preempted_and_resumed(tmp_path_factory):
    """``--seeds 1 0`` with ``seed_batching = 'map'`` on the smoke config, preempted
    (SIGTERM) after both seeds' checkpoint of step 60, the newer checkpoints of seed 0
    (which saves after seed 1) then removed as if the process had died between the
    seeds' saves, and resumed."""
    base = tmp_path_factory.mktemp("seed_group")
    seeds = ("--seeds", *map(str, GROUP_SEEDS))
    proc = subprocess.Popen(_command(base, MAP, seeds=seeds), env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(base / "seed_0" / "checkpoints" / "60", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 75, err[-3000:]
    stopped = int(out.strip().splitlines()[-1].split("agent step ")[1].split()[0])
    for s in GROUP_SEEDS:
        assert (base / f"seed_{s}" / "checkpoints" / str(stopped)).is_dir()
    newer = [d for d in (base / "seed_0" / "checkpoints").iterdir() if d.name != "60"]
    for d in newer:
        shutil.rmtree(d)
    resumed = _train(base, MAP, seeds=seeds)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return base, stopped, resumed.stdout


def test_seed_group_computes_each_single_run(uninterrupted, seed_group_preempted_and_resumed):
    """A group with ``seed_batching = 'map'`` (one dispatch per train call, reset and act
    for both seeds, on 2 devices; preempted and resumed) runs each seed's single run bit
    for bit. Seed 0 against its single run: the same final train state, episodes,
    evaluation, training log and files. Seed 1 is its own run (its bits against the
    single run's functions: tests/test_seed_group.py)."""
    base, stopped, out = seed_group_preempted_and_resumed
    ref = uninterrupted[0]
    run = base / "seed_0"
    assert "seeds 1, 0 (2 runs, seed_batching 'map')" in out and "2 device(s)" in out
    assert "resumed 2 seeds at agent step 60" in out
    if stopped > 60:
        assert f"moved checkpoints [{stopped}] to {base / 'seed_1' / 'checkpoints_discarded'}" \
            in out
    got, want = (json.loads((d / "eval.json").read_text()) for d in (run, ref))
    assert got["seed"] == 0 and got["verdict"] == want["verdict"]
    for key in ("returns", "lengths", "agent_steps", "grad_steps", "params_sha256", "config"):
        assert got[key] == want[key], key
    assert "verdict: Breakout seed 0, 121 agent steps" in out
    assert (run / "episodes.csv").read_text() == (ref / "episodes.csv").read_text()
    logs = [(d / "train_log.csv").read_text().splitlines() for d in (run, ref)]
    strip = lambda rows: [r.split(",")[:3] + r.split(",")[4:] for r in rows]  # noqa: E731
    assert len(logs[0]) == 3 and strip(logs[0]) == strip(logs[1])
    # The operative config is the single run's plus the binding of the batching.
    gin = [(d / "config.gin").read_text().splitlines() for d in (run, ref)]
    assert [ln for ln in gin[0] if ln != MAP] == gin[1] and MAP in gin[0]
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["seed"] == 0 and config["run"]["seeds"] == []
    assert (run / "curves.png").is_file() and list((run / "tb").glob("events.out.tfevents.*"))
    step, params = _final_params(run)
    _, params_ref = _final_params(ref)
    assert step == 121 and params.keys() == params_ref.keys()
    for k in params_ref:
        np.testing.assert_array_equal(params[k], params_ref[k], err_msg=k)

    other = json.loads((base / "seed_1" / "eval.json").read_text())
    assert other["seed"] == 1 and other["agent_steps"] == 121 and other["grad_steps"] == 80
    assert other["params_sha256"] != got["params_sha256"]
    assert "verdict: Breakout seed 1, 121 agent steps" in out
    _, params_1 = _final_params(base / "seed_1")
    keys = [k for k in params_ref if params_ref[k].dtype.kind == "u"]  # PRNG keys
    assert keys and all(np.any(params_1[k] != params_ref[k]) for k in keys), keys
