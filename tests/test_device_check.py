"""benchmarks/device_check.py: the --cpu-smoke run CI makes, and its import check."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"


def test_cpu_smoke_measures_train_steps_and_a_real_run(tmp_path, capsys, monkeypatch):
    import jax

    # As when run as a script: its own folder (shared helpers) is importable.
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "device_check", bench)  # its dataclass looks it up
    spec.loader.exec_module(bench)
    out = tmp_path / "device_check.csv"
    assert bench.main(["--cpu-smoke", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out

    with open(out) as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.FIELDS
        rows = list(reader)
    assert all(r["mode"] == "cpu-smoke" and r["jax"] == jax.__version__ and r["commit"]
               and r["device"] for r in rows)
    train = [r for r in rows if r["part"] == "train_step"]
    assert [(r["dtype"], r["G"], r["batch_size"], r["seeds"], r["status"]) for r in train] == [
        ("float32", "2", "4", "1", "ok"), ("float32", "2", "4", "2", "ok")]
    for r in train:
        assert float(r["compile_s"]) > 0 and r["compile_cached"] in ("yes", "no")
        assert math.isclose(float(r["step_ms"]), float(r["dispatch_ms"]) / 2, rel_tol=1e-3)
        assert float(r["tflop_per_s"]) > 0
    # Per seed, the vmapped program costs what one seed's does (XLA's count of 2 seeds,
    # halved); the per-example work is the same, only the fusion may differ a little.
    one, two = (float(r["gflop_per_step"]) for r in train)
    assert one > 0 and math.isclose(one, two, rel_tol=0.05)

    # BTR's step at btr_smoke.gin's sizes, batch 8, 18 actions: 44,498 parameters, the
    # 43,574 of a btr_smoke run on Breakout's 4 actions plus 14 actions of the advantage
    # stream's noisy 32 -> A layer (32 + 32 weights and 1 + 1 biases each: 924).
    btr = [r for r in rows if r["part"] == "btr_train_step"]
    assert [(r["params"], r["batch_size"], r["G"], r["status"]) for r in btr] == [
        ("44498", "8", "1", "ok")]
    assert float(btr[0]["step_ms"]) > 0 and float(btr[0]["gflop_per_step"]) > 0
    assert "device_check_btr_step_ms[B=8]: " in printed

    # The single run and the group of 2 seeds (SeedGroup), each to agent step 34.
    run = [r for r in rows if r["part"] == "real_run"]
    assert [(r["seeds"], r["status"], r["agent_steps"]) for r in run] == [
        ("1", "ok", "34"), ("2", "ok", "34")]
    for r in run:
        seeds, per_s = int(r["seeds"]), float(r["agent_steps_per_s"])
        assert per_s > 0 and float(r["host_ms_per_step"]) > 0
        # Both rounded to 0.01 from the same wall time.
        assert math.isclose(float(r["all_seeds_steps_per_s"]), seeds * per_s,
                            abs_tol=0.01 * seeds)
        assert 0 < float(r["device_busy"]) and float(r["train_dispatch_ms"]) > 0
        assert float(r["act_ms"]) > 0 and 0 < float(r["warm_s"]) < float(r["total_s"])
    assert "device_check_step_ms[float32,G=2,1 seed]: " in printed
    assert "device_check_agent_steps_per_s[2 seeds]: " in printed


def test_missing_packages_are_named_in_one_line():
    # Without site-packages (-S) every third-party package is missing; bbf_jax itself
    # is found on PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-S", str(SCRIPT), "--cpu-smoke"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "device_check: missing Python packages: jax, flax, optax, chex, numpy, gymnasium, "
        "ale-py, gin-config, orbax-checkpoint, opencv-python-headless, tqdm, tensorboardX, "
        "matplotlib, scipy\n")
