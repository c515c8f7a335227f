"""Orbax checkpoints of a whole training run, for exact resumption.

A checkpoint (``base_dir/checkpoints/<agent_step>``) holds three items written
atomically by ``orbax.checkpoint.CheckpointManager``:

* ``train_state``: the learner's :class:`~bbf_jax.agents.bbf.learner.TrainState` (online and
  target parameters, optimizer and loss-scale state, PRNG keys, counters);
* ``host``: numpy arrays of the host side: the replay buffer (storage, sum tree,
  generator state), the prefetched samples still queued, the live environment's
  emulator state (``cloneState``) and preprocessing buffers, the agent's frame stack;
* ``meta``: JSON with the counters of the loop, numpy generator states and a
  fingerprint (game, seed, operative gin config) that a resumed run must match.

Saves are asynchronous (orbax's async checkpointing): :meth:`RunCheckpointer.save`
returns once orbax has copied every array (its numpy handler's ``deepcopy_host_arrays``,
on by default: the replay keeps being written in place, and its saved rows are views),
and a background thread writes and commits the files, so training goes on during the
IO. The next save, :meth:`~RunCheckpointer.wait`
and :meth:`~RunCheckpointer.close` first wait for a pending one; :meth:`~RunCheckpointer.poll`
reports one that has finished. Each finished save is described by a :class:`SaveReport`
(size, seconds the caller was blocked, seconds until the checkpoint was committed).

A checkpoint appears under its step's name only once complete: orbax writes into
``<step>.orbax-checkpoint-tmp`` and renames it at the end, so a crash or a full disk
during a save leaves the previous checkpoints as they were (the temporary directory is
removed when the next run opens the directory). Loading reads JSON and tensorstore
arrays: neither orbax (0.12.8: no ``pickle`` import in the package) nor this module ever
unpickles.

In a multi-process run every process calls :meth:`RunCheckpointer.save` and
:meth:`~RunCheckpointer.restore` with the same ``base_dir``: orbax synchronises the
processes, and process 0 writes the arrays (all of them numpy values that are the same on
every process: the replicated train state and the identical host state).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, or from another config or game), or
    one that could not be written."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint of another run (configuration or game)."""


def resume_candidates(steps, resume_from: int | str | None) -> list[int]:
    """The checkpoint steps to try, in order, to resume (``bbf-train --resume_from``).

    Args:
      steps: the steps of the complete checkpoints.
      resume_from: None (the newest), an int (that step) or 'latest_valid' (newest
        first, each older one in turn while they cannot be read).

    Raises:
      CheckpointError: a step that is not there (naming those that are).
    """
    steps = sorted(steps)
    if resume_from == "latest_valid":
        return steps[::-1]
    if resume_from is None:
        return steps[-1:]
    if resume_from not in steps:
        raise CheckpointError(f"--resume_from {resume_from}: no such checkpoint; the complete "
                              f"checkpoints are at steps {steps or 'none'}")
    return [resume_from]


def encode_bytes(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8).copy()


def decode_bytes(a) -> bytes:
    return np.asarray(a, np.uint8).tobytes()


