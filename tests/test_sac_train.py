"""SAC + DrQ through ``bbf-train`` on real CarRacing-v3 (gin_configs/sac_smoke.gin,
seconds): the run directory, seed steps then one update per step, evaluations with raw
returns, same seed same run; the gin files. Needs Box2D (the ``box2d`` extra)."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("Box2D", reason="CarRacing needs the box2d extra")

from helpers import csv_rows  # noqa: E402

from bbf_jax import gin_utils  # noqa: E402
from bbf_jax.train import main  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "gin_configs" / "sac_smoke.gin")


def _train(base_dir, *args) -> int:
    return main(["--gin_files", SMOKE, "--base_dir", str(base_dir), "--no_progress",
                 "--seed", "0", *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("sac")
    assert _train(base) == 0
    return base


def test_run_directory(run):
    for name in ("config.gin", "config.json", "episodes.csv", "train_log.csv", "evals.csv",
                 "eval.json", "curves.png"):
        assert (run / name).is_file(), name
    result = json.loads((run / "eval.json").read_text())
    assert result["agent_name"] == "sac" and result["agent_steps"] == 60
    assert result["grad_steps"] == 60 - 20  # one per step after the 20 seed steps
    assert [e["agent_step"] for e in result["evaluations"]] == [30, 60]
    assert len(result["returns"]) == 2
    log = csv_rows(run / "train_log.csv")
    assert [int(r["agent_step"]) for r in log] == [30, 40, 50, 60]
    # Every row carries the actor's metrics (of the last update that stepped it).
    assert all(np.isfinite(float(r[k])) for r in log for k in r)
    episodes = csv_rows(run / "episodes.csv")
    assert [int(r["agent_step"]) for r in episodes] == [25, 50]


def test_same_seed_same_run(run, tmp_path):
    assert _train(tmp_path) == 0
    assert csv_rows(tmp_path / "train_log.csv") == csv_rows(run / "train_log.csv")
    assert csv_rows(tmp_path / "evals.csv") == csv_rows(run / "evals.csv")


def test_gin_files():
    cfg = gin_utils.parse([str(ROOT / "gin_configs" / "SAC_DrQ_car_racing.gin")])
    assert (cfg.run.num_train_steps, cfg.env.action_repeat, cfg.env.frame_stack) == (
        2_000_000, 1, 3)
    assert (cfg.agent.replay_capacity, cfg.agent.num_augmentations) == (30_000, 1)
    ar2 = gin_utils.parse([str(ROOT / "gin_configs" / "SAC_DrQ_car_racing_ar2.gin")])
    assert (ar2.run.num_train_steps, ar2.env.action_repeat) == (500_000, 2)
    # The CPU budget's deviations, and only those.
    cpu = gin_utils.parse([str(ROOT / "gin_configs" / "SAC_DrQ_car_racing_cpu.gin")])
    assert (cpu.agent.batch_size, cpu.env.image_size, cpu.env.action_repeat,
            cpu.run.num_train_steps) == (32, 64, 4, 20_000)
    assert cpu.network == cfg.network
    assert cpu.agent == dataclasses.replace(cfg.agent, batch_size=32)
    assert cpu.env == dataclasses.replace(cfg.env, image_size=64, action_repeat=4)
    with pytest.raises(gin_utils.ConfigError, match="does not apply to agent 'sac'"):
        gin_utils.parse([SMOKE], ["RunConfig.checkpoint_every = 5"])
