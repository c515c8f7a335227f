"""Smoke test of benchmarks/env_throughput.py (tiny sizes, temporary CSV)."""

from __future__ import annotations

import csv
import importlib.util
import pathlib

SCRIPT = pathlib.Path(__file__).parents[1] / "benchmarks" / "env_throughput.py"


def test_env_throughput_writes_rows(tmp_path, capsys, monkeypatch):
    # As when run as a script: its own folder (shared helpers in machine.py) is importable.
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("env_throughput", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "env.csv"
    argv = ["--games", "Pong", "--num-envs", "2", "--cores", "1", "--steps", "40"]
    rows = bench.main([*argv, "--csv", str(out)])
    assert [(r["backend"], r["num_envs"], r["cores"]) for r in rows] == [
        ("atari_env", 2, 1),
        ("vector_env", 2, 1),
    ]
    assert all(r["agent_steps_per_s"] > 0 for r in rows)
    with open(out) as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == bench.FIELDS and len(written) == 2
    assert "atari_env" in capsys.readouterr().out
