"""The multi-task learner: C51 cross-entropy and DQN losses checked by hand, reward
scaling per task, the optimizer (clip + AdamW, per-task for Independent DQN), scanned
updates, target copies and epsilon-greedy acting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bbf_jax.agents.brc.config import BRCAgentConfig, BRCNetworkConfig
from bbf_jax.agents.brc.learner import make_learner, per_member
from bbf_jax.replay.multitask import Batch

pytestmark = pytest.mark.usefixtures("parity")

TINY = BRCNetworkConfig(width=8, num_blocks=1, embed_dim=4)


def _batch(n=6, seed=0, terminals=None):
    rng = np.random.default_rng(seed)
    return Batch(
        states=jnp.asarray(rng.normal(size=(n, 8)), jnp.float32),
        actions=jnp.asarray(rng.integers(0, 4, n), jnp.int32),
        rewards=jnp.asarray(rng.normal(scale=20, size=n), jnp.float32),
        next_states=jnp.asarray(rng.normal(size=(n, 8)), jnp.float32),
        terminals=jnp.asarray(rng.random(n) < 0.3 if terminals is None else terminals),
        task_ids=jnp.asarray(rng.integers(0, 3, n), jnp.int32),
    )


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _project_by_hand(atoms, probs, support):
    """Bellemare et al. 2017, Alg. 1: split each atom's mass between its two neighbours."""
    out = np.zeros_like(support)
    v_min, v_max, dz = support[0], support[-1], support[1] - support[0]
    for z, p in zip(np.clip(atoms, v_min, v_max), probs, strict=True):
        b = (z - v_min) / dz
        lo, hi = int(np.floor(b)), int(np.ceil(b))
        if lo == hi:
            out[lo] += p
        else:
            out[lo] += p * (hi - b)
            out[hi] += p * (b - lo)
    return out


def test_categorical_loss_by_hand():
    agent = BRCAgentConfig(num_atoms=11, v_min=-50.0, v_max=150.0, gamma=0.9)
    learner = make_learner(TINY, agent, 4)
    state = learner.init(jax.random.PRNGKey(0))
    target_params = learner.init(jax.random.PRNGKey(1)).params
    batch = _batch()
    scale = jnp.asarray([1.0, 0.5, 2.0], jnp.float32)
    loss, q_mean = learner.loss(state.params, target_params, batch, scale)

    support = np.linspace(-50.0, 150.0, 11)
    logits = np.asarray(learner.network.apply(state.params, batch.states, batch.task_ids),
                        np.float64)
    next_logits = np.asarray(learner.network.apply(target_params, batch.next_states,
                                                   batch.task_ids), np.float64)
    losses, qs = [], []
    for i in range(len(batch.actions)):
        p_next = _softmax(next_logits[i])  # (A, K)
        best = np.argmax(p_next @ support)
        r = float(batch.rewards[i]) * float(scale[batch.task_ids[i]])
        g = 0.0 if batch.terminals[i] else 0.9
        m = _project_by_hand(r + g * support, p_next[best], support)
        p = _softmax(logits[i, batch.actions[i]])
        losses.append(-(m * np.log(p)).sum())
        qs.append(p @ support)
    # float32 softmax/log of 11 atoms and a 44-wide network: relative error ~1e-6.
    np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(float(q_mean), np.mean(qs), rtol=1e-5, atol=1e-4)


def test_scalar_loss_by_hand():
    cfg = BRCNetworkConfig(kind="shared_mlp", embed_dim=8, mlp_hidden=(16,))
    learner = make_learner(cfg, BRCAgentConfig(value_head="scalar", gamma=0.99), 4)
    params = learner.init(jax.random.PRNGKey(0)).params
    target = learner.init(jax.random.PRNGKey(1)).params
    batch = _batch(terminals=np.array([True, False, False, True, False, False]))
    loss, _ = learner.loss(params, target, batch, jnp.ones(3))
    q = np.asarray(learner.network.apply(params, batch.states, batch.task_ids))[..., 0]
    q_next = np.asarray(learner.network.apply(target, batch.next_states, batch.task_ids))[..., 0]
    y = np.asarray(batch.rewards) + 0.99 * (1 - np.asarray(batch.terminals)) * q_next.max(-1)
    td = q[np.arange(6), np.asarray(batch.actions)] - y
    np.testing.assert_allclose(float(loss), np.mean(td**2), rtol=1e-5)


def test_gradient_flows_to_online_only():
    learner = make_learner(TINY, BRCAgentConfig(), 4)
    s = learner.init(jax.random.PRNGKey(0))
    batch = _batch()
    g_target = jax.grad(lambda t: learner.loss(s.params, t, batch, jnp.ones(3))[0])(
        s.target_params)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g_target))


