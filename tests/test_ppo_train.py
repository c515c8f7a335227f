"""PPO through ``bbf-train`` on real CarRacing-v3 (gin_configs/ppo_smoke.gin, seconds):
the run directory, rollouts and updates counted, evaluations with raw returns, same
seed same run; the raw-reward bookkeeping of reset envs; the gin files. Needs Box2D."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("Box2D", reason="CarRacing needs the box2d extra")

from helpers import csv_rows  # noqa: E402

from bbf_jax import gin_utils  # noqa: E402
from bbf_jax.agents.ppo.runner import raw_rewards  # noqa: E402
from bbf_jax.train import main  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "gin_configs" / "ppo_smoke.gin")


def _train(base_dir, *args) -> int:
    return main(["--gin_files", SMOKE, "--base_dir", str(base_dir), "--no_progress",
                 "--seed", "0", *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ppo")
    assert _train(base) == 0
    return base


def test_run_directory(run):
    for name in ("config.gin", "config.json", "episodes.csv", "train_log.csv", "evals.csv",
                 "eval.json", "curves.png"):
        assert (run / name).is_file(), name
    result = json.loads((run / "eval.json").read_text())
    assert result["agent_name"] == "ppo" and result["policy"] == "beta"
    assert result["agent_steps"] == 64  # 2 updates of 2 envs x 16 steps
    # eval_every = 32: after each update; the last is the final one, 2 episodes each.
    assert [e["agent_step"] for e in result["evaluations"]] == [32, 64]
    assert len(result["returns"]) == 2
    assert result["mean_return"] == pytest.approx(np.mean(result["returns"]))
    log = csv_rows(run / "train_log.csv")
    assert [int(r["agent_step"]) for r in log] == [32, 64]
    assert all(np.isfinite(float(r["loss"])) for r in log)
    episodes = csv_rows(run / "episodes.csv")
    # 20-step episodes of 2 envs in 32 vector steps: both end one at vector step 20
    # (agent step 40); the next would end at vector step 40.
    assert [int(r["agent_step"]) for r in episodes] == [40, 40]
    assert all(int(r["episode_length"]) == 20 for r in episodes)


def test_same_seed_same_run(run, tmp_path):
    assert _train(tmp_path) == 0
    assert csv_rows(tmp_path / "episodes.csv") == csv_rows(run / "episodes.csv")
    assert csv_rows(tmp_path / "train_log.csv") == csv_rows(run / "train_log.csv")


def test_gaussian_policy_runs(tmp_path):
    assert _train(tmp_path, "--gin_bindings", "PPOAgentConfig.policy = 'gaussian'") == 0
    assert json.loads((tmp_path / "eval.json").read_text())["policy"] == "gaussian"


def test_raw_rewards_of_reset_envs_come_from_final_info():
    info = {"raw_reward": np.array([0.5, 0.0, 0.0]), "_raw_reward": np.array([True, False, False]),
            "final_info": {"raw_reward": np.array([0.0, -0.1, 2.0]),
                           "_raw_reward": np.array([False, True, True])}}
    np.testing.assert_array_equal(raw_rewards(info, 3), [0.5, -0.1, 2.0])


def test_gin_files():
    for name, policy, steps in [("PPO_car_racing_beta.gin", "beta", 1_000_000),
                                ("PPO_car_racing_gaussian.gin", "gaussian", 1_000_000),
                                ("PPO_car_racing_beta_2M.gin", "beta", 2_000_000),
                                ("PPO_car_racing_gaussian_2M.gin", "gaussian", 2_000_000)]:
        cfg = gin_utils.parse([str(ROOT / "gin_configs" / name)])
        assert (cfg.agent.policy, cfg.run.num_train_steps) == (policy, steps)
        assert (cfg.env.grayscale, cfg.env.image_size, cfg.env.frame_stack) == (True, 84, 4)
        assert (cfg.agent.num_envs * cfg.agent.rollout_length) % cfg.agent.minibatch_size == 0
    with pytest.raises(gin_utils.ConfigError, match="RunConfig.seeds = .* does not apply"):
        gin_utils.parse([SMOKE], ["RunConfig.seeds = (0, 1)"])
    with pytest.raises(gin_utils.ConfigError, match="shorter than one rollout"):
        gin_utils.parse([SMOKE], ["RunConfig.num_train_steps = 10"])
    with pytest.raises(gin_utils.ConfigError, match="EnvConfig does not apply to agent 'ppo'"):
        gin_utils.parse([SMOKE], ["EnvConfig.game = 'Pong'"])
