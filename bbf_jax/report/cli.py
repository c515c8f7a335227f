"""``bbf-report``: aggregate final scores of runs, or plot their learning curves.

  bbf-report [RUN_DIR_OR_EVAL_JSON ...] [--compare official-rr2|official-rr8|DIR ...]
             [--games atari26|atari55] [--out DIR] [--reps N] [--seed S]
  bbf-report --curves RUN_DIR ... [--out DIR] [--panels GROUP ...]

Run directories are searched recursively for eval.json. ``--compare`` takes either one
official set (shipped with bbf_jax) or directories/files of eval.json forming one comparison
set; put it after the runs. With no runs, the comparison set is reported alone. ``--games``
chooses the game set (default atari26, the Atari 100k games; atari55, the 55 games of the
official score files): the official sets are cut to it, runs of a game outside it are an
error. When an official set is in the report, Video Pinball is normalised in every set as
the official files do (random = 0). A bbf-sweep directory (with sweep.json) is reported
per variant: ``<out>/<variant>/`` holds each variant's report against the --compare set,
``<out>/report.md`` a table of all. The last line printed is
``iqm: <value> [<low>, <high>]`` of the first set (of a sweep: of its first variant).

Exit status: 0 on success, 2 on an input or argument that cannot be used (one clear line).
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

from bbf_jax.atari_games import GAME_SETS
from bbf_jax.report.runs import OFFICIAL_SETS, ReportInputError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bbf-report", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="run directories (searched recursively for eval.json) or eval.json files")
    p.add_argument("--compare", nargs="+", metavar="SET",
                   help=f"{' or '.join(OFFICIAL_SETS)}, or run directories/eval.json files")
    p.add_argument("--games", default="atari26", choices=list(GAME_SETS),
                   help="game set of the report: atari26 (Atari 100k, default) or atari55 "
                        "(the 55 games of the official score files)")
    p.add_argument("--out", default="report", type=pathlib.Path,
                   help="output directory (default: %(default)s)")
    p.add_argument("--reps", default=5000, type=_positive_int,
                   help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", default=0, type=int, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--curves", action="store_true",
                   help="plot learning curves of the given run directories instead")
    p.add_argument("--panels", nargs="+", metavar="GROUP",
                   help="with --curves: only these train_log panels, without the returns "
                        "(a column 'G/x' is drawn in panel G), e.g. Dormant0.025 SRank")
    return p


def _compare_set(values: list[str]):
    from bbf_jax.report.runs import collect_runs, load_official
    from bbf_jax.report.scoreset import ScoreSet

    official = [v for v in values if v.startswith("official-")]
    if official:
        if len(values) != 1:
            raise ReportInputError(
                f"--compare takes one official set alone, got {' '.join(values)}")
        return ScoreSet(values[0], tuple(load_official(values[0])))
    return ScoreSet("compare", tuple(collect_runs(values)))


def _in_game_set(sets: list, name: str) -> list:
    """Every set cut to the game set ``name`` (official sets silently; other runs outside
    it are an error); with an official set present, the other sets' Video Pinball is
    renormalised as the official files do (random = 0), so that the sets compare."""
    from bbf_jax.report.runs import renormalized
    from bbf_jax.report.scoreset import ScoreSet

    games = GAME_SETS[name]
    with_official = any(s.name in OFFICIAL_SETS for s in sets)
    out = []
    for s in sets:
        if s.name not in OFFICIAL_SETS:
            outside = [g for g in s.games if g not in games]
            if outside:
                raise ReportInputError(
                    f"{s.name}: runs of {', '.join(outside)}, outside the game set {name}; "
                    "use --games atari55")
            if with_official:
                s = ScoreSet(s.name, tuple(renormalized(s.runs, "official_csv")))
        out.append(s.only(games))
    if with_official and any("VideoPinball" in s.games for s in out):
        print("note: VideoPinball is normalised with random = 0 in every set, "
              "as in the official score files")
    return out


def _print_analysis(analysis) -> None:
    for r in analysis.results:
        print(r.note)
    for r in analysis.results:
        for metric, e in r.aggregates.items():
            print(f"{r.scores.name} {metric}: {e.value:.3f} [{e.low:.3f}, {e.high:.3f}]")
    if analysis.poi is not None:
        a, b = (r.scores.name for r in analysis.results)
        e = analysis.poi
        print(f"P({a} > {b}): {e.value:.3f} [{e.low:.3f}, {e.high:.3f}]")


def _report(args, command: str) -> int:
    from bbf_jax.report.analysis import analyse
    from bbf_jax.report.output import write_report
    from bbf_jax.report.runs import collect_runs
    from bbf_jax.report.scoreset import ScoreSet
    from bbf_jax.sweep.manifest import is_sweep_dir

    sweeps = [p for p in args.paths if is_sweep_dir(p)]
    if sweeps:
        if len(args.paths) != 1:
            raise ReportInputError(
                f"a sweep directory ({sweeps[0]}) is reported alone, one report per variant; "
                f"got {' '.join(args.paths)}")
        return _report_sweep(args, command, pathlib.Path(sweeps[0]))
    sets = []
    if args.paths:
        sets.append(ScoreSet("runs", tuple(collect_runs(args.paths))))
    if args.compare:
        sets.append(_compare_set(args.compare))
    if not sets:
        raise ReportInputError("nothing to report: give run directories and/or --compare")
    sets = _in_game_set(sets, args.games)
    analysis = analyse(sets, reps=args.reps, seed=args.seed)
    _print_analysis(analysis)
    for path in write_report(analysis, args.out, command):
        print(f"wrote {path}")
    e = analysis.results[0].aggregates["iqm"]
    print(f"iqm: {e.value:.3f} [{e.low:.3f}, {e.high:.3f}]")
    return 0


def _report_sweep(args, command: str, base_dir: pathlib.Path) -> int:
    """One report per variant of a bbf-sweep directory (``<out>/<variant>/``), each against
    the --compare set, and an index ``<out>/report.md``."""
    from bbf_jax.report.analysis import analyse
    from bbf_jax.report.output import write_report, write_sweep_index
    from bbf_jax.report.runs import collect_runs
    from bbf_jax.report.scoreset import ScoreSet
    from bbf_jax.sweep.manifest import load

    try:
        sweep = load(base_dir)
    except ValueError as e:  # SweepError
        raise ReportInputError(str(e)) from None
    compare = _compare_set(args.compare) if args.compare else None
    analyses = {}
    for variant in sweep.variants:
        vdir = base_dir / variant.name
        if not vdir.is_dir() or not any(vdir.rglob("eval.json")):
            print(f"note: variant {variant.name}: no finished run (eval.json) yet, left out")
            continue
        sets = [ScoreSet(variant.name, tuple(collect_runs([vdir])))]
        sets = _in_game_set(sets + ([compare] if compare else []), args.games)
        analysis = analyse(sets, reps=args.reps, seed=args.seed)
        _print_analysis(analysis)
        for path in write_report(analysis, args.out / variant.name, command):
            print(f"wrote {path}")
        analyses[variant.name] = analysis
    if not analyses:
        raise ReportInputError(f"{base_dir}: no variant has a finished run (eval.json) yet")
    print(f"wrote {write_sweep_index(analyses, base_dir, args.out, command)}")
    e = next(iter(analyses.values())).results[0].aggregates["iqm"]
    print(f"iqm: {e.value:.3f} [{e.low:.3f}, {e.high:.3f}]")
    return 0


def _curves(args) -> int:
    from bbf_jax.report.curves import curve_file_name, find_run_dirs, plot_run_curves

    if args.compare or not args.paths:
        raise ReportInputError("--curves takes run directories only (and --out)")
    args.out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    written = 0
    for run_dir in find_run_dirs(args.paths):
        path = args.out / curve_file_name(run_dir, used)
        ok, notes = plot_run_curves(run_dir, path, tuple(args.panels) if args.panels else None)
        for note in notes:
            print(f"note: {note}")
        if ok:
            written += 1
            print(f"wrote {path}")
    if not written:
        raise ReportInputError("no learning curve could be plotted (see the notes above)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        if args.curves:
            return _curves(args)
        if args.panels:
            raise ReportInputError("--panels needs --curves")
        return _report(args, shlex.join(["bbf-report", *argv]))
    except (ReportInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