def test_train_step_is_clip_then_adamw():
    agent = BRCAgentConfig(max_grad_norm=0.01, learning_rate=1e-3, weight_decay=0.1)
    learner = make_learner(TINY, agent, 4)
    s = learner.init(jax.random.PRNGKey(0))
    batch = _batch()
    new, metrics = jax.jit(learner.train_step)(s, batch, jnp.ones(3))
    grads = jax.grad(lambda p: learner.loss(p, s.target_params, batch, jnp.ones(3))[0])(s.params)
    tx = optax.chain(optax.clip_by_global_norm(0.01), optax.adamw(1e-3, weight_decay=0.1))
    upd, _ = tx.update(grads, tx.init(s.params), s.params)
    want = optax.apply_updates(s.params, upd)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)
    assert float(metrics["grad_norm"]) > 0.01  # the clip was active
    unclipped = make_learner(TINY, BRCAgentConfig(max_grad_norm=None), 4)
    assert len(unclipped.optimizer.init(s.params)) != len(learner.optimizer.init(s.params))


def test_per_member_optimizer_clips_each_member():
    tx = per_member(optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1.0)))
    params = {"w": jnp.zeros((2, 3))}
    grads = {"w": jnp.asarray([[3.0, 0.0, 4.0], [0.3, 0.4, 0.0]])}
    upd, _ = tx.update(grads, tx.init(params), params)
    # member 0 has norm 5 -> scaled to norm 1; member 1 (norm 0.5) is left alone.
    np.testing.assert_allclose(np.asarray(upd["w"]),
                               -np.asarray([[0.6, 0.0, 0.8], [0.3, 0.4, 0.0]]), rtol=1e-6)


def test_independent_dqn_steps_each_task_on_its_own():
    cfg = BRCNetworkConfig(kind="independent_mlp", mlp_hidden=(8,))
    learner = make_learner(cfg, BRCAgentConfig(value_head="scalar"), 4)
    s = learner.init(jax.random.PRNGKey(0))
    batch = _batch()._replace(task_ids=jnp.asarray([0, 0, 0, 2, 2, 2], jnp.int32))
    new, _ = jax.jit(learner.train_step)(s, batch, jnp.ones(3))
    k_old = s.params["params"]["members"]["Dense_0"]["kernel"]
    k_new = new.params["params"]["members"]["Dense_0"]["kernel"]
    # Task 1 saw no sample: only weight decay moves it, kernel *= (1 - lr * wd).
    np.testing.assert_allclose(np.asarray(k_new[1]), np.asarray(k_old[1]) * (1 - 3e-4 * 1e-4),
                               rtol=1e-6)
    assert not np.allclose(np.asarray(k_new[0]), np.asarray(k_old[0]) * (1 - 3e-8))


def test_train_steps_scan_equals_sequential_steps():
    learner = make_learner(TINY, BRCAgentConfig(), 4)
    s = learner.init(jax.random.PRNGKey(0))
    b1, b2 = _batch(seed=1), _batch(seed=2)
    stacked = jax.tree.map(lambda x, y: jnp.stack([x, y]), b1, b2)
    scanned, metrics = jax.jit(learner.train_steps)(s, stacked, jnp.ones(3))
    step = jax.jit(learner.train_step)
    one, _ = step(s, b1, jnp.ones(3))
    two, last = step(one, b2, jnp.ones(3))
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(two), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(metrics["loss"]), float(last["loss"]), rtol=1e-5)


def test_sync_target_copies_where_asked():
    learner = make_learner(TINY, BRCAgentConfig(), 4)
    s = learner.init(jax.random.PRNGKey(0))
    s = s._replace(params=jax.tree.map(lambda x: x + 1.0, s.params))
    kept = learner.sync_target(s, jnp.asarray(False))
    copied = learner.sync_target(s, jnp.asarray(True))
    for t, o, c, p in zip(jax.tree.leaves(kept.target_params),
                          jax.tree.leaves(s.target_params),
                          jax.tree.leaves(copied.target_params),
                          jax.tree.leaves(s.params), strict=True):
        np.testing.assert_array_equal(np.asarray(t), np.asarray(o))
        np.testing.assert_array_equal(np.asarray(c), np.asarray(p))


def test_act_epsilon_greedy():
    learner = make_learner(TINY, BRCAgentConfig(), 4)
    params = learner.init(jax.random.PRNGKey(0)).params
    states = jnp.asarray(np.random.default_rng(0).normal(size=(400, 8)), jnp.float32)
    tasks = jnp.zeros(400, jnp.int32)
    greedy = np.argmax(np.asarray(learner.q_values(params, states, tasks)), -1)
    act = jax.jit(learner.act)
    np.testing.assert_array_equal(
        np.asarray(act(params, states, tasks, 0.0, jax.random.PRNGKey(3))), greedy)
    random = np.asarray(act(params, states, tasks, 1.0, jax.random.PRNGKey(3)))
    counts = np.bincount(random, minlength=4)
    # 400 uniform draws over 4 actions: each count is 100 +- 8.7 (1 sd).
    assert np.all(np.abs(counts - 100) < 45), counts
    again = np.asarray(act(params, states, tasks, 1.0, jax.random.PRNGKey(3)))
    np.testing.assert_array_equal(random, again)
