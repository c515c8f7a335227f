"""BRC learns on a CPU: gin_configs/brc_lunar_quick.gin (the standard LunarLander task,
a width-64 BroNet, 80 episodes) through ``bbf-train``, two seeds vmapped.

The criterion: the mean over the seeds of each seed's mean training return over its
last 40 episodes exceeds a random policy's mean return (measured here on 200 seeded
episodes of the same task) by more than 40. Over 18 seeds, one seed's last-40 mean
was -52 +- 40 (sd; worst -154, best 13) against a random policy's -181 (sd 108 per
episode, 300 episodes), so the mean of two seeds (sd ~28) clears random + 40 by ~3 sd;
a learner that does not learn scores random's -181 +- 12 (the mean of 2 x 40 random
episodes), 3 sd below the threshold. Needs Box2D (the ``box2d`` extra).
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pytest

pytest.importorskip("Box2D", reason="LunarLander needs the box2d extra")

from bbf_jax import gin_utils  # noqa: E402
from bbf_jax.envs.lunar import make_lunar_env  # noqa: E402
from bbf_jax.train import main  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "gin_configs" / "brc_lunar_quick.gin")
SEEDS = (0, 1)


def _random_policy_mean(episodes: int) -> float:
    cfg = gin_utils.parse([QUICK]).tasks
    env = make_lunar_env("standard", cfg)
    rng = np.random.default_rng(0)
    returns = []
    for i in range(episodes):
        env.reset(seed=10_000 + i)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(4)))
            total += reward
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def test_brc_beats_a_random_policy_on_the_standard_task(tmp_path):
    assert main(["--gin_files", QUICK, "--base_dir", str(tmp_path), "--no_progress",
                 "--seeds", *map(str, SEEDS)]) == 0
    late = []
    for seed in SEEDS:
        with open(tmp_path / f"seed_{seed}" / "episodes.csv") as f:
            returns = [float(r["episode_return"]) for r in csv.DictReader(f)]
        assert len(returns) == 80
        late.append(np.mean(returns[-40:]))
    random_mean = _random_policy_mean(200)
    assert np.mean(late) > random_mean + 40, (late, random_mean)
