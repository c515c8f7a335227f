"""CarRacing-v3 env steps per second: one env and N envs as a gymnasium vector env.

  python benchmarks/car_racing_throughput.py [--steps 1000] [--num_envs 8]

Rows (random actions, episodes restarted as they end; env steps are gymnasium's
steps, before any action repeat; construction and first reset timed apart):

* ``gymnasium``: the bare ``CarRacing-v3``, one env;
* ``drq``: :class:`bbf_jax.envs.car_racing.CarRacing` with DrQ's preprocessing (RGB
  84x84, stack 3), one env;
* ``ppo``: the same with PPO's (grayscale 84x84, stack 4), one env;
* ``ppo_sync`` / ``ppo_async``: N of the ``ppo`` envs as ``SyncVectorEnv`` (stepped in
  turn in this process) and ``AsyncVectorEnv`` (one process each).

No published figure exists to compare with. The 1-minute load average is recorded:
other work on the machine lowers the rates. Appends one row per measurement to
``benchmarks/results/car_racing_throughput.csv`` (date, commit, CPU, versions).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import time

import numpy as np
from machine import append_csv, commit, cpu_name

RESULTS = pathlib.Path(__file__).parent / "results" / "car_racing_throughput.csv"
FIELDS = ["date", "commit", "cpu", "gymnasium", "box2d", "pygame", "backend", "num_envs",
          "env_steps", "build_s", "env_steps_per_s", "load_avg_1min"]


def _configs():
    from bbf_jax.config import CarRacingConfig

    return {"drq": CarRacingConfig(image_size=84, frame_stack=3),
            "ppo": CarRacingConfig(grayscale=True, image_size=84, frame_stack=4)}


def bench_single(backend: str, steps: int) -> tuple[float, float]:
    import gymnasium as gym

    from bbf_jax.envs.car_racing import CarRacing

    start = time.perf_counter()
    env = gym.make("CarRacing-v3") if backend == "gymnasium" else CarRacing(_configs()[backend])
    env.reset(seed=0)
    build = time.perf_counter() - start
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        action = rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32)
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return build, rate


def bench_vector(num_envs: int, steps: int, asynchronous: bool) -> tuple[float, float]:
    from bbf_jax.envs.car_racing import make_vector_env

    start = time.perf_counter()
    envs, seeds = make_vector_env(_configs()["ppo"], num_envs, 0, asynchronous=asynchronous)
    envs.reset(seed=seeds)
    build = time.perf_counter() - start
    rng = np.random.default_rng(0)
    calls = max(1, steps // num_envs)
    start = time.perf_counter()
    for _ in range(calls):
        envs.step(rng.uniform([-1, 0, 0], [1, 1, 1], (num_envs, 3)).astype(np.float32))
    rate = calls * num_envs / (time.perf_counter() - start)
    envs.close()
    return build, rate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="env steps per measurement")
    parser.add_argument("--num_envs", type=int, default=8)
    parser.add_argument("--csv", default=str(RESULTS), help="CSV to append to ('' for none)")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    base = dict(date=datetime.date.today().isoformat(), commit=commit(), cpu=cpu_name(),
                gymnasium=version("gymnasium"), box2d=version("box2d"),
                pygame=version("pygame"))
    rows = []
    runs = [("gymnasium", 1, lambda: bench_single("gymnasium", args.steps)),
            ("drq", 1, lambda: bench_single("drq", args.steps)),
            ("ppo", 1, lambda: bench_single("ppo", args.steps)),
            ("ppo_sync", args.num_envs, lambda: bench_vector(args.num_envs, args.steps, False)),
            ("ppo_async", args.num_envs, lambda: bench_vector(args.num_envs, args.steps, True))]
    for backend, n, run in runs:
        build, rate = run()
        row = {**base, "backend": backend, "num_envs": n, "env_steps": args.steps,
               "build_s": f"{build:.2f}", "env_steps_per_s": f"{rate:.1f}",
               "load_avg_1min": f"{os.getloadavg()[0]:.2f}"}
        rows.append(row)
        print(f"{backend:10s} {n} env(s): {rate:7.1f} env steps/s (built in {build:.2f} s, "
              f"load {row['load_avg_1min']})", flush=True)
    if args.csv:
        append_csv(pathlib.Path(args.csv), FIELDS, rows)


if __name__ == "__main__":
    main()
