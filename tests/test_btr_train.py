"""BTR through ``bbf-train`` on a real ALE game (gin_configs/btr_smoke.gin): 4 envs
stepped as one vector, the run-directory files every agent writes, and an exact resume
of the vector of envs."""

from __future__ import annotations

import json
import pathlib

import pytest
from helpers import csv_rows

from bbf_jax.train import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "gin_configs" / "btr_smoke.gin")
NUM_ENVS = 4
LAST_STEP = 244  # the first multiple of 4 envs beyond num_train_steps = 240


def _train(base_dir, *bindings) -> int:
    return main(["--gin_files", SMOKE, "--base_dir", str(base_dir), "--seed", "0",
                 "--no_progress", "--gin_bindings", *bindings])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("btr_full")
    assert _train(base) == 0
    return base


def test_btr_run_writes_the_run_directory(uninterrupted):
    from bbf_jax.report.verdict import describe

    base = uninterrupted
    for name in ("config.gin", "config.json", "train_log.csv", "episodes.csv",
                 "checkpoints.csv", "eval.json", "curves.png"):
        assert (base / name).is_file(), name
    result = json.loads((base / "eval.json").read_text())
    assert result["agent_name"] == "btr" and result["agent_steps"] == LAST_STEP
    # Training starts once more than 80 transitions are stored (after 21 vector steps):
    # one gradient step per vector step from then on.
    assert result["grad_steps"] == LAST_STEP // NUM_ENVS - 21
    assert result["eval_episodes"] == len(result["returns"]) == 2
    assert result["verdict"]["official"] is None  # official BBF runs are not BTR's
    assert not any("official BBF budget" in line for line in describe(result))
    log = csv_rows(base / "train_log.csv")
    assert [int(r["agent_step"]) for r in log] == [120, 160, 200, 240]
    assert {"QuantileLoss", "MunchausenBonus", "TDError"} <= set(log[0])
    episodes = csv_rows(base / "episodes.csv")
    # 40-step episodes on 4 envs: each env ends one at vector step 40 (agent step 160).
    assert [int(e["agent_step"]) for e in episodes] == [NUM_ENVS * 40] * NUM_ENVS
    assert all(int(e["episode_length"]) == 40 for e in episodes)
    assert [int(r["agent_step"]) for r in csv_rows(base / "checkpoints.csv")] == [120, 240, 244]
    config = json.loads((base / "config.json").read_text())
    assert config["agent_name"] == "btr" and config["agent"]["num_envs"] == NUM_ENVS


def test_btr_resume_is_exact(uninterrupted, tmp_path):
    """A run stopped at its agent-step-120 checkpoint and resumed computes the
    uninterrupted run: envs, stacks, replay, priorities, keys and counters all restored."""
    assert _train(tmp_path, "RunConfig.num_train_steps = 119") == 0
    assert json.loads((tmp_path / "eval.json").read_text())["agent_steps"] == 120
    assert _train(tmp_path) == 0
    resumed = json.loads((tmp_path / "eval.json").read_text())
    full = json.loads((uninterrupted / "eval.json").read_text())
    for key in ("agent_steps", "grad_steps", "returns", "lengths", "params_sha256"):
        assert resumed[key] == full[key], key
    strip = ("steps_per_second",)
    assert ([{k: v for k, v in r.items() if k not in strip}
             for r in csv_rows(tmp_path / "train_log.csv")]
            == [{k: v for k, v in r.items() if k not in strip}
                for r in csv_rows(uninterrupted / "train_log.csv")])
    assert csv_rows(tmp_path / "episodes.csv") == csv_rows(uninterrupted / "episodes.csv")
