"""bbf-sweep: grid expansion, manifest, status, SLURM script and array tasks (in process),
and the local executor for real: two bbf-train runs at once, one killed and resumed."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import write_eval

from bbf_jax.sweep import executor, manifest
from bbf_jax.sweep import status as status_lib
from bbf_jax.sweep.cli import main
from bbf_jax.sweep.grid import (
    SweepError,
    Variant,
    expand,
    parse_games,
    parse_seeds,
    parse_variant,
    train_command,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "gin_configs" / "smoke.gin")
RR8 = "rr8=AgentConfig.replay_ratio = 16; ResetConfig.reset_every = 20"


def run_cli(args, capsys):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def dry_run(base, capsys, *extra, seeds="0-2", games=("Pong", "breakout")):
    return run_cli(["--gin_files", SMOKE, "--games", *games, "--seeds", seeds,
                    "--variant", "base=", "--variant", RR8, "--base_dir", base, "--slurm",
                    "--dry_run", *extra], capsys)


def test_parse_grid():
    assert parse_seeds("0-3") == (0, 1, 2, 3)
    assert parse_seeds("5,0-1, 9") == (5, 0, 1, 9)
    assert parse_games(["atari26"]) == parse_games(["atari26", "Pong"])
    assert len(parse_games(["atari26"])) == 26 and len(parse_games(["atari55"])) == 55
    assert parse_games(["up_n_down,Pong", "pong"]) == ("UpNDown", "Pong")
    assert parse_variant("rr8=AgentConfig.replay_ratio = 256; ResetConfig.reset_every = 5000") \
        == Variant("rr8", ("AgentConfig.replay_ratio = 256", "ResetConfig.reset_every = 5000"))
    assert parse_variant("base=") == Variant("base", ())


@pytest.mark.parametrize("call, message", [
    (lambda: parse_seeds("3-1"), "the range 3-1 is empty"),
    (lambda: parse_seeds("0,x"), "expected seeds like 0-9"),
    (lambda: parse_seeds("0-2,2"), "a seed is given twice"),
    (lambda: parse_seeds("4294967296"), r"seeds must be in \[0, 2\*\*32\)"),
    (lambda: parse_games(["Pong", "Pongg"]), "unknown game or game set 'Pongg'"),
    (lambda: parse_variant("rr8"), "expected NAME=BINDINGS"),
    (lambda: parse_variant("a/b=X.y = 1"), "expected NAME=BINDINGS"),
    (lambda: parse_variant("official-rr2="), "names starting with 'official-'"),
    (lambda: parse_variant("s=RunConfig.seed = 3"), "binds RunConfig.seed"),
    (lambda: expand(("Pong",), (0,), (), ["EnvConfig.game = 'Pong'"]), "binds EnvConfig.game"),
    (lambda: expand(("Pong",), (0,), (Variant("a", ()), Variant("a", ()))), "given twice"),
])
def test_bad_grid_is_a_clear_error(call, message):
    with pytest.raises(SweepError, match=message):
        call()


def test_expand_and_commands(tmp_path):
    variants = (Variant("a", ()), Variant("b", ("AgentConfig.replay_ratio = 16",)))
    runs = expand(("Pong", "Breakout"), (0, 1), variants, ["RunConfig.num_train_steps = 5"])
    assert [r.index for r in runs] == list(range(8))
    assert [r.rel_dir for r in runs[:4]] == [
        "a/Pong/seed_0", "a/Pong/seed_1", "a/Breakout/seed_0", "a/Breakout/seed_1"]
    assert runs[5].rel_dir == "b/Pong/seed_1"
    cmd = train_command(runs[5], ["x.gin"], ["RunConfig.num_train_steps = 5"], tmp_path, "py")
    assert cmd == ["py", "-m", "bbf_jax.train", "--gin_files", "x.gin", "--base_dir",
                   str(tmp_path / "b" / "Pong" / "seed_1"), "--seed", "1", "--no_progress",
                   "--gin_bindings", "RunConfig.num_train_steps = 5",
                   "AgentConfig.replay_ratio = 16", "EnvConfig.game = 'Pong'"]


def test_manifest_slurm_script_and_other_grid(tmp_path, capsys):
    base = tmp_path / "sweep"
    code, out, err = dry_run(base, capsys, "--slurm_opts=--gres=gpu:1 -p gpu --time=1:00:00",
                             "--slurm_tasks", "5")
    assert code == 0, err
    data = json.loads((base / "sweep.json").read_text())
    assert data["gin_files"] == [SMOKE] and data["games"] == ["Pong", "Breakout"]
    assert data["seeds"] == [0, 1, 2] and len(data["runs"]) == 12
    assert data["variants"][1] == {"name": "rr8", "gin_bindings": [
        "AgentConfig.replay_ratio = 16", "ResetConfig.reset_every = 20"]}
    assert data["runs"][7] == {"index": 7, "variant": "rr8", "game": "Pong", "seed": 1,
                               "dir": "rr8/Pong/seed_1"}
    assert manifest.load(base).runs == expand(("Pong", "Breakout"), (0, 1, 2), (
        Variant("base", ()), Variant("rr8", tuple(data["variants"][1]["gin_bindings"]))))
    text = (base / "sweep.sbatch").read_text()
    assert out.startswith(text) and "(not submitted)" in out
    sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == ["#SBATCH --job-name=bbf-sweep", "#SBATCH --array=0-4",
                      f"#SBATCH --output={base.resolve()}/slurm/%A_%a.out",
                      "#SBATCH --gres=gpu:1", "#SBATCH -p gpu", "#SBATCH --time=1:00:00"]
    assert text.rstrip().endswith(f"-m bbf_jax.sweep --array_task --base_dir {base.resolve()}")
    assert (base / "slurm").is_dir()  # sbatch does not create the --output directory
    subprocess.run(["bash", "-n", str(base / "sweep.sbatch")], check=True)
    # The same grid again is fine (the default task count is one per run); another is not.
    code, out, _ = dry_run(base, capsys)
    assert code == 0 and "#SBATCH --array=0-11\n" in out
    code, _, err = dry_run(base, capsys, seeds="0-3")
    assert code == 2 and err.strip() == (
        f"bbf-sweep: error: {base} holds another sweep (seeds differ from its sweep.json); "
        "use another --base_dir, or the same grid to resume it")


@pytest.mark.parametrize("extra, message", [
    (["--slurm_tasks", "13"], r"--slurm_tasks must be in \[1, 12\] for 12 runs"),
    (["--slurm_opts=--array=0-3"], "--array is set by bbf-sweep"),
    (["--slurm_opts", "gpu"], "'gpu' is not an sbatch option"),
    (["--jobs", "2"], "--jobs and --devices are for local runs"),
    (["--gin_bindings", "AgentConfig.replay_ratioo = 3"],
     "variant base: bad gin configuration: .*replay_ratioo"),
])
def test_bad_sweep_arguments(tmp_path, capsys, extra, message):
    code, _, err = dry_run(tmp_path / "s", capsys, *extra)
    assert code == 2 and re.fullmatch(f"bbf-sweep: error: .*{message}.*\n", err), err
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_submit_without_sbatch_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here (nor on this machine)
    code, _, err = run_cli(["--gin_files", SMOKE, "--games", "Pong", "--seeds", "0",
                            "--base_dir", tmp_path / "s", "--slurm"], capsys)
    assert code == 2 and "sbatch not found on PATH; --dry_run writes the script" in err
    assert (tmp_path / "s" / "sweep.sbatch").is_file()


def test_array_task_runs_its_share(tmp_path, capsys, monkeypatch):
    base = tmp_path / "sweep"
    assert dry_run(base, capsys, seeds="0-1", games=("Pong",))[0] == 0  # 4 runs
    for run in manifest.load(base).runs:  # all finished: the tasks only select and skip
        write_eval(base, run.rel_dir, run.game, run.seed, [1.0])
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    for task, indices in (("0", "0, 3"), ("1", "1"), ("2", "2")):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        code, out, err = run_cli(["--array_task", "--base_dir", base], capsys)
        assert code == 0, err
        assert out.splitlines()[0] == f"array task {task} of 3: runs {indices}"
        assert out.splitlines()[-1] == (
            f"sweep {base}: 4 runs: 4 done, 0 running, 0 failed, 0 to run")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    code, _, err = run_cli(["--array_task", "--base_dir", base], capsys)
    assert code == 2 and "SLURM_ARRAY_TASK_ID=3 is not in [0, SLURM_ARRAY_TASK_COUNT=3)" in err
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
    code, _, err = run_cli(["--array_task", "--base_dir", base], capsys)
    assert code == 2 and "SLURM_ARRAY_TASK_COUNT is not set" in err
    code, _, err = run_cli(["--status", tmp_path], capsys)
    assert code == 2 and f"{tmp_path} is not a sweep directory (no sweep.json)" in err


def test_status_of_each_kind(tmp_path, capsys):
    base = tmp_path / "sweep"
    assert dry_run(base, capsys, seeds="0-6", games=("Pong",))[0] == 0
    dirs = [base / r.rel_dir for r in manifest.load(base).runs][:7]  # base/Pong/seed_0..6
    write_eval(base, "base/Pong/seed_0", "Pong", 0, [1.0])
    for d in dirs[1:]:
        d.mkdir(parents=True)
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    status_lib.write_state(dirs[0], {"state": "done", "started": 100.0, "ended": 700.0})
    status_lib.write_state(dirs[1], {"state": "running", "host": host, "pid": os.getpid()})
    status_lib.write_state(dirs[2], {"state": "running", "host": host, "pid": dead.pid})
    status_lib.write_state(dirs[3], {"state": "failed", "returncode": 3,
                                     "stderr_tail": ["Traceback", "ValueError: boom"]})
    status_lib.write_state(dirs[4], {"state": "running", "host": "node-7", "pid": 1})
    status_lib.write_state(dirs[5], {"state": "running", "host": "node-7", "pid": 1})
    old = time.time() - status_lib.STALE_S - 1
    os.utime(dirs[5] / status_lib.STATE_FILE, (old, old))
    kinds = [status_lib.run_status(d).kind for d in dirs]
    assert kinds == ["done", "running", "interrupted", "failed", "running", "interrupted",
                     "pending"]
    code, out, _ = run_cli(["--status", base], capsys)
    # 14 runs: the 7 above of variant base, 7 pending of rr8; 2 running, 2 interrupted and
    # 8 pending remain, 10 min each, 2 at a time: ceil(12 / 2) * 10 min.
    assert out.splitlines() == [
        f"FAILED {dirs[3]} (exit 3); log: {dirs[3] / 'sweep.err'}",
        "  | Traceback", "  | ValueError: boom",
        f"sweep {base}: 14 runs: 1 done, 2 running, 1 failed, 10 to run (2 interrupted); "
        "ETA 1h00m"]
    statuses = [status_lib.run_status(d) for d in dirs[1:]]
    assert status_lib.summary_line(statuses, parallel=4).endswith(
        "ETA unknown (no run finished yet)")


def test_devices_and_run_environment():
    assert executor.parse_devices("0,1,3") == ["0", "1", "3"]
    for bad in ("0,0", "a", "0,,1"):
        with pytest.raises(SweepError, match="expected distinct GPU indices"):
            executor.parse_devices(bad)
    devices, load = ["2", "0"], {"2": 0, "0": 0}
    picked = []
    for _ in range(3):
        d = executor.pick_device(devices, load)
        load[d] += 1
        picked.append(d)
    assert picked == ["2", "0", "2"]
    load["2"] -= 1
    assert executor.pick_device(devices, load) == "2"
    base = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "X": "1"}
    assert executor.run_env(None, False, base) == {**base, "PYTHONUNBUFFERED": "1"}
    assert executor.run_env("3", False, base) == {
        "CUDA_VISIBLE_DEVICES": "3", "X": "1", "PYTHONUNBUFFERED": "1"}
    assert executor.run_env("3", True, base)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


# The cheapest runs of the bbf-train code path that still checkpoint and resume: acting
# only (min_replay_history above the run length: no gradient step, which
# test_train_cli.py's kill-and-resume test covers bit for bit), a checkpoint every 20 steps.
TINY = ["RunConfig.num_train_steps = 100", "AgentConfig.min_replay_history = 1000",
        "RunConfig.checkpoint_every = 20", "RunConfig.num_eval_episodes = 1",
        "EnvConfig.max_steps_per_episode = 30"]


def _sweep_command(base):
    return [sys.executable, "-m", "bbf_jax.sweep", "--gin_files", SMOKE, "--games", "Breakout",
            "--seeds", "0-1", "--gin_bindings", *TINY, "--base_dir", str(base), "--jobs", "2",
            "--devices", "0,1"]


def _env():
    # CPU runs also where a GPU is present: the pinning (CUDA_VISIBLE_DEVICES) is then
    # recorded and passed on but has no effect.
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the resumed run reuses all
    return env


def test_local_sweep_killed_run_resumes(tmp_path, capsys):
    base = tmp_path / "sweep"
    s0, s1 = base / "default" / "Breakout" / "seed_0", base / "default" / "Breakout" / "seed_1"
    with (tmp_path / "first.out").open("w") as out:
        proc = subprocess.Popen(_sweep_command(base), env=_env(), cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
        deadline = time.time() + 400
        while not (s1 / "checkpoints" / "20").exists() and time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "first.out").read_text()
            time.sleep(0.05)
        pid = status_lib.read_state(s1)["pid"]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        assert proc.wait(timeout=400) == 1  # one run failed
    first = (tmp_path / "first.out").read_text()
    state0, state1 = status_lib.read_state(s0), status_lib.read_state(s1)
    assert state0["state"] == "done" and (s0 / "eval.json").is_file()
    assert state1["state"] == "failed" and state1["returncode"] == -signal.SIGKILL
    assert state1["pid"] == pid and not (s1 / "eval.json").exists()
    # Both ran at once, one on each "GPU".
    assert state0["started"] < killed_at and state1["started"] < state0["ended"]
    assert (state0["device"], state1["device"]) == ("0", "1")
    assert "started default/Breakout/seed_1 on GPU 1" in first
    assert f"FAILED {s1} (exit -9); log: {s1 / 'sweep.err'}" in first
    assert first.rstrip().endswith(
        f"sweep {base}: 2 runs: 1 done, 0 running, 1 failed, 0 to run")

    # The generated array script, run as SLURM runs task 0 of 2: seed 0 only, finished.
    code, _, _ = run_cli([*_sweep_command(base)[3:-4], "--slurm", "--dry_run"], capsys)
    assert code == 0
    task = subprocess.run(["bash", str(base / "sweep.sbatch")], capture_output=True, text=True,
                          env={**_env(), "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert task.returncode == 0, task.stderr
    assert task.stdout.splitlines()[:2] == [
        "array task 0 of 2: runs 0",
        "1 run(s), 1 finished or running elsewhere, 0 to run, 1 at a time"]

    again = subprocess.run(_sweep_command(base), env=_env(), cwd=ROOT, capture_output=True,
                           text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    lines = again.stdout.splitlines()
    assert "2 run(s), 1 finished or running elsewhere, 1 to run, 2 at a time" in lines
    assert "started default/Breakout/seed_1 on GPU 0" in lines
    assert lines[-1] == f"sweep {base}: 2 runs: 2 done, 0 running, 0 failed, 0 to run"
    state1 = status_lib.read_state(s1)
    assert state1["state"] == "done" and state1["attempt"] == 2 and (s1 / "eval.json").is_file()
    assert status_lib.read_state(s0) == state0  # skipped, not rerun
    log1 = (s1 / "sweep.out").read_text()
    assert log1.count("=== bbf-sweep: attempt") == 2
    resumed = re.search(r"bbf-train: resumed at agent step (\d+)", log1)
    assert resumed and int(resumed.group(1)) % 20 == 0 and 20 <= int(resumed.group(1)) <= 100
    assert (s0 / "sweep.out").read_text().count("=== bbf-sweep: attempt") == 1
    assert json.loads((s1 / "eval.json").read_text())["agent_steps"] == 101


def test_report_per_variant(tmp_path, capsys):
    from bbf_jax.report.cli import main as report_main

    base = tmp_path / "sweep"
    assert dry_run(base, capsys)[0] == 0  # variants base, rr8 x Pong, Breakout x seeds 0-2
    code = report_main([str(base), "--compare", "official-rr2", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 2 and "note: variant base: no finished run (eval.json) yet, left out" in out
    assert f"{base}: no variant has a finished run (eval.json) yet" in err
    # HNS 1, 0 and 0.5 per game for base (IQM of 0, 0, .5, .5, 1, 1: 0.5), 1 everywhere
    # for rr8; the same (game, seed) in both variants is no conflict.
    scores = {"Pong": (14.6, -20.7, -3.05), "Breakout": (30.5, 1.7, 16.1)}
    for run in manifest.load(base).runs:
        score = scores[run.game][run.seed] if run.variant.name == "base" else scores[run.game][0]
        write_eval(base, run.rel_dir, run.game, run.seed, [score])
    out_dir = tmp_path / "report"
    code = report_main([str(base), "--compare", "official-rr2", "--out", str(out_dir),
                        "--reps", "100"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert [line[:15] for line in lines if " iqm: " in line] == [
        "base iqm: 0.500", "official-rr2 iq", "rr8 iqm: 1.000 ", "official-rr2 iq"]
    assert any(line.startswith("P(rr8 > official-rr2): ") for line in lines)
    assert lines[-2] == f"wrote {out_dir / 'report.md'}" and lines[-1].startswith("iqm: 0.500 [")
    for variant in ("base", "rr8"):
        assert "| Breakout | 3 |" in (out_dir / variant / "report.md").read_text()
    index = (out_dir / "report.md").read_text().splitlines()
    assert index[-4] == ("| variant | runs | games | IQM | Median | Mean | Optimality gap | "
                         "P(variant > official-rr2) |")
    assert index[-2].startswith("| [base](base/report.md) | 6 | 2 | 0.500 [")
    assert index[-1].startswith("| [rr8](rr8/report.md) | 6 | 2 | 1.000 [1.000, 1.000] |")
    code = report_main([str(base), str(base / "base"), "--out", str(out_dir)])
    assert code == 2 and "is reported alone, one report per variant" in capsys.readouterr().err
