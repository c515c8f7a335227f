"""Deterministic batch pipeline: sample and device_put the next group in the background.

Official timing (spec §5.2): the batch used by train call i was sampled at the end of
train call i-2. The caller drives it as::

    batch = pipeline.get(n, gamma)      # batch to train on now
    out = train_step(state, batch)      # asynchronous device dispatch
    pipeline.launch(n', gamma')         # start sampling the next group (background)
    pipeline.sync()                     # before touching the buffer (priorities, add)

On the first ``get`` two groups are sampled in order and the first is returned. The
background work is one thread running one job at a time, and every buffer mutation is
fenced by ``sync``, so results are bit-identical to sampling in the caller's thread.
'corrected' mode samples each batch in ``get`` right before it is used (``launch`` and
``sync`` do nothing).
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable, Sequence

PREFETCH_MODES = ("official", "corrected")
MAX_PENDING = 2


class BatchPipeline:
    """Queue of host samples and their device copies, filled by one background thread.

    Args:
      sample_fn: ``(n, gamma) -> ReplaySample`` (host arrays).
      put_fn: ``ReplaySample -> device batch`` (any pytree), e.g.
        :func:`bbf_jax.parallel.make_put_fn`.
      mode: 'official' (two calls of lag, overlapped with the device step) or
        'corrected' (fresh batch per call).
    """

    def __init__(self, sample_fn: Callable, put_fn: Callable, mode: str = "official"):
        if mode not in PREFETCH_MODES:
            raise ValueError(f"prefetch mode must be one of {PREFETCH_MODES}, got {mode!r}")
        self.mode = mode
        self._sample_fn = sample_fn
        self._put_fn = put_fn
        self._queue: collections.deque = collections.deque()  # (host sample, device batch)
        self._future: concurrent.futures.Future | None = None
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="replay-prefetch")
            if mode == "official"
            else None
        )
        self._closed = False

    def _produce(self, n, gamma):
        sample = self._sample_fn(n, gamma)
        return sample, self._put_fn(sample)

    def get(self, n: int, gamma: float):
        """The device batch to train on now (sampled with ``n``/``gamma`` only if fresh)."""
        self._check_open()
        if self.mode == "corrected":
            return self._produce(n, gamma)[1]
        self.sync()
        if not self._queue:
            self._queue.append(self._produce(n, gamma))
            self._queue.append(self._produce(n, gamma))
        return self._queue.popleft()[1]

    def launch(self, n: int, gamma: float) -> None:
        """Starts sampling one new group in the background (official mode)."""
        self._check_open()
        if self.mode == "corrected":
            return
        self.sync()
        if len(self._queue) >= MAX_PENDING:
            raise RuntimeError(
                f"BatchPipeline already holds {len(self._queue)} pending batches; "
                "call get() before launching another"
            )
        self._future = self._executor.submit(self._produce, n, gamma)

    def sync(self) -> None:
        """Waits for the background sample; re-raises any exception it raised."""
        if self._future is None:
            return
        future, self._future = self._future, None
        self._queue.append(future.result())

    def pending(self) -> list:
        """Queued host samples (oldest first), e.g. to save them in a checkpoint."""
        self.sync()
        return [sample for sample, _ in self._queue]

    def restore_pending(self, samples: Sequence) -> None:
        """Puts saved host samples back (oldest first) into an empty pipeline."""
        self._check_open()
        self.sync()
        if self._queue:
            raise RuntimeError("restore_pending needs an empty pipeline")
        if len(samples) > MAX_PENDING or (self.mode == "corrected" and samples):
            raise ValueError(
                f"{len(samples)} pending samples cannot be restored in {self.mode} mode"
            )
        for sample in samples:
            self._queue.append((sample, self._put_fn(sample)))

    def close(self) -> None:
        """Waits for the background job and stops the thread (its error is dropped)."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._future = None
        self._queue.clear()

    def __enter__(self) -> BatchPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("BatchPipeline is closed")
