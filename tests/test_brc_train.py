"""BRC through ``bbf-train`` on the real LunarLander tasks (gin_configs/brc_smoke.gin):
the run directory, per-task evaluation bookkeeping, task round-robin, epsilon per
episode, vmapped seeds deriving everything as their single runs, and refusals.
Needs Box2D (the ``box2d`` extra)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("Box2D", reason="LunarLander needs the box2d extra")

from helpers import csv_rows  # noqa: E402

from bbf_jax.agents.brc.config import LunarTasksConfig  # noqa: E402
from bbf_jax.agents.brc.runner import summarize_eval  # noqa: E402
from bbf_jax.envs.lunar import make_lunar_env  # noqa: E402
from bbf_jax.train import main  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "gin_configs" / "brc_smoke.gin")
LIMITS = {"standard": 60, "windy": 40, "heavy": 50}  # brc_smoke.gin


def _train(base_dir, *args) -> int:
    return main(["--gin_files", SMOKE, "--base_dir", str(base_dir), "--no_progress", *args])


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    base = tmp_path_factory.mktemp("brc_group")
    assert _train(base, "--seeds", "0", "1") == 0
    return base


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    base = tmp_path_factory.mktemp("brc_single")
    assert _train(base, "--seed", "1") == 0
    return base


def test_run_directory_of_each_seed(group):
    for seed in (0, 1):
        d = group / f"seed_{seed}"
        for name in ("config.gin", "config.json", "episodes.csv", "train_log.csv",
                     "evals.csv", "eval.json", "curves.png"):
            assert (d / name).is_file(), name
        config = json.loads((d / "config.json").read_text())
        assert config["agent_name"] == "brc" and config["run"]["seed"] == seed
        result = json.loads((d / "eval.json").read_text())
        assert result["seed"] == seed and result["seeds_vmapped"] == 2
        assert result["param_count"] == 3 * 4 + (12 * 16 + 16) + 2 * 16 + 2 * (16 * 16 + 16) \
            + 2 * 16 + (16 * 204 + 204)


def test_per_task_evaluation_bookkeeping(group):
    result = json.loads((group / "seed_0" / "eval.json").read_text())
    # eval_every_episodes = 3 over 6 episodes: after episodes 3 and 6; the last is final.
    assert [e["episode"] for e in result["evaluations"]] == [3, 6]
    assert result["final"] == result["evaluations"][-1]
    for e in result["evaluations"]:
        assert list(e["returns"]) == ["standard", "windy", "heavy"]
        assert all(len(r) == 2 for r in e["returns"].values())  # eval_episodes_per_task
        assert e["task_means"] == pytest.approx(
            {t: float(np.mean(r)) for t, r in e["returns"].items()})
        assert e["average"] == pytest.approx(np.mean(list(e["task_means"].values())))
    assert result["average"] == result["final"]["average"]
    evals = csv_rows(group / "seed_0" / "evals.csv")
    assert [int(r["episode"]) for r in evals] == [3, 6]
    assert float(evals[-1]["average"]) == pytest.approx(result["average"], rel=1e-6)


def test_summarize_eval_by_hand():
    out = summarize_eval({"standard": [100.0, 200.0], "windy": [-30.0, 30.0], "heavy": [90.0]})
    assert out == {"task_means": {"standard": 150.0, "windy": 0.0, "heavy": 90.0},
                   "average": 80.0}


def test_tasks_take_turns_and_epsilon_decays_per_episode(group):
    rows = csv_rows(group / "seed_0" / "episodes.csv")
    assert [r["task"] for r in rows] == ["standard", "windy", "heavy"] * 2
    assert [float(r["epsilon"]) for r in rows] == pytest.approx(
        [0.995**k for k in range(6)], rel=1e-6)
    steps = 0
    for r in rows:  # random early play rarely lands: most episodes end by time limit
        assert 1 <= int(r["episode_length"]) <= LIMITS[r["task"]]
        steps += int(r["episode_length"])
        assert int(r["env_step"]) == steps
    log = csv_rows(group / "seed_0" / "train_log.csv")
    # learning starts at 100 stored transitions; logged every 20 env steps.
    assert log and all(int(r["env_step"]) >= 100 and int(r["env_step"]) % 20 == 0 for r in log)
    assert "reward_scale/standard" not in log[0]  # no reward normalisation in the design
    assert all(np.isfinite(float(r["loss"])) for r in log)


def test_a_vmapped_seed_derives_everything_as_its_single_run(group, single):
    g = csv_rows(group / "seed_1" / "episodes.csv")
    s = csv_rows(single / "episodes.csv")
    # Before learning starts (100 transitions) both act with epsilon-greedy on the same
    # keys and envs: the first episode is identical. Later, batching changes rounding.
    assert g[0] == s[0]
    assert not (single / "seed_1").exists()
    assert json.loads((single / "eval.json").read_text())["seeds_vmapped"] == 1


def test_same_seed_same_run(single, tmp_path):
    assert _train(tmp_path, "--seed", "1") == 0
    assert csv_rows(tmp_path / "episodes.csv") == csv_rows(single / "episodes.csv")
    a = json.loads((tmp_path / "eval.json").read_text())
    b = json.loads((single / "eval.json").read_text())
    assert a["evaluations"] == b["evaluations"]


def test_refusals(single, capsys):
    assert _train(single, "--seed", "1") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _train(single / "new", "--seed", "1", "--resume_from", "latest_valid") == 2
    assert "--resume_from" in capsys.readouterr().err
    assert _train(single / "eval.json", "--seed", "1") == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_tasks_are_the_configured_envs():
    cfg = LunarTasksConfig()
    envs = {t: make_lunar_env(t, cfg) for t in ("standard", "windy", "heavy")}
    assert {t: e.spec.max_episode_steps for t, e in envs.items()} == {
        "standard": 1000, "windy": 400, "heavy": 800}
    assert envs["heavy"].unwrapped.world.gravity[1] == pytest.approx(-11.5)
    assert envs["standard"].unwrapped.world.gravity[1] == pytest.approx(-10.0)
    assert envs["windy"].unwrapped.enable_wind and not envs["standard"].unwrapped.enable_wind
    assert envs["windy"].unwrapped.wind_power == 15.0
    for e in envs.values():
        e.close()


def test_envs_are_reproducible_from_a_seed():
    def rollout(seed):
        env = make_lunar_env("windy", LunarTasksConfig())
        states = [env.reset(seed=seed)[0]]
        for a in [0, 1, 2, 3] * 10:
            states.append(env.step(a)[0])
        env.close()
        return np.stack(states)

    np.testing.assert_array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


def test_official_setting_runs_with_normalised_rewards(tmp_path):
    official = ["BRCAgentConfig.reward_normalization = True", "BRCAgentConfig.v_min = -10.0",
                "BRCAgentConfig.v_max = 10.0", "BRCAgentConfig.num_atoms = 101",
                "BRCAgentConfig.max_grad_norm = None",
                "BRCNetworkConfig.unit_norm_embedding = True"]
    assert _train(tmp_path, "--seed", "3", "--gin_bindings", *official) == 0
    log = csv_rows(tmp_path / "train_log.csv")
    assert log and all(np.isfinite(float(r["loss"])) for r in log)
    episodes = csv_rows(tmp_path / "episodes.csv")
    for task in ("standard", "windy", "heavy"):
        scales = [float(r[f"reward_scale/{task}"]) for r in log]
        # 0 until the task's first episode has ended (an episode's end is processed after
        # that env step's gradient step and log row); then 10 / max |V|, and max |V|
        # only grows.
        first_end = min(int(e["env_step"]) for e in episodes if e["task"] == task)
        for r, scale in zip(log, scales, strict=True):
            assert (scale > 0) == (int(r["env_step"]) > first_end), (task, r)
        seen = [x for x in scales if x > 0]
        assert seen and all(a >= b for a, b in zip(seen, seen[1:], strict=False))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["agent"]["reward_normalization"] and config["agent"]["num_atoms"] == 101
