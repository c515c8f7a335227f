"""BTR's train step: the jitted Munchausen-IQN update (``bbf_jax.agents.btr.learner``) at
the paper's sizes (IMPALA x2, 2304 features, 8 taus, 512-wide noisy dueling streams,
batch 256, 18 actions), through the runner's data-parallel ``train_steps``.

Compiles ahead of time (compile time reported, never timed with the steps), then times
``repeats`` dispatches of G gradient steps on a fixed random batch placed by the
runner's ``put_fn`` (PER weights included), each ended by ``block_until_ready``
(``train_step.py``'s batch and timing).
Prints a table and appends one row per configuration to
``benchmarks/results/btr_train_step.csv`` (device, versions, commit, load average).
The paper's own rate, derived from 200M frames in 11.5 h on an RTX 4090 with 64 envs,
is about 19 gradient steps per second (paper App. G).

  python benchmarks/btr_train_step.py                       # B = 256, G = 1, 5 repeats
  python benchmarks/btr_train_step.py --batch 32 --groups 1 4 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import time

from machine import append_csv, commit, device_name

RESULTS = pathlib.Path(__file__).parent / "results" / "btr_train_step.csv"
FIELDS = ["date", "commit", "device", "jax", "params", "batch_size", "G", "repeats",
          "compile_s", "step_ms", "steps_per_s", "gflop_per_step", "load_avg_1min", "note"]
NUM_ACTIONS, SEED = 18, 0


def measure(cfg, group: int, repeats: int) -> dict:
    """Compiles and times BTR's train step of ``cfg`` (a BTR ExperimentConfig) with G =
    ``group``; returns the numbers of one CSV row."""
    import dataclasses

    import jax
    from train_step import random_sample, time_dispatches

    from bbf_jax import parallel
    from bbf_jax.agents.btr.agent import make_agent

    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, batches_to_group=group))
    batch_size = cfg.agent.batch_size
    agent = make_agent(cfg, NUM_ACTIONS)
    learner = agent.learner
    mesh = parallel.make_mesh(1)
    state = parallel.replicate(learner.init(SEED), mesh)
    put = parallel.make_put_fn(mesh, group, batch_size, agent.to_train_batch)
    batch = put(random_sample(group * batch_size, 1, SEED, NUM_ACTIONS))  # one state per row
    hparams = parallel.replicate(learner.default_hparams(), mesh)
    step = parallel.make_parallel_train_steps(learner, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, hparams).compile()
    compile_s = time.perf_counter() - t0
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), batch)
    cost = jax.jit(learner.train_step).lower(
        jax.eval_shape(lambda: state), one, hparams).cost_analysis()
    gflop = float(cost.get("flops", float("nan"))) / 1e9 if cost else float("nan")
    state, dispatch_ms = time_dispatches(compiled, state, batch, hparams, repeats,
                                         f"BTR, B={batch_size}, G={group}")
    step_ms = dispatch_ms / group
    return dict(params=agent.param_count(state), batch_size=batch_size, G=group,
                repeats=repeats, compile_s=f"{compile_s:.1f}", step_ms=f"{step_ms:.1f}",
                steps_per_s=f"{1e3 / step_ms:.2f}", gflop_per_step=f"{gflop:.4g}",
                load_avg_1min=f"{os.getloadavg()[0]:.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--groups", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--csv", default=str(RESULTS), help="CSV to append to ('' for none)")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    import jax

    from bbf_jax.agents.btr.config import BTRAgentConfig, ExperimentConfig

    cfg = ExperimentConfig(agent=BTRAgentConfig(batch_size=args.batch))
    base = dict(date=datetime.date.today().isoformat(), commit=commit(), device=device_name(),
                jax=jax.__version__, note=args.note)
    rows = []
    for g in args.groups:
        row = {**base, **measure(cfg, g, args.repeats)}
        rows.append(row)
        print(f"B={row['batch_size']} G={g}: {row['step_ms']} ms per gradient step "
              f"({row['steps_per_s']}/s), {row['gflop_per_step']} GFLOP per step, "
              f"{row['params']:,} parameters, compiled in {row['compile_s']} s", flush=True)
    if args.csv:
        append_csv(pathlib.Path(args.csv), FIELDS, rows)


if __name__ == "__main__":
    main()
