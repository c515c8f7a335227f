"""Data parallelism (bbf_jax.parallel): 1, 2 and 4 devices train identically.

The device count of a JAX process is fixed when its backend starts, so the multi-device
runs happen in subprocesses started by these tests (``python tests/test_parallel.py
worker ...``): one process with ``--xla_force_host_platform_device_count=4`` CPU
devices runs the same seed and the same global batches on meshes of 1, 2 and 4
devices, and two processes joined by ``jax.distributed`` on localhost (2 devices
each) run the multi-host path. The workers write their results to ``.npz`` files;
the comparisons happen here. A tiny network keeps the compiles short; the code path
is the full-size one.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

SEED = 0
# float32 runs: B = 4 rows per minibatch, so 1 row per device on 4 devices. float16 runs:
# 8 rows, 2 per device on 4 devices, as the agreement bound of their test assumes.
G, B, B16, NUM_ACTIONS = 2, 4, 8, 4
DISPATCHES = 3  # grouped train calls; the reset comes before the last one
RESET_BEFORE = 2
# Initial float16 loss scales: one that overflows in every per-example backward pass
# (so every step is skipped whatever the partitioning) and one that never overflows.
# In between, whether a step overflows can depend on the device count: the partial
# gradient sums of fewer rows per device are smaller.
FLOAT16_SCALES = {"float16_overflow": 2.0**40, "float16_finite": 2.0**8}


# ----------------------------------------------------------------------- shared setup
def _configs(compute_dtype: str = "float32"):
    from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig

    batch = B16 if compute_dtype == "float16" else B
    agent = AgentConfig(batch_size=batch, batches_to_group=G, jumps=1)
    net = NetworkConfig(width_scale=0.25, hidden_dim=64, num_blocks=1, compute_dtype=compute_dtype)
    return agent, net


def _samples(seq_len: int, batch: int = B):
    """DISPATCHES host groups of G*batch transitions, as the replay hands them out."""
    from bbf_jax.replay import ReplaySample

    rng = np.random.default_rng(SEED)
    n = G * batch
    out = []
    for _ in range(DISPATCHES):
        priority = rng.uniform(0.6, 2.0, n).astype(np.float32)
        out.append(
            ReplaySample(
                frames=rng.integers(0, 256, (n, seq_len + 7, 84, 84), dtype=np.uint8),
                stack_mask=rng.random((n, seq_len + 1, 4)) < 0.9,
                action=rng.integers(0, NUM_ACTIONS, (n, seq_len)).astype(np.int32),
                returns=rng.normal(size=n).astype(np.float32),
                discount=np.full(n, 0.97**3, np.float32),
                terminal=(rng.random(n) < 0.2).astype(np.float32),
                same_trajectory=(rng.random((n, seq_len)) < 0.9).astype(np.float32),
                sampling_priority=priority,
                indices=np.arange(n),
            )
        )
    return out


def _hparams(i: int):
    """Different traced hyperparameters per dispatch (as the schedules produce)."""
    from bbf_jax.agents.bbf.learner import HParams

    return HParams(
        np.float32(0.005 * (i + 1)), np.float32(1e-4 * (i + 1)), np.float32(2e-4 / (i + 1))
    )


def _flat(tree, prefix: str) -> dict:
    import jax

    return {
        prefix + jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


# ---------------------------------------------------------------------- the workers
def _worker_devices(out: pathlib.Path) -> None:
    """One process, 4 CPU devices: meshes of 1, 2 and 4 devices, float32 and float16."""
    import jax

    from bbf_jax import parallel
    from bbf_jax.agents.bbf import resets
    from bbf_jax.agents.bbf.config import AgentConfig, ResetConfig
    from bbf_jax.agents.bbf.learner import make_learner
    from bbf_jax.replay import BatchPipeline

    assert jax.device_count() == 4, jax.devices()
    seq_len = _configs()[0].jumps + 1
    samples = {B: _samples(seq_len), B16: _samples(seq_len, B16)}
    checks = {}

    @functools.cache
    def parallel_step(learner, num_devices):
        mesh = parallel.make_mesh(num_devices)
        return mesh, parallel.make_parallel_train_steps(learner, mesh)

    def train(name, learner, init, num_devices, dispatches, reset=None):
        mesh, step = parallel_step(learner, num_devices)
        batch_size = learner.agent.batch_size
        feed = iter(samples[batch_size])
        # The prefetcher's put_fn shards every group straight onto the mesh.
        pipeline = BatchPipeline(
            lambda n, gamma: next(feed), parallel.make_put_fn(mesh, G, batch_size), "corrected"
        )
        state = parallel.replicate(init, mesh)
        flat = _flat(init, "init/state")
        for i in range(dispatches):
            if reset is not None and i == RESET_BEFORE:
                flat.update(_flat(state, "before_reset/state"))
                state = parallel.replicate(reset(jax.device_get(state)), mesh)
            batch = pipeline.get(3, 0.97)
            state, metrics = step(state, batch, _hparams(i))
            flat.update(_flat(metrics, f"metrics{i}"))
        flat.update(_flat(state, "state"))
        leaves = jax.tree.leaves(state)
        checks[f"{name}/{num_devices}"] = {
            "state_devices": sorted({len(x.sharding.device_set) for x in leaves}),
            "state_replicated": all(x.sharding.is_fully_replicated for x in leaves),
            "batch_rows_per_device": sorted(
                {x.sharding.shard_shape(x.shape)[1] for x in jax.tree.leaves(batch)}
            ),
        }
        return flat

    results = {}
    learner = make_learner(*_configs(), NUM_ACTIONS)
    init = jax.device_get(jax.jit(learner.init, static_argnums=0)(SEED))
    np.savez(out / "init.npz", *jax.tree.leaves(init))
    # One compiled reset serves every mesh: the replicated state goes through the host.
    reset = jax.jit(functools.partial(resets.reset_state, learner, reset=ResetConfig()))
    for d in (1, 2, 4):
        results[f"float32_{d}"] = train("float32", learner, init, d, DISPATCHES, reset)
    learner16 = make_learner(*_configs("float16"), NUM_ACTIONS)
    # Parameters are float32 whatever the compute dtype; float16 adds the loss scale.
    init16 = learner16.state_from_params(init.online, init.rng, init.act_rng)
    for name, scale in FLOAT16_SCALES.items():
        start = init16.replace(loss_scale=init16.loss_scale.replace(scale=np.float32(scale)))
        for d in (1, 4):
            results[f"{name}_{d}"] = train(name, learner16, start, d, 2)
    for key, flat in results.items():
        np.savez(out / f"{key}.npz", **flat)

    mesh4 = parallel.make_mesh(4)
    small = jax.tree.map(lambda x: x[:, :6], _train_batch(samples[B16][0], B16))
    calls = {
        "train_steps": lambda: parallel.make_parallel_train_steps(
            make_learner(AgentConfig(batch_size=6), _configs()[1], NUM_ACTIONS), mesh4
        ),
        "shard_batch": lambda: parallel.shard_batch(small, mesh4),
        "mesh": lambda: parallel.make_mesh(5),
    }
    errors = {}
    for name, call in calls.items():
        try:
            call()
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)
    (out / "checks.json").write_text(json.dumps({"checks": checks, "errors": errors}))


def _train_batch(sample, batch: int):
    from bbf_jax.agents.bbf.learner import to_train_batch

    return to_train_batch(sample, G, batch)


def _worker_process(out: pathlib.Path, process_id: int, port: int) -> None:
    """One of two processes (2 CPU devices each) of a localhost jax.distributed job."""
    from bbf_jax import parallel

    assert parallel.maybe_initialize_distributed(f"localhost:{port}", 2, process_id)
    import jax
    from jax.experimental import multihost_utils

    from bbf_jax.agents.bbf.learner import make_learner

    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    agent, net = _configs()
    learner = make_learner(agent, net, NUM_ACTIONS)
    template = jax.eval_shape(learner.init, SEED)
    with np.load(out / "init.npz") as f:
        leaves = [f[f"arr_{i}"] for i in range(len(f.files))]
    state = jax.tree.unflatten(jax.tree.structure(template), leaves)
    mesh = parallel.make_mesh(0)
    state = parallel.replicate(state, mesh)
    step = parallel.make_parallel_train_steps(learner, mesh)
    put = parallel.make_put_fn(mesh, G, B)
    # Both processes pass the whole global group; each feeds its half of every minibatch.
    flat = {}
    for i, sample in enumerate(_samples(agent.jumps + 1)[:RESET_BEFORE]):
        state, metrics = step(state, put(sample), _hparams(i))
        metrics = multihost_utils.process_allgather(metrics, tiled=True)
        flat.update(_flat(metrics, f"metrics{i}"))
    flat.update(_flat(state, "before_reset/state"))
    if process_id == 0:
        np.savez(out / "multihost.npz", **flat)


# ------------------------------------------------------------------------ the tests
def _run_worker(args, devices: int, out: pathlib.Path):
    # LLVM optimisation level 0 halves the compile time of these tiny programs; every
    # run compared here uses the same flags.
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, __file__, "worker", *map(str, args), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(proc, timeout: int = 300) -> None:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    assert proc.returncode == 0, output[-4000:]


def _load(path: pathlib.Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel")
    _wait(_run_worker(["devices"], 4, out))
    loaded = {p.stem: _load(p) for p in out.glob("*.npz") if p.stem != "init"}
    return out, loaded, json.loads((out / "checks.json").read_text())


def _reductions():
    from bbf_jax.crosscheck.reductions import network_reductions

    agent, net = _configs()
    return network_reductions(net, B, agent.jumps)


def _leaf_bound(sums, key: str) -> float:
    """Relative bound for the change of the state leaf ``key`` since initialisation.

    Device counts change the order of the batch sums (per-device partial sums, then the
    all-reduce), and the forward pass of an example may round differently with fewer
    rows per device, which can flip a ReLU kink. So a leaf's gradient gets the bound of
    ``bbf_jax.tolerance`` (``Reductions.gradient``: rounding noise, plus one kink for
    conv layers). Adam's first moment and the parameter change depend on the gradient
    with relative sensitivity at most 1 per entry; the second moment is quadratic (2x).
    """
    path = "/".join(re.findall(r"\['([^']+)'\]", key))
    rel = sums.gradient(path, np.zeros(1)).rel_norm
    return 2 * rel if ".nu[" in key else rel


def _assert_change_close(ref: dict, got: dict, start: np.ndarray, rel: float, steps: int,
                         key: str, what: str) -> np.ndarray:
    """The error norm of the change of the state leaf ``key`` since ``start`` is within
    ``rel`` of the reference's change plus one float32 rounding of the value per step;
    returns the reference's change (float64)."""
    from bbf_jax import tolerance

    e, a = ref[key], got[key]
    change_ref = e.astype(np.float64) - start
    err_norm = np.linalg.norm((a.astype(np.float64) - start) - change_ref)
    bound = rel * np.linalg.norm(change_ref) + steps * tolerance.EPS * np.linalg.norm(e)
    assert err_norm <= bound, f"{what}: {key}: error norm {err_norm:.2e} > {bound:.2e}"
    return change_ref


