"""A SLURM job-array script for a sweep, and its submission with ``sbatch``.

Array task i (of K) runs ``python -m bbf_jax.sweep --array_task --base_dir <base_dir>``,
which runs the sweep's runs r with r % K == i one after another, with the local
executor's rules (finished runs skipped, interrupted ones resumed). Re-submitting the same
script finishes a sweep.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from bbf_jax.sweep.grid import SweepError
from bbf_jax.sweep.manifest import Sweep

SCRIPT = "sweep.sbatch"
LOG_DIR = "slurm"
MAX_TASKS = 1000  # SLURM's default MaxArraySize is 1001 (indices 0-1000)


def sbatch_options(text: str) -> list[str]:
    """'--gres=gpu:1 -p gpu --time=12:00:00' -> ['--gres=gpu:1', '-p gpu', '--time=12:00:00']:
    one ``#SBATCH`` option per entry (a value may follow its option as the next word)."""
    options: list[list[str]] = []
    for word in shlex.split(text):
        if word.startswith("-"):
            options.append([word])
        elif options:
            options[-1].append(word)
        else:
            raise SweepError(f"--slurm_opts {text!r}: {word!r} is not an sbatch option")
    for opt in options:
        if opt[0].split("=")[0] in ("--array", "-a"):
            raise SweepError("--slurm_opts: --array is set by bbf-sweep (use --slurm_tasks)")
    return [shlex.join(opt) for opt in options]


def script(sweep: Sweep, tasks: int, options: list[str]) -> str:
    """The text of the job-array script (``tasks`` array tasks, ``options`` as #SBATCH)."""
    base = sweep.base_dir.resolve()
    n = len(sweep.runs)
    if not 1 <= tasks <= min(n, MAX_TASKS):
        raise SweepError(f"--slurm_tasks must be in [1, {min(n, MAX_TASKS)}] for {n} runs, "
                         f"got {tasks}")
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=bbf-sweep",
        f"#SBATCH --array=0-{tasks - 1}",
        f"#SBATCH --output={shlex.quote(str(base / LOG_DIR / '%A_%a.out'))}",
        *(f"#SBATCH {opt}" for opt in options),
        f"# bbf-sweep: {n} runs ({base / 'sweep.json'}); array task i of {tasks} runs the runs",
        f"# r with r % {tasks} == i, skipping finished runs and resuming interrupted ones.",
        "set -euo pipefail",
        shlex.join([sys.executable, "-m", "bbf_jax.sweep", "--array_task",
                    "--base_dir", str(base)]),
        "",
    ]
    return "\n".join(lines)


def write(sweep: Sweep, text: str):
    """Writes the script to ``<base_dir>/sweep.sbatch`` and creates the log directory."""
    (sweep.base_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
    path = sweep.base_dir / SCRIPT
    path.write_text(text)
    return path


def submit(path) -> str:
    """``sbatch <path>``; returns sbatch's output line ('Submitted batch job N')."""
    try:
        proc = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        raise SweepError("sbatch not found on PATH; --dry_run writes the script without "
                         f"submitting it ({path})") from None
    if proc.returncode != 0:
        raise SweepError(f"sbatch failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()
