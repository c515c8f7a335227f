"""PNG plots of a report: aggregate intervals, performance profiles, per-game bars.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas), never pyplot, so no
display or global backend state is involved.
"""

from __future__ import annotations

import pathlib

import numpy as np
from matplotlib.figure import Figure

from bbf_jax.report.estimators import Estimate
from bbf_jax.report.scoreset import GameSummary

METRIC_TITLES = {
    "iqm": "IQM",
    "median": "Median",
    "mean": "Mean",
    "optimality_gap": "Optimality gap",
}


def _colors(n: int) -> list:
    return [f"C{i % 10}" for i in range(n)]


def plot_aggregates(results: dict[str, dict[str, Estimate]], path: pathlib.Path) -> None:
    """One panel per metric: each set's point estimate with its 95 % CI as a bar.

    Args:
      results: set name -> metric name (keys of METRIC_TITLES) -> Estimate.
    """
    names = list(results)
    fig = Figure(figsize=(3.2 * len(METRIC_TITLES), 0.6 * len(names) + 1.4), layout="constrained")
    axes = fig.subplots(1, len(METRIC_TITLES), sharey=True)
    for ax, (metric, title) in zip(axes, METRIC_TITLES.items(), strict=True):
        for i, (name, color) in enumerate(zip(names, _colors(len(names)), strict=True)):
            e = results[name][metric]
            ax.barh(i, e.high - e.low, left=e.low, height=0.6, color=color, alpha=0.6)
            ax.vlines(e.value, i - 0.3, i + 0.3, color="k", linewidth=2)
        ax.margins(x=0.15)
        ax.set_title(title)
        ax.set_xlabel("human-normalised score")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()  # first set on top (the y axis is shared)
    fig.savefig(path, dpi=100)


def plot_profiles(
    taus: np.ndarray,
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: pathlib.Path,
) -> None:
    """Score distributions (fraction of runs with HNS > tau) with their CI bands.

    Args:
      taus: (T,) thresholds.
      profiles: set name -> (profile, low, high), each (T,).
    """
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for (name, (p, low, high)), color in zip(profiles.items(), _colors(len(profiles)),
                                              strict=True):
        ax.plot(taus, p, color=color, label=name)
        ax.fill_between(taus, low, high, color=color, alpha=0.2)
    ax.set_xlabel(r"human-normalised score $\tau$")
    ax.set_ylabel(r"fraction of runs with score $> \tau$")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)


def plot_per_game(
    games: tuple[str, ...], summaries: dict[str, list[GameSummary]], path: pathlib.Path
) -> None:
    """Horizontal bars of the per-game mean HNS of each set (symlog axis; 1 = human).

    Args:
      games: games to show, top to bottom.
      summaries: set name -> its per-game summaries (games it lacks are left blank).
    """
    names = list(summaries)
    height = 0.8 / len(names)
    fig = Figure(figsize=(7, 0.35 * len(games) * max(1, len(names) / 2) + 1.2),
                 layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(games))[::-1]
    for k, (name, color) in enumerate(zip(names, _colors(len(names)), strict=True)):
        by_game = {s.game: s.mean_hns for s in summaries[name]}
        vals = np.array([by_game.get(g, np.nan) for g in games])
        ax.barh(y + 0.4 - height * (k + 0.5), vals, height=height, color=color, label=name)
    ax.axvline(1.0, color="k", linestyle="--", linewidth=1)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yticks(y, games)
    ax.set_xlabel("mean human-normalised score (symlog; dashed line = human)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100)
