"""Where bbf_jax stands on this device, in one command: train step and a real run.

  python benchmarks/device_check.py              # GPU/TPU: full BBF.gin
  python benchmarks/device_check.py --cpu-smoke  # the same code path, tiny (CI, ~1-2 min on CPU)

First checks that every package bbf_jax needs can be imported, and names all missing ones
in one line (exit status 2). Then, on JAX's default device:

(a) Train step. BBF.gin's learner (IMPALA width 4, hidden 2048; Pong's 6 actions, so that
    the G = 2 single-seed program is the one (b) runs), B = 32, G = 1, 2, 8 gradient steps
    per dispatch (one ``lax.scan``), compute dtype float32, bfloat16, float16, and
    1 seed (the runner's jitted step, ``parallel.make_parallel_train_steps`` on one
    device) or 8 seeds (a :class:`~bbf_jax.seed_group.SeedGroup`'s jitted step,
    ``parallel.make_group_train_steps`` with 'vmap': ``Learner.train_steps`` vmapped over
    stacked train states, one random replay group per seed). Each program is compiled
    ahead of time (``compile_s``), run once, then ``repeats`` dispatches are timed, each
    ended by ``block_until_ready`` (median ``dispatch_ms``). ``step_ms`` = dispatch / G,
    the wall time of one gradient step of all seeds together. ``gflop_per_step`` is
    XLA's cost analysis of the compiled program (``lower(...).compile().cost_analysis()``)
    per seed: the analysis counts the scan's body once (as the lowered program's count
    does; a row whose two counts differ by over 25% says so in its status);
    ``tflop_per_s`` = gflop_per_step * seeds * G / dispatch.
(b) Real run. 3,000 agent steps of BBF.gin on Pong with ``min_replay_history`` 1,000
    through the real :class:`~bbf_jax.runner.Runner` (1 seed) or
    :class:`~bbf_jax.seed_group.SeedGroup` (8 seeds, ``RunConfig.seeds`` 0..7, default
    ``seed_batching`` 'vmap': 8 seeds' steps per agent step in one process): emulators,
    replays, prefetchers, act and train dispatches; no logs, checkpoints or evaluation.
    The steps up to ``min_replay_history`` + 5 (compilation, first dispatches) are timed
    as a whole; the rest by ``agent_step_overhead.time_agent_steps``, where an agent step
    is one of every seed: ``agent_steps_per_s`` (agent steps of the run, or group),
    ``all_seeds_steps_per_s`` (that times the seeds: env steps of all seeds),
    ``host_ms_per_step`` (its "host total" per agent step: wall time less the waits for
    the device) and ``device_busy``, an estimate: the timed steps' train dispatches and
    acts (of all seeds), each at the median time it takes alone afterwards (dispatch to
    ``block_until_ready``, launch included, so it can exceed 1 by that), over their wall
    time.
(a') BTR's train step. BTR.gin's learner (paper sizes, 18 actions), B = 256, G = 1,
    float32, 1 seed, timed as ``benchmarks/btr_train_step.py`` does (``part`` =
    ``btr_train_step``).
(c) Output. A summary table on stdout, the lines ``device_check_*`` with the headline
    numbers, and one CSV row per configuration appended to
    ``benchmarks/results/device_check.csv`` (date, commit, device, versions, load).

Compiled programs go to bbf-train's persistent compilation cache (``bbf_jax.caches``), so
that (b) reuses (a)'s program and a second invocation compiles nothing;
``compile_cached`` says whether a program came from that cache
(``BBF_JAX_COMPILATION_CACHE=off`` times every compilation).

``--cpu-smoke``: smoke.gin (IMPALA width 1/4, hidden 64, B = 4, G = 2; Breakout),
float32, 1 and 2 seeds, one timed dispatch; BTR's step at btr_smoke.gin's sizes (B = 8);
the real runs (1 seed, a group of 2) with
``min_replay_history`` 30, one warm-up step that trains and 2 timed agent steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "device_check.csv"
# (import name, distribution name) of everything bbf_jax imports.
REQUIRED = (
    ("jax", "jax"), ("flax", "flax"), ("optax", "optax"), ("chex", "chex"),
    ("numpy", "numpy"), ("gymnasium", "gymnasium"), ("ale_py", "ale-py"),
    ("gin", "gin-config"), ("orbax.checkpoint", "orbax-checkpoint"),
    ("cv2", "opencv-python-headless"), ("tqdm", "tqdm"), ("tensorboardX", "tensorboardX"),
    ("matplotlib", "matplotlib"), ("scipy", "scipy"), ("bbf_jax", "bbf_jax"),
)
VERSIONS = ("jax", "jaxlib", "flax", "optax", "ale-py")
FIELDS = ["date", "commit", "device", "num_devices", "python", *VERSIONS, "mode", "part",
          "game", "params", "dtype", "G", "batch_size", "seeds", "status", "compile_s",
          "compile_cached", "dispatch_ms", "step_ms", "gflop_per_step", "tflop_per_s",
          "agent_steps", "agent_steps_per_s", "all_seeds_steps_per_s", "host_ms_per_step",
          "device_busy", "train_dispatch_ms", "act_ms", "warm_s", "total_s", "load_avg_1min"]


@dataclasses.dataclass(frozen=True)
class Mode:
    """What one invocation measures."""

    name: str
    gin_file: str  # in gin_configs/
    btr_gin_file: str  # (a')
    bindings: tuple[str, ...]
    groups: tuple[int, ...]
    dtypes: tuple[str, ...]
    seeds: tuple[int, ...]  # seed counts, for (a) and (b)
    repeats: int
    agent_steps: int
    min_replay_history: int
    warm_steps: int  # (b): agent steps after min_replay_history before the timing starts


FULL = Mode("full", "BBF.gin", "BTR.gin", ("EnvConfig.game = 'Pong'",), (1, 2, 8),
            ("float32", "bfloat16", "float16"), (1, 8), repeats=10, agent_steps=3000,
            min_replay_history=1000, warm_steps=5)
# smoke.gin's programs are those of the other smoke tests (shared compilation cache); its
# first reset is at agent step 42. Step 31 is the first to train (compiled or loaded).
SMOKE = Mode("cpu-smoke", "smoke.gin", "btr_smoke.gin", (), (2,), ("float32",), (1, 2), repeats=1,
             agent_steps=34, min_replay_history=30, warm_steps=2)


def missing_packages(required=REQUIRED) -> list[str]:
    """Distribution names of the required modules that cannot be found."""
    missing = []
    for module, dist in required:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a missing parent package
            found = False
        if not found:
            missing.append(dist)
    return missing


def config(mode: Mode, seed: int = 0):
    """The mode's gin file and bindings, as an ExperimentConfig."""
    from bbf_jax import gin_utils

    return gin_utils.parse(
        [str(ROOT / "gin_configs" / mode.gin_file)],
        [*mode.bindings,
         f"AgentConfig.min_replay_history = {mode.min_replay_history}",
         f"RunConfig.num_train_steps = {mode.agent_steps}", f"RunConfig.seed = {seed}"],
    )


