"""Replay sampling latency (spec §4): 100,000 transitions, groups of 64 and 256 subsequences.

Fills a prioritized SubsequenceReplay (capacity 200,000, one env, T = 6, stacks of 4,
max horizon 10, BBF's settings) through ``add`` with synthetic frames, life losses and
episode ends, then times ``sample(group, n=3, gamma=0.997)`` for groups of 64 (RR2) and
256 (RR8): the work the prefetch thread does once per train call. Prints the timings;
the last lines are ``replay_sample_ms[<group>]: <median>``.

  python benchmarks/replay_sample.py [--repeats 300] [--csv benchmarks/results/replay_sample.csv]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import pathlib
import platform
import sys
import time

import numpy as np
from machine import commit, cpu_name

from bbf_jax.replay import SubsequenceReplay

SETTINGS = dict(capacity=200_000, n_envs=1, seq_len=6, max_horizon=10, stack_size=4)
FILL, GROUPS, N_STEP, GAMMA = 100_000, (64, 256), 3, 0.997


def fill(rb: SubsequenceReplay, count: int, seed: int = 0) -> None:
    """Adds ``count`` transitions: 512 distinct random frames, life loss every ~200 steps,
    an episode end every ~1000, and a priority update of two indices every step after
    2000 (as BBF's official priority update does)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (512, 1, 84, 84), dtype=np.uint8)
    actions = rng.integers(0, 18, (count, 1))
    rewards = rng.choice(np.float32([-1, 0, 0, 0, 1]), (count, 1))
    terminal = rng.random((count, 1)) < 1 / 200
    ends = rng.random((count, 1)) < 1 / 1000
    terminal |= ends & (rng.random((count, 1)) < 0.9)  # a few truncations stay
    for i in range(count):
        rb.add(frames[i % 512], actions[i], rewards[i], terminal[i], ends[i])
        if i >= 2000:
            rb.update_priorities(rng.integers(0, i, 2), rng.uniform(0.5, 2.5, 2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--csv", help="append a result row to this CSV file")
    args = parser.parse_args(argv)

    rb = SubsequenceReplay(**SETTINGS, seed=0)
    t0 = time.perf_counter()
    fill(rb, FILL)
    fill_s = time.perf_counter() - t0
    print(f"fill of {FILL} transitions: {fill_s:.1f} s ({fill_s / FILL * 1e6:.0f} us/add)")
    medians = {}
    for group in GROUPS:
        medians[group] = time_group(rb, group, args.repeats, args.csv)
    for group, median in medians.items():
        print(f"replay_sample_ms[{group}]: {median:.3f}")


def time_group(rb: SubsequenceReplay, group: int, repeats: int, csv_path) -> float:
    """Times ``repeats`` samples of ``group``; prints them, appends a CSV row; the median."""
    for _ in range(10):  # warm-up: page in the frames, allocator steady state
        rb.sample(group, N_STEP, GAMMA)
    times, cpu_times = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        rb.sample(group, N_STEP, GAMMA)
        cpu_times.append(time.thread_time() - c0)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    median, p90 = float(np.median(ms)), float(np.percentile(ms, 90))
    # CPU time of this thread: what the sampling costs when other processes compete.
    cpu_median = float(np.median(cpu_times) * 1e3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"sample({group}, n={N_STEP}) over {repeats} repeats: median {median:.3f} ms, "
          f"p90 {p90:.3f} ms, min {ms.min():.3f} ms; thread CPU time median "
          f"{cpu_median:.3f} ms; load average {load:.2f} on {os.cpu_count()} CPUs")
    if csv_path:
        path = pathlib.Path(csv_path)
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["date", "commit", "cpu", "python", "numpy", "median_ms",
                                 "p90_ms", "settings"])
            settings = (f"fill={FILL} group={group} T={SETTINGS['seq_len']} "
                        f"stack={SETTINGS['stack_size']} n={N_STEP} "
                        f"capacity={SETTINGS['capacity']} prioritized repeats={repeats} "
                        f"cpu_median_ms={cpu_median:.3f} load1={load:.2f} "
                        f"cpus={os.cpu_count()}")
            writer.writerow([datetime.date.today().isoformat(), commit(), cpu_name(),
                             platform.python_version(), np.__version__, f"{median:.3f}",
                             f"{p90:.3f}", settings])
    return median

if __name__ == "__main__":
    sys.exit(main())
