"""The pure learner of the multi-task agents: init, ``train_step``, target copy, acting.

Everything here is one seed's computation; the runner stacks seeds on a leading axis
and ``jax.vmap``s these functions (:mod:`bbf_jax.agents.brc.runner`).

Batches are :class:`bbf_jax.replay.multitask.Batch`: ``B`` transitions of the shared
replay with their task ids (a terminal is a landing or crash; a time-limit cut
bootstraps).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bbf_jax.agents.brc.config import BRCAgentConfig, BRCNetworkConfig
from bbf_jax.agents.brc.network import make_network
from bbf_jax.distributional import categorical_target, scalar_target
from bbf_jax.replay.multitask import Batch

METRIC_NAMES = ("loss", "grad_norm", "q_mean")


class TrainState(NamedTuple):
    """``params`` and ``target_params`` (the network's variables), ``opt_state``."""

    params: dict
    target_params: dict
    opt_state: optax.OptState


def per_member(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` applied to each slice of a leading member axis on its own (Independent
    DQN: each task's network has its own gradient clip and Adam statistics)."""

    def init(params):
        return jax.vmap(tx.init)(params)

    def update(updates, state, params=None):
        return jax.vmap(tx.update)(updates, state, params)

    return optax.GradientTransformation(init, update)


def make_optimizer(agent: BRCAgentConfig, per_task: bool) -> optax.GradientTransformation:
    """``[clip_by_global_norm(max_grad_norm)] -> adamw(lr, weight_decay)`` (optax's
    defaults otherwise, decay on every parameter as the official BRC); ``per_task``
    wraps it in :func:`per_member`."""
    tx = optax.adamw(agent.learning_rate, weight_decay=agent.weight_decay)
    if agent.max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(agent.max_grad_norm), tx)
    return per_member(tx) if per_task else tx


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    """One seed's network, optimizer and support (build with :func:`make_learner`)."""

    network: nn.Module
    optimizer: optax.GradientTransformation
    agent: BRCAgentConfig
    num_actions: int

    @property
    def categorical(self) -> bool:
        return self.agent.value_head == "categorical"

    @property
    def support(self) -> jax.Array:
        """The atoms ``linspace(v_min, v_max, num_atoms)``, float32 ``(K,)``."""
        a = self.agent
        return jnp.linspace(a.v_min, a.v_max, a.num_atoms, dtype=jnp.float32)

    def init(self, key) -> TrainState:
        states = jnp.zeros((1, 8), jnp.float32)
        params = self.network.init(key, states, jnp.zeros((1,), jnp.int32))
        return TrainState(params, params, self.optimizer.init(params))

    def q_values(self, params, states, task_ids) -> jax.Array:
        """Q(s, .) float32 ``(B, A)``: the categorical mean ``sum_k p_k z_k`` or the
        scalar head."""
        out = self.network.apply(params, states, task_ids)
        if self.categorical:
            return jnp.sum(jax.nn.softmax(out, axis=-1) * self.support, axis=-1)
        return out[..., 0]

    def loss(self, params, target_params, batch: Batch, reward_scale):
        """Mean TD loss over the batch and its metrics.

        Categorical (C51, Bellemare et al. 2017; BRC): cross-entropy
        ``-sum_k m_k log p_k(s, a)`` against ``m = project(r' + gamma (1 - d) z,
        p_target(s', a*))``, ``a* = argmax_a Q_target(s', a)``. Scalar (DQN, Mnih et
        al. 2015): ``(Q(s, a) - (r' + gamma (1 - d) max_a Q_target(s', a)))^2``.
        ``r' = r * reward_scale[task]`` (1 without reward normalisation).

        Args:
          reward_scale: float32 ``(num_tasks,)``, indexed by task id.
        """
        a = self.agent
        rows = jnp.arange(batch.actions.shape[0])
        rewards = batch.rewards * reward_scale[batch.task_ids]
        discounts = jnp.full_like(rewards, a.gamma)
        out = self.network.apply(params, batch.states, batch.task_ids)
        next_out = self.network.apply(target_params, batch.next_states, batch.task_ids)
        if self.categorical:
            next_probs = jax.nn.softmax(next_out, axis=-1)
            next_q = jnp.sum(next_probs * self.support, axis=-1)
            best = jnp.argmax(next_q, axis=-1)
            target = categorical_target(rewards, discounts, batch.terminals,
                                        next_probs[rows, best], self.support)
            log_probs = jax.nn.log_softmax(out[rows, batch.actions], axis=-1)
            per_sample = -jnp.sum(jax.lax.stop_gradient(target) * log_probs, axis=-1)
            q = jnp.sum(jnp.exp(log_probs) * self.support, axis=-1)
        else:
            target = scalar_target(rewards, discounts, batch.terminals,
                                   jnp.max(next_out[..., 0], axis=-1))
            q = out[rows, batch.actions, 0]
            per_sample = jnp.square(q - jax.lax.stop_gradient(target))
        return jnp.mean(per_sample), jnp.mean(q)

    def train_step(self, state: TrainState, batch: Batch, reward_scale):
        """One gradient step: ``(state, batch, reward_scale) -> (state, metrics)``."""
        (loss, q_mean), grads = jax.value_and_grad(self.loss, has_aux=True)(
            state.params, state.target_params, batch, reward_scale)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "q_mean": q_mean}
        return state._replace(params=params, opt_state=opt_state), metrics

    def train_steps(self, state: TrainState, batches: Batch, reward_scale):
        """``U = updates_per_step`` gradient steps on ``batches`` (leading axis U) in
        one ``lax.scan``; metrics of the last."""
        state, metrics = jax.lax.scan(
            lambda s, b: self.train_step(s, b, reward_scale), state, batches)
        return state, jax.tree.map(lambda m: m[-1], metrics)

    def sync_target(self, state: TrainState, copy) -> TrainState:
        """The hard target update: ``target <- online`` where ``copy`` (bool scalar)."""
        target = jax.tree.map(lambda o, t: jnp.where(copy, o, t), state.params,
                              state.target_params)
        return state._replace(target_params=target)

    def act(self, params, states, task_ids, epsilon, key):
        """Epsilon-greedy actions int32 ``(N,)`` for states ``(N, 8)``: uniformly random
        with probability ``epsilon``, else ``argmax_a Q`` (ties to the first action)."""
        k_u, k_a = jax.random.split(key)
        n = states.shape[0]
        greedy = jnp.argmax(self.q_values(params, states, task_ids), axis=-1)
        explore = jax.random.uniform(k_u, (n,)) < epsilon
        random = jax.random.randint(k_a, (n,), 0, self.num_actions)
        return jnp.where(explore, random, greedy).astype(jnp.int32)


def make_learner(network: BRCNetworkConfig, agent: BRCAgentConfig, num_actions: int) -> Learner:
    outputs = agent.num_atoms if agent.value_head == "categorical" else 1
    return Learner(
        network=make_network(network, num_actions, outputs),
        optimizer=make_optimizer(agent, per_task=network.kind == "independent_mlp"),
        agent=agent,
        num_actions=num_actions,
    )

