"""Environment throughput: agent steps per second (each = 4 emulator frames).

Backends:
  atari_env   a list of ``bbf_jax.envs.AtariEnv`` stepped in turn (what training and
              ``evaluate`` use), random actions, episodes restarted with random no-ops;
  vector_env  ``ale_py.vector_env.AtariVectorEnv`` with the closest settings (84x84 gray,
              max-pool, life_loss_info, raw rewards, no fire reset, stack 1), for
              comparison only: its semantics differ (see ``bbf_jax/envs/evaluation.py``).

The process is pinned to the first ``cores`` CPUs (a single AtariEnv list runs on one
thread whatever the count; the vector env gets ``cores`` threads). Construction and
reset are timed separately from stepping; the 1-minute load average is recorded
because other work on the machine lowers the rates. Prints a table and appends one
row per measurement to ``benchmarks/results/env_throughput.csv`` (date, commit, cpu,
versions).

  python benchmarks/env_throughput.py                     # full table
  python benchmarks/env_throughput.py --games Pong --steps 2000 --num-envs 1
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import time

import ale_py
import cv2
import numpy as np
from machine import append_csv, commit, cpu_name

from bbf_jax.atari_games import rom_id
from bbf_jax.envs import AtariEnv, env_seeds

RESULTS = pathlib.Path(__file__).parent / "results" / "env_throughput.csv"
FIELDS = [
    "date",
    "commit",
    "cpu",
    "python",
    "ale_py",
    "numpy",
    "opencv",
    "backend",
    "game",
    "num_envs",
    "cores",
    "agent_steps",
    "build_s",
    "agent_steps_per_s",
    "load_avg_1min",
]


def bench_atari_env(game: str, num_envs: int, steps: int) -> tuple[float, float]:
    """Returns (construction + first reset seconds, agent steps per second)."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    envs = [AtariEnv(game, seed=s) for s in env_seeds(0, num_envs)]
    for env in envs:
        env.reset(rng)
    build = time.perf_counter() - start
    actions = rng.integers(envs[0].num_actions, size=steps)
    start = time.perf_counter()
    done = 0
    while done < steps:
        for env in envs:
            if env.step(actions[done % steps]).episode_over:
                env.reset(rng)
            done += 1
    return build, done / (time.perf_counter() - start)


def bench_vector_env(game: str, num_envs: int, steps: int, cores: int) -> tuple[float, float]:
    start = time.perf_counter()
    env = ale_py.vector_env.AtariVectorEnv(
        rom_id(game),
        num_envs,
        num_threads=cores,
        stack_num=1,
        noop_max=30,
        life_loss_info=True,
        reward_clipping=False,
        use_fire_reset=False,
        repeat_action_probability=0.0,
    )
    env.reset(seed=0)
    build = time.perf_counter() - start
    rng = np.random.default_rng(0)
    n_actions = env.single_action_space.n
    batches = max(1, steps // num_envs)
    actions = rng.integers(n_actions, size=(batches, num_envs))
    start = time.perf_counter()
    for b in range(batches):
        env.step(actions[b])
    rate = batches * num_envs / (time.perf_counter() - start)
    env.close()
    return build, rate


def machine_info() -> dict:
    return {
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "cpu": f"{cpu_name()} ({os.cpu_count()} cpus)",
        "python": platform.python_version(),
        "ale_py": ale_py.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=["Pong", "Breakout", "ChopperCommand"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 100])
    parser.add_argument("--cores", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["atari_env", "vector_env"])
    parser.add_argument("--steps", type=int, default=10_000, help="agent steps per measurement")
    parser.add_argument("--csv", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)

    info = machine_info()
    available = sorted(os.sched_getaffinity(0))
    rows = []
    print(
        f"{'backend':<11} {'game':<15} {'envs':>5} {'cores':>5} {'build s':>8} {'steps/s':>9} "
        f"{'load':>5}"
    )
    for cores in args.cores:
        if cores > len(available):
            print(f"skipping {cores} cores: only {len(available)} available", file=sys.stderr)
            continue
        os.sched_setaffinity(0, available[:cores])
        for backend in args.backends:
            for game in args.games:
                for num_envs in args.num_envs:
                    load = os.getloadavg()[0]  # other work on the machine skews the rates
                    if backend == "atari_env":
                        build, rate = bench_atari_env(game, num_envs, args.steps)
                    elif backend == "vector_env":
                        build, rate = bench_vector_env(game, num_envs, args.steps, cores)
                    else:
                        parser.error(f"unknown backend {backend!r}")
                    print(
                        f"{backend:<11} {game:<15} {num_envs:>5} {cores:>5} {build:>8.2f} "
                        f"{rate:>9.0f} {load:>5.1f}"
                    )
                    rows.append(
                        {
                            **info,
                            "backend": backend,
                            "game": game,
                            "num_envs": num_envs,
                            "cores": cores,
                            "agent_steps": args.steps,
                            "build_s": round(build, 3),
                            "agent_steps_per_s": round(rate, 1),
                            "load_avg_1min": round(load, 2),
                        }
                    )
    os.sched_setaffinity(0, available)
    append_csv(args.csv, FIELDS, rows)
    return rows


if __name__ == "__main__":
    main()
