"""Data-parallel training over a 1-D device mesh (pmap semantics with ``jit`` + sharding).

Semantics are those of the classic ``pmap`` data-parallel update: parameters, target
and optimizer state are replicated on every device; the ``B`` rows of each gradient
step's minibatch are split over the ``D`` devices; gradients and metrics are averaged
over the devices (``pmean``) before the optimizer; the ``G`` grouped steps stay one
``lax.scan`` in one dispatch.

Why ``jax.jit`` with ``NamedSharding`` over a mesh, and not ``pmap`` or ``shard_map``:

* ``pmap`` is the legacy API. Since JAX 0.8 it is itself implemented with ``jit`` and
  ``shard_map``, its docstring points to ``jax.shard_map``, and the pmap-era helpers
  (``device_put_replicated``) are gone. New code should use ``jit`` over a mesh or
  ``shard_map``.
* With ``jit`` the learner's single-device code runs unchanged: the batch axis of
  :class:`~bbf_jax.agents.bbf.learner.TrainBatch` is sharded, the state replicated, and the XLA
  partitioner turns the global-batch mean of the loss into per-device partial sums plus
  one all-reduce, i.e. the ``pmean`` of per-device gradients (equal shards). The metrics
  are global-batch means the same way.
* Random draws keep their global meaning. The per-example network keys
  ``split(rng, B)`` and the DrQ draws over all ``B * T`` images are the single-device
  ones (``jax_threefry_partitionable`` makes them independent of the sharding), so 1,
  2 and 4 devices compute the same update up to float summation order. ``shard_map``
  would instead need per-device key slicing inside the learner to reproduce them.

The mesh axis is :data:`DATA_AXIS` with ``AxisType.Auto``: ``jax.make_mesh`` defaults to
``Explicit`` axes, under which sharded batch dimensions become part of array types and
the learner's reshapes (e.g. merging batch and time for augmentation) would need
explicit sharding annotations.

Reduced precision: bfloat16/float16 compute and the float16 loss scale work unchanged
(the ``DynamicScale`` state is replicated like the rest). Each device sums the gradient
of its own rows in the compute dtype before the float32 all-reduce, so results agree
across device counts only to that dtype's resolution, and with float16 whether a step
overflows (and is skipped) can depend on the device count, as it would under ``pmap``.

Multi-host: after :func:`maybe_initialize_distributed` every process runs the same
program and, as with ``pmap``, P processes compute the run of one. The mesh spans the
first ``num_devices`` local devices of every process; every process holds the same
replay and samples the same global group, of which it feeds its own ``B / P`` rows of
every minibatch (:func:`make_put_fn`); the state is replicated everywhere. Per-sample
metrics (``dqn_loss_per_sample``) span processes: :func:`all_rows` gathers them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from bbf_jax.agents.bbf.learner import FrameBatch, Learner, TrainBatch, to_train_batch

DATA_AXIS = "data"
SHUTDOWN_TIMEOUT_S = 24 * 3600
START_TIMEOUT_S = 3600


# ------------------------------------------------------------------ process setup
def maybe_initialize_distributed(
    coordinator_address: str | None, num_processes: int = 1, process_id: int = 0
) -> bool:
    """Joins a multi-process JAX job when ``coordinator_address`` is given.

    Must run before any other JAX call of the process. Every process of the job calls
    it with the same ``coordinator_address`` (``host:port`` of process 0) and
    ``num_processes`` and its own ``process_id``. Returns True if it initialised,
    False (and does nothing) when ``coordinator_address`` is None or empty.
    """
    if not coordinator_address:
        return False
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        # Process 0 evaluates alone after training (100 episodes can take hours on
        # CPU) while the others wait for it at the shutdown barrier.
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S,
    )
    return True


def wait_for_all_processes(name: str, timeout_s: int = START_TIMEOUT_S) -> None:
    """Barrier of all processes through the coordination service (nothing with one).

    Call it before the first device collective: on CPU, the first collective between
    processes gives up after 30 s if another process is still compiling or loading.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)


