"""Aggregate estimators over a (runs x games) score matrix, with stratified bootstrap CIs.

The definitions follow rliable (Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice", NeurIPS 2021, Sec. 4 and App. A), re-implemented on numpy so that the
package needs no rliable/arch/pandas dependency:

* IQM: the 25 % trimmed mean of all runs x games pooled (``scipy.stats.trim_mean(x, 0.25,
  axis=None)``): sort the ``n = N * M`` scores, drop ``floor(0.25 n)`` at each end, average.
* median / mean: median / mean over games of the per-game mean over runs.
* optimality gap: ``gamma - mean(min(x, gamma))`` over all runs x games (gamma = 1: human).
* probability of improvement ``P(X > Y)``: per game the Mann-Whitney U statistic over
  ``N_x * N_y`` (ties count 1/2), averaged over games.
* score distribution (performance profile): the fraction of all runs x games with score > tau.

Every statistic takes arrays of shape ``(..., N, M)`` (float, N runs, M games) and reduces the
last two axes, so one function gives both the point estimate (shape ``()``) and the whole
bootstrap distribution (shape ``(reps,)``) without a Python loop over resamples.

Stratified bootstrap (rliable ``StratifiedBootstrap``): each resample draws N runs with
replacement independently within each game; the CI is the percentile interval of the
resampled statistic (``np.percentile``, linear interpolation, as arch's ``method="percentile"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Upper bound on float64 elements materialised per bootstrap chunk (~128 MiB).
_CHUNK_ELEMENTS = 1 << 24


def _check_matrix(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim < 2 or scores.shape[-2] == 0 or scores.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., runs, games) with both > 0, "
                         f"got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains non-finite values")
    return scores


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean of (..., N, M) scores pooled over runs and games -> (...)."""
    flat = np.sort(scores.reshape(*scores.shape[:-2], -1), axis=-1)
    n = flat.shape[-1]
    cut = int(0.25 * n)  # scipy.stats.trim_mean: lowercut = int(proportion * nobs)
    return flat[..., cut:n - cut].mean(axis=-1)


def median(scores: np.ndarray) -> np.ndarray:
    """Median over games of the per-game mean over runs: (..., N, M) -> (...)."""
    return np.median(scores.mean(axis=-2), axis=-1)


def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over games of the per-game mean over runs: (..., N, M) -> (...)."""
    return scores.mean(axis=-2).mean(axis=-1)


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """``gamma - mean(min(x, gamma))`` over runs and games: (..., N, M) -> (...)."""
    return gamma - np.minimum(scores, gamma).mean(axis=(-2, -1))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y): per-game Mann-Whitney U / (N_x N_y), ties 1/2, mean over games.

    Args:
      x: (..., N_x, M) scores of algorithm X.
      y: (..., N_y, M) scores of algorithm Y, same games in the same order.
    Returns:
      (...) probability that a random run of X beats a random run of Y on a random game.
    """
    diff = x[..., :, None, :] - y[..., None, :, :]  # (..., N_x, N_y, M)
    wins = (diff > 0).astype(np.float64) + 0.5 * (diff == 0)
    return wins.mean(axis=(-3, -2)).mean(axis=-1)


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of all runs x games with score > tau: (..., N, M), (T,) -> (..., T)."""
    flat = np.sort(scores.reshape(*scores.shape[:-2], -1), axis=-1)  # (..., n)
    n = flat.shape[-1]
    lead = flat.reshape(-1, n)
    above = np.stack([n - np.searchsorted(row, taus, side="right") for row in lead])
    return (above / n).reshape(*flat.shape[:-1], len(taus))


def stratified_resample(scores: np.ndarray, rng: np.random.Generator, reps: int) -> np.ndarray:
    """``reps`` stratified resamples of (N, M) scores -> (reps, N, M).

    Column m of each resample holds N runs drawn with replacement from column m only.
    """
    n_runs, n_games = scores.shape
    idx = rng.integers(0, n_runs, size=(reps, n_runs, n_games))
    return np.take_along_axis(scores[None], idx, axis=1)


def percentile_interval(stats: np.ndarray, size: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided percentile interval of a (reps, ...) bootstrap distribution -> 2 x (...)."""
    alpha = 100.0 * (1.0 - size) / 2.0
    low, high = np.percentile(stats, [alpha, 100.0 - alpha], axis=0)
    return low, high


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float


def bootstrap_distribution(
    statistic: Callable[..., np.ndarray],
    samples: tuple[np.ndarray, ...],
    reps: int,
    seed: int,
) -> np.ndarray:
    """Statistic over ``reps`` stratified resamples of each (N_i, M) sample -> (reps,).

    Each sample is resampled independently (rliable ``StratifiedIndependentBootstrap`` for
    two samples), in chunks so memory stays bounded. Deterministic given ``seed``.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    rng = np.random.default_rng(seed)
    # The probability of improvement materialises N_x * N_y * M per resample.
    per_rep = max(int(np.prod(samples[0].shape)), 1) * max(s.shape[0] for s in samples)
    chunk = max(1, _CHUNK_ELEMENTS // per_rep)
    out = []
    for start in range(0, reps, chunk):
        k = min(chunk, reps - start)
        out.append(statistic(*(stratified_resample(s, rng, k) for s in samples)))
    return np.concatenate(out)


def estimate(
    statistic: Callable[..., np.ndarray],
    *samples: np.ndarray,
    reps: int,
    seed: int,
    size: float = 0.95,
) -> Estimate:
    """Point estimate of ``statistic(*samples)`` and its stratified-bootstrap percentile CI.

    Args:
      statistic: one of the functions above (or any function reducing (..., N, M) -> (...)).
      *samples: one or two (N_i, M) float score matrices (rectangular: equal runs per game).
      reps: number of bootstrap resamples.
      seed: seed of the numpy Generator drawing the resamples.
      size: coverage of the interval.
    """
    samples = tuple(_check_matrix(s, f"sample {i}") for i, s in enumerate(samples))
    if len({s.shape[1] for s in samples}) != 1:
        raise ValueError(f"samples cover different numbers of games: {[s.shape for s in samples]}")
    value = float(statistic(*samples))
    low, high = percentile_interval(bootstrap_distribution(statistic, samples, reps, seed), size)
    return Estimate(value, float(low), float(high))


def performance_profile(
    scores: np.ndarray, taus: np.ndarray, reps: int, seed: int, size: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score distribution of (N, M) scores at thresholds (T,) with its CI band -> 3 x (T,)."""
    scores = _check_matrix(scores)
    taus = np.asarray(taus, dtype=np.float64)
    stat = lambda s: score_distribution(s, taus)
    low, high = percentile_interval(bootstrap_distribution(stat, (scores,), reps, seed), size)
    return stat(scores), low, high


AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "iqm": iqm,
    "median": median,
    "mean": mean,
    "optimality_gap": optimality_gap,
}
