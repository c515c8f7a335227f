"""The end-of-run verdict on synthetic evaluations, against hand-computed values.

Bootstrap CIs are checked on returns whose 95 % percentile interval is exact: with two
episodes the resampled mean takes 3 values with probabilities 1/4, 1/2, 1/4, so over
5000 resamples the 2.5th and 97.5th percentiles are the smallest and largest of them.
"""

import pytest

from bbf_jax.report.verdict import describe, make_verdict, official_set_for

# The 14 official RR2 Boxing scores (bbf_jax/data/RR2_BBF.csv), for the hand computations.
RR2_BOXING = [94.51000213623047, 64.77999877929688, 78.22000122070312, 84.56999969482422,
              74.88999938964844, 67.30000305175781, 83.47000122070312, 52.13999938964844,
              51.650001525878906, 85.33000183105469, 90.2699966430664, 81.55999755859375,
              85.87000274658203, 88.5199966430664]


def eval_json(game, returns, agent_steps=2001):
    return {"game": game, "seed": 3, "agent_steps": agent_steps, "eval_episodes": len(returns),
            "returns": returns, "mean_return": sum(returns) / len(returns)}


def test_official_budget_is_100k_steps_at_the_bbf_replay_ratios():
    assert official_set_for(100_000, 64) == "official-rr2"
    assert official_set_for(100_000, 256) == "official-rr8"
    assert official_set_for(2_000, 64) is None
    assert official_set_for(100_000, 8) is None


def test_short_run_above_random():
    v = make_verdict(eval_json("Breakout", [0.0, 10.0]), random_returns=[-1.0, -1.0])
    assert v["mean_return"] == 5.0
    assert v["ci95"] == [0.0, 10.0]
    assert (v["random_score"], v["human_score"]) == (1.7, 30.5)
    assert v["human_normalized_score"] == pytest.approx((5.0 - 1.7) / (30.5 - 1.7), rel=1e-12)
    r = v["random_policy"]
    assert (r["mean_return"], r["ci95"], r["episodes"]) == (-1.0, [-1.0, -1.0], 2)
    assert r["difference"] == 6.0 and r["difference_ci95"] == [1.0, 11.0]
    assert r["p_episode_beats_random"] == 1.0  # 0 > -1 and 10 > -1: all 4 pairs
    assert v["label"] == "above random" and v["official"] is None


def test_short_run_not_distinguishable_and_below_random():
    v = make_verdict(eval_json("Boxing", [0.0, 10.0]), random_returns=[5.0, 5.0])
    assert v["random_policy"]["difference_ci95"] == [-5.0, 5.0]
    assert v["random_policy"]["p_episode_beats_random"] == 0.5
    assert v["label"] == "not distinguishable from random"
    v = make_verdict(eval_json("Boxing", [0.0, 0.0]), random_returns=[1.0, 3.0])
    assert v["random_policy"]["difference_ci95"] == [-3.0, -1.0]
    assert v["random_policy"]["p_episode_beats_random"] == 0.0
    assert v["label"] == "below random"


def test_official_budget_run_against_the_official_seeds():
    v = make_verdict(eval_json("boxing", [70.0, 90.0], 100_001), "official-rr2")
    assert v["ci95"] == [70.0, 90.0]
    assert v["human_normalized_score"] == pytest.approx((80.0 - 0.1) / 12.0, rel=1e-12)
    o = v["official"]
    assert o["seeds"] == 14
    assert o["rr2_mean"] == pytest.approx(sum(RR2_BOXING) / 14, rel=1e-12)
    assert o["rr2_mean"] == pytest.approx(77.362857, abs=1e-6)
    assert o["rr8_mean"] == pytest.approx(86.289333, abs=1e-6)  # 60 RR8 seeds
    assert (o["min"], o["max"]) == (51.650001525878906, 94.51000213623047)
    # Below 80: 64.78, 78.22, 74.89, 67.30, 52.14, 51.65.
    assert o["percentile"] == pytest.approx(100 * 6 / 14, rel=1e-12)
    assert v["label"] == "within the official RR2 seed spread"
    assert v["random_policy"] is None
    assert make_verdict(eval_json("Boxing", [99.0, 99.0]), "official-rr2")["label"] == \
        "above the official RR2 seed spread"
    assert make_verdict(eval_json("Boxing", [20.0, 30.0]), "official-rr8")["label"] == \
        "below the official RR8 seed spread"
    # CI [-5, -5] lies below the DQN Zoo random score 0.1.
    assert make_verdict(eval_json("Boxing", [-5.0, -5.0]), "official-rr2")["label"] == \
        "below random"


def test_describe_prints_the_numbers():
    result = eval_json("Breakout", [0.0, 10.0])
    result["verdict"] = make_verdict(result, random_returns=[-1.0, -1.0])
    lines = describe(result)
    assert lines[0] == "verdict: Breakout seed 3, 2,001 agent steps: above random"
    assert "mean return 5.00 (95% CI 0.00 to 10.00) over 2 episodes" in lines[1]
    assert "difference +6.00 (95% CI +1.00 to +11.00)" in lines[2]
    result["verdict"] = make_verdict(eval_json("Boxing", [70.0, 90.0]), "official-rr2")
    assert "RR2 mean 77.4, RR8 mean 86.3; this run is at percentile 43 of the 14" \
        in describe(result)[2]


def test_a_run_at_the_official_budget_is_compared_with_the_official_seeds():
    from bbf_jax.agents.bbf.config import ExperimentConfig
    from bbf_jax.config import EnvConfig, RunConfig
    from bbf_jax.report.verdict import verdict_for_run

    cfg = ExperimentConfig(env=EnvConfig(game="Boxing"), run=RunConfig(num_train_steps=100_000))
    assert cfg.agent.replay_ratio == 64  # BBF.gin's RR2
    v = verdict_for_run(eval_json("Boxing", [70.0, 90.0], 100_001), cfg)
    assert v["official"]["set"] == "official-rr2" and v["random_policy"] is None
    assert v["label"] == "within the official RR2 seed spread"
