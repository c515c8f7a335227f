"""Running the runs of a sweep as bbf-train processes, a few at a time, restart-safe.

A run whose eval.json exists is skipped; a run that is running (``status.run_status``) is
left alone; every other run is started, and bbf-train resumes it from its latest
checkpoint if it has one. Each attempt appends its stdout and stderr to ``sweep.out`` and
``sweep.err`` in the run directory and records itself in ``sweep_state.json``; a failed
run (no eval.json at exit) is recorded with its exit code and last stderr lines and does not
stop the others.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import time
from dataclasses import dataclass

from bbf_jax.sweep import status as status_lib
from bbf_jax.sweep.grid import SweepError, SweepRun, train_command
from bbf_jax.sweep.manifest import Sweep

TAIL_LINES = 20
_POLL_S = 0.2


def parse_devices(text: str) -> list[str]:
    """'0,1,3' -> ['0', '1', '3'] (GPU indices for CUDA_VISIBLE_DEVICES)."""
    devices = [d.strip() for d in text.split(",")]
    if not all(d.isdigit() for d in devices) or len(set(devices)) != len(devices):
        raise SweepError(f"--devices {text!r}: expected distinct GPU indices like 0,1,2,3")
    return devices


def run_env(device: str | None, shared: bool, base: dict | None = None) -> dict:
    """The environment of one bbf-train process: pinned to GPU ``device`` through
    CUDA_VISIBLE_DEVICES (None: unpinned, e.g. on CPU); when runs share a GPU (``shared``)
    JAX's preallocation of 75 % of its memory is turned off, so that they fit together."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
        if shared:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def pick_device(devices: list[str], load: dict[str, int]) -> str:
    """The least busy device (ties: the first listed): round-robin over free devices."""
    return min(devices, key=lambda d: (load[d], devices.index(d)))


def tail(path: pathlib.Path, offset: int, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines written to ``path`` after byte ``offset``."""
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return text.splitlines()[-lines:]


@dataclass
class _Active:
    run: SweepRun
    proc: subprocess.Popen
    device: str | None
    state: dict
    err_path: pathlib.Path
    err_offset: int


def _start(sweep: Sweep, run: SweepRun, device, shared) -> _Active:
    run_dir = sweep.base_dir / run.rel_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt = status_lib.read_state(run_dir).get("attempt", 0) + 1
    host = socket.gethostname()
    header = f"=== bbf-sweep: attempt {attempt} on {host} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    out_path, err_path = run_dir / "sweep.out", run_dir / "sweep.err"
    with out_path.open("a") as out, err_path.open("a") as err:
        out.write(header + " ===\n")
        err.write(header + " ===\n")
        out.flush()
        err.flush()
        offset = err.tell()
        cmd = train_command(run, sweep.gin_files, sweep.gin_bindings, sweep.base_dir)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=run_env(device, shared))
    state = {"state": "running", "attempt": attempt, "host": host, "pid": proc.pid,
             "device": device, "started": time.time()}
    status_lib.write_state(run_dir, state)
    return _Active(run, proc, device, state, err_path, offset)


def _finish(sweep: Sweep, a: _Active, rc: int) -> bool:
    run_dir = sweep.base_dir / a.run.rel_dir
    ok = rc == 0 and (run_dir / "eval.json").is_file()
    a.state.update(state="done" if ok else "failed", ended=time.time(), returncode=rc)
    if not ok:
        a.state["stderr_tail"] = tail(a.err_path, a.err_offset)
    status_lib.write_state(run_dir, a.state)
    return ok


def summary(sweep: Sweep, parallel: int | None = None) -> str:
    statuses = [status_lib.run_status(sweep.base_dir / r.rel_dir) for r in sweep.runs]
    return f"sweep {sweep.base_dir}: " + status_lib.summary_line(statuses, parallel)


def failure_lines(run_dir: pathlib.Path, state: dict) -> list[str]:
    lines = [f"FAILED {run_dir} (exit {state.get('returncode')}); log: {run_dir / 'sweep.err'}"]
    return lines + [f"  | {line}" for line in state.get("stderr_tail", [])[-3:]]


def execute(sweep: Sweep, runs: list[SweepRun], jobs: int = 1,
            devices: list[str] | None = None) -> int:
    """Runs ``runs`` (of ``sweep``) ``jobs`` at a time; returns how many failed.

    With ``devices``, each run is pinned to the least busy of them.
    """
    if jobs < 1:
        raise SweepError(f"--jobs must be >= 1, got {jobs}")
    todo = []
    for run in runs:
        st = status_lib.run_status(sweep.base_dir / run.rel_dir)
        if st.kind == "running":
            print(f"skipped {run.rel_dir}: running (pid {st.state.get('pid')} on "
                f"{st.state.get('host')})")
        elif st.kind != "done":
            todo.append(run)
    print(f"{len(runs)} run(s), {len(runs) - len(todo)} finished or running elsewhere, "
        f"{len(todo)} to run, {jobs} at a time")
    shared = devices is not None and jobs > len(devices)
    load = {d: 0 for d in devices or []}
    active: list[_Active] = []
    failed = 0
    beat = time.time()
    while todo or active:
        while todo and len(active) < jobs:
            device = pick_device(devices, load) if devices else None
            if device is not None:
                load[device] += 1
            a = _start(sweep, todo.pop(0), device, shared)
            active.append(a)
            print(f"started {a.run.rel_dir}" + (f" on GPU {device}" if device else ""))
        time.sleep(_POLL_S)
        for a in [a for a in active if a.proc.poll() is not None]:
            active.remove(a)
            if a.device is not None:
                load[a.device] -= 1
            run_dir = sweep.base_dir / a.run.rel_dir
            if _finish(sweep, a, a.proc.returncode):
                took = a.state["ended"] - a.state["started"]
                print(f"done {a.run.rel_dir} in {status_lib.format_duration(took)}")
            else:
                failed += 1
                for line in failure_lines(run_dir, a.state):
                    print(line)
            print(summary(sweep, jobs))
        if time.time() - beat > status_lib.HEARTBEAT_S:
            beat = time.time()
            for a in active:
                status_lib.write_state(sweep.base_dir / a.run.rel_dir, a.state)
    return failed


def array_task_runs(sweep: Sweep, env=None) -> tuple[int, int, list[SweepRun]]:
    """(task id, task count, runs) of a SLURM array task: the runs i with
    i % SLURM_ARRAY_TASK_COUNT == SLURM_ARRAY_TASK_ID."""
    env = os.environ if env is None else env
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
    except KeyError as e:
        raise SweepError(f"--array_task: {e.args[0]} is not set (run inside a SLURM job "
                         "array, or set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT)") from None
    except ValueError:
        raise SweepError("--array_task: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT must be "
                         "integers") from None
    if not 0 <= task < count:
        raise SweepError(f"--array_task: SLURM_ARRAY_TASK_ID={task} is not in [0, "
                         f"SLURM_ARRAY_TASK_COUNT={count})")
    return task, count, [r for r in sweep.runs if r.index % count == task]
