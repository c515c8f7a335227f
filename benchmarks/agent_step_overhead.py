"""Host time per agent step outside the device calls: tiny config (smoke.gin) on CPU.

Trains ``gin_configs/smoke.gin`` (the BBF code path with a tiny network, real Breakout)
with the real :class:`~bbf_jax.runner.Runner`, and after training has started and every
function is compiled times ``--steps`` agent steps with the runner's functions wrapped
(not replaced) by timers. Per agent step:

  env               ``AtariEnv.step`` and the episode resets (emulator, preprocessing)
  replay add        ``SubsequenceReplay.add`` (and its sum-tree update)
  act dispatch      the jitted select call (on CPU, XLA runs such a small program
                    inline at dispatch, so this includes its device work)
  train dispatch    the jitted train call (asynchronous)
  wait: prefetch    ``BatchPipeline.sync``: the next group's sampling and device copy
                    in the prefetch thread, which competes with the train step for
                    the CPU cores
  train host        the rest of ``Runner._train_once``: prefetched batch, launch of the
                    next sample, metrics conversion, priority update
  other Python      the rest of ``Runner.step`` (schedules, reset check, frame stack)
  wait: train       blocked on the train dispatch's per-sample losses (device work)
  wait: act         blocked on the action (device work)

``host total`` is the wall time less both waits. Sampling runs in the prefetch thread
alongside (``sample``, not part of the step's wall time).

Fusing action selection into the train dispatch: ``--pairs`` times a training step's
two dispatches and two syncs (train -> metrics sync -> act -> action sync) against one
jitted function that trains and then selects the action with the new parameters (one
dispatch, one sync), alternately on the same inputs; both give the same state and
action. ``act round trip`` (one select dispatch and its sync, alone) bounds what fusion
can save.

Prints a table and appends its rows to ``benchmarks/results/agent_step_overhead.csv``.

  python benchmarks/agent_step_overhead.py [--steps 100] [--pairs 30] [--csv PATH]
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime
import os
import pathlib
import platform
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from machine import commit, cpu_name

from bbf_jax import gin_utils, parallel
from bbf_jax.agents.bbf.acting import select_actions
from bbf_jax.runner import Runner
from bbf_jax.seed_group import SeedGroup

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "agent_step_overhead.csv"
CONFIG = ROOT / "gin_configs" / "smoke.gin"


class Timers:
    """Wall seconds spent in wrapped callables, and their calls, per name."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.calls = collections.defaultdict(int)
        self._wrapped = []

    def wrap(self, obj, attr: str, name: str) -> None:
        fn = getattr(obj, attr)
        self._wrapped.append((obj, attr, attr in vars(obj), fn))

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        setattr(obj, attr, timed)

    def unwrap(self) -> None:
        """Puts every wrapped callable back (methods: the class's again)."""
        for obj, attr, own, fn in reversed(self._wrapped):
            if own:
                setattr(obj, attr, fn)
            else:
                delattr(obj, attr)
        self._wrapped = []


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="timed agent steps")
    parser.add_argument("--pairs", type=int, default=30, help="fused vs separate repeats")
    parser.add_argument("--csv", default=str(RESULTS), help="append the rows here ('' = no)")
    args = parser.parse_args(argv)

    cfg = gin_utils.parse([str(CONFIG)], ["RunConfig.seed = 0"])
    run = Runner(cfg, tempfile.mkdtemp(prefix="bbf_jax-overhead-"), progress=False)
    run._start_episodes()
    warm = cfg.agent.min_replay_history + 10  # training has started, all compiled
    while run.agent_step < warm:
        run.step()

    rows = time_agent_steps(run, args.steps)[0]
    fused = fusion_timings(run, jnp.float32(0.01), args.pairs)
    rows += [
        ("act round trip", fused["act"]),
        ("train+act, 2 dispatches", fused["separate"]),
        ("train+act, 1 fused dispatch", fused["fused"]),
        ("fused saving (paired median)", fused["saving"]),
    ]

    load = os.getloadavg()[0]
    print(f"{args.steps} agent steps of {CONFIG.name} on {cpu_name()} ({os.cpu_count()} CPUs), "
          f"one train dispatch per step, load average {load:.2f}")
    print(f"{'':30s} ms per agent step")
    for name, value in rows:
        print(f"{name:30s} {value:8.3f}")
    print(f"fused dispatch: same state {fused['same_state']}, same action "
          f"{fused['same_action']}")
    if args.csv:
        write_csv(pathlib.Path(args.csv), rows, args.steps, load)
    return 0


