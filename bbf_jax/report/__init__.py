"""Reports on final scores (rliable-style aggregates with bootstrap CIs) and learning curves.

Entry point: ``bbf-report`` (``bbf_jax.report.cli``); ``python -m bbf_jax.report`` runs the same.
"""

from bbf_jax.report.analysis import Analysis, analyse
from bbf_jax.report.estimators import (
    Estimate,
    estimate,
    iqm,
    mean,
    median,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
    score_distribution,
)
from bbf_jax.report.runs import ReportInputError, Run, collect_runs, load_eval_json, load_official
from bbf_jax.report.scoreset import ScoreSet

__all__ = [
    "Analysis",
    "Estimate",
    "ReportInputError",
    "Run",
    "ScoreSet",
    "analyse",
    "collect_runs",
    "estimate",
    "iqm",
    "load_eval_json",
    "load_official",
    "mean",
    "median",
    "optimality_gap",
    "performance_profile",
    "probability_of_improvement",
    "score_distribution",
]
