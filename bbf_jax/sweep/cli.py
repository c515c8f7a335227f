"""``bbf-sweep``: run a grid of bbf-train runs (variants x games x seeds), locally or on SLURM.

  bbf-sweep --gin_files gin_configs/BBF.gin --games atari26 --seeds 0-9 \\
      [--gin_bindings B ...] [--variant NAME=B;B ...] --base_dir runs/sweep \\
      [--jobs N] [--devices 0,1,...] | [--slurm [--slurm_opts="..."] [--slurm_tasks K] [--dry_run]]
  bbf-sweep --status runs/sweep
  bbf-sweep --array_task --base_dir runs/sweep     (what each SLURM array task runs)

Each run is ``python -m bbf_jax.train`` in ``<base_dir>/<variant>/<game>/seed_<seed>/``.
Re-running the same command finishes a sweep: finished runs (eval.json) are skipped,
interrupted ones resume from their checkpoints. ``python -m bbf_jax.sweep`` is the same.

Exit status: 0 when every run it was asked to run finished, 1 when some failed, 2 on an
argument or sweep directory that cannot be used (one clear line).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from bbf_jax.sweep import executor, manifest, slurm
from bbf_jax.sweep.grid import (
    DEFAULT_VARIANT,
    SweepError,
    Variant,
    expand,
    parse_games,
    parse_seeds,
    parse_variant,
    validate,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bbf-sweep", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--gin_files", nargs="+", help="gin config files of every run, in order")
    p.add_argument("--gin_bindings", nargs="*", default=[], help="bindings of every run")
    p.add_argument("--games", nargs="+",
                   help="game sets (atari26, atari55) and/or game names, e.g. Pong Breakout")
    p.add_argument("--seeds", help="seeds, e.g. 0-9, 0,3,5 or 0-2,7")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=BINDINGS",
                   help="a named variant: its gin bindings separated by ';' (repeatable; "
                        "default: one variant named 'default')")
    p.add_argument("--base_dir", type=pathlib.Path, help="sweep directory")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time (default: the number of --devices, else 1)")
    p.add_argument("--devices", help="GPU indices, e.g. 0,1,2,3: each run is pinned to the "
                                     "least busy one through CUDA_VISIBLE_DEVICES")
    p.add_argument("--slurm", action="store_true",
                   help="write a SLURM job-array script and submit it with sbatch")
    p.add_argument("--slurm_opts", default="",
                   help="sbatch options as #SBATCH lines of the script, written with '=' as their "
                        "value starts with '-': --slurm_opts=\"--gres=gpu:1 --time=12:00:00\"")
    p.add_argument("--slurm_tasks", type=int, default=None,
                   help=f"array tasks (default: one per run, at most {slurm.MAX_TASKS})")
    p.add_argument("--dry_run", action="store_true",
                   help="with --slurm: write and print the script, do not submit it")
    p.add_argument("--status", type=pathlib.Path, metavar="BASE_DIR",
                   help="print the progress of the sweep in BASE_DIR and exit")
    p.add_argument("--array_task", action="store_true",
                   help="run this SLURM array task's share of the sweep in --base_dir")
    return p


def _status(base_dir: pathlib.Path) -> int:
    from bbf_jax.sweep import status as status_lib

    sweep = manifest.load(base_dir)
    for run in sweep.runs:
        run_dir = base_dir / run.rel_dir
        st = status_lib.run_status(run_dir)
        if st.kind == "failed":
            for line in executor.failure_lines(run_dir, st.state):
                print(line)
    print(executor.summary(sweep))
    return 0


def _array_task(base_dir: pathlib.Path | None) -> int:
    if base_dir is None:
        raise SweepError("--array_task needs --base_dir")
    sweep = manifest.load(base_dir)
    task, count, runs = executor.array_task_runs(sweep)
    print(f"array task {task} of {count}: runs {', '.join(str(r.index) for r in runs)}")
    failed = executor.execute(sweep, runs)
    print(executor.summary(sweep))
    return 1 if failed else 0


def _run(args) -> int:
    missing = [f"--{k}" for k in ("gin_files", "games", "seeds", "base_dir")
               if getattr(args, k) is None]
    if missing:
        raise SweepError(f"missing {', '.join(missing)}")
    if args.dry_run and not args.slurm:
        raise SweepError("--dry_run goes with --slurm")
    if not args.slurm and (args.slurm_opts or args.slurm_tasks is not None):
        raise SweepError("--slurm_opts and --slurm_tasks go with --slurm")
    if args.slurm and (args.jobs is not None or args.devices):
        raise SweepError("--jobs and --devices are for local runs; with --slurm, ask SLURM "
                         "for resources through --slurm_opts")
    for f in args.gin_files:
        if not pathlib.Path(f).is_file():
            raise SweepError(f"gin file not found: {f}")
    games, seeds = parse_games(args.games), parse_seeds(args.seeds)
    variants = tuple(parse_variant(v) for v in args.variant) or (Variant(DEFAULT_VARIANT, ()),)
    runs = expand(games, seeds, variants, args.gin_bindings)
    sweep = manifest.Sweep(
        base_dir=args.base_dir,
        gin_files=tuple(str(pathlib.Path(f).resolve()) for f in args.gin_files),
        gin_bindings=tuple(args.gin_bindings), variants=variants, games=games, seeds=seeds)
    validate(sweep.gin_files, sweep.gin_bindings, sweep.variants, games[0])
    if args.slurm:
        text = slurm.script(sweep, args.slurm_tasks or min(len(runs), slurm.MAX_TASKS),
                            slurm.sbatch_options(args.slurm_opts))
        manifest.create_or_check(sweep)
        path = slurm.write(sweep, text)
        if args.dry_run:
            print(text, end="")
            print(f"wrote {path} (not submitted)")
            return 0
        print(slurm.submit(path))
        print(f"submitted {path}; progress: bbf-sweep --status {sweep.base_dir}")
        return 0
    devices = executor.parse_devices(args.devices) if args.devices else None
    jobs = args.jobs if args.jobs is not None else len(devices or [1])
    if manifest.create_or_check(sweep):
        print(f"wrote {sweep.base_dir / manifest.MANIFEST}")
    failed = executor.execute(sweep, runs, jobs=jobs, devices=devices)
    print(executor.summary(sweep, jobs))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.status is not None:
            return _status(args.status)
        if args.array_task:
            return _array_task(args.base_dir)
        return _run(args)
    except SweepError as e:
        print(f"bbf-sweep: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
