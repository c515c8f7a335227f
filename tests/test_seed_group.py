"""Vectorised seeds (bbf_jax.seed_group): a group's dispatches compute each seed's own
train steps, reset and act; with ``seed_batching = 'map'`` bit for bit, with 'vmap'
within the tolerance policy.

In process, one CPU device, a tiny learner (the DQN encoder at width 0.25 and SPR with
one jump: the whole loss, at a third of the compile time of tests/test_parallel.py's
IMPALA learner; the full BBF path runs in the end-to-end test): two seeds train on their
own groups of replay samples for three dispatches (six gradient steps), once separately
through the single run's function and once stacked through each batching of a group's
dispatch; the same for a reset and an act of both seeds.

'map' runs each seed's own program inside the group's dispatch (``jax.lax.map``), so
every leaf and metric is compared exactly. 'vmap' batches the seeds, which changes XLA's
kernels (a vmapped convolution over stacked kernels is a grouped convolution): every
activation rounds differently. Its dispatches are compared one at a time, each from the
separate run's state before it, with tests/test_parallel.py's data-parallel bounds for
the G = 2 gradient steps of a dispatch: the policy's one-gradient relative error norm
(rounding noise plus ReLU kinks) per state leaf, plus one float32 rounding of the value
per step. Not elementwise: the policy's elementwise bound allows kinks in conv sums
only, which fits a split batch (only reductions change order) but not vmap, under which
any encoder output unit within rounding of its ReLU switch may flip and move its terms
of the dense projection's gradient (measured: 4 of the 123,904 projection kernel
entries 1.5x over that bound after one dispatch; in norm they are far inside it).
(Chaining the three vmapped dispatches instead would compound the rounding of six
steps, for which the policy gives no bound.) The end-to-end run of a group with 'map'
against its single runs, preempted and resumed, is in tests/test_train_cli.py.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_parallel import (
    DISPATCHES,
    NUM_ACTIONS,
    B,
    G,
    _assert_change_close,
    _flat,
    _hparams,
    _leaf_bound,
    _samples,
)

from bbf_jax import tolerance

SEEDS = (0, 1)
ACT_STATES = 16  # frame stacks each seed acts on (its greedy actions compared below)


def _configs():
    from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig

    agent = AgentConfig(batch_size=B, batches_to_group=G, jumps=1)
    return agent, NetworkConfig(encoder_type="dqn", width_scale=0.25, hidden_dim=64)


def _reductions():
    from bbf_jax.crosscheck.reductions import network_reductions

    agent, net = _configs()
    return network_reductions(net, B, agent.jumps)


def _slice(tree, k: int):
    return jax.tree.map(lambda x: np.asarray(x)[k], jax.device_get(tree))


@pytest.fixture(scope="module")
def learner():
    from bbf_jax.agents.bbf.learner import make_learner

    return make_learner(*_configs(), NUM_ACTIONS)


@pytest.fixture(scope="module")
def trained(learner):
    """Per seed: the flat states before every dispatch and the flat metrics and state
    after it, of the separate run, of the 'map' group run (chained like the separate
    one) and of the 'vmap' group dispatches (each from the separate run's state)."""
    from bbf_jax import parallel
    from bbf_jax.seed_group import _stack

    mesh = parallel.make_mesh(1)
    agent = learner.agent
    put = parallel.make_put_fn(mesh, agent.batches_to_group, agent.batch_size)
    samples = _samples(agent.jumps + 1)
    # Seed k trains on the samples rotated by k: every seed sees its own groups.
    feeds = {s: [put(samples[(i + k) % DISPATCHES]) for i in range(DISPATCHES)]
             for k, s in enumerate(SEEDS)}
    single = parallel.make_parallel_train_steps(learner, mesh)
    separate = {s: [] for s in SEEDS}  # per dispatch: (state before, metrics, state after)
    for s in SEEDS:
        state = parallel.replicate(learner.init(s), mesh)
        for i in range(DISPATCHES):
            after, metrics = single(state, feeds[s][i], _hparams(i))
            separate[s].append(tuple(jax.device_get((state, metrics, after))))
            state = after

    def group_dispatch(step, states, i):
        return step(parallel.replicate(_stack(states), mesh),
                    tuple(feeds[s][i] for s in SEEDS), _hparams(i))

    chained = {s: [] for s in SEEDS}
    step = parallel.make_group_train_steps(learner, mesh, "map")
    states = [separate[s][0][0] for s in SEEDS]
    for i in range(DISPATCHES):
        after, metrics = jax.device_get(group_dispatch(step, states, i))
        for k, s in enumerate(SEEDS):
            chained[s].append((states[k], _slice(metrics, k), _slice(after, k)))
        states = [_slice(after, k) for k in range(len(SEEDS))]

    vmapped = {s: [] for s in SEEDS}
    step = parallel.make_group_train_steps(learner, mesh, "vmap")
    for i in range(DISPATCHES):
        before = [separate[s][i][0] for s in SEEDS]
        after, metrics = jax.device_get(group_dispatch(step, before, i))
        for k, s in enumerate(SEEDS):
            vmapped[s].append((before[k], _slice(metrics, k), _slice(after, k)))
    return separate, {"map": chained, "vmap": vmapped}


def _dispatch_flat(dispatch) -> dict:
    before, metrics, after = dispatch
    return {**_flat(before, "before/state"), **_flat(metrics, "metrics"),
            **_flat(after, "state")}


def _assert_dispatch_close(ref: dict, got: dict, what: str) -> None:
    """``got`` (one dispatch of G gradient steps from the state ``ref['before/...']``)
    equals ``ref`` within tests/test_parallel.py's bounds (module docstring): integers
    (counters, PRNG keys) exact; losses as forward outputs, gradient and parameter norms
    as the global gradient norm; the error norm of each state leaf's change over the
    dispatch within its one-gradient relative bound of the reference's change, plus G
    float32 roundings of the value."""
    sums = _reductions()
    assert ref.keys() == got.keys(), what
    for key in ref:
        e, a = ref[key], got[key]
        if e.dtype.kind != "f" or key.startswith("before/"):
            np.testing.assert_array_equal(a, e, err_msg=f"{what}: {key}")
            continue
        if key.startswith("metrics"):
            atol = (sums.gradient_norm(e) if "Norm" in key else sums.output(e)).atol
            np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=f"{what}: {key}")
            continue
        _assert_change_close(ref, got, ref["before/" + key], _leaf_bound(sums, key), G, key, what)


