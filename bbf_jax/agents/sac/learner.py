"""SAC + DrQ's networks and pure learner (Haarnoja et al. 2018; Kostrikov et al. 2020).

Parameters are one dict: ``encoder`` (4 convolutions, shared by actor and critics),
``critic`` (its own Dense -> LayerNorm -> tanh feature head and twin Q MLPs), ``actor``
(its own feature head and an MLP to a tanh-squashed Gaussian) and ``log_alpha``. The
target network is an EMA copy of ``encoder`` and ``critic``.

The gradient-flow rule (the design's recorded failure: reusing features computed
before the critic's backward pass for the actor update dropped SAC from 861 to 209):
the critic update trains the encoder; the actor update encodes the observations again
with the encoder as the critic update left it and stops the gradient there
(:meth:`Learner.actor_features`), so the actor never trains the encoder.

The policy acts in ``[-1, 1]^3`` (its log-probabilities and the target entropy
``-|A|`` live there); the runner maps actions affinely to CarRacing's box (steer in
[-1, 1], gas and brake in [0, 1]). Observations are uint8 ``(B, S, S, C)``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bbf_jax.agents.sac.config import SACAgentConfig, SACNetworkConfig
from bbf_jax.augment import random_shift
from bbf_jax.policy_distributions import BoxGaussian
from bbf_jax.replay.frames import Batch

ACTION_DIM = 3
ACTION_LOW = np.array([-1.0, 0.0, 0.0], np.float32)
ACTION_HIGH = np.array([1.0, 1.0, 1.0], np.float32)
METRIC_NAMES = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean")


def to_env_action(actions):
    """``[-1, 1]^3`` policy actions -> CarRacing's box, ``low + (high - low)(a + 1) / 2``."""
    return ACTION_LOW + (ACTION_HIGH - ACTION_LOW) * (np.asarray(actions) + 1.0) / 2.0


class Encoder(nn.Module):
    """``x / 255`` -> 4 x (Conv 3x3, ``filters``, strides 2, 1, 1, 1, valid; ReLU) ->
    flatten (DrQ's ``Encoder.forward_conv``)."""

    filters: int

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32) / 255.0
        for stride in (2, 1, 1, 1):
            x = nn.relu(nn.Conv(self.filters, (3, 3), (stride, stride), padding="VALID")(x))
        return x.reshape(x.shape[0], -1)


class FeatureHead(nn.Module):
    """Dense(feature_dim) -> LayerNorm -> tanh (DrQ's encoder head)."""

    feature_dim: int

    @nn.compact
    def __call__(self, h):
        return jnp.tanh(nn.LayerNorm()(nn.Dense(self.feature_dim)(h)))


class MLP(nn.Module):
    hidden: int
    out: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.out)(x)


class Critic(nn.Module):
    """Twin Q: ``(Q1, Q2)(conv features, action)``, each ``(B,)``."""

    cfg: SACNetworkConfig

    @nn.compact
    def __call__(self, h, actions):
        x = jnp.concatenate([FeatureHead(self.cfg.feature_dim)(h), actions], axis=-1)
        return (MLP(self.cfg.hidden_dim, 1, name="q1")(x)[:, 0],
                MLP(self.cfg.hidden_dim, 1, name="q2")(x)[:, 0])


class Actor(nn.Module):
    """``(mean, log_std)`` of the pre-tanh Gaussian; ``log_std = lo + (hi - lo)(tanh(.) +
    1) / 2`` (DrQ's ``Actor``)."""

    cfg: SACNetworkConfig

    @nn.compact
    def __call__(self, h):
        out = MLP(self.cfg.hidden_dim, 2 * ACTION_DIM)(FeatureHead(self.cfg.feature_dim)(h))
        mean, log_std = jnp.split(out, 2, axis=-1)
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        return mean, lo + 0.5 * (hi - lo) * (jnp.tanh(log_std) + 1.0)


