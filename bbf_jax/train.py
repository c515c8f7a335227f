"""``bbf-train``: train and evaluate BBF on an Atari 100k game from gin files.

  bbf-train --gin_files gin_configs/BBF.gin --base_dir runs/chopper_s0 --seed 0 \\
      [--gin_bindings "EnvConfig.game = 'Pong'" ...]

Also ``python -m bbf_jax.train``. ``--seed`` is required: every run of a sweep must say
which seed it is (``RunConfig.seed`` in gin files is overridden). Re-running with the
same ``--base_dir`` resumes from its latest checkpoint (``--resume_from STEP`` or
``--resume_from latest_valid`` choose another). Writes ``config.gin`` (the
operative gin config), ``config.json``, ``train_log.csv``, ``episodes.csv``, TensorBoard
events under ``tb/``, checkpoints under ``checkpoints/`` and, at the end, ``eval.json``
(with the verdict, also printed) and ``curves.png``. Compiled programs are cached on disk
(``bbf_jax.caches``: ``$BBF_JAX_COMPILATION_CACHE`` moves the cache or turns it off).
A multi-process job (``--coordinator_address``) shares one ``--base_dir``: all processes
write the checkpoints, process 0 everything else. ``--seeds 0 1 2 3`` instead of
``--seed`` trains those seeds' runs together in this process
(:mod:`bbf_jax.seed_group`), seed ``s`` writing ``base_dir/seed_<s>/`` as the single run
of seed ``s`` would.

Exit status: 0 done; 2 bad input (configuration, paths, an unusable checkpoint), with one
error line; 3 a non-finite loss or gradient norm with ``RunConfig.on_nonfinite = 'stop'``
(diagnostics in ``base_dir/nonfinite/``); 75 (``EX_TEMPFAIL``) stopped by SIGTERM or
SIGINT after the current agent step, with a checkpoint written: rerun the same command
to resume.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pathlib
import signal
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bbf-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--gin_files", nargs="+", required=True, help="gin config files, in order")
    p.add_argument("--gin_bindings", nargs="*", default=[],
                   help="extra bindings, e.g. \"EnvConfig.game = 'Pong'\"")
    p.add_argument("--base_dir", required=True, help="output directory (resumed if it exists)")
    seeds = p.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--seed", type=int,
                       help="the run seed in [0, 2**32) (sets RunConfig.seed)")
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                       help="several seeds trained together in this process, one run each "
                            "in base_dir/seed_<SEED> (sets RunConfig.seeds)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.add_argument("--resume_from", type=_resume_from, default=None, metavar="STEP|latest_valid",
                   help="resume from this checkpoint step, or from the newest one that can be "
                        "read (latest_valid); default: the newest. Newer checkpoints are "
                        "moved to base_dir/checkpoints_discarded")
    p.add_argument("--coordinator_address", default=None,
                   help="host:port of process 0, to join a multi-process (multi-host) job")
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--process_id", type=int, default=0)
    return p


def _resume_from(text: str) -> int | str:
    if text == "latest_valid":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a step (an integer >= 0) or 'latest_valid', "
                                     f"got {text!r}")


def _fail(message: str) -> int:
    print(f"bbf-train: error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds is not None and args.coordinator_address:
        return _fail("--seeds with --coordinator_address is not supported: a group of seeds "
                     "runs in one process (RunConfig.num_devices splits every minibatch over "
                     "its devices)")
    from bbf_jax import parallel

    # Must precede every other JAX call.
    parallel.maybe_initialize_distributed(
        args.coordinator_address, args.num_processes, args.process_id
    )
    import jax

    from bbf_jax import agents, caches, gin_utils
    from bbf_jax.atari_games import canonical_game_name
    from bbf_jax.checkpoint import CheckpointError
    from bbf_jax.seeds import RunSeeds

    caches.enable_compilation_cache()  # before the first compilation
    if args.seeds is not None:
        bindings = [*args.gin_bindings, f"RunConfig.seeds = ({', '.join(map(str, args.seeds))},)"]
    else:  # --seed overrides the gin files' RunConfig.seeds too
        bindings = [*args.gin_bindings, f"RunConfig.seed = {args.seed}", "RunConfig.seeds = ()"]
    primary = jax.process_index() == 0
    base_dir = pathlib.Path(args.base_dir)
    if base_dir.exists() and not base_dir.is_dir():
        return _fail(f"--base_dir {base_dir} exists and is not a directory")
    try:
        cfg = gin_utils.parse(args.gin_files, bindings)
        if agents.agent_name(cfg) in OWN_RUNNERS:
            return _train_own_runner(args, bindings, cfg, base_dir)
        agents.derive(cfg)
        canonical_game_name(cfg.env.game)
        for seed in cfg.run.seeds or (cfg.run.seed,):
            RunSeeds(seed)
        runs = _run_configs(args.gin_files, bindings, cfg, base_dir)
    except ValueError as e:  # ConfigError is a ValueError
        return _fail(str(e))
    try:
        base_dir.mkdir(parents=True, exist_ok=True)
        probe = base_dir / f".write_test{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        return _fail(f"cannot write to --base_dir {base_dir}: {e.strerror}")

    from bbf_jax.faults import EXIT_NONFINITE, EXIT_PREEMPTED, NonFiniteStop, Preempted
    from bbf_jax.runner import Runner
    from bbf_jax.seed_group import SeedGroup

    try:
        memory_line = _check_memory(cfg)
    except ValueError as e:
        return _fail(str(e))
    if primary:
        _write_run_configs(runs, args.gin_files, num_processes=jax.process_count())
    try:
        kind = SeedGroup if cfg.run.seeds else Runner
        runner = kind(cfg, base_dir, config_files=args.gin_files, progress=not args.no_progress,
                      resume_from=args.resume_from)
        if primary:
            print(runner.describe(), flush=True)
            print(memory_line, flush=True)
        with _stop_on_signals(runner):
            result = runner.run()
    except Preempted as e:
        print(f"bbf-train: stopped by {signal.Signals(e.signum).name} after agent step "
              f"{e.agent_step} with a checkpoint; rerun the same command to resume "
              f"(exit status {EXIT_PREEMPTED})", flush=True)
        return EXIT_PREEMPTED
    except NonFiniteStop as e:
        print(f"bbf-train: stopped: {e}; diagnostics and the last good checkpoint in "
              f"{e.directory} (exit status {EXIT_NONFINITE})", file=sys.stderr, flush=True)
        return EXIT_NONFINITE
    except CheckpointError as e:
        return _fail(str(e))
    except ValueError as e:
        return _fail(str(e))
    if result is None:
        print(f"bbf-train: process {jax.process_index()} done (process 0 evaluates)")
        return 0
    from bbf_jax.report.verdict import describe

    results = result if cfg.run.seeds else [result]
    for (run_dir, *_), one in zip(runs, results, strict=True):
        print("\n".join(describe(one)))
        print(f"results: {run_dir / 'eval.json'}, learning curves: {run_dir / 'curves.png'}")
    return 0


# Agents that are no Atari replay agents bring their own runner module, with
# make_runner(cfg, base_dir, progress) (its runner writes each seed's directory as
# _run_configs names it) and summary(result).
OWN_RUNNERS = {"brc": "bbf_jax.agents.brc.runner", "ppo": "bbf_jax.agents.ppo.runner",
               "sac": "bbf_jax.agents.sac.runner"}


def _train_own_runner(args, bindings, cfg, base_dir) -> int:
    """``bbf-train`` for an agent with its own runner (:data:`OWN_RUNNERS`): one process,
    no checkpoints, so no resuming."""
    import importlib

    import jax

    from bbf_jax import agents

    name = agents.agent_name(cfg)
    module = importlib.import_module(OWN_RUNNERS[name])
    if args.resume_from is not None or args.coordinator_address:
        return _fail(f"agent '{name}' runs in one process and writes no checkpoints: "
                     "--resume_from and --coordinator_address do not apply")
    runs = _run_configs(args.gin_files, bindings, cfg, base_dir)
    try:
        runner = module.make_runner(cfg, base_dir, progress=not args.no_progress)
    except (ValueError, ImportError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"cannot write to --base_dir {base_dir}: {e.strerror}")
    _write_run_configs(runs, args.gin_files, jax_backend=jax.default_backend())
    print(runner.describe(), flush=True)
    results = runner.run()
    for (run_dir, *_), result in zip(runs, results, strict=True):
        print(module.summary(result))
        print(f"results: {run_dir / 'eval.json'}, learning curves: {run_dir / 'curves.png'}")
    return 0


def _write_run_configs(runs, gin_files, **extra) -> None:
    """``config.gin`` and ``config.json`` (agent, gin files and bindings, ``extra``, every
    config dataclass) in each run directory of ``runs`` (:func:`_run_configs`)."""
    from bbf_jax import agents

    for run_dir, run_bindings, operative, run_cfg in runs:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.gin").write_text(operative)
        (run_dir / "config.json").write_text(json.dumps(
            {"agent_name": agents.agent_name(run_cfg), "gin_files": gin_files,
             "gin_bindings": run_bindings, **extra,
             **{k: dataclasses.asdict(v) for k, v in vars(run_cfg).items()}},
            indent=1, default=list))


def _run_configs(gin_files, bindings, cfg, base_dir) -> list:
    """``(run directory, gin bindings, operative gin config, config)`` of each run: the
    one run, or one per seed of ``cfg.run.seeds``, written as the single run of that seed
    writes them."""
    from bbf_jax import gin_utils
    from bbf_jax.seed_group import member_config, seed_dir

    if not cfg.run.seeds:
        return [(base_dir, bindings, gin_utils.operative_config(), cfg)]
    runs = []
    for seed in cfg.run.seeds:
        single = [*bindings[:-1], f"RunConfig.seed = {seed}", "RunConfig.seeds = ()"]
        gin_utils.parse(gin_files, single)
        runs.append((seed_dir(base_dir, seed), single, gin_utils.operative_config(),
                     member_config(cfg, seed)))
    return runs


def _check_memory(cfg) -> str:
    """The start-up memory line; ValueError (with the numbers) if the replay and the model
    would not fit in the host memory available now."""
    import jax

    from bbf_jax import agents, memory
    from bbf_jax.envs import AtariEnv

    num_actions = AtariEnv(cfg.env.game, cfg.env).num_actions
    learner = agents.make_agent(cfg, num_actions).learner
    model = memory.tree_bytes(jax.eval_shape(lambda: learner.init(cfg.run.seed)))
    devices = jax.local_device_count()
    copies = memory.model_host_copies(min(cfg.run.num_devices or devices, devices))
    memory.check_fits(cfg, model, copies, *memory.available_bytes())
    return memory.describe(cfg, model, copies)


@contextlib.contextmanager
def _stop_on_signals(runner):
    """SIGTERM and SIGINT ask ``runner`` to stop after its current agent step; a second
    signal ends the process at once (the newest complete checkpoint stays loadable)."""

    def handler(signum, frame):
        runner.stop_signal = signum
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
