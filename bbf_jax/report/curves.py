"""Learning curves of runs from the runner's logs, as PNG.

A run directory (the runner's ``base_dir``) holds

* ``episodes.csv``: one row per finished training episode, columns ``agent_step``,
  ``episode_return``, ``episode_length``;
* ``train_log.csv``: one row per logged training step, column ``agent_step`` plus metric
  columns such as ``TotalLoss``, ``DQNLoss``, ``SPRLoss``, ``TDError``, ``GradNorm``.

and, when present, ``evals.jsonl`` (one evaluation per line, from ``RunConfig.eval_every``)
and ``eval.json`` (the final evaluation): their episode returns and means are drawn on the
return panel at their ``agent_steps``, with the random baseline of the final evaluation's
verdict (a random policy under the same protocol, or the DQN Zoo random score at the
official budget) as a dashed line.

Columns named ``group/series`` (the plasticity diagnostics of :mod:`bbf_jax.diagnostics`,
e.g. ``Dormant0.025/total``, ``SRank/encoder``) share one panel per group, one line per
series. When ``train_log`` has a ``num_resets`` column, the agent steps at which it grows
are marked on every panel by dotted vertical lines.

Either log may instead be JSON Lines (``episodes.jsonl``, ``train_log.jsonl``: one object
per line with the same keys). The reader is tolerant: every numeric column other than
``agent_step`` is plotted against ``agent_step``, blank or non-numeric cells are skipped,
and a missing file or column is reported in the returned notes instead of failing.
"""

from __future__ import annotations

import csv
import json
import pathlib
import re

import numpy as np
from matplotlib.figure import Figure

from bbf_jax.atari_games import ATARI_SCORES, canonical_game_name

LOGS = ("episodes", "train_log")
X = "agent_step"
RETURN = "episode_return"
SMOOTHING_EPISODES = 10  # window of the running mean drawn over episode returns


def _to_float(v) -> float:
    if isinstance(v, bool):
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def read_log(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Numeric columns of a .csv or .jsonl log -> name: (rows,) float64, NaN where blank.

    Columns with no numeric cell at all are dropped. Raises ValueError naming the file
    (and line, for JSON Lines) when it cannot be parsed.
    """
    with path.open(newline="") as f:
        if path.suffix == ".jsonl":
            rows = []
            for i, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{i}: not valid JSON: {e}") from None
                    if not isinstance(rows[-1], dict):
                        raise ValueError(f"{path}:{i}: each line must be a JSON object")
        else:
            rows = list(csv.DictReader(f))
    names = list(dict.fromkeys(k for r in rows for k in r if k))
    cols = {k: np.array([_to_float(r.get(k)) for r in rows]) for k in names}
    return {k: v for k, v in cols.items() if np.isfinite(v).any()}


def _find_log(run_dir: pathlib.Path, stem: str) -> pathlib.Path | None:
    for suffix in (".csv", ".jsonl"):
        if (run_dir / f"{stem}{suffix}").is_file():
            return run_dir / f"{stem}{suffix}"
    return None


def find_run_dirs(paths) -> list[pathlib.Path]:
    """Run directories under ``paths``: every directory holding a log (searched recursively).

    A given directory with no log anywhere below it is returned itself, so that the
    missing files are reported for it.
    """
    found: set[pathlib.Path] = set()
    for p in map(pathlib.Path, paths):
        if not p.is_dir():
            raise ValueError(f"{p}: not a directory")
        hits = {f.parent for stem in LOGS for suffix in (".csv", ".jsonl")
                for f in p.rglob(f"{stem}{suffix}")}
        found |= hits or {p}
    return sorted(found)


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values (fewer at the start): (n,) -> (n,)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    w = np.minimum(i + 1, window)
    return (c[i + 1] - c[i + 1 - w]) / w


def _series(cols: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(agent_step, value) rows where both are finite, sorted by agent_step."""
    x, y = cols[X], cols[name]
    ok = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[ok], kind="stable")
    return x[ok][order], y[ok][order]


def _load(run_dir: pathlib.Path, stem: str, need: tuple[str, ...], notes: list[str]):
    path = _find_log(run_dir, stem)
    if path is None:
        notes.append(f"{run_dir}: no {stem}.csv (or {stem}.jsonl); not plotted")
        return None
    try:
        cols = read_log(path)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        notes.append(f"{path}: unreadable ({e}); not plotted")
        return None
    missing = [c for c in need if c not in cols]
    if missing:
        notes.append(f"{path}: no numeric column(s) {', '.join(missing)}; not plotted")
        return None
    return cols


def read_evals(run_dir: pathlib.Path, notes: list[str]) -> list[dict]:
    """Evaluations of a run (evals.jsonl, then eval.json) with ``agent_steps`` and
    ``returns``, sorted by agent step; unreadable entries are noted and skipped."""
    found = []
    lines = []
    if (run_dir / "evals.jsonl").is_file():
        lines += [(f"evals.jsonl:{i}", t) for i, t in enumerate(
            (run_dir / "evals.jsonl").read_text().splitlines(), start=1) if t.strip()]
    if (run_dir / "eval.json").is_file():
        lines.append(("eval.json", (run_dir / "eval.json").read_text()))
    for where, text in lines:
        try:
            e = json.loads(text)
            found.append({**e, "agent_steps": float(e["agent_steps"]),
                          "returns": [float(r) for r in e["returns"]]})
        except (ValueError, KeyError, TypeError) as err:
            notes.append(f"{run_dir / where}: unreadable evaluation ({err}); not plotted")
    return sorted(found, key=lambda e: e["agent_steps"])