def squashed_sample(key, mean, log_std):
    """``a = tanh(u)``, ``u ~ N(mean, exp(log_std)^2)``, and ``log pi(a)``: the Gaussian
    log-density of u minus ``sum log(1 - tanh(u)^2)`` (written
    ``2 (log 2 - u - softplus(-2 u))`` for stability; Haarnoja et al. 2018, App. C)."""
    gaussian = BoxGaussian(mean, log_std)
    u = gaussian.sample(key)
    log_prob = gaussian.log_prob(u)
    log_prob -= jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)
    return jnp.tanh(u), log_prob


class TrainState(NamedTuple):
    params: dict
    target: dict
    critic_opt: optax.OptState
    actor_opt: optax.OptState
    alpha_opt: optax.OptState
    step: jax.Array


def _sub(params, keys):
    return {k: params[k] for k in keys}


CRITIC_KEYS = ("encoder", "critic")


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    net: SACNetworkConfig
    agent: SACAgentConfig

    @property
    def encoder(self):
        return Encoder(self.net.conv_filters)

    @property
    def critic(self):
        return Critic(self.net)

    @property
    def actor(self):
        return Actor(self.net)

    @property
    def critic_tx(self):
        return optax.adam(self.agent.learning_rate)

    @property
    def actor_tx(self):
        return optax.adam(self.agent.learning_rate)

    @property
    def alpha_tx(self):  # DrQ's alpha_betas (0.5, 0.999)
        return optax.adam(self.agent.learning_rate, b1=0.5)

    @property
    def target_entropy(self) -> float:
        return -float(ACTION_DIM)

    def init(self, key, obs_shape) -> TrainState:
        k_enc, k_critic, k_actor = jax.random.split(key, 3)
        obs = jnp.zeros((1, *obs_shape), jnp.uint8)
        enc = self.encoder.init(k_enc, obs)
        h = self.encoder.apply(enc, obs)
        params = {"encoder": enc,
                  "critic": self.critic.init(k_critic, h, jnp.zeros((1, ACTION_DIM))),
                  "actor": self.actor.init(k_actor, h),
                  "log_alpha": jnp.log(jnp.float32(self.agent.init_temperature))}
        return TrainState(params, _sub(params, CRITIC_KEYS),
                          self.critic_tx.init(_sub(params, CRITIC_KEYS)),
                          self.actor_tx.init(params["actor"]),
                          self.alpha_tx.init(params["log_alpha"]), jnp.int32(0))

    def q_values(self, encoder, critic, obs, actions):
        return self.critic.apply(critic, self.encoder.apply(encoder, obs), actions)

    def policy(self, params, h, key):
        mean, log_std = self.actor.apply(params["actor"], h)
        return squashed_sample(key, mean, log_std)

    def act(self, params, obs, key):
        """Sampled ``[-1, 1]^3`` actions ``(B, 3)`` (training)."""
        return self.policy(params, self.encoder.apply(params["encoder"], obs), key)[0]

    def act_eval(self, params, obs):
        """The deterministic action ``tanh(mean)`` (evaluation)."""
        mean, _ = self.actor.apply(params["actor"], self.encoder.apply(params["encoder"], obs))
        return jnp.tanh(mean)

    def critic_loss(self, critic_params, params, target, batch: Batch, key):
        """Sum over the M augmented observation batches of ``MSE(Q1, y) + MSE(Q2, y)``,
        ``y = mean over K augmented next batches of r + gamma (1 - d) (min Q_target(s',
        a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')`` with the online encoder (DrQ,
        Algorithm 1). ``critic_params`` holds ``encoder`` and ``critic``."""
        a = self.agent
        n = a.num_augmentations
        keys = jax.random.split(key, 3 * n)
        alpha = jnp.exp(params["log_alpha"])
        ys = []
        for k in range(n):
            next_obs = random_shift(keys[k], batch.next_obs, a.image_pad)
            h = self.encoder.apply(critic_params["encoder"], next_obs)
            next_actions, log_prob = self.policy(params, h, keys[n + k])
            tq1, tq2 = self.q_values(target["encoder"], target["critic"], next_obs, next_actions)
            v = jnp.minimum(tq1, tq2) - alpha * log_prob
            ys.append(batch.rewards + a.gamma * (1.0 - batch.terminals) * v)
        y = jax.lax.stop_gradient(sum(ys) / n)
        loss, q_mean = 0.0, 0.0
        for k in range(n):
            obs = random_shift(keys[2 * n + k], batch.obs, a.image_pad)
            q1, q2 = self.q_values(critic_params["encoder"], critic_params["critic"], obs,
                                   batch.actions)
            loss += jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2)
            q_mean += jnp.mean(q1) / n
        return loss, q_mean

    def actor_features(self, params, obs):
        """The actor update's features: a fresh encoder call with the current (post
        critic update) encoder, gradient stopped, so the actor never trains it."""
        return jax.lax.stop_gradient(self.encoder.apply(params["encoder"], obs))

    def actor_loss(self, actor_params, params, obs, key):
        """``mean(alpha log pi(a|s) - min(Q1, Q2)(s, a))``, ``a ~ pi(.|s)`` reparametrised,
        alpha and the critic held fixed; returns ``(loss, log pi)``."""
        h = self.actor_features(params, obs)
        mean, log_std = self.actor.apply(actor_params, h)
        actions, log_prob = squashed_sample(key, mean, log_std)
        q1, q2 = self.critic.apply(jax.lax.stop_gradient(params["critic"]), h, actions)
        alpha = jax.lax.stop_gradient(jnp.exp(params["log_alpha"]))
        return jnp.mean(alpha * log_prob - jnp.minimum(q1, q2)), log_prob

    def alpha_loss(self, log_alpha, log_prob):
        """``mean(alpha (-log pi - target_entropy))``, log pi held fixed (DrQ's form)."""
        return jnp.mean(jnp.exp(log_alpha)
                        * jax.lax.stop_gradient(-log_prob - self.target_entropy))

    def update(self, state: TrainState, batch: Batch, key):
        """One gradient step: the critic (and encoder); every ``actor_update_period``
        steps the actor and the temperature; every ``target_update_period`` steps the
        target EMA ``target <- tau online + (1 - tau) target``."""
        a = self.agent
        k_critic, k_obs, k_actor = jax.random.split(key, 3)
        params = state.params
        critic_params = _sub(params, CRITIC_KEYS)
        (critic_loss, q_mean), grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            critic_params, params, state.target, batch, k_critic)
        updates, critic_opt = self.critic_tx.update(grads, state.critic_opt, critic_params)
        params = {**params, **optax.apply_updates(critic_params, updates)}

        def actor_step(operand):
            params, actor_opt, alpha_opt = operand
            obs = random_shift(k_obs, batch.obs, a.image_pad)
            (loss, log_prob), g = jax.value_and_grad(self.actor_loss, has_aux=True)(
                params["actor"], params, obs, k_actor)
            upd, actor_opt = self.actor_tx.update(g, actor_opt, params["actor"])
            alpha_l, g_alpha = jax.value_and_grad(self.alpha_loss)(params["log_alpha"],
                                                                   log_prob)
            upd_alpha, alpha_opt = self.alpha_tx.update(g_alpha, alpha_opt, params["log_alpha"])
            params = {**params, "actor": optax.apply_updates(params["actor"], upd),
                      "log_alpha": params["log_alpha"] + upd_alpha}
            return (params, actor_opt, alpha_opt), (loss, alpha_l, -jnp.mean(log_prob))

        def skip(operand):
            return operand, (jnp.float32(jnp.nan),) * 3

        (params, actor_opt, alpha_opt), (actor_l, alpha_l, entropy) = jax.lax.cond(
            state.step % a.actor_update_period == 0, actor_step, skip,
            (params, state.actor_opt, state.alpha_opt))
        tau = jnp.where(state.step % a.target_update_period == 0, a.critic_tau, 0.0)
        target = optax.incremental_update(_sub(params, CRITIC_KEYS), state.target, tau)
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_l, "alpha_loss": alpha_l,
                   "alpha": jnp.exp(params["log_alpha"]), "entropy": entropy,
                   "q_mean": q_mean}
        return TrainState(params, target, critic_opt, actor_opt, alpha_opt,
                          state.step + 1), metrics