def time_agent_steps(run: Runner | SeedGroup, steps: int
                     ) -> tuple[list[tuple[str, float]], Timers]:
    """Runs ``steps`` agent steps of ``run`` with its functions wrapped by timers (put
    back afterwards); returns the rows of the table above (name, ms per agent step) and
    the timers (seconds and calls per name).

    ``run`` may be a :class:`~bbf_jax.seed_group.SeedGroup` that has trained: then an
    agent step is one of every seed (one act and one train dispatch per training call
    for all seeds), and env, replay add, sample and wait: prefetch sum over its seeds.
    """
    timers = Timers()
    for member in getattr(run, "members", [run]):
        timers.wrap(member.env, "step", "env")
        timers.wrap(member.env, "reset", "env")
        timers.wrap(member.replay, "add", "replay add")
        timers.wrap(member.replay, "sample", "sample")
        timers.wrap(member.pipeline, "sync", "wait: prefetch")
    timers.wrap(run, "_select", "act dispatch")
    timers.wrap(run, "_act", "act")
    timers.wrap(parallel, "all_rows", "wait: train")
    timers.wrap(run, "_train_once", "train")
    timers.wrap(run, "train_fn", "train dispatch")
    t0 = time.perf_counter()
    for _ in range(steps):
        run.step()
    total = time.perf_counter() - t0
    timers.unwrap()
    for member in getattr(run, "members", [run]):
        member.pipeline.sync()  # the final sync is not part of the steps
    ms = {k: v / steps * 1e3 for k, v in timers.seconds.items()}
    total_ms = total / steps * 1e3
    wait_act = ms["act"] - ms["act dispatch"]
    host_train = (ms["train"] - ms["wait: train"] - ms["train dispatch"]
                  - ms["wait: prefetch"])
    rows = [
        ("env", ms["env"]),
        ("replay add", ms["replay add"]),
        ("act dispatch", ms["act dispatch"]),
        ("train dispatch", ms["train dispatch"]),
        ("wait: prefetch", ms["wait: prefetch"]),
        ("train host", host_train),
        ("other Python", total_ms - ms["env"] - ms["replay add"] - ms["act"] - ms["train"]),
        ("host total", total_ms - ms["wait: train"] - wait_act - ms["wait: prefetch"]),
        ("wait: train", ms["wait: train"]),
        ("wait: act", wait_act),
        ("agent step (wall)", total_ms),
        ("sample (prefetch thread)", ms["sample"]),
    ]
    return rows, timers


def fusion_timings(run: Runner, eps, pairs: int) -> dict:
    """ms of (train dispatch + act) with two dispatches and syncs, and fused in one."""
    learner, network = run.learner, run.learner.network
    target = run.cfg.agent.target_action_selection
    mesh = run.mesh

    def fused_fn(state, batch, hparams, states, key, eps):
        state, metrics = learner.train_steps(state, batch, hparams)
        params = state.target if target else state.online
        key, actions = select_actions(network, params, states, key, eps)
        return state, metrics, key, actions

    fused = jax.jit(
        fused_fn,
        in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh),
                      parallel.replicated(mesh), None, None, None),
        out_shardings=(parallel.replicated(mesh), None, None, None),
    )
    batch, _ = run.put_batch(run.replay.sample(run.derived.group_size, 3, 0.99))
    stack, key = run.stack.state, run.act_rng

    def separate():
        state, metrics = run.train_fn(run.state, batch, run.hparams)
        jax.device_get(metrics)
        params = state.target if target else state.online
        _, actions = run._select(params, stack, key, eps)
        return state, int(actions[0])

    def one():
        state, metrics, _, actions = fused(run.state, batch, run.hparams, stack, key, eps)
        _, actions = jax.device_get((metrics, actions))
        return state, int(actions[0])

    def act():
        return int(run._select(run._acting_params(), stack, key, eps)[1][0])

    a, b = separate(), one()  # compiles the fused function; compares the results
    same_state = all(np.array_equal(x, y) for x, y in
                     zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0]), strict=True))
    times = {"separate": [], "fused": []}
    for _ in range(pairs):  # alternately, so that load changes hit both alike
        for name, fn in (("separate", separate), ("fused", one)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    saving = np.subtract(times["separate"], times["fused"])
    return {"separate": float(np.median(times["separate"]) * 1e3),
            "fused": float(np.median(times["fused"]) * 1e3),
            "saving": float(np.median(saving) * 1e3),
            "act": median_ms(act, 5 * pairs),
            "same_state": same_state, "same_action": a[1] == b[1]}


def write_csv(path: pathlib.Path, rows, steps: int, load: float) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["date", "commit", "cpu", "cpus", "python", "jax", "config",
                             "steps", "component", "ms_per_step", "load_avg_1min"])
        for name, value in rows:
            writer.writerow([datetime.date.today().isoformat(), commit(), cpu_name(),
                             os.cpu_count(), platform.python_version(), jax.__version__,
                             CONFIG.name, steps, name, f"{value:.3f}", f"{load:.2f}"])


if __name__ == "__main__":
    sys.exit(main())