def random_baseline(evals: list[dict]) -> tuple[float, str] | None:
    """(score, label) of the random baseline of the last evaluation, if it names one."""
    if not evals:
        return None
    last = evals[-1]
    policy = (last.get("verdict") or {}).get("random_policy")
    if policy is not None:
        return float(policy["mean_return"]), "random policy (same protocol)"
    try:
        return ATARI_SCORES[canonical_game_name(last["game"])][0], "random (DQN Zoo)"
    except (KeyError, ValueError):
        return None


def _plot_returns(ax, episodes, evals: list[dict]) -> None:
    if episodes is not None:
        x, y = _series(episodes, RETURN)
        ax.plot(x, y, ".", alpha=0.3, markersize=3, label="training episode")
        ax.plot(x, running_mean(y, SMOOTHING_EPISODES),
                label=f"training, mean of {SMOOTHING_EPISODES}")
    if evals:
        steps = [e["agent_steps"] for e in evals]
        ex = np.concatenate([np.full(len(e["returns"]), e["agent_steps"]) for e in evals])
        ey = np.concatenate([e["returns"] for e in evals])
        ax.plot(ex, ey, "x", color="C2", alpha=0.5, markersize=4, label="eval episode")
        ax.plot(steps, [np.mean(e["returns"]) for e in evals], "o-", color="C2",
                label="eval mean")
    baseline = random_baseline(evals)
    if baseline is not None:
        ax.axhline(baseline[0], color="C3", linestyle="--", label=baseline[1])
    ax.legend(fontsize="small")


def metric_panels(columns) -> dict[str, list[str]]:
    """Panel title -> the columns drawn in it: ``group/series`` columns share the panel
    ``group``, any other column has its own; in order of first appearance."""
    panels: dict[str, list[str]] = {}
    for c in columns:
        panels.setdefault(c.split("/", 1)[0], []).append(c)
    return panels


def reset_steps(train: dict[str, np.ndarray] | None) -> np.ndarray:
    """Agent steps of the first logged row after each increase of ``num_resets``."""
    if train is None or "num_resets" not in train:
        return np.zeros(0)
    x, n = _series(train, "num_resets")
    return x[1:][np.diff(n) > 0]


def _plot_metric(ax, train, columns: list[str]) -> None:
    for c in columns:
        label = c.split("/", 1)[1] if "/" in c else None
        bold = label == "total"
        ax.plot(*_series(train, c), ".-" if label else "-", markersize=3, label=label,
                linewidth=2.5 if bold else 1.0, color="black" if bold else None)
    if len(columns) > 6:  # e.g. one line per layer: the legend goes beside the panel
        ax.legend(fontsize="xx-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif len(columns) > 1:
        ax.legend(fontsize="x-small")


def plot_run_curves(run_dir: pathlib.Path, out_path: pathlib.Path,
                    groups: tuple[str, ...] | None = None) -> tuple[bool, list[str]]:
    """Plot episode and evaluation returns (with the random baseline) and every
    train_log metric of one run against agent steps.

    Args:
      groups: only these metric panels (e.g. ``('Dormant0.025', 'SRank')``), without
        the returns; None: everything.

    Returns:
      (whether ``out_path`` was written, notes about missing files or columns).
    """
    notes: list[str] = []
    episodes = _load(run_dir, "episodes", (X, RETURN), notes) if groups is None else None
    train = _load(run_dir, "train_log", (X,), notes)
    metrics = metric_panels(c for c in train if c != X) if train is not None else {}
    if train is not None and not metrics:
        notes.append(f"{run_dir}: train_log has no metric column besides {X}; not plotted")
    if groups is not None:
        missing = [g for g in groups if g not in metrics]
        if missing and train is not None:
            notes.append(f"{run_dir}: train_log has no {', '.join(missing)} columns; "
                         "not plotted")
        metrics = {g: metrics[g] for g in groups if g in metrics}
    evals = read_evals(run_dir, notes) if groups is None else []
    panels = ([RETURN] if episodes is not None or evals else []) + list(metrics)
    if not panels:
        return False, notes
    resets = reset_steps(train)
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax, name in zip(axes, panels, strict=False):
        if name == RETURN:
            _plot_returns(ax, episodes, evals)
        else:
            _plot_metric(ax, train, metrics[name])
        for r in resets:
            ax.axvline(r, color="gray", linestyle=":", linewidth=1)
        ax.set_title(name)
        ax.set_xlabel(X)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(str(run_dir))
    fig.savefig(out_path, dpi=100)
    return True, notes


def curve_file_name(run_dir: pathlib.Path, used: set[str]) -> str:
    """'curves_<last two path parts>.png', made unique within ``used``."""
    stem = "curves_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(run_dir.resolve().parts[-2:]))
    name, k = f"{stem}.png", 1
    while name in used:
        k += 1
        name = f"{stem}_{k}.png"
    used.add(name)
    return name
