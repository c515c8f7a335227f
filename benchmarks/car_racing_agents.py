"""CarRacing-v3 learning runs of the pixel agents, at a budget a machine affords.

  python benchmarks/car_racing_agents.py --gin gin_configs/PPO_car_racing_beta.gin \\
      --steps 200000 --eval_every 20000 [--seed 0] [--name ppo_beta]

Trains with ``bbf-train`` into ``--runs_dir/<name>`` and copies what the run wrote
about learning (``evals.csv``, ``episodes.csv``, ``curves.png``) to
``benchmarks/results/car_racing/<name>/``, then appends a row to
``benchmarks/results/car_racing/summary.csv``: the budget (agent and env steps), the
final evaluation's mean raw return and episodes, the best evaluation, the reference
budget of the design, wall time, device, versions and commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import shutil
import sys
import time

from machine import append_csv, commit, device_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "car_racing"
FIELDS = ["date", "commit", "device", "name", "gin", "seed", "agent_steps", "env_steps",
          "final_mean_return", "final_returns", "best_eval_mean", "reference_budget",
          "wall_time_s", "note"]
REFERENCE_BUDGET = {"ppo": "1M-2M timesteps, 8 envs", "sac": "2M steps"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gin", required=True)
    parser.add_argument("--steps", type=int, required=True, help="RunConfig.num_train_steps")
    parser.add_argument("--eval_every", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="default: the gin file's stem")
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "car_racing"))
    parser.add_argument("--bindings", nargs="*", default=[])
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    from bbf_jax import train

    name = args.name or pathlib.Path(args.gin).stem
    run_dir = pathlib.Path(args.runs_dir) / name
    start = time.time()
    status = train.main(["--gin_files", args.gin, "--base_dir", str(run_dir), "--seed",
                         str(args.seed), "--no_progress", "--gin_bindings",
                         f"RunConfig.num_train_steps = {args.steps}",
                         f"RunConfig.eval_every = {args.eval_every}", *args.bindings])
    if status:
        sys.exit(f"bbf-train failed (exit status {status})")
    result = json.loads((run_dir / "eval.json").read_text())
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    for f in ("evals.csv", "episodes.csv", "curves.png", "eval.json"):
        shutil.copy(run_dir / f, out / f)
    row = dict(date=datetime.date.today().isoformat(), commit=commit(), device=device_name(),
               name=name, gin=pathlib.Path(args.gin).name, seed=args.seed,
               agent_steps=result["agent_steps"], env_steps=result["env_steps"],
               final_mean_return=f"{result['mean_return']:.1f}",
               final_returns=" ".join(f"{r:.1f}" for r in result["returns"]),
               best_eval_mean=f"{max(e['mean_return'] for e in result['evaluations']):.1f}",
               reference_budget=REFERENCE_BUDGET[result["agent_name"]],
               wall_time_s=f"{time.time() - start:.0f}", note=args.note)
    append_csv(OUT / "summary.csv", FIELDS, [row])
    print(row)


if __name__ == "__main__":
    main()
