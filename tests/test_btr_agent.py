"""BTR's learner and agent: the update on a fixed batch, target copies, acting, epsilon,
PER terms, the config's checks; the real ALE run through ``bbf-train`` is in
tests/test_btr_train.py."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax import agents, gin_utils
from bbf_jax.agents.btr.agent import make_agent
from bbf_jax.agents.btr.config import BTRAgentConfig, BTRNetworkConfig, ExperimentConfig
from bbf_jax.agents.btr.learner import make_learner
from bbf_jax.replay import ReplaySample

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "gin_configs" / "btr_smoke.gin")
NET = BTRNetworkConfig(width_scale=0.25, num_blocks=1, hidden_dim=32, num_cosines=8)
AGENT = BTRAgentConfig(num_envs=4, batch_size=8, num_taus=4, target_update_period=3,
                       min_replay_history=0)
NUM_ACTIONS = 4


def fixed_batch(rng: np.random.Generator, b: int = 8):
    """A FrameBatch ``(B, ...)`` of random frames with one state per row."""
    learner = make_learner(AGENT, NET, NUM_ACTIONS)
    agent = make_agent(ExperimentConfig(network=NET, agent=AGENT), NUM_ACTIONS)
    s = 4  # frames per state
    sample = ReplaySample(
        frames=rng.integers(0, 256, (b, 1 + 2 * s - 1, 84, 84), dtype=np.uint8),
        stack_mask=np.ones((b, 2, s), bool),
        action=rng.integers(0, NUM_ACTIONS, (b, 1)).astype(np.int32),
        returns=rng.normal(size=b).astype(np.float32),
        discount=np.full(b, 0.997**3, np.float32),
        terminal=(rng.random(b) < 0.25).astype(np.float32),
        same_trajectory=np.ones((b, 1), np.float32),
        sampling_priority=rng.uniform(0.5, 2.0, b).astype(np.float32),
        indices=np.arange(b),
    )
    batch = agent.to_train_batch(sample, 1, b)
    return learner, agent, jax.tree.map(lambda x: jnp.asarray(x[0]), batch), sample


def test_loss_falls_on_a_fixed_batch():
    """With terminal rows and no Munchausen bonus the target is the fixed return R, so
    the online quantiles regress onto it and the loss falls towards 0 (the taus and the
    noise are fresh each step, so single steps are noisy: compare five-step means)."""
    learner, _, batch, _ = fixed_batch(np.random.default_rng(0))
    learner = dataclasses.replace(learner, agent=dataclasses.replace(
        AGENT, munchausen_alpha=0.0))
    batch = batch._replace(terminal=jnp.ones_like(batch.terminal))
    state = learner.init(0)
    hparams = learner.default_hparams()._replace(learning_rate=jnp.float32(1e-3))
    step = jax.jit(learner.train_step)
    losses = []
    for _ in range(60):
        state, metrics = step(state, batch, hparams)
        losses.append(float(metrics["QuantileLoss"]))
        assert int(metrics["NonFinite"]) == 0
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_hard_target_copy_every_period_with_spectral_vectors():
    learner, _, batch, _ = fixed_batch(np.random.default_rng(1))
    state = learner.init(0)
    step = jax.jit(learner.train_step)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in  # noqa: E731
                            zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    first_target = state.target
    for k in range(1, 7):
        state, _ = step(state, batch, learner.default_hparams())
        if k % AGENT.target_update_period == 0:
            assert same(state.target, state.online), k  # params and power-iteration vectors
            first_target = state.target
        else:
            assert same(state.target, first_target), k
            assert not same(state.target, state.online), k


def test_spectral_vectors_advance_once_per_gradient_step():
    learner, _, batch, _ = fixed_batch(np.random.default_rng(2))
    state = learner.init(0)
    collections = set(state.online) - {"params"}
    assert collections, "the spectral-norm vectors live next to the parameters"
    new, _ = jax.jit(learner.train_step)(state, batch, learner.default_hparams())
    for c in collections:
        changed = [not np.array_equal(a, b) for a, b in
                   zip(jax.tree.leaves(state.online[c]), jax.tree.leaves(new.online[c]),
                       strict=True)]
        assert all(changed)


@pytest.mark.parametrize("bonus_network", ["target", "online"])
def test_bonus_network_switch(bonus_network):
    """Both settings train; after online and target diverge they give different bonuses."""
    learner, _, batch, _ = fixed_batch(np.random.default_rng(3))
    learner = dataclasses.replace(learner, agent=dataclasses.replace(
        AGENT, bonus_network=bonus_network, target_update_period=1000))
    other = dataclasses.replace(learner, agent=dataclasses.replace(
        learner.agent, bonus_network="online" if bonus_network == "target" else "target"))
    state = learner.init(0)
    for _ in range(3):
        state, _ = jax.jit(learner.train_step)(state, batch, learner.default_hparams())
    _, m = jax.jit(learner.train_step)(state, batch, learner.default_hparams())
    _, m_other = jax.jit(other.train_step)(state, batch, learner.default_hparams())
    assert float(m["MunchausenBonus"]) != float(m_other["MunchausenBonus"])
    # The same keys draw the same taus and noise: only the bonus's network differs.
    assert float(m["QuantileLoss"]) != float(m_other["QuantileLoss"])


def test_epsilon_is_the_authors_per_transition_decay_in_closed_form():
    agent = make_agent(ExperimentConfig(network=NET, agent=dataclasses.replace(
        AGENT, epsilon_decay_steps=1000, epsilon_off_after=5000)), NUM_ACTIONS)
    eps = 1.0
    for k in range(1, 3001):  # eps <- eps - (eps - final) / decay_steps per transition
        eps -= (eps - 0.01) / 1000
        if k in (1, 1000, 3000):
            assert agent.epsilon(k) == pytest.approx(eps, rel=1e-12, abs=0)
    # 2M transitions of the paper's 2M decay: 0.01 + 0.99 / e, not the linear 0.01.
    paper = make_agent(ExperimentConfig(network=NET, agent=BTRAgentConfig()), NUM_ACTIONS)
    assert paper.epsilon(2_000_000) == pytest.approx(0.01 + 0.99 * np.exp(-1), rel=1e-6)
    assert agent.epsilon(4999) > 0 and agent.epsilon(5000) == 0.0


def test_acting_greedy_and_random():
    learner, agent, batch, _ = fixed_batch(np.random.default_rng(4))
    state = learner.init(0)
    states = batch.state[:, 0]
    key = jax.random.PRNGKey(7)
    _, greedy = jax.jit(agent.select_eval)(state.online, states, key, jnp.float32(0.0))
    # Evaluation: no noise, so the action is the argmax of the mean over the taus drawn
    # from the same key split.
    _, k_q, _, _ = jax.random.split(key, 4)
    q = learner.q_values(state.online, states, k_q, noise=False)
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(jnp.argmax(q, axis=-1)))
    # epsilon 1: uniform over the actions.
    states = jnp.repeat(states[:1], 512, axis=0)
    _, actions = jax.jit(agent.select)(state.online, states, key, jnp.float32(1.0))
    counts = np.bincount(np.asarray(actions), minlength=NUM_ACTIONS)
    # 512 draws over 4 actions: 128 each, sd sqrt(512 * 3/16) = 9.8; 5 sd.
    assert np.all(np.abs(counts - 128) < 49), counts


def test_importance_weights_and_priorities():
    _, agent, batch, sample = fixed_batch(np.random.default_rng(5))
    p = sample.sampling_priority
    # 'paper' (default): (p / min p) ** -per_beta.
    np.testing.assert_allclose(np.asarray(batch.loss_weight),
                               (p.astype(np.float64) / p.min()) ** -0.45, rtol=1e-6)
    code = make_agent(ExperimentConfig(network=NET, agent=dataclasses.replace(
        AGENT, importance_weights="code")), NUM_ACTIONS)
    w = code.to_train_batch(sample, 1, 8).loss_weight[0]
    np.testing.assert_allclose(w, (p.astype(np.float64) / p.min()) ** -0.2, rtol=1e-6)
    idx, prios = agent.priorities(sample.indices, np.float32([[0.0, 1.0, 3.0, 0, 0, 0, 0, 0]]),
                                  {})
    np.testing.assert_array_equal(idx, np.arange(8))
    np.testing.assert_allclose(prios[:3], (np.float64([0, 1, 3]) + 1e-6) ** 0.2, rtol=1e-6)


def test_btr_gin_selects_the_agent_and_rejects_bbf_options():
    cfg = gin_utils.parse([str(ROOT / "gin_configs" / "BTR.gin")])
    assert agents.agent_name(cfg) == "btr" and cfg.agent == BTRAgentConfig()
    assert cfg.network == BTRNetworkConfig()
    with pytest.raises(gin_utils.ConfigError, match="AgentConfig is a configurable of "
                                                    "agent 'bbf'"):
        gin_utils.parse([SMOKE], ["AgentConfig.gamma = 0.9"])
    with pytest.raises(gin_utils.ConfigError, match="diagnostics exist for agent 'bbf'"):
        gin_utils.parse([SMOKE], ["RunConfig.diagnostics_every = 100"])
    with pytest.raises(gin_utils.ConfigError, match="group of seeds"):
        gin_utils.parse([SMOKE], ["RunConfig.seeds = (0, 1)"])
    with pytest.raises(gin_utils.ConfigError, match="Experiment.agent must be one of"):
        gin_utils.parse([SMOKE], ["Experiment.agent = 'rainbow'"])


def test_train_steps_runs_g_single_steps():
    """G = 2 gradient steps in one dispatch compute the two single steps. The programs
    differ (one unrolled dispatch against two), so XLA may round differently: each
    parameter may differ by a few float32 ulps of the Adam update (lr 1e-4 times an
    O(1) normalised step), bounded here by 1e-3 of the learning rate."""
    learner, _, batch, _ = fixed_batch(np.random.default_rng(6))
    state, h = learner.init(0), learner.default_hparams()
    pair = jax.tree.map(lambda x: jnp.stack([x, x[::-1]]), batch)
    grouped, metrics = jax.jit(learner.train_steps)(state, pair, h)
    single = state
    for g in range(2):
        single, m = jax.jit(learner.train_step)(single, jax.tree.map(lambda x, g=g: x[g], pair),
                                                h)
        np.testing.assert_allclose(float(metrics["QuantileLoss"][g]), float(m["QuantileLoss"]),
                                   rtol=1e-5)
    assert int(grouped.grad_step) == 2
    for a, b in zip(jax.tree.leaves(grouped.online["params"]),
                    jax.tree.leaves(single.online["params"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-7)


def test_config_reaches_the_network_and_learner():
    net = BTRNetworkConfig(width_scale=0.5, num_blocks=3, pool_size=4, spectral_norm=False,
                           layer_norm=True, hidden_dim=16, num_cosines=5, noisy_sigma0=0.1)
    agent = dataclasses.replace(AGENT, adam_eps=1e-3, max_grad_norm=2.0)
    network = make_learner(agent, net, 7).network
    assert (network.num_actions, network.width_scale, network.num_blocks,
            network.adaptive_pool, network.spectral_norm, network.layer_norm, network.hidden,
            network.num_cosines, network.noisy_sigma0) == (7, 0.5, 3, 4, False, True, 16, 5,
                                                           0.1)
    assert network.feature_dim == 16 * 4 * 4


def test_replay_and_warm_up_must_fit_the_vector_of_envs():
    with pytest.raises(gin_utils.ConfigError, match=r"ReplayConfig.capacity = 1002 must be a "
                                                    r"multiple of BTRAgentConfig.num_envs = 4"):
        gin_utils.parse([SMOKE], ["ReplayConfig.capacity = 1002"])
    # 4 envs x (n 3 + 1 + 4 frames) = 32 transitions before a state can be sampled.
    with pytest.raises(gin_utils.ConfigError, match="min_replay_history = 31 is too short"):
        gin_utils.parse([SMOKE], ["BTRAgentConfig.min_replay_history = 31"])
    assert gin_utils.parse([SMOKE], ["BTRAgentConfig.min_replay_history = 32"])


def test_sweep_validates_btr_variants():
    from bbf_jax.sweep.grid import SweepError, Variant, validate

    validate([SMOKE], [], [Variant("rr", ("BTRAgentConfig.update_period = 2",))], "Pong")
    with pytest.raises(SweepError, match="variant bad: .*num_taus must be an integer >= 1"):
        validate([SMOKE], [], [Variant("bad", ("BTRAgentConfig.num_taus = 0",))], "Pong")


def test_derived_update_counts_and_schedules():
    from bbf_jax.agents.btr.config import derive

    a = dataclasses.replace(AGENT, update_period=2, batches_to_group=3, update_horizon=5,
                            gamma=0.99, epsilon_start=0.5, epsilon_final=0.1,
                            epsilon_decay_steps=2, epsilon_eval=0.05)
    d = derive(a)
    # G = 3 gradient steps in one dispatch every 3 * 2 vector steps: one per 2, as asked.
    assert (d.gradient_steps_per_update, d.update_period, d.batches_to_group,
            d.dispatches_per_update, d.group_size, d.seq_len, d.max_horizon) == (
        3, 6, 3, 1, 24, 1, 5)
    agent = make_agent(ExperimentConfig(network=NET, agent=a), NUM_ACTIONS)
    assert agent.schedule(0) == agent.schedule(10**6) == (5, 0.99)
    # 0.1 + 0.4 * (1 - 1/2) ** k
    assert [agent.epsilon(k) for k in (0, 1, 2)] == [0.5, 0.30000000000000004, 0.2]
    assert agent.epsilon_eval == 0.05
