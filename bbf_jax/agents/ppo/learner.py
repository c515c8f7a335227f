"""PPO's network and pure learner: the actor-critic, acting, the clipped objective and
one jitted update (``lax.scan`` over epochs and minibatches).

Observations are uint8 ``(B, S, S, C)`` frame stacks, scaled to [0, 1] inside the
network. Actions are float32 ``(B, 3)`` in CarRacing's box: steer in [-1, 1], gas and
brake in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bbf_jax.agents.ppo.config import PPOAgentConfig, PPONetworkConfig
from bbf_jax.policy_distributions import BoxBeta, BoxGaussian

ACTION_LOW = np.array([-1.0, 0.0, 0.0], np.float32)
ACTION_HIGH = np.array([1.0, 1.0, 1.0], np.float32)
METRIC_NAMES = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                "grad_norm")


def _ortho(gain: float):
    return nn.initializers.orthogonal(gain)


class ActorCritic(nn.Module):
    """Nature CNN -> Dense(hidden) features shared by the policy head (Beta: 2 x 3
    logits; Gaussian: 3 means and a free log-std) and the value head (SB3 ``CnnPolicy``
    with orthogonal init)."""

    net: PPONetworkConfig
    policy: str
    log_std_init: float

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32) / 255.0
        for c, k, s in zip(self.net.channels, (8, 4, 3), (4, 2, 1), strict=True):
            x = nn.relu(nn.Conv(c, (k, k), (s, s), padding="VALID",
                                kernel_init=_ortho(math.sqrt(2)))(x))
        x = x.reshape(x.shape[0], -1)
        h = nn.relu(nn.Dense(self.net.hidden_dim, kernel_init=_ortho(math.sqrt(2)))(x))
        value = nn.Dense(1, kernel_init=_ortho(1.0))(h)[:, 0]
        outputs = 6 if self.policy == "beta" else 3
        pi = nn.Dense(outputs, kernel_init=_ortho(0.01))(h)
        log_std = (self.param("log_std", nn.initializers.constant(self.log_std_init), (3,))
                   if self.policy == "gaussian" else None)
        return pi, log_std, value


class TrainState(NamedTuple):
    params: dict
    opt_state: optax.OptState


class Rollout(NamedTuple):
    """One rollout flattened over (T, N): uint8 obs ``(M, S, S, C)``, float32 actions
    ``(M, 3)``, log-probabilities, advantages and returns ``(M,)``."""

    obs: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    advantages: jax.Array
    returns: jax.Array


def clipped_objective(log_probs, old_log_probs, advantages, clip_range):
    """PPO's clipped surrogate loss (Schulman et al. 2017, eq. 7), to minimise:
    ``-mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A))``, ``rho = exp(logp - logp_old)``.
    Returns ``(loss, clip fraction)``."""
    ratio = jnp.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    clip_fraction = jnp.mean((jnp.abs(ratio - 1.0) > clip_range).astype(jnp.float32))
    return -jnp.mean(jnp.minimum(unclipped, clipped)), clip_fraction


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    network: ActorCritic
    optimizer: optax.GradientTransformation
    agent: PPOAgentConfig

    def init(self, key, obs_shape) -> TrainState:
        params = self.network.init(key, jnp.zeros((1, *obs_shape), jnp.uint8))
        return TrainState(params, self.optimizer.init(params))

    def distribution(self, params, obs):
        """``(action distribution, values (B,))`` of a batch of observations."""
        pi, log_std, value = self.network.apply(params, obs)
        if self.network.policy == "beta":
            return BoxBeta.from_logits(pi[:, :3], pi[:, 3:], ACTION_LOW, ACTION_HIGH), value
        return BoxGaussian(pi, log_std), value

    def act(self, params, obs, key):
        """Sampled actions ``(B, 3)`` with their log-probabilities and values ``(B,)``.
        Gaussian actions are unbounded here; the env side clips them to the box."""
        dist, value = self.distribution(params, obs)
        actions = dist.sample(key)
        return actions, dist.log_prob(actions), value

    def act_eval(self, params, obs):
        """The deterministic action: the Beta's mode or the Gaussian's mean, in the box."""
        dist, _ = self.distribution(params, obs)
        return jnp.clip(dist.mode(), ACTION_LOW, ACTION_HIGH)

    def loss(self, params, batch: Rollout):
        a = self.agent
        dist, values = self.distribution(params, batch.obs)
        log_probs = dist.log_prob(batch.actions)
        adv = batch.advantages
        if a.normalize_advantage:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        policy_loss, clip_fraction = clipped_objective(log_probs, batch.log_probs, adv,
                                                       a.clip_range)
        value_loss = jnp.mean(jnp.square(batch.returns - values))
        entropy = jnp.mean(dist.entropy())
        loss = policy_loss + a.value_coef * value_loss - a.entropy_coef * entropy
        log_ratio = log_probs - batch.log_probs
        approx_kl = jnp.mean(jnp.exp(log_ratio) - 1.0 - log_ratio)  # k3 estimator
        return loss, {"policy_loss": policy_loss, "value_loss": value_loss,
                      "entropy": entropy, "approx_kl": approx_kl,
                      "clip_fraction": clip_fraction}

    def minibatch_step(self, state: TrainState, batch: Rollout):
        (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state), {"loss": loss, **aux,
                                               "grad_norm": optax.tree.norm(grads)}

    def update(self, state: TrainState, rollout: Rollout, key):
        """``num_epochs`` passes over ``rollout`` in shuffled minibatches: one
        ``lax.scan`` over epochs of a ``lax.scan`` over minibatches. Metrics: means over
        every minibatch step."""
        a = self.agent
        size = rollout.actions.shape[0]
        num_minibatches = size // a.minibatch_size

        def epoch(state, k):
            order = jax.random.permutation(k, size).reshape(num_minibatches, a.minibatch_size)
            batches = jax.tree.map(lambda x: x[order], rollout)
            return jax.lax.scan(self.minibatch_step, state, batches)

        state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, a.num_epochs))
        return state, jax.tree.map(jnp.mean, metrics)

    def minibatch_orders(self, key, size: int) -> jax.Array:
        """The shuffled minibatch rows of every epoch, int32 ``(epochs, minibatches, M)``:
        the permutations :meth:`update` draws."""
        a = self.agent
        perms = [jax.random.permutation(k, size) for k in jax.random.split(key, a.num_epochs)]
        return jnp.stack(perms).reshape(a.num_epochs, -1, a.minibatch_size)

    def update_stepwise(self, state: TrainState, rollout: Rollout, key, step, take):
        """:meth:`update`'s minibatch steps, one dispatch each (``step``: the jitted
        :meth:`minibatch_step`; ``take(rollout, rows)``: a jitted row gather). Same
        results as :meth:`update`; on XLA:CPU a ``lax.scan`` over convolutional steps
        runs ~11x slower than this loop."""
        metrics = []
        for rows in self.minibatch_orders(key, rollout.actions.shape[0]).reshape(
                -1, self.agent.minibatch_size):
            state, m = step(state, take(rollout, rows))
            metrics.append(m)
        return state, jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *metrics)


def make_learner(net: PPONetworkConfig, agent: PPOAgentConfig) -> Learner:
    optimizer = optax.chain(optax.clip_by_global_norm(agent.max_grad_norm),
                            optax.adam(agent.learning_rate, eps=agent.adam_eps))
    return Learner(ActorCritic(net, agent.policy, agent.log_std_init), optimizer, agent)
