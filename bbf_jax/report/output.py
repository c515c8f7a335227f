"""Write an Analysis to disk: report.md, per_game.csv, aggregates.csv and PNG plots."""

from __future__ import annotations

import csv
import pathlib

import bbf_jax
from bbf_jax.report import plots
from bbf_jax.report.analysis import TAUS, Analysis
from bbf_jax.report.runs import OFFICIAL_SETS, load_official, renormalized
from bbf_jax.report.scoreset import GameSummary, ScoreSet

PER_GAME_FIELDS = ("set", "game", "runs", "mean_raw", "mean_hns", "std_hns")
AGGREGATE_FIELDS = ("set", "metric", "value", "ci_low", "ci_high", "runs_per_game", "games",
                    "reps", "seed")
PLOTS = {
    "aggregates.png": "Aggregate metrics with 95 % stratified-bootstrap CIs",
    "performance_profile.png": "Performance profile (score distribution) with 95 % CI bands",
    "per_game.png": "Per-game mean HNS against the official BBF scores",
}

_METHOD = """\
## Method

* Scores are human-normalised: HNS = (score - random) / (human - random), with the DQN Zoo
  random/human table. When an official set is in the report, Video Pinball uses random = 0
  in every set, as the official score files do. A run's score is its mean return over the
  evaluation episodes (eval.json `mean_return`, official CSV `GameScoreAverage`).
* Aggregates follow rliable (Agarwal et al., NeurIPS 2021) on a runs x games matrix: IQM is
  the 25 % trimmed mean of all runs x games pooled; median and mean are over games of the
  per-game mean over runs; the optimality gap is 1 - mean(min(HNS, 1)) over all runs x games;
  the probability of improvement P(X > Y) is, per game, the probability that a random run of
  X scores higher than a random run of Y (ties count 1/2), averaged over games.
* 95 % confidence intervals: stratified bootstrap (runs resampled with replacement within each
  game, games fixed; the two sets resampled independently for P(X > Y)), percentile method.
* Rectangular matrix: where games have different run counts, every game keeps the runs with
  its n lowest-numbered seeds, n being the smallest count; the per-game table uses all runs.
* With two sets, all aggregates use only the games both sets cover.
"""


def _fmt(e) -> str:
    return f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]"


def _describe(s: ScoreSet) -> str:
    if s.name in OFFICIAL_SETS:
        return (f"official BBF per-run scores `{OFFICIAL_SETS[s.name]}` (shipped with bbf_jax), "
                f"{len(s.runs)} runs on {len(s.games)} games, 100k agent steps each")
    steps = sorted({r.agent_steps for r in s.runs})
    versions = sorted({r.version for r in s.runs if r.version is not None})
    text = f"{len(s.runs)} eval.json file(s), {len(s.games)} game(s), agent_steps " + (
        f"{steps[0]}" if len(steps) == 1 else f"MIXED {steps} (check the inputs)")
    return text + (f", bbf_jax version(s) {', '.join(versions)}" if versions else "")


def reference_summaries(analysis: Analysis) -> dict[str, list[GameSummary]]:
    """Per-game summaries to plot: the analysed sets, then each official set not among them
    (normalised like the analysed sets: Video Pinball as the official files only when an
    official set is analysed)."""
    out = {r.scores.name: [s for s in r.scores.summary() if s.game in analysis.games]
           for r in analysis.results}
    norm = "official_csv" if any(n in OFFICIAL_SETS for n in out) else "dqn_zoo"
    for name in OFFICIAL_SETS:
        if name not in out:
            ref = ScoreSet(name, tuple(renormalized(load_official(name), norm)))
            out[name] = [s for s in ref.summary() if s.game in analysis.games]
    return out


