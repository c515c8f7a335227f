"""Vectorised seeds: N seeds in one ``bbf-train`` process against one seed.

Runs ``bbf-train --seed 0`` and ``bbf-train --seeds 0 .. N-1`` once per
``RunConfig.seed_batching`` asked for (each a fresh process and run directory, the
persistent compilation cache off so that each compiles what it runs) and measures for
each: the wall and CPU time (user + sys) of the whole run (start-up,
compilation, training, the evaluations, verdicts and plots), and the training throughput
of the last logged window, from ``train_log.csv``'s ``steps_per_second`` (a window in
which every agent step trains). The group's throughput counts the agent steps of all its
seeds. Prints a table and appends one row per run to ``benchmarks/results/seeds.csv``
(date, commit, cpu, versions, 1-minute load average).

  python benchmarks/seeds.py                          # smoke.gin, N = 4, 1 device, vmap
  python benchmarks/seeds.py --seed_batching map vmap  # both batchings of the group
  python benchmarks/seeds.py --num-seeds 8 --gin_files gin_configs/cpu_demo.gin
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

import jax
from machine import append_csv, commit, cpu_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = pathlib.Path(__file__).parent / "results" / "seeds.csv"
FIELDS = ["date", "commit", "cpu", "python", "jax", "config", "seeds", "seed_batching",
          "devices", "wall_s", "cpu_s", "train_agent_steps_per_s", "load_avg_1min"]


def run(gin_files, seed_args, devices: int, bindings=()) -> tuple[float, float, float]:
    """``(wall s, CPU s, training agent steps per second)`` of one bbf-train run."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", BBF_JAX_COMPILATION_CACHE="off",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "bbf_jax.train", "--gin_files", *gin_files,
               "--base_dir", tmp, *seed_args, "--no_progress", "--gin_bindings",
               f"RunConfig.num_devices = {devices}", *bindings]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        logs = sorted(pathlib.Path(tmp).glob("**/train_log.csv"))
        last = [log.read_text().splitlines()[-1].split(",") for log in logs]
        header = logs[0].read_text().splitlines()[0].split(",")
        column = header.index("steps_per_second")
        # The seeds of a group step together: one window's rate per seed, summed.
        rate = sum(float(row[column]) for row in last)
    return wall, cpu, rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gin_files", nargs="+", default=["gin_configs/smoke.gin"])
    p.add_argument("--num-seeds", type=int, default=4)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--seed_batching", nargs="+", choices=["vmap", "map"], default=["vmap"],
                   help="RunConfig.seed_batching of the group; one group run each")
    p.add_argument("--csv", type=pathlib.Path, default=RESULTS)
    args = p.parse_args()
    group = ["--seeds", *map(str, range(args.num_seeds))]
    # (seed arguments, seed_batching; "" for the single run, where it is unused)
    runs = [(["--seed", "0"], "")] + [(group, b) for b in args.seed_batching]
    rows = []
    for seed_args, batching in runs:
        bindings = [f"RunConfig.seed_batching = '{batching}'"] if batching else []
        wall, cpu, rate = run(args.gin_files, seed_args, args.devices, bindings)
        rows.append({
            "date": datetime.date.today().isoformat(), "commit": commit(), "cpu": cpu_name(),
            "python": platform.python_version(), "jax": jax.__version__,
            "config": " ".join(pathlib.Path(f).name for f in args.gin_files),
            "seeds": len(seed_args) - 1, "seed_batching": batching, "devices": args.devices,
            "wall_s": f"{wall:.1f}", "cpu_s": f"{cpu:.1f}",
            "train_agent_steps_per_s": f"{rate:.3f}",
            "load_avg_1min": f"{os.getloadavg()[0]:.2f}",
        })
        print(f"{rows[-1]['seeds']} seed(s) {batching}: wall {wall:.1f} s, CPU {cpu:.1f} s, "
              f"training {rate:.3f} agent steps/s (all seeds)", flush=True)
    one = rows[0]
    for row in rows[1:]:
        ratio = {k: float(row[k]) / float(one[k])
                 for k in ("wall_s", "cpu_s", "train_agent_steps_per_s")}
        print(f"{row['seeds']} seeds ({row['seed_batching']}) / 1 seed: wall "
              f"x{ratio['wall_s']:.2f}, CPU x{ratio['cpu_s']:.2f}, training throughput "
              f"x{ratio['train_agent_steps_per_s']:.2f}")
    append_csv(args.csv, FIELDS, rows)


if __name__ == "__main__":
    main()
