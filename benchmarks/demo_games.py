"""Which game the CPU quick start should train: short runs against a random policy.

For every game and seed, trains ``bbf-train`` with the given gin files (default: the
quick-start config) in a fresh run directory, then compares its final evaluation with a
uniformly random policy evaluated with the same protocol and episode count (the
baseline of ``bbf_jax.random_baseline``, cached, that the run's verdict uses). Each
run's wall time, CPU time (user + sys of the training process and its children), peak
memory and the 1-minute load average before and after are recorded, because other work
on the machine inflates wall time but hardly CPU time. One row per run is appended to
``benchmarks/results/demo_games.csv``; a per-game summary is printed at the end. Random
baselines are cached in ``<work_dir>/random_baseline_cache``, which starts empty, so a
run's time includes its baseline as on a new user's machine.

  python benchmarks/demo_games.py --games Boxing RoadRunner --seeds 0 1 2
  python benchmarks/demo_games.py --random_only --games Pong Freeway   # screening: no training
  python benchmarks/demo_games.py --games Pong --gin_bindings "RunConfig.num_train_steps = 3000"
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from machine import commit, cpu_name  # noqa: E402

from bbf_jax.random_baseline import BASELINE_SEED, random_returns  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo_games.csv"
FIELDS = ["date", "commit", "cpu", "jax", "gin", "game", "seed", "agent_steps",
          "grad_steps", "eval_episodes", "mean_return", "returns", "random_mean",
          "random_returns", "verdict", "wall_s", "cpu_s", "max_rss_mb", "load_before", "load_after"]


def train_once(game: str, seed: int, gin_files, bindings, base_dir: pathlib.Path) -> dict:
    """One ``bbf-train`` run; its eval.json plus wall/CPU time and peak memory."""
    cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", *gin_files, "--base_dir",
           str(base_dir), "--seed", str(seed), "--no_progress", "--gin_bindings",
           f"EnvConfig.game = '{game}'", *bindings]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{game} seed {seed} failed:\n{proc.stderr[-3000:]}")
    (base_dir / "stdout.txt").write_text(proc.stdout)  # the verdict, as a user sees it
    result = json.loads((base_dir / "eval.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"result": result, "wall_s": wall, "cpu_s": cpu,
            "max_rss_mb": after.ru_maxrss / 1024, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def run_config(gin_files, bindings, game: str, seed: int):
    """The ExperimentConfig a ``bbf-train`` run of ``game`` and ``seed`` gets."""
    from bbf_jax import gin_utils

    cfg = gin_utils.parse([str(ROOT / f) for f in gin_files],
                          [*bindings, f"EnvConfig.game = '{game}'", f"RunConfig.seed = {seed}"])
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--gin_files", nargs="+", default=["gin_configs/cpu_demo.gin"])
    p.add_argument("--gin_bindings", nargs="*", default=[])
    p.add_argument("--work_dir", default=None, help="run directories (default: a temp dir)")
    p.add_argument("--random_only", action="store_true",
                   help="only the random policy under the config's protocol (rows without "
                        "training columns)")
    args = p.parse_args()
    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="bbf_demo_games_"))
    # A fresh baseline cache, so that each run's time includes its random baseline.
    os.environ["BBF_JAX_CACHE_DIR"] = str(work / "random_baseline_cache")
    machine = {"date": "", "commit": commit(), "cpu": cpu_name(), "jax": jax.__version__,
               "gin": " ".join(args.gin_files + args.gin_bindings)}
    new_file = not RESULTS.exists()
    summary: dict[str, list[tuple[float, float]]] = {}
    for game in args.games:
        for seed in args.seeds:
            cfg = run_config(args.gin_files, args.gin_bindings, game, seed)
            row = {**machine, "date": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"), "game": cfg.env.game, "seed": seed,
                "eval_episodes": cfg.run.num_eval_episodes}
            start, cpu_start = time.perf_counter(), time.process_time()
            if not args.random_only:  # the run computes the baseline first (time included)
                run = train_once(game, seed, args.gin_files, args.gin_bindings,
                                 work / f"{game}_s{seed}")
            rand = random_returns(game, cfg.env, cfg.run.num_eval_episodes, BASELINE_SEED)
            row.update(random_mean=float(np.mean(rand)),
                       random_returns=" ".join(f"{r:g}" for r in rand))
            if args.random_only:
                row.update(wall_s=round(time.perf_counter() - start, 2),
                           cpu_s=round(time.process_time() - cpu_start, 2))
                print(f"{game} seed {seed}: random {row['random_mean']:.2f} ({rand})", flush=True)
            else:
                res = run.pop("result")
                row.update({"agent_steps": res["agent_steps"], "grad_steps": res["grad_steps"],
                            "mean_return": res["mean_return"],
                            "verdict": res["verdict"]["label"],
                            "returns": " ".join(f"{r:g}" for r in res["returns"]),
                            **{k: round(v, 2) for k, v in run.items()}})
                summary.setdefault(game, []).append((res["mean_return"], row["random_mean"]))
                print(f"{game} seed {seed}: mean {res['mean_return']:.2f} vs random "
                      f"{row['random_mean']:.2f}; wall {run['wall_s']:.0f} s, CPU "
                      f"{run['cpu_s']:.0f} s, load {run['load_before']:.1f}-"
                      f"{run['load_after']:.1f}", flush=True)
            with RESULTS.open("a", newline="") as f:
                w = csv.DictWriter(f, FIELDS)
                if new_file:
                    w.writeheader()
                    new_file = False
                w.writerow(row)
    for game, pairs in summary.items():
        wins = sum(m > r for m, r in pairs)
        margin = np.mean([m - r for m, r in pairs])
        print(f"{game}: beats random in {wins}/{len(pairs)} seeds, mean margin {margin:.2f}")


if __name__ == "__main__":
    main()
