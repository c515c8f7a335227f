"""The end-of-run verdict: is a run broken, plausible, or on par with the paper?

Every run's final evaluation (the eval.json dict) is put next to references:

* the mean return with a 95 % bootstrap CI over its evaluation episodes, and its
  human-normalised score with the game's DQN Zoo random and human scores;
* at the **official BBF budget** (``RunConfig.num_train_steps = 100_000`` with the BBF
  replay ratio, ``AgentConfig.replay_ratio`` 64 = RR2 or 256 = RR8, official units), the
  per-game means of the official RR2 and RR8 runs (``bbf_jax/data/RR{2,8}_BBF.csv``) and
  where this run falls among the official per-seed scores of the same replay ratio;
* for any other run, a uniformly random policy evaluated with the same protocol,
  episode count, the same for every seed of a sweep (``bbf_jax.random_baseline``).

The label follows one rule, written into the verdict (``RULE``):

* against a random policy: the 95 % bootstrap CI of (run mean - random mean), episodes
  of each resampled independently, lies above 0: ``above random``; below 0:
  ``below random``; otherwise ``not distinguishable from random``;
* at the official budget: ``below random`` when the run's CI lies below the DQN Zoo
  random score, else ``below|within|above the official RRk seed spread`` by the run's
  mean against the lowest and highest official per-seed score.

Alongside, ``p_episode_beats_random`` is the probability that an episode of the run
scores more than an episode of the random policy (ties count 1/2; Mann-Whitney), and the
percentile among official seeds is ``100 * (seeds below + seeds equal / 2) / seeds``.
The bootstrap uses ``bbf_jax.report.estimators`` (5000 resamples, seed 0, as
``bbf-report``).
"""

from __future__ import annotations

import numpy as np

from bbf_jax.atari_games import ATARI_SCORES, canonical_game_name, human_normalized_score
from bbf_jax.report import estimators
from bbf_jax.report.runs import load_official

OFFICIAL_BUDGET_STEPS = 100_000
OFFICIAL_REPLAY_RATIOS = {64: "official-rr2", 256: "official-rr8"}
REPS = 5000
BOOTSTRAP_SEED = 0
RULE = (
    "vs a random policy: 95% bootstrap CI of (run mean - random mean) above 0 -> above "
    "random, below 0 -> below random, else not distinguishable from random; at the official "
    "budget: CI below the DQN Zoo random score -> below random, else the run mean against "
    "the lowest/highest official per-seed score -> below/within/above the official seed spread"
)


def official_set_for(num_train_steps: int, replay_ratio: int) -> str | None:
    """'official-rr2'/'official-rr8' for a run at the official BBF budget, else None."""
    if num_train_steps != OFFICIAL_BUDGET_STEPS:
        return None
    return OFFICIAL_REPLAY_RATIOS.get(replay_ratio)


def _column(x) -> np.ndarray:
    """Episode returns as the (episodes, 1 game) matrix the estimators take."""
    return np.asarray(x, dtype=np.float64)[:, None]


def _ci(statistic, *samples) -> list[float]:
    e = estimators.estimate(statistic, *samples, reps=REPS, seed=BOOTSTRAP_SEED)
    return [e.low, e.high]


def _difference(x, y):
    return estimators.mean(x) - estimators.mean(y)


def random_policy_comparison(returns, random_returns) -> dict:
    """The run's episodes against a random policy's episodes under the same protocol."""
    run, rand = _column(returns), _column(random_returns)
    diff_ci = _ci(_difference, run, rand)
    if diff_ci[0] > 0:
        label = "above random"
    elif diff_ci[1] < 0:
        label = "below random"
    else:
        label = "not distinguishable from random"
    return {
        "label": label,
        "episodes": len(random_returns),
        "returns": [float(r) for r in random_returns],
        "mean_return": float(rand.mean()),
        "ci95": _ci(estimators.mean, rand),
        "difference": float(run.mean() - rand.mean()),
        "difference_ci95": diff_ci,
        "p_episode_beats_random": float(estimators.probability_of_improvement(run, rand)),
    }


def official_comparison(game: str, mean_return: float, ci95, official_set: str) -> dict | None:
    """The run against the official runs of its replay ratio (None for a game they lack)."""
    by_set = {name: [r.raw_score for r in load_official(name) if r.game == game]
              for name in OFFICIAL_REPLAY_RATIOS.values()}
    scores = np.array(by_set[official_set])
    if not scores.size:
        return None
    below = int((scores < mean_return).sum())
    equal = int((scores == mean_return).sum())
    rr = official_set.removeprefix("official-").upper()
    random_score = ATARI_SCORES[game][0]
    if ci95[1] < random_score:
        label = "below random"
    elif mean_return < scores.min():
        label = f"below the official {rr} seed spread"
    elif mean_return <= scores.max():
        label = f"within the official {rr} seed spread"
    else:
        label = f"above the official {rr} seed spread"
    return {
        "label": label,
        "set": official_set,
        "rr2_mean": float(np.mean(by_set["official-rr2"])),
        "rr8_mean": float(np.mean(by_set["official-rr8"])),
        "seeds": int(scores.size),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "percentile": 100.0 * (below + 0.5 * equal) / scores.size,
    }


