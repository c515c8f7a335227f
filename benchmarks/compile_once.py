"""Compilation of the programs a run executes a handful of times (bbf_jax.jit_once).

Compiles and runs the network initialisation and the shrink-and-perturb reset of one
network size twice, once with XLA's default options and once with
:func:`bbf_jax.jit_once.compiler_options`, in a fresh process without the persistent
compilation cache, and checks that both give the same bits. Prints CPU seconds
(user + sys of this process) to compile, and wall seconds to run, each program; appends
rows to the CSV.

  python benchmarks/compile_once.py [--width_scale 0.25 --hidden_dim 64]
      [--csv benchmarks/results/compile_once.csv]
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time

import jax
import numpy as np
from machine import append_csv, commit, cpu_name

from bbf_jax.agents.bbf import resets
from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig, ResetConfig
from bbf_jax.agents.bbf.learner import make_learner
from bbf_jax.jit_once import compiler_options
from bbf_jax.networks import init_params


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def measure(fn, args, options):
    """(compile CPU s, run wall s, outputs) of ``jax.jit(fn)`` with ``options``."""
    c = _cpu()
    compiled = jax.jit(fn, compiler_options=options).lower(*args).compile()
    compile_s = _cpu() - c
    jax.block_until_ready(compiled(*args))  # first run (allocations)
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return compile_s, time.perf_counter() - t, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width_scale", type=float, default=0.25)
    p.add_argument("--hidden_dim", type=int, default=64)
    p.add_argument("--csv", default=str(pathlib.Path(__file__).parent / "results" /
                                        "compile_once.csv"))
    args = p.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    net = NetworkConfig(width_scale=args.width_scale, hidden_dim=args.hidden_dim)
    learner = make_learner(AgentConfig(), net, 18)
    state = learner.init(0)
    programs = {
        "init": (lambda k: init_params(learner.network, k, use_spr=True, jumps=5),
                 (jax.random.PRNGKey(3),)),
        "reset": (lambda s: resets.reset_state(learner, s, ResetConfig()), (state,)),
    }
    rows = []
    for name, (fn, fn_args) in programs.items():
        # jit_once's options first: the first compilation of a process also pays one-time
        # set-up, which then counts against the cheaper variant.
        once = measure(fn, fn_args, compiler_options())
        default = measure(fn, fn_args, None)
        same = all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(once[2]), jax.tree.leaves(default[2]), strict=True))
        for variant, (compile_s, run_s, _) in (("default", default), ("jit_once", once)):
            rows.append({
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "commit": commit(), "cpu": cpu_name(), "backend": jax.default_backend(),
                "jax": jax.__version__, "width_scale": args.width_scale,
                "hidden_dim": args.hidden_dim, "program": name, "options": variant,
                "compile_cpu_s": round(compile_s, 2), "run_wall_s": round(run_s, 4),
                "same_bits": same, "load": round(os.getloadavg()[0], 2)})
            print(f"{name:5s} {variant:8s} compile {compile_s:6.1f} s CPU, run "
                  f"{run_s * 1e3:9.1f} ms, same bits: {same}")
    append_csv(pathlib.Path(args.csv), rows[0], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
