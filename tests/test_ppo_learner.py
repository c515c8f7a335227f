"""PPO's learner: the clipped objective on a hand-made batch, the scanned update against
a loop over epochs and minibatches, acting in the box, and the config checks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax.agents.ppo.config import PPOAgentConfig, PPONetworkConfig
from bbf_jax.agents.ppo.learner import (
    ACTION_HIGH,
    ACTION_LOW,
    Rollout,
    clipped_objective,
    make_learner,
)
from bbf_jax.agents.ppo.runner import make_update, update_loop

pytestmark = pytest.mark.usefixtures("parity")

TINY = PPONetworkConfig(channels=(4, 8, 8), hidden_dim=16)
OBS = (36, 36, 4)


def test_clipped_objective_by_hand():
    # ratios e^0 = 1, e^0.5 = 1.6487, e^-0.5 = 0.6065, e^0.05 = 1.0513; clip 0.2.
    logp_old = jnp.zeros(4)
    logp = jnp.asarray([0.0, 0.5, -0.5, 0.05])
    adv = jnp.asarray([1.0, 2.0, -1.0, -3.0])
    loss, clip_fraction = clipped_objective(logp, logp_old, adv, 0.2)
    # min(r A, clip(r) A): 1; min(3.2974, 1.2 * 2 = 2.4) = 2.4;
    # min(-0.6065, 0.8 * -1 = -0.8) = -0.8; min(-3.1538, -3.1538) = -3.1538.
    want = -np.mean([1.0, 2.4, -0.8, -3.0 * np.exp(0.05)])
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(clip_fraction) == 0.5  # ratios 1.6487 and 0.6065 lie outside [0.8, 1.2]


def _rollout(size, seed=0):
    rng = np.random.default_rng(seed)
    return Rollout(
        obs=jnp.asarray(rng.integers(0, 256, (size, *OBS)), jnp.uint8),
        actions=jnp.asarray(rng.uniform(ACTION_LOW + 0.05, ACTION_HIGH - 0.05, (size, 3)),
                            jnp.float32),
        log_probs=jnp.asarray(rng.normal(size=size), jnp.float32),
        advantages=jnp.asarray(rng.normal(size=size), jnp.float32),
        returns=jnp.asarray(rng.normal(size=size), jnp.float32))


@pytest.mark.parametrize("policy", ["beta", "gaussian"])
def test_update_equals_a_loop_over_epochs_and_minibatches(policy):
    agent = PPOAgentConfig(policy=policy, num_envs=2, rollout_length=8, minibatch_size=4,
                           num_epochs=2)
    learner = make_learner(TINY, agent)
    state = learner.init(jax.random.PRNGKey(0), OBS)
    rollout = _rollout(16)
    key = jax.random.PRNGKey(5)
    new, metrics = jax.jit(learner.update)(state, rollout, key)
    step = jax.jit(learner.minibatch_step)
    s, losses = state, []
    for k in jax.random.split(key, 2):
        order = np.asarray(jax.random.permutation(k, 16)).reshape(4, 4)
        for rows in order:
            s, m = step(s, jax.tree.map(lambda x, rows=rows: x[rows], rollout))
            losses.append(float(m["loss"]))
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(s.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert float(metrics["loss"]) == pytest.approx(np.mean(losses), rel=1e-5)
    # update_loop 'dispatch' (one dispatch per minibatch): the same steps as the scan.
    for loop in ("dispatch", "scan"):
        update = make_update(make_learner(TINY, dataclasses.replace(agent, update_loop=loop)))
        other, m = update(state, rollout, key)
        for a, b in zip(jax.tree.leaves(other.params), jax.tree.leaves(new.params),
                        strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert float(m["loss"]) == pytest.approx(float(metrics["loss"]), rel=1e-5)


def test_auto_update_loop_follows_the_backend():
    assert update_loop(PPOAgentConfig(update_loop="scan")) == "scan"
    assert update_loop(PPOAgentConfig(update_loop="dispatch")) == "dispatch"
    want = "dispatch" if jax.default_backend() == "cpu" else "scan"
    assert update_loop(PPOAgentConfig()) == want


def test_acting():
    for policy in ("beta", "gaussian"):
        learner = make_learner(TINY, PPOAgentConfig(policy=policy))
        state = learner.init(jax.random.PRNGKey(1), OBS)
        obs = _rollout(6).obs
        actions, log_probs, values = learner.act(state.params, obs, jax.random.PRNGKey(2))
        assert actions.shape == (6, 3) and log_probs.shape == values.shape == (6,)
        dist, v = learner.distribution(state.params, obs)
        np.testing.assert_allclose(np.asarray(log_probs), np.asarray(dist.log_prob(actions)),
                                   rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(values), np.asarray(v))
        det = np.asarray(learner.act_eval(state.params, obs))
        assert np.all(det >= ACTION_LOW) and np.all(det <= ACTION_HIGH)
        if policy == "beta":
            assert np.all(np.asarray(actions) >= ACTION_LOW)
            assert np.all(np.asarray(actions) <= ACTION_HIGH)
            np.testing.assert_allclose(det, np.asarray(dist.mode()), rtol=1e-6)
            assert "log_std" not in state.params["params"]
        else:
            np.testing.assert_allclose(det, np.clip(np.asarray(dist.mean), ACTION_LOW,
                                                    ACTION_HIGH), rtol=1e-6)
            np.testing.assert_array_equal(np.asarray(state.params["params"]["log_std"]), 0.0)


def test_initial_policy_is_near_uniform():
    # Orthogonal init with gain 0.01 on the policy head (SB3): logits near 0, so the Beta's
    # alpha and beta are near softplus(0) + 1 = 1.693.
    learner = make_learner(TINY, PPOAgentConfig())
    state = learner.init(jax.random.PRNGKey(0), OBS)
    dist, _ = learner.distribution(state.params, _rollout(2).obs)
    np.testing.assert_allclose(np.asarray(dist.alpha), np.log(2) + 1, atol=0.05)


def test_rollout_must_split_into_minibatches():
    with pytest.raises(ValueError, match="must be a multiple of minibatch_size = 256"):
        PPOAgentConfig(num_envs=3, rollout_length=100)
