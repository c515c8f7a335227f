"""Shrink-and-perturb resets (spec §7.2-§7.3) on a tiny network."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig, ResetConfig
from bbf_jax.agents.bbf.learner import make_learner
from bbf_jax.agents.bbf.resets import interpolate, kept_keys, reset_state, shrink_perturb
from bbf_jax.jit_once import jit_once
from bbf_jax.optim import make_optimizer

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
    new = jit_once(lambda s: reset_state(learner, s, ResetConfig()))(old)  # as the runner
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


def _tree():
    """A parameter tree with every module and noisy sigma leaves; fresh = -old, so with
    shrink 0.75 / perturb 0.25 an interpolated leaf is 0.5 * old (exact in float32)."""
    f = lambda v: np.full(2, v, np.float32)  # noqa: E731
    old = {"encoder": {"Conv_0": {"kernel": f(2.0)}},
           "transition_model": {"kernel": f(4.0)},
           "projection": {"net": {"kernel": f(8.0), "kernell": f(10.0),
                                  "bias": f(12.0), "biass": f(14.0)}},
           "predictor": {"kernel": f(16.0)},
           "head": {"advantage": {"net": {"kernel": f(6.0), "kernell": f(18.0)}},
                    "value": {"net": {"bias": f(20.0), "biass": f(22.0)}}}}
    return old, jax.tree.map(lambda x: -x, old)


def _flat(tree):
    return {"/".join(str(p.key) for p in path): float(v[0])
            for path, v in jax.tree_util.tree_leaves_with_path(tree)}


OLD_FLAT = _flat(_tree()[0])
ALL_FRESH = {k: -v for k, v in OLD_FLAT.items()}


def _expect(kept_old=(), interpolated=()):
    """All leaves fresh except those whose path starts with a prefix in ``kept_old``
    (old value) or ``interpolated`` (0.5 * old)."""
    out = dict(ALL_FRESH)
    for k, v in OLD_FLAT.items():
        if k.startswith(tuple(kept_old)):
            out[k] = v
        if k.startswith(tuple(interpolated)):
            out[k] = 0.5 * v
    return out


@pytest.mark.parametrize("flags, sp_keys, expected", [
    # BBF: keep encoder + transition model, both interpolated; the rest fresh.
    ({}, KEPT, _expect(interpolated=KEPT)),
    # A kept module not in shrink_perturb_keys is kept unchanged.
    ({}, ("encoder",), _expect(kept_old=("transition_model",), interpolated=("encoder",))),
    # Listed but not kept: re-initialised (the interpolation is discarded).
    ({}, ("encoder", "projection"),
     _expect(kept_old=("transition_model",), interpolated=("encoder",))),
    # reset_encoder=True: encoder and transition model fully fresh despite the keys.
    ({"reset_encoder": True}, KEPT, _expect()),
    # reset_head=False: the head is kept unchanged, or interpolated when listed.
    ({"reset_head": False}, KEPT, _expect(kept_old=("head",), interpolated=KEPT)),
    ({"reset_head": False}, KEPT + ("head",), _expect(interpolated=KEPT + ("head",))),
    # reset_projection=False keeps projection and predictor (incl. the projection sigmas).
    ({"reset_projection": False}, ("projection",),
     _expect(kept_old=("encoder", "transition_model", "predictor"),
             interpolated=("projection",))),
    # reset_noise=False keeps every kernell/biass leaf, also inside re-initialised modules;
    # a sigma leaf of a listed module carries the interpolated value.
    ({"reset_noise": False}, KEPT,
     _expect(kept_old=("projection/net/kernell", "projection/net/biass",
                       "head/advantage/net/kernell", "head/value/net/biass"),
             interpolated=KEPT)),
    ({"reset_noise": False}, KEPT + ("projection",),
     _expect(kept_old=("head/advantage/net/kernell", "head/value/net/biass"),
             interpolated=KEPT + ("projection/net/kernell", "projection/net/biass"))),
    # Everything re-initialised.
    ({"reset_encoder": True, "reset_projection": True, "reset_head": True,
      "reset_noise": True}, (), _expect()),
])
def test_shrink_perturb_follows_the_official_two_step_rule(flags, sp_keys, expected):
    old, fresh = _tree()
    cfg = ResetConfig(shrink_factor=0.75, perturb_factor=0.25, shrink_perturb_keys=sp_keys,
                      **flags)
    assert _flat(shrink_perturb(old, fresh, cfg)) == expected


def test_kept_keys_defaults_and_flags():
    assert kept_keys(ResetConfig()) == KEPT
    assert kept_keys(ResetConfig(reset_encoder=True)) == ()
    assert kept_keys(ResetConfig(reset_encoder=True, reset_projection=False, reset_head=False,
                                 reset_noise=False)) == (
        "projection", "predictor", "kernell", "biass", "head")


def test_interpolate_keeps_modules_outside_keys():
    old, fresh = _tree()
    # The EMA form: modules outside keys unchanged.
    inter = _flat(interpolate(old, fresh, ("head",), 0.5, 0.5))
    assert inter["head/advantage/net/kernel"] == 0.0
    assert inter["encoder/Conv_0/kernel"] == 2.0


@pytest.mark.parametrize("field, value", [
    ("reset_head", "yes"), ("reset_encoder", 1), ("reset_noise", None),
    ("shrink_perturb_keys", ("encoder", "heads")), ("timing", "v2024")])
def test_reset_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"ResetConfig.{field}"):
        ResetConfig(**{field: value})


def test_reset_config_gin_string_keys():
    # The gin form "encoder,transition_model" of the official file is accepted.
    assert ResetConfig(shrink_perturb_keys="encoder, transition_model").shrink_perturb_keys == KEPT


@pytest.fixture(scope="module")
def noisy_learner():
    return make_learner(AgentConfig(batch_size=4), NetworkConfig(
        width_scale=0.25, hidden_dim=16, noisy=True, encoder_type="dqn"), 3)


def test_flags_on_a_real_noisy_network(noisy_learner):
    """The flags against the real parameter tree (kernell/biass in projection and head):
    reset_noise=False keeps the sigma leaves of the re-initialised projection and head;
    reset_encoder=True and reset_head=False act on whole modules."""
    old = noisy_learner.init_params(jax.random.PRNGKey(1))
    fresh = noisy_learner.init_params(jax.random.PRNGKey(2))
    cfg = ResetConfig(reset_noise=False, reset_encoder=True, reset_head=False)
    new = jax.jit(lambda o, f: shrink_perturb(o, f, cfg))(old, fresh)
    n_sigma = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(new):
        names = [p.key for p in path]
        if names[0] == "head":
            source = old
        elif names[-1] in ("kernell", "biass"):
            source, n_sigma = old, n_sigma + 1
        else:
            source = fresh
        expected = functools.reduce(lambda t, k: t[k], names, source)
        assert np.array_equal(leaf, expected), names
    assert n_sigma == 2  # projection/net/{kernell, biass}
    assert not _equal(old["encoder"], fresh["encoder"])
