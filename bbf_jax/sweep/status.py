"""What each run of a sweep is doing, read from its run directory alone.

The executor keeps ``sweep_state.json`` in every run directory it starts: ``state``
(``running``, ``done`` or ``failed``), ``attempt``, ``host``, ``pid`` (of bbf-train),
``started``/``ended`` (Unix time), ``returncode`` and ``stderr_tail`` (the attempt's last
stderr lines; the full output is in ``sweep.out`` and ``sweep.err``). While a run is in
progress the executor rewrites the file every ``HEARTBEAT_S`` seconds. A run is

* ``done``: its eval.json exists (whatever the state file says);
* ``running``: state ``running`` and, on this host, its pid alive, on another host (a SLURM
  task) a heartbeat younger than ``STALE_S``;
* ``failed``: the last attempt exited without eval.json (retried by the next sweep);
* ``interrupted``: state ``running`` but its process is gone (killed sweep, SLURM time
  limit); the next sweep resumes it from its checkpoint;
* ``pending``: never started.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import socket
import time
from dataclasses import dataclass

STATE_FILE = "sweep_state.json"
HEARTBEAT_S = 30.0
STALE_S = 180.0
KINDS = ("done", "running", "failed", "interrupted", "pending")


@dataclass(frozen=True)
class RunStatus:
    """``kind`` (one of KINDS), the state file's content (``{}`` if none) and, for a run
    that finished in a recorded attempt, that attempt's duration in seconds."""

    kind: str
    state: dict
    duration: float | None = None


def read_state(run_dir: pathlib.Path) -> dict:
    try:
        return json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_state(run_dir: pathlib.Path, state: dict) -> None:
    """Atomic (rename), so that a reader never sees half a file."""
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    tmp.replace(run_dir / STATE_FILE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: pathlib.Path) -> RunStatus:
    """The status of one run directory (see the module docstring)."""
    state = read_state(run_dir)
    if (run_dir / "eval.json").is_file():
        duration = None
        if state.get("state") == "done":
            duration = state["ended"] - state["started"]
        return RunStatus("done", state, duration)
    kind = state.get("state")
    if kind is None:
        return RunStatus("pending", state)
    if kind == "running":
        if state.get("host") == socket.gethostname():
            alive = _alive(int(state["pid"]))
        else:
            alive = time.time() - (run_dir / STATE_FILE).stat().st_mtime < STALE_S
        return RunStatus("running" if alive else "interrupted", state)
    return RunStatus("failed", state)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def summary_line(statuses, parallel: int | None = None) -> str:
    """'12 runs: 3 done, 2 running, 1 failed, 6 to run (1 interrupted); ETA 1h05m'.

    The ETA assumes the remaining runs (running and to run; failed ones are retried only by
    the next sweep) take the mean duration of the runs finished so far, ``parallel`` at a
    time (default: as many as are running now, at least 1).
    """
    count = {k: 0 for k in KINDS}
    for s in statuses:
        count[s.kind] += 1
    to_run = count["interrupted"] + count["pending"]
    text = (f"{len(statuses)} runs: {count['done']} done, {count['running']} running, "
            f"{count['failed']} failed, {to_run} to run")
    if count["interrupted"]:
        text += f" ({count['interrupted']} interrupted)"
    durations = [s.duration for s in statuses if s.duration is not None]
    remaining = count["running"] + to_run
    if not remaining:
        return text
    if not durations:
        return text + "; ETA unknown (no run finished yet)"
    parallel = parallel or max(count["running"], 1)
    eta = sum(durations) / len(durations) * math.ceil(remaining / parallel)
    return text + f"; ETA {format_duration(eta)}"