def _assert_trees_close(ref: dict, got: dict, base: dict, what: str) -> None:
    """``got`` equals ``ref`` within the bounds of :func:`_leaf_bound`.

    Integers (counters, PRNG keys) and the initial state are exact. Metrics: the losses of
    the first step (same parameters) are forward outputs (``Reductions.output``); the
    gradient and parameter norms, and every metric after parameters have been updated,
    get the bound of the global gradient norm (``Reductions.gradient_norm``, the loosest
    leaf's), relative to the reference's magnitude. Learner state (parameters, target,
    Adam moments): the error of the change since initialisation (``base['init/...']``),
    in norm and per element, relative to the reference's change, plus one float32
    rounding of the value per step (the state accumulates G * DISPATCHES roundings, each
    of which may land on the other side when its inputs differ in their last bits).
    """
    from bbf_jax import tolerance

    sums = _reductions()
    steps = G * DISPATCHES
    assert ref.keys() == got.keys(), what
    for key in ref:
        e, a = ref[key], got[key]
        if e.dtype.kind != "f" or key.startswith("init/"):
            np.testing.assert_array_equal(a, e, err_msg=f"{what}: {key}")
            continue
        if key.startswith("metrics"):
            forward = key.startswith("metrics0") and "Norm" not in key
            atol = (sums.output(e) if forward else sums.gradient_norm(e)).atol
            np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=f"{what}: {key}")
            continue
        rel = _leaf_bound(sums, key)
        start = base["init/" + key.removeprefix("before_reset/")]
        change_ref = _assert_change_close(ref, got, start, rel, steps, key, what)
        atol = (rel * tolerance.magnitude(change_ref)
                + steps * tolerance.EPS * tolerance.magnitude(e))
        np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=f"{what}: {key}")


