"""Size and time of a full BBF.gin checkpoint as the replay fills.

Builds the ``Runner`` of ``gin_configs/BBF.gin`` (the full network, its optimizer state,
the 200,000-transition replay), fills the replay with real transitions of a uniformly
random policy on the game (ALE frames: what the checkpoint compresses matters) and writes
the run's own checkpoint (``Runner._save``, asynchronous) at each of ``--points``
transitions; each row is one checkpoint: transitions held, size on disk, seconds the loop
was blocked and seconds until committed. No gradient step is taken: the Adam moments,
zeros at initialisation (which compress away), are filled with dense float32 values
(normal, scale 1e-3) as after training.

  python benchmarks/checkpoint_size.py [--game ChopperCommand] [--points 1 25000 50000 100000]
      [--csv benchmarks/results/checkpoint_size.csv]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import platform
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from machine import append_csv, commit, cpu_name

from bbf_jax import checkpoint as ckpt
from bbf_jax import gin_utils, parallel
from bbf_jax.envs import clip_reward
from bbf_jax.runner import Runner

BBF_GIN = str(pathlib.Path(__file__).resolve().parents[1] / "gin_configs" / "BBF.gin")


def add_random_transitions(runner: Runner, count: int, rng: np.random.Generator) -> None:
    """``count`` agent steps of a uniformly random policy, stored as ``Runner.step`` stores
    them (frame, action, clipped reward, life loss, episode end)."""
    for _ in range(count):
        action = int(rng.integers(runner.env.num_actions))
        result = runner.env.step(action)
        runner.replay.add(runner.frames, [action], [clip_reward(result.reward)],
                          [result.terminal], [result.episode_over])
        if result.episode_over:
            runner._start_episodes()
        else:
            runner.frames = result.observation[None]
        runner.agent_step += 1


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default=None, help="default: BBF.gin's game")
    parser.add_argument("--points", type=int, nargs="+", default=[1, 25_000, 50_000, 100_000],
                        help="replay transitions at which to checkpoint (increasing)")
    parser.add_argument("--csv", help="append the rows to this CSV file")
    args = parser.parse_args(argv)
    if args.points != sorted(set(args.points)) or args.points[0] < 0:
        parser.error(f"--points must be increasing and >= 0, got {args.points}")

    bindings = [f"EnvConfig.game = '{args.game}'"] if args.game else []
    cfg = gin_utils.parse([BBF_GIN], bindings)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(cfg, tmp, progress=False)
        runner._start_episodes()
        rng = np.random.default_rng(0)

        def dense(x):
            x = np.asarray(x)
            return (rng.standard_normal(x.shape) * 1e-3).astype(x.dtype) \
                if x.dtype.kind == "f" else x

        state = jax.device_get(parallel.local_replica(runner.state))
        state = dataclasses.replace(state, opt_state=jax.tree.map(dense, state.opt_state))
        runner.state = parallel.replicate(state, runner.mesh)
        model_mb = sum(x.nbytes for x in jax.tree.leaves(jax.device_get(runner.state))) / 1e6
        print(f"{runner.env.game}: train state {model_mb:.1f} MB in memory; replay capacity "
              f"{cfg.replay.capacity:,}", flush=True)
        checkpointer = ckpt.RunCheckpointer(tmp, max_to_keep=1)
        fill_s = 0.0
        try:
            for point in args.points:
                t0 = time.perf_counter()
                add_random_transitions(runner, point - runner.replay.add_count, rng)
                fill_s += time.perf_counter() - t0
                runner._save(checkpointer)
                report = checkpointer.wait()
                item_mb = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                           / 1e6 for p in (checkpointer.directory / str(point)).iterdir()
                           if p.is_dir()}
                print(report.line().removeprefix("bbf-train: ")
                      + f" ({point:,} transitions; "
                      + ", ".join(f"{k} {v:.1f} MB" for k, v in sorted(item_mb.items())) + ")",
                      flush=True)
                rows.append({"transitions": point, "size_mb": f"{report.size_bytes / 1e6:.1f}",
                             "train_state_mb": f"{item_mb.get('train_state', 0.0):.1f}",
                             "host_mb": f"{item_mb.get('host', 0.0):.1f}",
                             "blocking_s": f"{report.blocking_seconds:.2f}",
                             "total_s": f"{report.total_seconds:.2f}"})
        finally:
            checkpointer.close()
            if runner.pipeline is not None:
                runner.pipeline.close()
    print(f"filled at {sum(args.points[-1:]) / max(fill_s, 1e-9):.0f} random agent steps/s")
    if args.csv:
        path = pathlib.Path(args.csv)
        fields = ["date", "commit", "cpu", "python", "jax", "orbax", "game", "transitions",
                  "size_mb", "train_state_mb", "host_mb", "blocking_s", "total_s", "load1"]
        append_csv(path, fields, [
            dict(row, date=datetime.date.today().isoformat(), commit=commit(), cpu=cpu_name(),
                 python=platform.python_version(), jax=jax.__version__, orbax=ocp.__version__,
                 game=runner.env.game, load1=f"{os.getloadavg()[0]:.2f}")
            for row in rows])
        print(f"appended {len(rows)} rows to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
