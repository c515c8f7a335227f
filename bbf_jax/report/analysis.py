"""Aggregate results of one or two score sets over their common games.

With two sets (the runs and a comparison set) every aggregate is computed on the games both
cover, so the numbers are comparable, and the probability of improvement P(first > second)
is added. Each set's matrix is made rectangular as ``ScoreSet.matrix`` describes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bbf_jax.report import estimators
from bbf_jax.report.estimators import Estimate
from bbf_jax.report.runs import ReportInputError
from bbf_jax.report.scoreset import ScoreSet

# Thresholds of the performance profile (rliable's Atari 100k choice).
TAUS = np.linspace(0.0, 2.0, 201)


@dataclass(frozen=True)
class SetResult:
    """Aggregates of one set over the analysis games.

    Attributes:
      scores: the set.
      runs_per_game: rows of the rectangular matrix the aggregates use.
      note: how that matrix was made rectangular (ScoreSet.rectangular_note).
      aggregates: metric name (estimators.AGGREGATES keys) -> Estimate.
      profile: (profile, low, high), each (len(TAUS),): the score distribution and its CI.
    """

    scores: ScoreSet
    runs_per_game: int
    note: str
    aggregates: dict[str, Estimate]
    profile: tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Analysis:
    """Results of ``analyse``; ``poi`` is P(results[0] > results[1]) when there are two sets."""

    games: tuple[str, ...]
    results: tuple[SetResult, ...]
    poi: Estimate | None
    reps: int
    seed: int


def common_games(sets: list[ScoreSet]) -> tuple[str, ...]:
    """Games every set covers, in canonical order; error when there are none."""
    games = [g for g in sets[0].games if all(g in s.games for s in sets[1:])]
    if not games:
        raise ReportInputError(
            "the score sets share no game: " + "; ".join(
                f"{s.name}: {', '.join(s.games)}" for s in sets))
    return tuple(games)


def analyse(sets: list[ScoreSet], reps: int, seed: int) -> Analysis:
    """Aggregates with stratified-bootstrap CIs for one or two sets.

    Every bootstrap uses a Generator seeded with ``seed`` and ``reps`` resamples.
    """
    if not 1 <= len(sets) <= 2:
        raise ValueError(f"analyse takes one or two score sets, got {len(sets)}")
    games = common_games(sets)
    results, matrices = [], []
    for s in sets:
        m = s.matrix(games)  # (runs_per_game, len(games))
        matrices.append(m)
        aggs = {name: estimators.estimate(f, m, reps=reps, seed=seed)
                for name, f in estimators.AGGREGATES.items()}
        profile = estimators.performance_profile(m, TAUS, reps=reps, seed=seed)
        results.append(SetResult(s, m.shape[0], s.rectangular_note(games), aggs, profile))
    poi = None
    if len(sets) == 2:
        poi = estimators.estimate(estimators.probability_of_improvement, *matrices, reps=reps,
                                  seed=seed)
    return Analysis(games, tuple(results), poi, reps, seed)