@pytest.mark.parametrize("seed", SEEDS)
def test_mapped_dispatches_are_each_seeds_single_run_bit_for_bit(trained, seed):
    separate, group = trained
    for i in range(DISPATCHES):
        ref, got = (_dispatch_flat(d[seed][i]) for d in (separate, group["map"]))
        assert {"metrics['GradNorm']", "state.cycle_step"} <= ref.keys()
        assert ref.keys() == got.keys()
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"dispatch {i}: {key}")


@pytest.mark.parametrize("seed", SEEDS)
def test_vmapped_dispatch_computes_each_seeds_update(trained, seed):
    separate, group = trained
    for i in range(DISPATCHES):
        ref, got = (_dispatch_flat(d[seed][i]) for d in (separate, group["vmap"]))
        _assert_dispatch_close(ref, got, f"seed {seed} dispatch {i}: vmap vs separate")


def test_the_comparison_rejects_a_mixed_up_seed(trained):
    """Seed 1's online parameters (its own init, keys and samples) in seed 0's place."""
    separate, group = trained
    ref = _dispatch_flat(separate[0][0])
    mixed = dict(_dispatch_flat(group["vmap"][0][0]),
                 **{k: v for k, v in _dispatch_flat(group["vmap"][1][0]).items()
                    if k.startswith("state.online")})
    with pytest.raises(AssertionError, match="online"):
        _assert_dispatch_close(ref, mixed, "seed 1 as seed 0")


@pytest.fixture(scope="module")
def states(learner):
    """The two seeds' initial train states, and random stacks of 4 frames to act on."""
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (len(SEEDS), ACT_STATES, 84, 84, 4), dtype=np.uint8)
    return [jax.device_get(learner.init(s)) for s in SEEDS], frames


