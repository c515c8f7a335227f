"""Train-step throughput: the jitted, data-parallel grouped update (``bbf_jax.parallel``).

For each network, compute dtype, group size G (gradient steps per dispatch, one
``lax.scan``) and device count D, builds ``make_parallel_train_steps`` on a mesh of D
devices, compiles it ahead of time (compile time is reported, never timed with the
steps), then times ``repeats`` dispatches on a fixed random replay group placed by the
prefetcher's ``put_fn``, each ended by ``block_until_ready``. Batch: 32 subsequences of
6 stacks per gradient step (BBF). Networks:

  full   BBF.gin: IMPALA width 4, hidden 2048 (35 M parameters; ~550 GFLOP per step)
  small  IMPALA width 1/4, hidden 64 (the test-size network, same code path)

``gflop_per_step`` is XLA's cost analysis of one un-grouped gradient step (the scan's
body is counted once by the analysis of the grouped program, so that one is not used).
Prints a table; the last line is ``train_step_ms: <median ms per gradient step, full,
float32, G=2, 1 device>`` (``nan`` when that configuration was not run). Appends one
row per configuration to ``benchmarks/results/train_step.csv`` (device, JAX version,
commit, 1-minute load average).

  python benchmarks/train_step.py                          # full sweep
  python benchmarks/train_step.py --quick                  # CI: small network, ~1 min
  python benchmarks/train_step.py --networks full --groups 1 2 --dtypes float32 \\
      --devices 1 --repeats 3                              # full network on a CPU
  python benchmarks/train_step.py --host-devices 4 ...     # split a CPU into 4 devices
  python benchmarks/train_step.py --diagnostics ...        # also time the diagnostics

``--diagnostics`` also times one point of the plasticity diagnostics
(:class:`bbf_jax.diagnostics.Diagnostics`: the parameter snapshot before the dispatch,
then the jitted function on 256 held-out states and the transfer of its results) on
the same device, and its overhead at the default interval ``RunConfig.diagnostics_every``:
``diag_ms / (diagnostics_every * step_ms)``. One row per configuration goes to
``benchmarks/results/diagnostics.csv``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time

from machine import append_csv, commit, device_name

RESULTS = pathlib.Path(__file__).parent / "results" / "train_step.csv"
DIAG_RESULTS = RESULTS.parent / "diagnostics.csv"
DIAG_FIELDS = ["date", "commit", "device", "jax", "network", "params", "dtype", "G",
               "batch_size", "held_out", "repeats", "step_ms", "diag_compile_s", "diag_ms",
               "diagnostics_every", "overhead_pct", "load_avg_1min", "note"]
FIELDS = [
    "date",
    "commit",
    "device",
    "num_local_devices",
    "jax",
    "network",
    "params",
    "dtype",
    "G",
    "batch_size",
    "devices",
    "repeats",
    "compile_s",
    "dispatch_ms",
    "step_ms",
    "steps_per_s",
    "gflop_per_step",
    "gflop_per_s",
    "load_avg_1min",
    "note",
]
NETWORKS = {
    "full": dict(width_scale=4.0, hidden_dim=2048),
    "small": dict(width_scale=0.25, hidden_dim=64),
}
BATCH_SIZE, NUM_ACTIONS, SEED = 32, 18, 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--groups", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument(
        "--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"]
    )
    parser.add_argument(
        "--devices",
        nargs="+",
        type=int,
        help="device counts to try (default 1, 2, 4, ... up to all local)",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--quick", action="store_true", help="small network, G in {1, 2}, float32, 3 repeats"
    )
    parser.add_argument(
        "--host-devices", type=int, help="split the host CPU into this many JAX devices"
    )
    parser.add_argument("--csv", default=str(RESULTS), help="CSV to append to ('' for none)")
    parser.add_argument("--note", default="", help="free text stored in every CSV row")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also time the plasticity diagnostics (diagnostics.csv)")
    args = parser.parse_args(argv)
    if args.quick:
        args.networks, args.groups, args.dtypes, args.repeats = ["small"], [1, 2], ["float32"], 3
    if args.repeats < 1 or min(args.groups) < 1:
        parser.error("--repeats and --groups must be >= 1")
    return args


def random_sample(n: int, seq_len: int, seed: int = SEED, num_actions: int = NUM_ACTIONS):
    """A replay group of ``n`` random subsequences (the layout the replay returns)."""
    import numpy as np

    from bbf_jax.replay import ReplaySample

    rng = np.random.default_rng(seed)
    return ReplaySample(
        frames=rng.integers(0, 256, (n, seq_len + 7, 84, 84), dtype=np.uint8),
        stack_mask=np.ones((n, seq_len + 1, 4), bool),
        action=rng.integers(0, num_actions, (n, seq_len)).astype(np.int32),
        returns=rng.normal(size=n).astype(np.float32),
        discount=np.full(n, 0.997**3, np.float32),
        terminal=(rng.random(n) < 0.05).astype(np.float32),
        same_trajectory=np.ones((n, seq_len), np.float32),
        sampling_priority=rng.uniform(0.5, 2.0, n).astype(np.float32),
        indices=np.arange(n),
    )


def measure_diagnostics(learner, state, group: int, repeats: int) -> dict:
    """Times one diagnostics point (snapshot + jitted function + transfer) on the state's
    first device; returns compile seconds and the median milliseconds."""
    import jax
    import numpy as np

    from bbf_jax import parallel
    from bbf_jax.diagnostics import HELD_OUT_SIZE, Diagnostics

    rng = np.random.default_rng(SEED)
    diag = Diagnostics(learner.network, 1, group, np.random.SeedSequence(SEED))
    # The held-out batch is set directly: its draw from a replay happens once per run.
    diag.states = rng.integers(0, 256, (HELD_OUT_SIZE, 84, 84, 4), dtype=np.uint8)
    diag.actions = rng.integers(0, NUM_ACTIONS, HELD_OUT_SIZE).astype(np.int32)
    local = parallel.local_replica(state)

    def point():
        before = diag.snapshot(local.online)
        return diag.run(local.online, local.target, before, replay=None)

    t0 = time.perf_counter()
    point()  # compiles; the first point has no churn to compare with
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        metrics = point()
        times.append(time.perf_counter() - t0)
    if not all(np.isfinite(v) for v in metrics.values()):
        raise FloatingPointError("non-finite diagnostics")
    jax.block_until_ready(local)
    return dict(diag_compile_s=compile_s, diag_ms=float(np.median(times)) * 1e3)


def time_dispatches(compiled, state, batch, hparams, repeats: int, what: str):
    """Median wall ms of ``repeats`` calls of a compiled train function after one warm-up
    call (allocations, caches), the state threaded through (it may be donated). Returns
    ``(state, ms)``; FloatingPointError naming ``what`` if the last loss is not finite."""
    import jax
    import numpy as np

    state, metrics = compiled(state, batch, hparams)
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch, hparams)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    if not np.all(np.isfinite(np.asarray(metrics["TotalLoss"]))):
        raise FloatingPointError(f"non-finite loss in {what}")
    return state, float(np.median(times)) * 1e3


def measure(network: str, dtype: str, group: int, devices: int, repeats: int,
            diagnostics: bool = False) -> dict:
    """Compiles and times one configuration; returns the numbers of one CSV row (and the
    diagnostics' timing under ``diag`` when asked)."""
    import jax

    from bbf_jax import parallel
    from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig
    from bbf_jax.agents.bbf.learner import make_learner
    from bbf_jax.networks import param_count

    agent = AgentConfig(batch_size=BATCH_SIZE, batches_to_group=group)
    learner = make_learner(
        agent, NetworkConfig(**NETWORKS[network], compute_dtype=dtype), NUM_ACTIONS
    )
    mesh = parallel.make_mesh(devices)
    # Eager init: XLA:CPU spends minutes optimising a jitted init of the full network.
    state = parallel.replicate(learner.init(SEED), mesh)
    params = param_count(state.online)
    put = parallel.make_put_fn(mesh, group, BATCH_SIZE)
    batch = put(random_sample(group * BATCH_SIZE, agent.jumps + 1))
    hparams = parallel.replicate(learner.default_hparams(), mesh)
    step = parallel.make_parallel_train_steps(learner, mesh)

    t0 = time.perf_counter()
    compiled = step.lower(state, batch, hparams).compile()
    compile_s = time.perf_counter() - t0
    # FLOPs of one gradient step, from the lowered single-step program (not compiled).
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), batch)
    cost = (
        jax.jit(learner.train_step)
        .lower(jax.eval_shape(lambda: state), one, hparams)
        .cost_analysis()
    )
    gflop = float(cost.get("flops", float("nan"))) / 1e9 if cost else float("nan")

    state, dispatch_ms = time_dispatches(compiled, state, batch, hparams, repeats,
                                         f"{network}/{dtype}/G={group}/D={devices}")
    step_ms = dispatch_ms / group
    diag = measure_diagnostics(learner, state, group, repeats) if diagnostics else None
    return dict(
        diag=diag,
        network=network,
        params=params,
        dtype=dtype,
        G=group,
        batch_size=BATCH_SIZE,
        devices=devices,
        repeats=repeats,
        compile_s=f"{compile_s:.1f}",
        dispatch_ms=f"{dispatch_ms:.1f}",
        step_ms=f"{step_ms:.1f}",
        steps_per_s=f"{1e3 / step_ms:.3f}",
        gflop_per_step=f"{gflop:.1f}",
        gflop_per_s=f"{gflop / step_ms * 1e3:.1f}",
        load_avg_1min=f"{os.getloadavg()[0]:.2f}",
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.host_devices:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.host_devices}"
        )
    import jax

    from bbf_jax.config import RunConfig
    from bbf_jax.diagnostics import HELD_OUT_SIZE

    local = jax.local_device_count()
    devices = args.devices or [d for d in (1, 2, 4, 8, 16) if d <= local]
    if max(devices) > local:
        raise SystemExit(f"--devices {max(devices)} > {local} local devices")
    device = device_name()
    common = dict(
        date=datetime.date.today().isoformat(),
        commit=commit(),
        device=device,
        num_local_devices=local,
        jax=jax.__version__,
        note=args.note,
    )
    print(f"device: {device}, {local} local devices, jax {jax.__version__}")
    header = (
        "network",
        "dtype",
        "G",
        "devices",
        "compile_s",
        "dispatch_ms",
        "step_ms",
        "steps_per_s",
        "gflop_per_step",
        "gflop_per_s",
    )
    print(" ".join(f"{h:>14}" for h in header), flush=True)
    rows, diag_rows, headline = [], [], float("nan")
    every = RunConfig().diagnostics_every
    for network in args.networks:
        for dtype in args.dtypes:
            for group in args.groups:
                for d in devices:
                    row = measure(network, dtype, group, d, args.repeats,
                                  args.diagnostics) | common
                    diag = row.pop("diag")
                    rows.append(row)
                    print(" ".join(f"{row[h]!s:>14}" for h in header), flush=True)
                    if diag is not None:
                        step_ms = float(row["step_ms"])
                        overhead = 100 * diag["diag_ms"] / (every * step_ms)
                        diag_rows.append({
                            **{k: row[k] for k in ("date", "commit", "device", "jax", "network",
                                                   "params", "dtype", "G", "batch_size",
                                                   "repeats", "step_ms", "load_avg_1min",
                                                   "note")},
                            "held_out": HELD_OUT_SIZE,
                            "diag_compile_s": f"{diag['diag_compile_s']:.1f}",
                            "diag_ms": f"{diag['diag_ms']:.1f}",
                            "diagnostics_every": every,
                            "overhead_pct": f"{overhead:.3f}",
                        })
                        print(f"{'':>14} diagnostics: {diag['diag_ms']:.1f} ms per point, "
                              f"{overhead:.3f}% of training at every {every} gradient steps",
                              flush=True)
                    if (network, dtype, group, d) == ("full", "float32", 2, 1):
                        headline = float(row["step_ms"])
    if args.csv:
        append_csv(pathlib.Path(args.csv), FIELDS, rows)
        if diag_rows:
            append_csv(pathlib.Path(args.csv).parent / DIAG_RESULTS.name, DIAG_FIELDS,
                       diag_rows)
    print(f"train_step_ms: {headline:.1f}" if headline == headline else "train_step_ms: nan")


if __name__ == "__main__":
    sys.exit(main())