def write_csvs(analysis: Analysis, out: pathlib.Path) -> None:
    """per_game.csv (one row per set x game, all runs) and aggregates.csv (one row per metric)."""
    with (out / "per_game.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PER_GAME_FIELDS)
        for r in analysis.results:
            for s in r.scores.summary():
                if s.game in analysis.games:
                    w.writerow([r.scores.name, s.game, s.runs, repr(s.mean_raw),
                                repr(s.mean_hns), repr(s.std_hns)])
    rows = [(r.scores.name, metric, e, r.runs_per_game)
            for r in analysis.results for metric, e in r.aggregates.items()]
    if analysis.poi is not None:
        a, b = (r.scores.name for r in analysis.results)
        n = "/".join(str(r.runs_per_game) for r in analysis.results)
        rows.append((f"{a} > {b}", "probability_of_improvement", analysis.poi, n))
    with (out / "aggregates.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(AGGREGATE_FIELDS)
        for name, metric, e, n in rows:
            w.writerow([name, metric, repr(e.value), repr(e.low), repr(e.high), n,
                        len(analysis.games), analysis.reps, analysis.seed])


def write_plots(analysis: Analysis, out: pathlib.Path) -> None:
    """The three PNGs of PLOTS."""
    results = {r.scores.name: r.aggregates for r in analysis.results}
    plots.plot_aggregates(results, out / "aggregates.png")
    plots.plot_profiles(TAUS, {r.scores.name: r.profile for r in analysis.results},
                        out / "performance_profile.png")
    plots.plot_per_game(analysis.games, reference_summaries(analysis), out / "per_game.png")


def render_markdown(analysis: Analysis, command: str) -> str:
    """The text of report.md."""
    names = [r.scores.name for r in analysis.results]
    lines = [
        "# bbf_jax report", "",
        f"Written by `bbf-report` (bbf_jax {bbf_jax.__version__}): `{command}`", "",
        "## Inputs", "",
    ]
    lines += [f"* **{r.scores.name}**: {_describe(r.scores)}." for r in analysis.results]
    all_games = sorted({g for r in analysis.results for g in r.scores.games})
    left_out = [g for g in all_games if g not in analysis.games]
    lines += ["", f"Games analysed ({len(analysis.games)}): {', '.join(analysis.games)}."]
    if left_out:
        lines += ["", f"Left out because not every set covers them: {', '.join(left_out)}."]
    lines += ["", "## Run counts", ""] + [f"* {r.note}" for r in analysis.results]
    lines += [
        "", f"## Aggregates (human-normalised, 95 % CI, {analysis.reps} bootstrap resamples, "
        f"seed {analysis.seed})", "",
        "| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
    ]
    for metric, title in plots.METRIC_TITLES.items():
        lines.append(f"| {title} | " + " | ".join(
            _fmt(r.aggregates[metric]) for r in analysis.results) + " |")
    if analysis.poi is not None:
        lines += ["", f"Probability of improvement P({names[0]} > {names[1]}): "
                  f"{_fmt(analysis.poi)}"]
    lines += ["", "## Per game (all runs)", "",
              "| game | " + " | ".join(f"{n} runs | {n} raw | {n} HNS" for n in names) + " |",
              "|---" * (3 * len(names) + 1) + "|"]
    by_set = [{s.game: s for s in r.scores.summary()} for r in analysis.results]
    for g in analysis.games:
        cells = [f"{d[g].runs} | {d[g].mean_raw:.1f} | {d[g].mean_hns:.3f}" for d in by_set]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines += ["", "## Plots", ""]
    lines += [f"![{title}]({name})" + "\n" for name, title in PLOTS.items()]
    lines += ["Files: `per_game.csv` (per set x game, all runs), `aggregates.csv` "
              "(per set x metric with CIs).", "", _METHOD]
    return "\n".join(lines)


def write_report(analysis: Analysis, out: pathlib.Path, command: str) -> list[pathlib.Path]:
    """Write every output into ``out`` (created if needed); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    write_csvs(analysis, out)
    write_plots(analysis, out)
    (out / "report.md").write_text(render_markdown(analysis, command))
    return [out / n for n in ("report.md", "per_game.csv", "aggregates.csv", *PLOTS)]


def write_sweep_index(analyses: dict[str, Analysis], sweep_dir: pathlib.Path,
                      out: pathlib.Path, command: str) -> pathlib.Path:
    """``out/report.md`` for a sweep: one row per variant (``analyses``: variant name ->
    its Analysis, whose first set is the variant) linking to ``<variant>/report.md``."""
    first = next(iter(analyses.values()))
    other = first.results[1].scores.name if len(first.results) == 2 else None
    head = ["variant", "runs", "games", *plots.METRIC_TITLES.values()]
    if other is not None:
        head.append(f"P(variant > {other})")
    lines = ["# bbf_jax sweep report", "",
             f"Written by `bbf-report` (bbf_jax {bbf_jax.__version__}): `{command}`", "",
             f"Sweep `{sweep_dir}`: one report per variant"
             + (f", each against {other} on the games both cover" if other else "")
             + " (human-normalised aggregates, 95 % CI).", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, a in analyses.items():
        r = a.results[0]
        cells = [f"[{name}]({name}/report.md)", str(len(r.scores.runs)), str(len(a.games)),
                 *(_fmt(r.aggregates[m]) for m in plots.METRIC_TITLES)]
        if other is not None:
            cells.append(_fmt(a.poi))
        lines.append("| " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
