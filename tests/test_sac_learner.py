"""SAC + DrQ's learner: the gradient-flow rule (the actor never trains the encoder; a
variant that reuses the critic step's features fails the check), the SAC target with
its entropy term worked by hand, the squashed Gaussian's log-density, DrQ's shift, the
update schedule and acting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bbf_jax.agents.sac.config import SACAgentConfig, SACNetworkConfig
from bbf_jax.agents.sac.learner import CRITIC_KEYS, Batch, Learner, squashed_sample, to_env_action
from bbf_jax.augment import random_shift

pytestmark = pytest.mark.usefixtures("parity")

NET = SACNetworkConfig(conv_filters=4, feature_dim=8, hidden_dim=16)
OBS = (20, 20, 6)


def _learner(**agent):
    return Learner(NET, SACAgentConfig(**{"image_pad": 2, **agent}))


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return Batch(obs=jnp.asarray(rng.integers(0, 256, (n, *OBS)), jnp.uint8),
                 actions=jnp.asarray(rng.uniform(-1, 1, (n, 3)), jnp.float32),
                 rewards=jnp.asarray(rng.normal(size=n), jnp.float32),
                 next_obs=jnp.asarray(rng.integers(0, 256, (n, *OBS)), jnp.uint8),
                 terminals=jnp.asarray(rng.random(n) < 0.3))


def encoder_gradients(learner, state, batch, key):
    """``(critic loss, actor loss)`` gradients w.r.t. the encoder in one update: the
    critic's at the state's parameters, the actor's at the parameters the critic step
    leaves (as :meth:`Learner.update` evaluates it)."""
    @jax.jit
    def grads(state, batch, key):
        params = state.params
        critic_params = {k: params[k] for k in CRITIC_KEYS}
        g_critic = jax.grad(lambda cp: learner.critic_loss(cp, params, state.target, batch,
                                                           key)[0])(critic_params)
        after = {**params, "encoder": jax.tree.map(lambda x: x + 0.01, params["encoder"])}
        obs = random_shift(key, batch.obs, learner.agent.image_pad)
        g_actor = jax.grad(lambda p: learner.actor_loss(p["actor"], p, obs, key)[0])(after)
        return g_critic["encoder"], g_actor["encoder"]

    return grads(state, batch, key)


def assert_gradient_flow(learner, state, batch, key):
    g_critic, g_actor = encoder_gradients(learner, state, batch, key)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_actor)), \
        "the actor loss trains the encoder"
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(g_critic)), \
        "the critic loss does not train the encoder"


class StaleFeatures(Learner):
    """The recorded bug: the actor reuses encoder features of the critic step (computed
    by the encoder without a stop), so its loss reaches the encoder."""

    def actor_features(self, params, obs):
        return self.encoder.apply(params["encoder"], obs)


def test_gradient_flow_rule_and_the_stale_variant_fails_it():
    learner = _learner()
    state = learner.init(jax.random.PRNGKey(0), OBS)
    batch, key = _batch(), jax.random.PRNGKey(1)
    assert_gradient_flow(learner, state, batch, key)
    stale = StaleFeatures(NET, learner.agent)
    with pytest.raises(AssertionError, match="the actor loss trains the encoder"):
        assert_gradient_flow(stale, state, batch, key)


def test_update_never_moves_the_encoder_through_the_actor():
    # With the critic's optimizer stepping 0, an update that also steps the actor
    # (step 0) leaves the encoder exactly as it was.
    class NoCriticStep(Learner):
        @property
        def critic_tx(self):
            import optax
            return optax.sgd(0.0)

    learner = NoCriticStep(NET, SACAgentConfig(image_pad=2))
    state = learner.init(jax.random.PRNGKey(0), OBS)
    new, metrics = jax.jit(learner.update)(state, _batch(), jax.random.PRNGKey(2))
    assert np.isfinite(float(metrics["actor_loss"]))
    for a, b in zip(jax.tree.leaves(new.params["encoder"]),
                    jax.tree.leaves(state.params["encoder"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(jax.tree.leaves(new.params["actor"])[0]),
                           np.asarray(jax.tree.leaves(state.params["actor"])[0]))


def test_sac_target_by_hand():
    learner = _learner(gamma=0.9, init_temperature=0.5)
    state = learner.init(jax.random.PRNGKey(0), OBS)
    batch, key = _batch(n=4), jax.random.PRNGKey(3)
    params = state.params
    critic_params = {k: params[k] for k in CRITIC_KEYS}
    loss, _ = learner.critic_loss(critic_params, params, state.target, batch, key)
    # Redo it step by step with the same keys (K = M = 1: keys[0] next shift, keys[1]
    # next action, keys[2] obs shift).
    keys = jax.random.split(key, 3)
    next_obs = random_shift(keys[0], batch.next_obs, 2)
    h = learner.encoder.apply(params["encoder"], next_obs)
    mean, log_std = learner.actor.apply(params["actor"], h)
    a_next, logp = squashed_sample(keys[1], mean, log_std)
    tq1, tq2 = learner.q_values(state.target["encoder"], state.target["critic"], next_obs,
                                a_next)
    tq1, tq2, logp = (np.asarray(x, np.float64) for x in (tq1, tq2, logp))
    r, d = np.asarray(batch.rewards, np.float64), np.asarray(batch.terminals, np.float64)
    y = r + 0.9 * (1 - d) * (np.minimum(tq1, tq2) - 0.5 * logp)
    obs = random_shift(keys[2], batch.obs, 2)
    q1, q2 = (np.asarray(x, np.float64) for x in learner.q_values(
        params["encoder"], params["critic"], obs, batch.actions))
    want = np.mean((q1 - y) ** 2) + np.mean((q2 - y) ** 2)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_squashed_gaussian_log_density():
    mean = jnp.asarray([[0.3, -1.0, 0.0]])
    log_std = jnp.asarray([[-0.5, 0.2, 0.0]])
    a, logp = squashed_sample(jax.random.PRNGKey(4), mean, log_std)
    u = np.arctanh(np.asarray(a, np.float64))
    # Change of variables: log N(u) - log |d tanh / du| = log N(u) - log(1 - tanh(u)^2).
    want = (scipy.stats.norm.logpdf(u, np.asarray(mean), np.exp(np.asarray(log_std)))
            - np.log(1 - np.tanh(u) ** 2)).sum()
    np.testing.assert_allclose(float(logp[0]), want, rtol=1e-4)


def test_random_shift_is_a_window_of_the_padded_image():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (16, 10, 12, 3)).astype(np.uint8)
    out = np.asarray(random_shift(jax.random.PRNGKey(6), jnp.asarray(images), 4))
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="edge")
    seen = set()
    for b in range(16):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(out[b], padded[b, dy:dy + 10, dx:dx + 12])]
        assert matches, b
        seen.update(matches)
    assert len(seen) > 4 and out.dtype == np.uint8  # offsets vary across the batch


def test_schedule_of_actor_and_target_updates():
    learner = _learner(actor_update_period=2, target_update_period=2, critic_tau=0.5)
    state = learner.init(jax.random.PRNGKey(0), OBS)
    update = jax.jit(learner.update)
    s1, m1 = update(state, _batch(), jax.random.PRNGKey(7))   # step 0: actor + target
    s2, m2 = update(s1, _batch(), jax.random.PRNGKey(8))      # step 1: critic only
    assert np.isfinite(float(m1["actor_loss"])) and np.isnan(float(m2["actor_loss"]))
    for a, b in zip(jax.tree.leaves(s2.params["actor"]), jax.tree.leaves(s1.params["actor"]),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(s2.target), jax.tree.leaves(s1.target), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Step 0's EMA with tau 0.5: target = (online after the step + initial target) / 2.
    online = {k: s1.params[k] for k in CRITIC_KEYS}
    for t, o, t0 in zip(jax.tree.leaves(s1.target), jax.tree.leaves(online),
                        jax.tree.leaves(state.target), strict=True):
        np.testing.assert_allclose(np.asarray(t), (np.asarray(o) + np.asarray(t0)) / 2,
                                   rtol=1e-6, atol=1e-7)
    assert float(m1["alpha"]) != pytest.approx(0.1, abs=1e-9)  # the temperature moved


def test_acting_and_the_action_box():
    learner = _learner()
    state = learner.init(jax.random.PRNGKey(0), OBS)
    obs = _batch().obs
    a = np.asarray(learner.act(state.params, obs, jax.random.PRNGKey(9)))
    assert a.shape == (6, 3) and np.all(np.abs(a) <= 1)
    det = np.asarray(learner.act_eval(state.params, obs))
    np.testing.assert_array_equal(det, np.asarray(learner.act_eval(state.params, obs)))
    np.testing.assert_allclose(to_env_action(np.array([[-1.0, -1.0, 1.0], [0.0, 0.0, 0.0]])),
                               [[-1.0, 0.0, 1.0], [0.0, 0.5, 0.5]])


def test_two_augmentations_average_the_target():
    learner = _learner(num_augmentations=2)
    state = learner.init(jax.random.PRNGKey(0), OBS)
    new, m = jax.jit(learner.update)(state, _batch(), jax.random.PRNGKey(10))
    assert np.isfinite(float(m["critic_loss"]))
