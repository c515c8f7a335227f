"""Shrink-and-perturb resets (spec §7.2-§7.3) on a tiny network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax.config import AgentConfig, NetworkConfig, ResetConfig
from bbf_jax.learner import make_learner
from bbf_jax.optim import make_optimizer
from bbf_jax.resets import interpolate, reset_state, shrink_perturb

KEPT = ("encoder", "transition_model")
FRESH = ("projection", "predictor", "head")


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


@pytest.fixture(scope="module")
def reset_result():
    learner = make_learner(AgentConfig(batch_size=4), NetworkConfig(width_scale=0.25,
                                                                    hidden_dim=64), 6)
    state = learner.init(0)
    target = jax.tree.map(lambda x: x + 0.01, state.online)
    opt = make_optimizer(learner.agent)
    # A non-zero optimizer state (count 1, non-zero moments) to see it re-initialised.
    _, stepped = jax.jit(opt.update)(jax.tree.map(jnp.ones_like, state.online), state.opt_state,
                                     state.online)
    old = state.replace(target=target, opt_state=stepped,
                        grad_step=jnp.int32(7), cycle_step=jnp.int32(5))
    new = jax.jit(lambda s: reset_state(learner, s, ResetConfig()))(old)
    # The documented key use: rng, reset_key = split(rng); k_on, k_tg = split(reset_key).
    rng, reset_key = jax.random.split(old.rng)
    k_on, k_tg = jax.random.split(reset_key)
    fresh_on, fresh_tg = learner.init_params(k_on), learner.init_params(k_tg)
    return learner, old, new, rng, fresh_on, fresh_tg


def test_fresh_inits_differ_between_online_and_target(reset_result):
    *_, fresh_on, fresh_tg = reset_result
    for module in fresh_on:
        assert not _equal(fresh_on[module], fresh_tg[module]), module


def test_kept_modules_are_half_old_half_fresh_bitwise(reset_result):
    _, old, new, _, fresh_on, fresh_tg = reset_result
    half = np.float32(0.5)
    for new_tree, old_tree, fresh in ((new.online, old.online, fresh_on),
                                      (new.target, old.target, fresh_tg)):
        assert set(new_tree) == set(KEPT + FRESH)
        for module in KEPT:
            expected = jax.tree.map(lambda o, f: half * np.asarray(o) + half * np.asarray(f),
                                    old_tree[module], fresh[module])
            assert _equal(new_tree[module], expected), module
            assert not _equal(new_tree[module], old_tree[module])
        for module in FRESH:
            assert _equal(new_tree[module], fresh[module]), module


def test_optimizer_state_is_reinitialised_and_counters(reset_result):
    learner, old, new, rng, _, _ = reset_result
    counts = [x for x in jax.tree.leaves(old.opt_state) if x.dtype == jnp.int32]
    assert counts and all(int(c) == 1 for c in counts)
    fresh_opt = make_optimizer(learner.agent).init(new.online)
    assert jax.tree.structure(new.opt_state) == jax.tree.structure(fresh_opt)
    assert _equal(new.opt_state, fresh_opt)
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(new.opt_state))
    assert int(new.cycle_step) == 0 and int(new.grad_step) == 7
    np.testing.assert_array_equal(new.rng, rng)


def test_shrink_perturb_follows_the_config():
    old = {"encoder": {"k": np.full(3, 2.0, np.float32)},
           "transition_model": {"k": np.full(2, 4.0, np.float32)},
           "projection": {"k": np.full(2, 8.0, np.float32)},
           "head": {"k": np.full(2, 6.0, np.float32)}}
    fresh = jax.tree.map(lambda x: -x, old)
    cfg = ResetConfig(shrink_factor=0.75, perturb_factor=0.25,
                      shrink_perturb_keys=("encoder", "projection"))
    out = shrink_perturb(old, fresh, cfg)
    np.testing.assert_array_equal(out["encoder"]["k"], 0.75 * 2.0 - 0.25 * 2.0)
    np.testing.assert_array_equal(out["projection"]["k"], 0.5 * 8.0)
    np.testing.assert_array_equal(out["transition_model"]["k"], -4.0)
    np.testing.assert_array_equal(out["head"]["k"], -6.0)
    # interpolate keeps the modules outside keys unchanged (the EMA form).
    inter = interpolate(old, fresh, ("head",), 0.5, 0.5)
    np.testing.assert_array_equal(inter["head"]["k"], 0.0)
    np.testing.assert_array_equal(inter["encoder"]["k"], 2.0)
    # The gin form "encoder,transition_model" is accepted.
    assert ResetConfig(shrink_perturb_keys="encoder, transition_model").shrink_perturb_keys == KEPT