# ------------------------------------------------------------------ (a) train step
class CacheHits:
    """Counts programs loaded from JAX's persistent compilation cache (a listener of
    ``jax.monitoring`` events)."""

    EVENT = "/jax/compilation_cache/cache_hits"

    def __init__(self):
        import jax

        self.count = 0
        jax.monitoring.register_event_listener(self)

    def __call__(self, event: str, **kwargs) -> None:
        if event == self.EVENT:
            self.count += 1


def measure_train_step(cfg, num_actions: int, initial: list, dtype: str, group: int,
                       repeats: int, cache_hits: CacheHits) -> dict:
    """Compiles and times one train-step program for ``len(initial)`` seeds, starting
    from those initial train states (any learner's: only the parameters and keys are
    used); returns the numbers of its CSV row."""
    import jax
    import jax.numpy as jnp
    from train_step import random_sample, time_dispatches

    from bbf_jax import parallel
    from bbf_jax.agents.bbf.learner import make_learner
    from bbf_jax.networks import param_count

    agent = dataclasses.replace(cfg.agent, batches_to_group=group)
    learner = make_learner(agent, dataclasses.replace(cfg.network, compute_dtype=dtype),
                           num_actions)
    b, t, seeds = agent.batch_size, agent.jumps + 1, len(initial)
    hparams = learner.default_hparams()
    # Copies: the step donates its state off CPU.
    states = [learner.state_from_params(*jax.tree.map(jnp.array, (s.online, s.rng, s.act_rng)))
              for s in initial]
    params = param_count(states[0].online)
    # The programs (b) runs: a Runner's step (1 seed) or a SeedGroup's (default 'vmap').
    mesh = parallel.make_mesh(1)
    put = parallel.make_put_fn(mesh, group, b)
    if seeds == 1:
        step = parallel.make_parallel_train_steps(learner, mesh)
        state = parallel.replicate(states[0], mesh)
        batch = put(random_sample(group * b, t, 0, num_actions))
    else:
        step = parallel.make_group_train_steps(learner, mesh)
        state = parallel.replicate(jax.tree.map(lambda *x: jnp.stack(x), *states), mesh)
        batch = tuple(put(random_sample(group * b, t, s, num_actions)) for s in range(seeds))
    hparams = parallel.replicate(hparams, mesh)
    del states

    lowered = step.lower(state, batch, hparams)
    hits = cache_hits.count
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    cached = "yes" if cache_hits.count > hits else "no"
    flops = float(compiled.cost_analysis().get("flops", float("nan")))
    # Both analyses count a loop body once; the lowered program's count (before XLA's
    # optimisations) checks the compiled one (a backend that counts differently, e.g. a
    # loop's every trip, is reported in the row's status rather than stopping the run).
    lowered_flops = float(lowered.cost_analysis().get("flops", float("nan")))
    status = "ok" if 0.8 < flops / lowered_flops < 1.25 else (
        f"check gflop: the lowered program counts {lowered_flops / seeds / 1e9:.2f} per seed")
    gflop = flops / seeds / 1e9

    _, dispatch_ms = time_dispatches(compiled, state, batch, hparams, repeats,
                                     f"{dtype}, G={group}, {seeds} seeds")
    return dict(part="train_step", params=params, dtype=dtype, G=group, batch_size=b,
                seeds=seeds, status=status, compile_s=f"{compile_s:.2f}", compile_cached=cached,
                dispatch_ms=f"{dispatch_ms:.2f}", step_ms=f"{dispatch_ms / group:.3f}",
                gflop_per_step=f"{gflop:.4g}",  # 4 significant digits: tiny configs too
                tflop_per_s=f"{gflop * seeds * group / dispatch_ms:.4f}")


