"""Vectorised seeds (bbf_jax.seed_group): the vmapped dispatch computes each seed's own
update, within the tolerance policy.

In process, one CPU device: two seeds train on their own groups of replay samples for
three dispatches with a reset before the last, once stacked through the vmapped
dispatch and reset of a group and once separately through the single run's functions.
The comparison is the data-parallel one (tests/test_parallel.py): batching changes XLA's
kernels and summation order exactly as splitting the batch over devices does. The
end-to-end equality of a group run with single runs is in tests/test_train_cli.py.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from test_parallel import (
    DISPATCHES,
    NUM_ACTIONS,
    RESET_BEFORE,
    _assert_trees_close,
    _configs,
    _flat,
    _hparams,
    _samples,
)

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def trained():
    """Per seed: the flat state and metrics of the separate and of the vmapped run."""
    from bbf_jax import parallel, resets
    from bbf_jax.config import ResetConfig
    from bbf_jax.learner import make_learner
    from bbf_jax.seed_group import _stack

    learner = make_learner(*_configs(), NUM_ACTIONS)
    mesh = parallel.make_mesh(1)
    agent = learner.agent
    put = parallel.make_put_fn(mesh, agent.batches_to_group, agent.batch_size)
    samples = _samples(agent.jumps + 1)
    # Seed k trains on the samples rotated by k: every seed sees its own groups.
    feeds = {s: [put(samples[(i + k) % DISPATCHES]) for i in range(DISPATCHES)]
             for k, s in enumerate(SEEDS)}
    inits = {s: jax.device_get(learner.init(s)) for s in SEEDS}
    reset_one = jax.jit(functools.partial(resets.reset_state, learner, reset=ResetConfig()))

    def run(step, reset, state, feed, pick):
        flat = {}
        for i in range(DISPATCHES):
            if i == RESET_BEFORE:
                flat.update(pick(state, "before_reset/state"))
                state = reset(state)
            state, metrics = step(state, feed(i), _hparams(i))
            flat.update(pick(metrics, f"metrics{i}"))
        flat.update(pick(state, "state"))
        return flat

    separate = {}
    single = parallel.make_parallel_train_steps(learner, mesh)
    for s in SEEDS:
        flat = run(single, reset_one, parallel.replicate(inits[s], mesh),
                   lambda i, s=s: feeds[s][i], _flat)
        separate[s] = {**flat, **_flat(inits[s], "init/state")}

    group_step = parallel.make_group_train_steps(learner, mesh)
    group_reset = jax.jit(jax.vmap(functools.partial(resets.reset_state, learner,
                                                     reset=ResetConfig())))
    stacked = parallel.replicate(_stack([inits[s] for s in SEEDS]), mesh)
    vmapped = {s: {} for s in SEEDS}
    group = run(group_step, group_reset, stacked,
                lambda i: tuple(feeds[s][i] for s in SEEDS),
                lambda tree, prefix: {prefix: jax.device_get(tree)})
    for k, s in enumerate(SEEDS):
        for prefix, tree in group.items():
            vmapped[s].update(_flat(jax.tree.map(lambda x, k=k: x[k], tree), prefix))
        vmapped[s].update(_flat(inits[s], "init/state"))
    return separate, vmapped


@pytest.mark.parametrize("seed", SEEDS)
def test_vmapped_dispatch_computes_each_seeds_update(trained, seed):
    separate, vmapped = trained
    ref, got = separate[seed], vmapped[seed]
    assert {"metrics0['GradNorm']", "metrics2['TotalLoss']", "state.cycle_step"} <= ref.keys()
    # Keys, counters and the reset are exact; floats within the data-parallel bounds.
    _assert_trees_close(ref, got, ref, f"seed {seed} vmapped vs separate")


def test_the_comparison_rejects_a_mixed_up_seed(trained):
    """Seed 1's online parameters (its own init, keys and samples) in seed 0's place."""
    separate, vmapped = trained
    mixed = dict(vmapped[0], **{k: v for k, v in vmapped[1].items()
                                if k.startswith("state.online")})
    with pytest.raises(AssertionError, match="online"):
        _assert_trees_close(separate[0], mixed, separate[0], "seed 1 as seed 0")