def flat_to_tree(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Orbax uses '/' in paths: store 'a/b' keys as 'a.b', and 0-d byte strings as uint8."""
    out = {}
    for k, v in flat.items():
        v = np.asarray(v)
        if v.dtype.kind == "S":
            v = encode_bytes(v.item())
            k = k + ".bytes"
        out[k.replace("/", ".")] = v
    return out


def tree_to_flat(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if k.endswith(".bytes"):
            k, v = k[: -len(".bytes")], np.array(decode_bytes(v))
        out[k.replace(".", "/")] = np.asarray(v)
    return out


class SaveReport(NamedTuple):
    """A finished save: its step, its size on disk in bytes, the seconds
    :meth:`~RunCheckpointer.save` blocked its caller (copying the arrays, orbax's
    synchronous part) and the seconds from that call until the checkpoint was committed
    (its files written, just before its directory takes the step's name)."""

    step: int
    size_bytes: int
    blocking_seconds: float
    total_seconds: float

    def line(self) -> str:
        return (f"bbf-train: checkpoint {self.step}: {self.size_bytes / 1e6:.1f} MB, "
                f"{self.blocking_seconds:.2f} s blocking, {self.total_seconds:.2f} s until "
                "committed")


class RunCheckpointer:
    """Saves (asynchronously) and restores run checkpoints under ``base_dir/checkpoints``."""

    def __init__(self, base_dir: str | pathlib.Path, max_to_keep: int = 2):
        self.directory = pathlib.Path(base_dir).resolve() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._committed))
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        # (step, start time, blocking seconds) of the save in flight, if any.
        self._pending: tuple[int, float, float] | None = None
        self._committed_at: float | None = None

    def _committed(self) -> None:
        """Called by orbax's writer thread once every file of the save is written."""
        self._committed_at = time.perf_counter()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def discard_after(self, step: int) -> list[int]:
        """Moves the checkpoints newer than ``step`` to ``base_dir/checkpoints_discarded``
        (kept for inspection, out of the way of the resumed run); returns their steps."""
        newer = [s for s in self.all_steps() if s > step]
        if newer and jax.process_index() == 0:
            aside = self.directory.parent / "checkpoints_discarded"
            aside.mkdir(exist_ok=True)
            for s in newer:
                target = aside / str(s)
                if target.exists():
                    shutil.rmtree(target)
                (self.directory / str(s)).rename(target)
        self._manager.reload()
        return newer

    def save(self, step: int, train_state, host: dict, meta: dict) -> SaveReport | None:
        """Starts writing the checkpoint of ``step`` and returns once its arrays are
        copied: the caller may then change them (the replay in place). Waits first for
        the previous save, whose report it returns (None if there was none).

        Args:
          step: the agent step, the checkpoint's name.
          train_state: a pytree of numpy arrays (the same on every process).
          host: a nested dict of numpy arrays (the same on every process).
          meta: JSON-serialisable values.

        Raises:
          CheckpointError: this or the previous save could not be written (e.g. a full
            disk); the checkpoints before it are intact.
        """
        previous = self.wait()
        start = time.perf_counter()
        self._committed_at = None
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    train_state=ocp.args.StandardSave(train_state),
                    host=ocp.args.StandardSave(host),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
        except Exception as e:  # orbax and tensorstore raise many types (OSError, ValueError)
            raise self._write_error(step, e) from None
        self._pending = (step, start, time.perf_counter() - start)
        return previous

    def poll(self) -> SaveReport | None:
        """The report of the pending save if it has finished (else None, at once)."""
        if self._pending is None or self._manager.is_saving_in_progress():
            return None
        return self.wait()

    def wait(self) -> SaveReport | None:
        """Waits for the pending save and returns its report (None if there was none).

        Raises:
          CheckpointError: it could not be written; the checkpoints before it are intact.
        """
        if self._pending is None:
            return None
        step, start, blocking = self._pending
        self._pending = None
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as e:
            raise self._write_error(step, e) from None
        # A small checkpoint may be committed before orbax's save call returns.
        committed = max(self._committed_at or time.perf_counter(), start + blocking)
        size = sum(p.stat().st_size for p in (self.directory / str(step)).rglob("*")
                   if p.is_file())
        return SaveReport(step, size, blocking, committed - start)

    def _write_error(self, step: int, e: Exception) -> CheckpointError:
        kept = [s for s in self.all_steps() if s != step]
        return CheckpointError(
            f"could not write checkpoint {step} in {self.directory}: {_os_reason(e)}; the "
            f"newest complete checkpoint ({kept[-1] if kept else 'none'}) is intact"
        )

    def restore(self, step: int, abstract_train_state) -> tuple[Any, dict, dict]:
        """Returns ``(train_state, host, meta)`` of ``step``.

        Raises:
          CheckpointError: if the checkpoint cannot be read or does not match the
            structure of ``abstract_train_state`` (another network or config).
        """
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_train_state)
        try:
            meta = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )["meta"]
        except Exception as e:  # orbax raises many types for unreadable files
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is unreadable: {_short(e)}{RESUME_HINT}"
            ) from None
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    train_state=ocp.args.StandardRestore(target),
                    host=ocp.args.StandardRestore(),
                ),
            )
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is corrupt or does not match this "
                f"run's network/optimizer: {_short(e)}{RESUME_HINT}"
            ) from None
        return restored["train_state"], restored["host"], meta

    def close(self) -> SaveReport | None:
        """Waits for the pending save (returning its report) and releases orbax's threads.

        Raises:
          CheckpointError: the pending save could not be written.
        """
        try:
            return self.wait()
        finally:
            self._manager.close()


RESUME_HINT = " (--resume_from latest_valid falls back to an older checkpoint)"


def _os_reason(e: Exception) -> str:
    """The operating system's words for a failed write ('No space left on device'), which
    tensorstore puts at the end of a long message as ``os_error_code``."""
    code = re.search(r"os_error_code='?(\d+)", str(e))
    if code:
        return os.strerror(int(code[1]))
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return _short(e)


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def check_fingerprint(saved: dict, current: dict, directory) -> None:
    """Raises CheckpointError naming every field where ``saved`` and ``current`` differ."""
    diff = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if diff:
        details = "; ".join(
            f"{k}: checkpoint {json.dumps(saved.get(k))[:80]} "
            f"vs now {json.dumps(current.get(k))[:80]}"
            for k in diff
        )
        raise CheckpointMismatch(
            f"the checkpoint in {directory} belongs to another run ({details}); use another "
            "--base_dir or delete the checkpoints to start afresh"
        )