def btr_train_step(mode: Mode, common: dict) -> dict:
    """(a'): BTR's train step of the mode's BTR config, G = 1, 1 seed; its CSV row."""
    from btr_train_step import measure

    from bbf_jax import gin_utils

    cfg = gin_utils.parse([str(ROOT / "gin_configs" / mode.btr_gin_file)])
    m = measure(cfg, 1, mode.repeats)
    row = dict(common, part="btr_train_step", params=m["params"], dtype="float32", G=1,
               batch_size=m["batch_size"], seeds=1, status="ok", compile_s=m["compile_s"],
               step_ms=m["step_ms"], gflop_per_step=m["gflop_per_step"],
               load_avg_1min=m["load_avg_1min"])
    print(f"  BTR ({mode.btr_gin_file}): {m['step_ms']} ms per gradient step at B = "
          f"{m['batch_size']}, {m['gflop_per_step']} GFLOP, {m['params']:,} parameters",
          flush=True)
    return row


# ------------------------------------------------------------------ (b) real run
def real_run(cfg, seeds: int, repeats: int, warm_steps: int) -> dict:
    """``cfg.run.num_train_steps`` agent steps of a real Runner (``seeds`` = 1) or of a
    SeedGroup of seeds 0 .. ``seeds`` - 1 (module docstring, (b)), timed after
    ``min_replay_history`` + ``warm_steps`` of them; returns the numbers of its CSV row."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from agent_step_overhead import median_ms, time_agent_steps

    from bbf_jax.runner import Runner
    from bbf_jax.seed_group import SeedGroup

    with tempfile.TemporaryDirectory(prefix="bbf_jax-device-check-") as tmp:
        t0 = time.perf_counter()
        if seeds == 1:
            run = Runner(cfg, tmp, progress=False)
            members = [run]
        else:
            run = SeedGroup(dataclasses.replace(cfg, run=dataclasses.replace(
                cfg.run, seeds=tuple(range(seeds)))), tmp, progress=False)
            members = run.members
        for m in members:
            m._start_episodes()
        while run.agent_step < cfg.agent.min_replay_history + warm_steps:
            run.step()
        warm_s = time.perf_counter() - t0
        timed = cfg.run.num_train_steps - run.agent_step
        rows, timers = time_agent_steps(run, timed)
        total_s = time.perf_counter() - t0
        ms = dict(rows)

        # Device time of one train dispatch and one act (of every seed), each alone (the
        # state is threaded through: it is donated off CPU).
        batches = tuple(m.put_batch(m.replay.sample(m.derived.group_size, *m._schedule()))[0]
                        for m in members)
        batch = batches[0] if seeds == 1 else batches
        frames = members[0].stack.state if seeds == 1 else np.stack(
            [m.stack.state for m in members])
        state = run.state

        def train():
            nonlocal state
            state, metrics = run.train_fn(state, batch, run.hparams)
            jax.block_until_ready((state, metrics))

        params, key, eps = run._acting_params(), run.act_rng, jnp.float32(0.0)
        train_ms = median_ms(train, repeats)
        act_ms = median_ms(lambda: jax.block_until_ready(
            run._select(params, frames, key, eps)), repeats)
        for m in members:
            m.pipeline.close()
    busy = (timers.calls["train dispatch"] * train_ms
            + timers.calls["act dispatch"] * act_ms) / (timed * ms["agent step (wall)"])
    return dict(part="real_run", seeds=seeds, status="ok", agent_steps=run.agent_step,
                dtype=cfg.network.compute_dtype, G=run.derived.batches_to_group,
                batch_size=cfg.agent.batch_size,
                agent_steps_per_s=f"{1e3 / ms['agent step (wall)']:.2f}",
                all_seeds_steps_per_s=f"{seeds * 1e3 / ms['agent step (wall)']:.2f}",
                host_ms_per_step=f"{ms['host total']:.3f}", device_busy=f"{busy:.3f}",
                train_dispatch_ms=f"{train_ms:.2f}", act_ms=f"{act_ms:.3f}",
                warm_s=f"{warm_s:.1f}", total_s=f"{total_s:.1f}")


# ------------------------------------------------------------------ (c) output
def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in VERSIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = ""
    return out


def print_table(rows: list[dict], columns: tuple[str, ...]) -> None:
    print("  ".join(f"{c:>17}" for c in columns))
    for row in rows:
        print("  ".join(f"{row.get(c, '')!s:>17}" for c in columns), flush=True)


TRAIN_COLUMNS = ("dtype", "G", "seeds", "compile_s", "compile_cached", "dispatch_ms", "step_ms",
                 "gflop_per_step", "tflop_per_s")
RUN_COLUMNS = ("seeds", "agent_steps", "agent_steps_per_s", "all_seeds_steps_per_s",
               "host_ms_per_step",
               "device_busy", "train_dispatch_ms", "act_ms", "warm_s", "total_s")


def headlines(train_rows: list[dict], run_rows: list[dict]) -> list[str]:
    """The ``device_check_*`` lines: bfloat16 ms per gradient step (G = 2, 1 seed), the
    wall time of the most seeds over that of 1 seed (bfloat16, G = 2, else the first
    dtype and G measured), and each real run's agent steps per second (of the run or
    group, and of all its seeds)."""
    lines = []
    btr = [r for r in train_rows if r["part"] == "btr_train_step"]
    train_rows = [r for r in train_rows if r["part"] == "train_step"]
    by = {(r["dtype"], r["G"], r["seeds"]): float(r["step_ms"]) for r in train_rows}
    dtype, group = ("bfloat16", 2) if ("bfloat16", 2, 1) in by else (
        train_rows[0]["dtype"], train_rows[0]["G"])
    one = by[(dtype, group, 1)]
    lines.append(f"device_check_step_ms[{dtype},G={group},1 seed]: {one:.3f}")
    most = max(s for d, g, s in by if (d, g) == (dtype, group))
    lines.append(f"device_check_seeds_wall_ratio[{most} seeds/1 seed]: "
                 f"{by[(dtype, group, most)] / one:.2f}")
    for r in btr:
        lines.append(f"device_check_btr_step_ms[B={r['batch_size']}]: {r['step_ms']}")
    for r in run_rows:
        lines.append(f"device_check_agent_steps_per_s[{r['seeds']} seeds]: "
                     f"{r['agent_steps_per_s']} ({r['all_seeds_steps_per_s']} of all seeds)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny network and few steps, the same code path (CI)")
    parser.add_argument("--csv", default=str(RESULTS), help="append the rows to this CSV")
    args = parser.parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"device_check: missing Python packages: {', '.join(missing)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    mode = SMOKE if args.cpu_smoke else FULL
    import jax
    from machine import append_csv, commit, device_name

    from bbf_jax import caches
    from bbf_jax.agents.bbf.learner import make_learner
    from bbf_jax.envs import AtariEnv

    cache = caches.enable_compilation_cache()  # as bbf-train: (b) reuses (a)'s programs
    cache_hits = CacheHits()
    cfg = config(mode)
    num_actions = AtariEnv(cfg.env.game, cfg.env).num_actions
    # One initialisation per seed (the run's learner, so that (b) reuses its program).
    learner = make_learner(cfg.agent, cfg.network, num_actions)
    initial = [learner.init(s) for s in range(max(mode.seeds))]
    common = dict(date=datetime.date.today().isoformat(), commit=commit(),
                  device=device_name(), num_devices=jax.device_count(), **versions(),
                  mode=mode.name, game=cfg.env.game)
    print(f"device_check ({mode.name}): {common['device']}, jax {jax.__version__}, "
          f"{jax.default_backend()}, commit {common['commit']}; persistent compilation "
          f"cache: {cache or 'off'}", flush=True)

    print("(a) train step, ms per dispatch of G gradient steps of every seed; "
          "gflop_per_step per seed", flush=True)
    print_table([], TRAIN_COLUMNS)
    train_rows = []
    for dtype in mode.dtypes:
        for group in mode.groups:
            for seeds in mode.seeds:
                row = measure_train_step(cfg, num_actions, initial[:seeds], dtype, group,
                                         mode.repeats, cache_hits)
                row.update(common, load_avg_1min=f"{os.getloadavg()[0]:.2f}")
                train_rows.append(row)
                print("  ".join(f"{row[c]!s:>17}" for c in TRAIN_COLUMNS), flush=True)
                if row["status"] != "ok":
                    print(f"{'':>17}  {row['status']}", flush=True)

    del initial
    train_rows.append(btr_train_step(mode, common))

    print(f"(b) real run: {cfg.run.num_train_steps:,} agent steps of {cfg.env.game}, "
          f"min_replay_history {cfg.agent.min_replay_history:,}", flush=True)
    run_rows = []
    for seeds in mode.seeds:
        row = real_run(cfg, seeds, mode.repeats, mode.warm_steps)
        row.update(common, load_avg_1min=f"{os.getloadavg()[0]:.2f}")
        run_rows.append(row)
    print_table(run_rows, RUN_COLUMNS)
    append_csv(pathlib.Path(args.csv), FIELDS, train_rows + run_rows)
    print("\n".join(headlines(train_rows, run_rows)))
    print(f"device_check_total_s: {time.perf_counter() - started:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