def test_group_acts_as_each_seeds_single_run(learner, states):
    """'map': keys and actions bit for bit. 'vmap': keys and random actions (PRNG bits)
    exact; each greedy action's Q-value (the single run's network) within the network's
    output tolerance of the best one, so ties within rounding may go either way."""
    from bbf_jax.agents.bbf.acting import select_actions
    from bbf_jax.seed_group import _stack, make_group_select

    inits, frames = states
    network = learner.network
    single = jax.jit(lambda p, x, key, eps: select_actions(network, p, x, key, eps))
    sums = _reductions()
    params = _stack([s.target for s in inits])
    keys = _stack([s.act_rng for s in inits])
    for eps in (np.float32(0.0), np.float32(1.0)):
        ref = [jax.device_get(single(s.target, frames[k], s.act_rng, eps))
               for k, s in enumerate(inits)]
        for batching in ("map", "vmap"):
            new_keys, actions = jax.device_get(
                make_group_select(learner, batching)(params, frames, keys, eps))
            for k in range(len(SEEDS)):
                what = f"{batching}, epsilon {eps}, seed {SEEDS[k]}"
                np.testing.assert_array_equal(new_keys[k], ref[k][0], err_msg=what)
                if batching == "map" or eps == 1:
                    np.testing.assert_array_equal(actions[k], ref[k][1], err_msg=what)
                    continue
                q, q_other = (np.asarray(network.apply(
                    {"params": inits[j].target}, frames[k].astype(np.float32) / 255).q_values)
                    for j in (k, 1 - k))
                best, atol = q.max(axis=1), sums.output(q).atol
                rows = np.arange(ACT_STATES)
                assert np.all(q[rows, actions[k]] >= best - atol), (what, actions[k], q, atol)
                # The check tells the seeds apart: the other seed's greedy actions fail it.
                assert not np.all(q[rows, q_other.argmax(axis=1)] >= best - atol), what


def test_group_resets_each_seed_as_its_single_run(learner, states):
    """'map': every leaf bit for bit. 'vmap': integers (PRNG keys, counters) exact, floats
    within the elementwise rounding of shrink-and-perturb (``shrink * old + perturb *
    fresh``: three roundings of the magnitude)."""
    from bbf_jax.agents.bbf import resets
    from bbf_jax.agents.bbf.config import ResetConfig
    from bbf_jax.jit_once import jit_once
    from bbf_jax.seed_group import _stack, make_group_reset

    inits, _ = states
    reset = ResetConfig()
    single = jit_once(lambda s: resets.reset_state(learner, s, reset))
    ref = [_flat(jax.device_get(single(s)), "state") for s in inits]
    for batching in ("map", "vmap"):
        got = jax.device_get(make_group_reset(learner, reset, batching)(_stack(inits)))
        for k in range(len(SEEDS)):
            flat = _flat(_slice(got, k), "state")
            assert flat.keys() == ref[k].keys()
            for key, e in ref[k].items():
                what = f"{batching}, seed {SEEDS[k]}: {key}"
                if batching == "map" or e.dtype.kind != "f":
                    np.testing.assert_array_equal(flat[key], e, err_msg=what)
                else:
                    atol = tolerance.elementwise(e, ops=3).atol
                    np.testing.assert_allclose(flat[key], e, rtol=0, atol=atol, err_msg=what)


def test_unknown_seed_batching_is_refused():
    from bbf_jax.parallel import over_seeds

    with pytest.raises(ValueError, match=r"one of \['vmap', 'map'\], got 'pmap'"):
        over_seeds(lambda x: x, "pmap")


def test_a_seed_of_a_group_is_its_single_run():
    """Seed s of a group is configured, fingerprinted and placed as its single run, so
    its checkpoints resume with ``--seed s`` too, whichever the group's seed batching."""
    import dataclasses
    import pathlib

    from bbf_jax.agents.bbf.config import ExperimentConfig
    from bbf_jax.config import RunConfig
    from bbf_jax.runner import fingerprint
    from bbf_jax.seed_group import member_config, seed_dir

    group = ExperimentConfig(run=RunConfig(seed=3, seeds=(3, 5), log_every=7))
    single = ExperimentConfig(run=RunConfig(seed=5, log_every=7))
    assert member_config(group, 5) == single
    assert fingerprint(member_config(group, 5)) == fingerprint(single)
    assert fingerprint(member_config(group, 3)) != fingerprint(single)
    mapped = dataclasses.replace(group, run=dataclasses.replace(group.run, seed_batching="map"))
    assert fingerprint(member_config(mapped, 5)) == fingerprint(single)
    assert seed_dir("runs/x", 5) == pathlib.Path("runs/x/seed_5")
