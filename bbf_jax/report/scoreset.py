"""A named set of runs, its per-game summary and its rectangular runs x games HNS matrix.

Run counts per game may differ (the official RR8 file has 52-60 runs per game; a user may
have finished more seeds on some games). The bootstrap estimators need a rectangular matrix,
so ``ScoreSet.matrix`` keeps, for every game, the runs with the ``n`` lowest seeds, where ``n``
is the smallest run count over the games; the other runs are dropped from the aggregates
(the per-game table still averages all runs). ``ScoreSet.rectangular_note`` says what was
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bbf_jax.atari_games import ATARI_55_GAMES
from bbf_jax.report.runs import ReportInputError, Run


@dataclass(frozen=True)
class GameSummary:
    """Per-game result over all runs of a set (mean raw score, mean HNS and its spread)."""

    game: str
    runs: int
    mean_raw: float
    mean_hns: float
    std_hns: float  # sample standard deviation over runs (ddof=1); 0 for one run


@dataclass(frozen=True)
class ScoreSet:
    """Runs of one agent configuration (e.g. 'runs' or 'official-rr2')."""

    name: str
    runs: tuple[Run, ...]

    def __post_init__(self):
        if not self.runs:
            raise ReportInputError(f"score set {self.name!r} holds no runs")

    @property
    def games(self) -> tuple[str, ...]:
        """Games with at least one run, in the order of ``ATARI_55_GAMES`` (the 26 Atari
        100k games first)."""
        present = {r.game for r in self.runs}
        return tuple(g for g in ATARI_55_GAMES if g in present)

    def only(self, games: tuple[str, ...]) -> ScoreSet:
        """The runs of ``games`` only (e.g. one game set)."""
        return ScoreSet(self.name, tuple(r for r in self.runs if r.game in games))

    def by_game(self, game: str) -> list[Run]:
        """Runs of ``game`` sorted by seed."""
        return sorted((r for r in self.runs if r.game == game), key=lambda r: r.seed)

    def summary(self) -> list[GameSummary]:
        """Per-game summary over all runs of each game."""
        out = []
        for g in self.games:
            hns = np.array([r.hns for r in self.by_game(g)])
            raw = np.array([r.raw_score for r in self.by_game(g)])
            std = float(hns.std(ddof=1)) if len(hns) > 1 else 0.0
            out.append(GameSummary(g, len(hns), float(raw.mean()), float(hns.mean()), std))
        return out

    def runs_per_game(self, games: tuple[str, ...] | None = None) -> int:
        """Rows of the rectangular matrix: the smallest run count over ``games``."""
        return min(len(self.by_game(g)) for g in games or self.games)

    def matrix(self, games: tuple[str, ...] | None = None) -> np.ndarray:
        """(n, M) float64 HNS matrix over ``games`` (default: all of the set's games).

        Row i holds, for each game, the run with the i-th lowest seed; n is the smallest run
        count over the games, so higher seeds of games with more runs are left out.
        """
        games = games or self.games
        absent = [g for g in games if not self.by_game(g)]
        if absent:
            raise ReportInputError(f"score set {self.name!r} has no runs of {', '.join(absent)}")
        n = self.runs_per_game(games)
        return np.array([[r.hns for r in self.by_game(g)[:n]] for g in games]).T

    def rectangular_note(self, games: tuple[str, ...] | None = None) -> str:
        """One sentence saying how the aggregates' matrix was made rectangular."""
        games = games or self.games
        n = self.runs_per_game(games)
        counts = {g: len(self.by_game(g)) for g in games}
        extra = {g: c - n for g, c in counts.items() if c > n}
        text = f"{self.name}: {n} run(s) per game x {len(games)} game(s) in the aggregates"
        if not extra:
            return text + " (every game has exactly this many runs; nothing dropped)."
        dropped = ", ".join(f"{g} {k}" for g, k in extra.items())
        return (text + f"; the run count differs across games ({min(counts.values())}-"
                f"{max(counts.values())}), so each game keeps its {n} lowest-numbered seeds and "
                f"{sum(extra.values())} run(s) are left out of the aggregates ({dropped}); the "
                "per-game table averages all runs.")
