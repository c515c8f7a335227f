"""Host memory a run will need, known before it starts: the replay buffer and the model.

The replay's arrays are allocated lazily (``np.zeros``): a run that does not fit would
otherwise die of an out-of-memory error once the buffer fills, hours in. ``bbf-train``
prints :func:`describe` at start-up and refuses (:func:`check_fits`) a configuration whose
replay and model exceed the memory available. The peak counts them twice: a checkpoint is
written from copies of the replay's written rows and of the model (orbax copies them so
that training can go on during the write).
"""

from __future__ import annotations

import math
import pathlib

import jax
import numpy as np

from bbf_jax.agents.bbf.config import ExperimentConfig
from bbf_jax.envs.atari import SCREEN_SIZE

GIB = 2.0**30


def replay_bytes(cfg: ExperimentConfig) -> int:
    """Bytes of a full :class:`~bbf_jax.replay.SubsequenceReplay` of one env: per stored
    transition an 84x84 uint8 frame, an int32 action, a float32 reward and two bool flags;
    prioritized replay adds the sum tree's ``2**(ceil(log2(capacity)) + 1) - 1`` nodes in
    float64 and their float32 image."""
    capacity = cfg.replay.capacity
    per_row = SCREEN_SIZE * SCREEN_SIZE + 4 + 4 + 1 + 1
    tree = 0
    if cfg.replay.prioritized:
        tree = (2 ** (math.ceil(math.log2(capacity)) + 1) - 1) * (8 + 4)
    return capacity * per_row + tree


def tree_bytes(tree) -> int:
    """Bytes of the arrays of a pytree (concrete or ``jax.ShapeDtypeStruct`` leaves)."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def model_host_copies(num_devices: int) -> int:
    """Copies of the train state in host memory: one per device on a CPU backend (device
    memory is host memory), one otherwise (the host copy a checkpoint is written from)."""
    return num_devices if jax.default_backend() == "cpu" else 1


def available_bytes() -> tuple[int, str]:
    """Memory this process can still take, and where the number comes from: Linux's
    ``MemAvailable``, or the cgroup's ``memory.max`` minus ``memory.current`` if lower."""
    best = None
    meminfo = pathlib.Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                best = (int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo")
    cgroup = pathlib.Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = int(limit) - int((cgroup / "memory.current").read_text())
            if best is None or free < best[0]:
                best = (free, "the cgroup's memory.max minus memory.current")
    except (OSError, ValueError):
        pass
    return best if best is not None else (2**63, "unknown")


def peak_bytes(cfg: ExperimentConfig, model: int, copies: int) -> int:
    """Replay and model, plus a copy of both while a checkpoint is written, for every run
    of the process (:func:`_runs`)."""
    return (2 * replay_bytes(cfg) + model * (copies + 1)) * _runs(cfg)


def _runs(cfg: ExperimentConfig) -> int:
    """Runs of the process: one per seed of ``RunConfig.seeds``, else one."""
    return len(cfg.run.seeds) or 1


def describe(cfg: ExperimentConfig, model: int, copies: int) -> str:
    """One line: the replay's and the model's memory."""
    each = f", each of {_runs(cfg)} seeds" if cfg.run.seeds else ""
    return (f"bbf-train: memory: replay {replay_bytes(cfg) / GIB:.2f} GiB when full "
            f"(ReplayConfig.capacity = {cfg.replay.capacity:,}), model {model / GIB:.3f} GiB "
            f"(parameters, target and optimizer state) x {copies} in host memory{each}, "
            f"{peak_bytes(cfg, model, copies) / GIB:.2f} GiB at most with the copies a "
            "checkpoint is written from")


def check_fits(cfg: ExperimentConfig, model: int, copies: int, available: int,
               source: str) -> None:
    """Raises ValueError, with the numbers, if the peak (:func:`peak_bytes`, every seed of
    ``RunConfig.seeds``) exceeds ``available``."""
    replay = replay_bytes(cfg)
    need = peak_bytes(cfg, model, copies)
    seeds = f", for each of {_runs(cfg)} seeds" if cfg.run.seeds else ""
    if need > available:
        raise ValueError(
            f"this configuration needs {need / GIB:.2f} GiB of host memory (replay "
            f"{replay / GIB:.2f} GiB for ReplayConfig.capacity = {cfg.replay.capacity:,}, "
            f"model {model / GIB:.3f} GiB x {copies}, and a copy of both while a checkpoint "
            f"is written{seeds}) but {available / GIB:.2f} GiB are available ({source}); lower "
            "ReplayConfig.capacity or use a larger machine")