def make_verdict(result: dict, official_set: str | None = None,
                 random_returns=None) -> dict:
    """The verdict of one final evaluation.

    Args:
      result: the eval.json dict (``game``, ``returns``, ``agent_steps``, ...).
      official_set: 'official-rr2'/'official-rr8' when the run is at the official budget.
      random_returns: the random policy's returns under the same protocol; used when
        ``official_set`` is None (or the official files lack the game).
    """
    game = canonical_game_name(result["game"])
    returns = _column(result["returns"])
    mean_return = float(returns.mean())
    random_score, human_score = ATARI_SCORES[game]
    verdict = {
        "mean_return": mean_return,
        "ci95": _ci(estimators.mean, returns),
        "episodes": len(returns),
        "random_score": random_score,
        "human_score": human_score,
        "human_normalized_score": human_normalized_score(game, mean_return),
        "official": None,
        "random_policy": None,
        "rule": RULE,
    }
    if official_set is not None:
        verdict["official"] = official_comparison(game, mean_return, verdict["ci95"],
                                                  official_set)
    if verdict["official"] is not None:
        verdict["label"] = verdict["official"]["label"]
    elif random_returns is not None:
        verdict["random_policy"] = random_policy_comparison(result["returns"], random_returns)
        verdict["label"] = verdict["random_policy"]["label"]
    else:
        verdict["label"] = "no reference"
    return verdict


def describe(result: dict) -> list[str]:
    """The verdict of an eval.json dict as the lines printed at the end of a run."""
    v = result["verdict"]
    lo, hi = v["ci95"]
    lines = [
        f"verdict: {result['game']} seed {result['seed']}, {result['agent_steps']:,} agent "
        f"steps: {v['label']}",
        f"  mean return {v['mean_return']:.2f} (95% CI {lo:.2f} to {hi:.2f}) over "
        f"{v['episodes']} episodes; human-normalized {v['human_normalized_score']:.3f} "
        f"(random {v['random_score']:g}, human {v['human_score']:g})",
    ]
    if v["official"] is not None:
        o = v["official"]
        rr = o["set"].removeprefix("official-").upper()
        lines.append(
            f"  official BBF at 100k steps: RR2 mean {o['rr2_mean']:.1f}, RR8 mean "
            f"{o['rr8_mean']:.1f}; this run is at percentile {o['percentile']:.0f} of the "
            f"{o['seeds']} official {rr} seeds ({o['min']:g} to {o['max']:g})")
    if v["random_policy"] is not None:
        r = v["random_policy"]
        dlo, dhi = r["difference_ci95"]
        lines.append(
            f"  random policy, same protocol: mean {r['mean_return']:.2f} over "
            f"{r['episodes']} episodes; difference {r['difference']:+.2f} (95% CI {dlo:+.2f} "
            f"to {dhi:+.2f}), P(episode beats random) {r['p_episode_beats_random']:.2f}")
        if result.get("agent_name", "bbf") == "bbf":
            lines.append(
                f"  (short run: the official BBF budget is {OFFICIAL_BUDGET_STEPS:,} agent "
                "steps; a GPU is needed to compare with the paper)")
    return lines


def verdict_for_run(result: dict, cfg, progress: bool = False) -> dict:
    """The verdict of a finished run of ``cfg`` (an ExperimentConfig): a BBF run at the
    official budget against the official runs, else against a random policy evaluated
    with the run's protocol and episode count (cached, see ``bbf_jax.random_baseline``;
    ``progress`` shows a bar while it plays)."""
    from bbf_jax.agents import agent_name
    from bbf_jax.random_baseline import BASELINE_SEED, random_returns  # needs the emulator

    official = (official_set_for(cfg.run.num_train_steps, cfg.agent.replay_ratio)
                if agent_name(cfg) == "bbf" else None)
    verdict = make_verdict(result, official) if official is not None else None
    if verdict is None or verdict["official"] is None:
        baseline = random_returns(cfg.env.game, cfg.env, result["eval_episodes"], BASELINE_SEED,
                                  progress)
        verdict = make_verdict(result, None, baseline)
    return verdict