# ------------------------------------------------------------------------- mesh
def make_mesh(num_devices: int = 0) -> Mesh:
    """1-D mesh over ``num_devices`` devices of every process (0: all local devices).

    ``RunConfig.num_devices`` counts devices per process; with P processes the mesh has
    ``P * num_devices`` devices, ordered by process so that each process's devices hold
    a contiguous block of every minibatch.
    """
    local = jax.local_device_count()
    if not 0 <= num_devices <= local:
        raise ValueError(
            f"num_devices={num_devices} is not in [0, {local}] (0 means all {local} local devices)"
        )
    per_process = num_devices or local
    by_process: dict[int, list] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    devices = [
        d
        for p in sorted(by_process)
        for d in sorted(by_process[p], key=lambda d: d.id)[:per_process]
    ]
    return Mesh(np.array(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of a value that every device holds whole."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a ``(G, B, ...)`` group: axis 1 (the minibatch rows) over the mesh."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises ValueError unless the global minibatch splits evenly over the mesh."""
    if batch_size % mesh.size:
        raise ValueError(
            f"AgentConfig.batch_size={batch_size} does not divide over {mesh.size} devices "
            f"(data parallelism splits every minibatch evenly); use a multiple of {mesh.size} "
            "or change RunConfig.num_devices"
        )


# ------------------------------------------------------------------ placement
def replicate(tree, mesh: Mesh):
    """Copies every leaf of ``tree`` (e.g. a TrainState) whole onto every mesh device.

    With several processes each one passes the same value (same seed), and each holds
    the copies on its own devices.
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def shard_batch(batch: TrainBatch | FrameBatch, mesh: Mesh) -> TrainBatch | FrameBatch:
    """Places a ``(G, B_local, ...)`` host batch with its rows split over the mesh.

    One process: ``B_local`` is the global minibatch size ``B``. P processes: each
    passes its own ``B / P`` rows; the global array is their concatenation in process
    order. Raises ValueError if the global ``B`` does not divide over the mesh.
    """
    local_rows = np.shape(batch.action)[1]
    global_rows = local_rows * jax.process_count()
    check_batch_size(global_rows, mesh)
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)

    def put(x):
        x = np.asarray(x)
        shape = (x.shape[0], global_rows) + x.shape[2:]
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree.map(put, batch)


def make_put_fn(mesh: Mesh, batches_to_group: int, batch_size: int,
                to_batch: Callable = to_train_batch) -> Callable[[Any], FrameBatch]:
    """``put_fn`` for :class:`~bbf_jax.replay.BatchPipeline`: host sample -> sharded batch.

    ``batch_size`` is the global minibatch size B and every process passes the whole
    global sample of ``G * B`` rows (the same on every process).
    :func:`~bbf_jax.agents.bbf.learner.to_train_batch` groups it into ``(G, B, ...)`` (importance
    weights normalised over all ``G * B``, spec §4.8); process p keeps rows
    ``p * B / P .. (p + 1) * B / P - 1`` of every minibatch, which :func:`shard_batch`
    places on its devices. ``to_batch(sample, G, B)`` is the agent's grouping (BBF's
    by default).
    """
    check_batch_size(batch_size, mesh)
    local_batch = batch_size // jax.process_count()
    rows = slice(jax.process_index() * local_batch, (jax.process_index() + 1) * local_batch)

    def put(sample) -> FrameBatch:
        batch = to_batch(sample, batches_to_group, batch_size)
        if jax.process_count() > 1:
            batch = jax.tree.map(lambda x: x[:, rows], batch)
        return shard_batch(batch, mesh)

    return put


# ------------------------------------------------------------------ the update
def make_parallel_train_steps(learner: Learner, mesh: Mesh) -> Callable:
    """Jitted data-parallel :meth:`~bbf_jax.agents.bbf.learner.Learner.train_steps`.

    Same signature and results as ``learner.train_steps(state, batches, hparams)``:
    ``state`` and ``hparams`` replicated (copied if they are not yet), ``batches``
    ``(G, B, ...)`` sharded as by :func:`shard_batch`. The new state comes back
    replicated; metrics as the partitioner lays them out (scalars replicated,
    ``dqn_loss_per_sample`` split like the batch). The state is donated off CPU.
    """
    check_batch_size(learner.agent.batch_size, mesh)
    donate = () if jax.default_backend() == "cpu" else (0,)
    return jax.jit(
        learner.train_steps,
        in_shardings=(replicated(mesh), batch_sharding(mesh), replicated(mesh)),
        out_shardings=(replicated(mesh), None),
        donate_argnums=donate,
    )


SEED_BATCHINGS = ("vmap", "map")


def over_seeds(fn: Callable, batching: str, num_shared: int = 0) -> Callable:
    """``fn`` applied to every seed of a group, inside the caller's program.

    ``over_seeds(fn, batching, num_shared)(*per_seed, *shared)``: every ``per_seed``
    argument is a tree of N values stacked on a leading seed axis; the last
    ``num_shared`` arguments are the same for all seeds. Returns ``fn``'s results of the
    N seeds stacked on a leading axis. ``batching`` (``RunConfig.seed_batching``):
    'vmap' batches the seeds into one computation (``jax.vmap``: convolutions over
    stacked kernels become grouped ones, so every value rounds differently from
    ``fn``'s); 'map' computes them one after another (``jax.lax.map``), each with
    ``fn``'s own operations, bit for bit those of ``fn`` called on its own.
    """
    if batching not in SEED_BATCHINGS:
        raise ValueError(f"seed batching must be one of {list(SEED_BATCHINGS)}, got {batching!r}")

    def each(*args):
        split = len(args) - num_shared
        per_seed, shared = args[:split], args[split:]
        if batching == "vmap":
            return jax.vmap(fn, in_axes=(0,) * split + (None,) * num_shared)(*args)
        return jax.lax.map(lambda xs: fn(*xs, *shared), per_seed)

    return each


def make_group_train_steps(learner: Learner, mesh: Mesh, batching: str = "vmap") -> Callable:
    """Jitted :meth:`~bbf_jax.agents.bbf.learner.Learner.train_steps` of N seeds in one dispatch.

    ``fn(states, batches, hparams) -> (states, metrics)``: ``states`` is N train states
    stacked on a leading axis (replicated); ``batches`` a tuple of N ``(G, B, ...)``
    groups, each placed as by :func:`shard_batch` (the replay pipelines copy them to the
    device in the background; they are stacked inside the program); ``hparams`` shared.
    The seeds' steps run as :func:`over_seeds` with ``batching``; on a mesh each device
    computes its rows of every seed's minibatches. Metrics come back with a leading N
    axis. Seed k's result is its single run's step (:func:`make_parallel_train_steps`)
    bit for bit with 'map', up to float rounding with 'vmap' (batching changes XLA's
    kernels and their summation order).
    """
    check_batch_size(learner.agent.batch_size, mesh)
    donate = () if jax.default_backend() == "cpu" else (0,)
    step = over_seeds(learner.train_steps, batching, num_shared=1)

    def train(states, batches, hparams):
        return step(states, jax.tree.map(lambda *x: jax.numpy.stack(x), *batches), hparams)

    return jax.jit(
        train,
        in_shardings=(replicated(mesh), batch_sharding(mesh), replicated(mesh)),
        out_shardings=(replicated(mesh), None),
        donate_argnums=donate,
    )


# ------------------------------------------------------------------ host access
def local_replica(tree):
    """This process's copy of a replicated tree (e.g. parameters to act with).

    Multi-process arrays span devices of other processes and cannot be fetched whole;
    each leaf's first local shard is the full value when the tree is replicated.
    """
    return jax.tree.map(
        lambda x: x if x.is_fully_addressable else x.addressable_data(0), tree
    )


def all_rows(x) -> np.ndarray:
    """The whole of a (possibly batch-sharded) array as numpy, on every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def from_process_0(value):
    """Process 0's ``value`` (an int32 or an int32 array), on every process; ``value``
    itself with one process."""
    if jax.process_count() == 1:
        return value
    got = multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32))
    return np.asarray(got) if np.ndim(value) else int(got)
