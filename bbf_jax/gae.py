"""Generalised advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous
Control Using Generalized Advantage Estimation", eq. 16), as Stable-Baselines3's
``RolloutBuffer.compute_returns_and_advantage``."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def gae(rewards, values, terminals, last_values, gamma, lam):
    """Advantages and returns of a rollout of T steps of N envs.

    ``delta_t = r_t + gamma (1 - d_t) V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma lam (1 - d_t) A_{t+1}``, ``A_T = 0``; returns ``A + V``.
    ``d_t`` marks a step that ended its episode: the next row's state belongs to a new
    episode, so nothing is bootstrapped across it (a time-limit cut is folded into the
    reward by the caller as ``r + gamma V(final state)``).

    Args:
      rewards, values: float32 ``(T, N)``; ``values[t] = V(s_t)``.
      terminals: bool or float ``(T, N)``.
      last_values: float32 ``(N,)``, ``V(s_T)`` of the state after the rollout.
      gamma, lam: discount and GAE lambda (floats or traced scalars).

    Returns:
      ``(advantages (T, N), returns (T, N))``, float32.
    """
    not_done = 1.0 - jnp.asarray(terminals, jnp.float32)
    next_values = jnp.concatenate([values[1:], last_values[None]], axis=0)
    deltas = rewards + gamma * not_done * next_values - values

    def back(carry, x):
        delta, nd = x
        adv = delta + gamma * lam * nd * carry
        return adv, adv

    _, advantages = jax.lax.scan(back, jnp.zeros_like(last_values), (deltas, not_done),
                                 reverse=True)
    return advantages, advantages + values
