"""What a benchmark row records about where it ran: device, CPU model and git commit."""

from __future__ import annotations

import csv
import pathlib
import platform
import subprocess


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what the platform module reports."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """Short hash of the checked-out commit, 'unknown' outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name() -> str:
    """JAX's first device kind, with the CPU model on the CPU backend."""
    import jax

    kind = jax.devices()[0].device_kind
    return f"{kind} ({cpu_name()})" if jax.default_backend() == "cpu" else kind


def append_csv(path: pathlib.Path, fields, rows: list[dict]) -> None:
    """Appends ``rows`` to the CSV at ``path`` (header ``fields`` when the file is new;
    missing fields are left empty)."""
    path = pathlib.Path(path)
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        if new:
            writer.writeheader()
        writer.writerows(rows)
