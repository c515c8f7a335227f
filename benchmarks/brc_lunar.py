"""The multi-task LunarLander comparison: BRC, Shared DQN and Independent DQN.

  python benchmarks/brc_lunar.py [--episodes_per_task 500] [--seeds 0 1 2 3 4] \\
      [--agents brc shared_dqn independent_dqn] [--out benchmarks/results/brc_lunar]

Trains each agent with ``bbf-train`` (its gin file, all seeds vmapped in one process)
into ``RUNS/<agent>/seed_<s>/`` (``--runs_dir``, default ``OUT/runs``) and writes to
``OUT/``:

* ``summary.csv``: per agent and task ('average' = the mean of the task means), the
  mean over seeds of the final greedy evaluation return with its 95% bootstrap CI
  (percentile, 10,000 resamples of the seeds), parameter count, episodes, env steps,
  wall time, device, versions and commit;
* ``summary.md``: the same as a table;
* ``curves.png``: the average evaluation return over training, mean over seeds with
  the seeds' min-max band, one line per agent.

The design's budget is 500 episodes per task (``--episodes_per_task 500``, the
default); a smaller budget is recorded in every row (``episodes_per_task``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import time

import numpy as np
from machine import commit, device_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIN = {
    "brc": "BRC_lunar.gin",
    "brc_official": "BRC_lunar_official.gin",
    "shared_dqn": "SharedDQN_lunar.gin",
    "independent_dqn": "IndependentDQN_lunar.gin",
}
FIELDS = ["agent", "task", "mean", "ci_low", "ci_high", "seeds", "param_count",
          "episodes_per_task", "env_steps_mean", "wall_time_s", "date", "commit", "device",
          "jax", "gymnasium", "note"]


def train(agent: str, seeds: list[int], episodes_per_task: int, eval_every: int,
          out: pathlib.Path, progress: bool) -> tuple[list[dict], float]:
    from bbf_jax import train as train_cli

    run_dir = out / agent
    argv = ["--gin_files", str(ROOT / "gin_configs" / GIN[agent]), "--base_dir", str(run_dir),
            "--seeds", *map(str, seeds), "--gin_bindings",
            f"BRCAgentConfig.episodes_per_task = {episodes_per_task}",
            f"BRCAgentConfig.eval_every_episodes = {eval_every}",
            *([] if progress else ["--no_progress"])]
    start = time.time()
    status = train_cli.main(argv)
    if status:
        sys.exit(f"bbf-train failed for {agent} (exit status {status})")
    wall = time.time() - start
    results = [json.loads((run_dir / f"seed_{s}" / "eval.json").read_text()) for s in seeds]
    return results, wall


def summarize(agent: str, results: list[dict], wall: float, base: dict) -> list[dict]:
    from bbf_jax.report.estimators import estimate, mean

    rows = []
    tasks = [*results[0]["tasks"], "average"]
    for task in tasks:
        scores = np.asarray([r["average"] if task == "average" else r["task_means"][task]
                             for r in results])
        est = estimate(mean, scores[:, None], reps=10_000, seed=0)
        rows.append({**base, "agent": agent, "task": task, "mean": f"{est.value:.2f}",
                     "ci_low": f"{est.low:.2f}", "ci_high": f"{est.high:.2f}",
                     "seeds": len(results), "param_count": results[0]["param_count"],
                     "env_steps_mean": int(np.mean([r["env_steps"] for r in results])),
                     "wall_time_s": f"{wall:.0f}"})
    return rows


def plot(curves: dict[str, list[dict]], path: pathlib.Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for agent, results in curves.items():
        x = [e["episode"] for e in results[0]["evaluations"]]
        y = np.asarray([[e["average"] for e in r["evaluations"]] for r in results])
        ax.plot(x, y.mean(0), label=f"{agent} ({len(results)} seeds)")
        ax.fill_between(x, y.min(0), y.max(0), alpha=0.2)
    ax.axhline(200.0, color="grey", ls="--", lw=1, label="solved (200)")
    ax.set(xlabel="training episodes (all tasks)", ylabel="greedy return, mean of 3 tasks",
           title="Multi-task LunarLander (standard, windy, heavy)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_table(rows: list[dict], path: pathlib.Path) -> None:
    lines = ["| agent | parameters | standard | windy | heavy | average | env steps | wall time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for agent in dict.fromkeys(r["agent"] for r in rows):
        by_task = {r["task"]: r for r in rows if r["agent"] == agent}
        cell = lambda r: f"{r['mean']} [{r['ci_low']}, {r['ci_high']}]"  # noqa: E731
        first = by_task["average"]
        lines.append(
            f"| {agent} | {first['param_count']:,} | "
            + " | ".join(cell(by_task[t]) if t in by_task else "" for t in
                         ("standard", "windy", "heavy", "average"))
            + f" | {first['env_steps_mean']:,} | {int(first['wall_time_s']) / 60:.0f} min |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=["brc", "shared_dqn", "independent_dqn"],
                        choices=list(GIN))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--episodes_per_task", type=int, default=500)
    parser.add_argument("--eval_every", type=int, default=50,
                        help="training episodes between evaluations")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "brc_lunar"))
    parser.add_argument("--runs_dir", default=None, help="where the runs go (default OUT/runs)")
    parser.add_argument("--note", default="")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    import gymnasium
    import jax

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = dict(date=datetime.date.today().isoformat(), commit=commit(), device=device_name(),
                jax=jax.__version__, gymnasium=gymnasium.__version__, note=args.note,
                episodes_per_task=args.episodes_per_task)
    rows, curves = [], {}
    for agent in args.agents:
        results, wall = train(agent, args.seeds, args.episodes_per_task, args.eval_every,
                              pathlib.Path(args.runs_dir or out / "runs"), not args.no_progress)
        curves[agent] = results
        rows += summarize(agent, results, wall, base)
        avg = rows[-1]
        print(f"{agent}: average {avg['mean']} [{avg['ci_low']}, {avg['ci_high']}] over "
              f"{len(results)} seeds, {wall / 60:.1f} min", flush=True)
    import csv

    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    write_table(rows, out / "summary.md")
    plot(curves, out / "curves.png")
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