@pytest.mark.parametrize("devices", [2, 4])
def test_devices_agree_float32_across_reset(runs, devices):
    _, loaded, _ = runs
    ref, got = loaded["float32_1"], loaded[f"float32_{devices}"]
    # parameters, target, optimizer state, keys, counters, metrics of every dispatch
    assert any("opt_state" in k for k in ref) and any(".target" in k for k in ref)
    assert {"metrics0['GradNorm']", "metrics2['TotalLoss']", "state.cycle_step"} <= ref.keys()
    _assert_trees_close(ref, got, ref, f"{devices} devices vs 1")
    # The reset happened (the counter restarted) and training moved on afterwards.
    assert ref["state.cycle_step"] == G and ref["state.grad_step"] == DISPATCHES * G
    moved = (
        ref["state.online['head']['advantage']['net']['kernel']"]
        - ref["before_reset/state.online['head']['advantage']['net']['kernel']"]
    )
    assert np.abs(moved).max() > 1e-3


def test_the_comparison_rejects_data_parallel_bugs(runs):
    """Gradients summed over 2 devices instead of averaged (Adam's first moment and the
    gradient norm double), or one device's half-batch loss reported as the metric."""
    _, loaded, _ = runs
    ref = loaded["float32_1"]
    mu = "state.opt_state[0].inner_state[0].mu['encoder']['ResidualStage_0']['Conv_0']['kernel']"
    norm = "metrics0['GradNorm']"
    summed = dict(ref, **{mu: 2 * ref[mu], norm: 2 * ref[norm]})
    with pytest.raises(AssertionError, match="GradNorm"):
        _assert_trees_close(ref, summed, ref, "summed")
    with pytest.raises(AssertionError, match="mu"):
        _assert_trees_close(ref, dict(summed, **{norm: ref[norm]}), ref, "summed")
    per_sample = ref["metrics0['dqn_loss_per_sample']"]
    half = per_sample.reshape(G, 2, B // 2)[:, 0].mean(-1)
    one_device = dict(ref, **{"metrics0['DQNLoss']": half})
    with pytest.raises(AssertionError, match="DQNLoss"):
        _assert_trees_close(ref, one_device, ref, "one device")


def test_state_replicated_and_batch_split(runs):
    _, _, info = runs
    for devices in (1, 2, 4):
        check = info["checks"][f"float32/{devices}"]
        assert check["state_devices"] == [devices]
        assert check["state_replicated"]
        assert check["batch_rows_per_device"] == [B // devices]


def _update_mismatch(ref: dict, got: dict, tree: str) -> float:
    """||delta_got - delta_ref|| / ||delta_ref|| of the parameter change since init."""
    keys = [k for k in ref if k.startswith(f"state.{tree}")]
    d_ref = np.concatenate([(ref[k] - ref[f"init/{k}"]).ravel() for k in keys])
    d_got = np.concatenate([(got[k] - got[f"init/{k}"]).ravel() for k in keys])
    return float(np.linalg.norm(d_got - d_ref) / np.linalg.norm(d_ref))


def test_float16_overflow_skips_on_every_device_count(runs):
    _, loaded, info = runs
    ref, got = loaded["float16_overflow_1"], loaded["float16_overflow_4"]
    assert info["checks"]["float16_overflow/4"]["state_replicated"]
    for res in (ref, got):
        assert not np.isfinite(res["metrics0['GradNorm']"]).any()
        assert not np.isfinite(res["metrics1['GradNorm']"]).any()
        # every step skipped: parameters and optimizer state untouched, scale halved 4x
        for key in res:
            if key.startswith(("state.online", "state.opt_state")):
                np.testing.assert_array_equal(res[key], res[f"init/{key}"], err_msg=key)
        assert res["state.loss_scale.scale"] == 2.0**36
    for key in ("metrics0['LossScale']", "metrics1['LossScale']", "state.loss_scale.fin_steps"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


def test_float16_finite_steps_devices_agree(runs):
    _, loaded, info = runs
    ref, got = loaded["float16_finite_1"], loaded["float16_finite_4"]
    assert info["checks"]["float16_finite/4"]["state_replicated"]
    assert np.isfinite(ref["metrics0['GradNorm']"]).all()
    for key in ("metrics1['LossScale']", "state.loss_scale.scale", "state.loss_scale.fin_steps"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    # The float16 encoder rounds per-device partial sums differently from one global
    # sum, so agreement is to float16 resolution (2**-10 ~ 1e-3), not float32's.
    for key in ref:
        if key.startswith("metrics"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-2, err_msg=key)
    for tree in ("online", "target"):
        assert _update_mismatch(ref, got, tree) < 1e-2, tree


def test_clear_errors(runs):
    _, _, info = runs
    errors = info["errors"]
    assert "batch_size=6 does not divide over 4 devices" in errors["train_steps"]
    assert "batch_size=6 does not divide over 4 devices" in errors["shard_batch"]
    assert "num_devices=5 is not in [0, 4]" in errors["mesh"]


def test_two_processes_match_one(runs):
    out, loaded, _ = runs
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [_run_worker(["process", pid, port], 2, out) for pid in (0, 1)]
    for proc in procs:
        _wait(proc)
    got = _load(out / "multihost.npz")
    ref = {k: v for k, v in loaded["float32_1"].items() if k in got}
    assert len(ref) == len(got)
    _assert_trees_close(ref, got, loaded["float32_1"], "2 processes x 2 devices vs 1 device")


def test_distributed_flag_off_and_bad_ids():
    from bbf_jax import parallel

    assert parallel.maybe_initialize_distributed(None) is False
    assert parallel.maybe_initialize_distributed("") is False
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\), got 2"):
        parallel.maybe_initialize_distributed("localhost:1", 2, 2)
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        parallel.maybe_initialize_distributed("localhost:1", 0, 0)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    import jax

    kind, *rest = sys.argv[2:]
    # The workers' numerics: float32 at the highest matmul precision (CPU devices).
    with jax.default_matmul_precision("highest"):
        if kind == "devices":
            _worker_devices(pathlib.Path(rest[0]))
        else:
            _worker_process(pathlib.Path(rest[2]), int(rest[0]), int(rest[1]))
