"""Batched epsilon-greedy action selection (spec §8), pure and jittable."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bbf_jax.networks import BBFNetwork


def select_actions(network: BBFNetwork, params, states, key, epsilon, use_noise: bool = True):
    """Epsilon-greedy actions for N envs, with the official key use.

    Args:
      network: the BBF network.
      params: parameters to act with (the target network for BBF).
      states: ``(N, 84, 84, 4)`` uint8 (or float in [0, 255]) agent frame stacks.
      key: PRNG key.
      epsilon: float32 scalar; an action is random when ``u <= epsilon``,
        ``u ~ U[0, 1)``.
      use_noise: sample noisy-layer noise (official default in train and eval).

    Returns:
      ``(new_key, actions (N,) int32)``. Keys: ``key, _ = split(key)``;
      ``key, k_u, k_net, k_rand = split(key, 4)``; per-env network keys
      ``split(k_net, N)``; greedy ties go to the first action.
    """
    key, _ = jax.random.split(key)
    x = jnp.asarray(states).astype(jnp.float32) / 255.0
    key, k_u, k_net, k_rand = jax.random.split(key, 4)
    n = x.shape[0]
    u = jax.random.uniform(k_u, (n,))
    noise = jax.random.split(k_net, n) if (use_noise and network.config.noisy) else None
    q = network.apply({"params": params}, x, noise_keys=noise).q_values
    greedy = jnp.argmax(q, axis=-1)
    random = jax.random.randint(k_rand, (n,), 0, network.num_actions)
    return key, jnp.where(u <= epsilon, random, greedy).astype(jnp.int32)
