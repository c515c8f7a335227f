"""The Munchausen-IQN target of BTR (paper App. E.2: "same as the M-IQN appendix").

Munchausen RL (Vieillard, Pietquin, Geist 2020, §3) adds the clipped, scaled
log-policy of the replayed action to the reward and bootstraps on the soft
(entropy-regularised) value of the next state. With the softmax policy
``pi = softmax(q / tau)`` of ``q = mean over quantiles``, the M-IQN target quantiles are

    T Z_j = R + alpha * clip(tau * log pi(a_t | s_t), l0, 0)
              + gamma^n (1 - d) * sum_a' pi(a' | s') (Z_j(s', a') - tau * log pi(a' | s'))

with alpha = 0.9, tau = 0.03, l0 = -1 (the M-DQN values; M-IQN's code:
google-research ``munchausen_rl/agents/m_iqn.py``). BTR uses an n-step return ``R``
(n = 3) and adds the bonus once, for the first action, undiscounted, as its authors'
``Agent.learn_call`` does; the entropy term uses the same tau.

Which network computes ``log pi(a_t | s_t)`` is the caller's choice: M-IQN uses the
target network (the default, 'target'); the authors' code uses the online network
('online', ``self.net.qvals(states)``). The next-state policy and quantiles come from
the target network in both. The caller passes the chosen network's quantiles as
``bonus_quantiles``.

Pure ``jax.numpy``, float32, jittable as it stands. The log-policy is computed as
``tau log pi = q - max q - tau * logsumexp((q - max q) / tau)`` (the stable form of
both M-IQN's and the authors' code), so tau = 0.03 with Q values in the hundreds stays
finite: the greedy action's ``tau log pi`` is ~0 and another's ~ its gap to the max.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def scaled_log_policy(q: jnp.ndarray, entropy_tau) -> jnp.ndarray:
    """``tau * log softmax(q / tau)`` along the last (action) axis, float32, ``q``'s shape.

    Computed as ``(q - v) - tau * logsumexp((q - v) / tau)`` with ``v = max_a q``: every
    exponent is <= 0, so nothing overflows at low temperature, and a gap of ``dq``
    below the max gives ``-dq`` up to ``tau log(1 + ...)``.
    """
    advantage = q - jnp.max(q, axis=-1, keepdims=True)
    log_normaliser = jax.nn.logsumexp(advantage / entropy_tau, axis=-1, keepdims=True)
    return advantage - entropy_tau * log_normaliser


def softmax_policy(q: jnp.ndarray, entropy_tau) -> jnp.ndarray:
    """``pi = softmax(q / tau)`` along the last (action) axis, float32, ``q``'s shape."""
    return jax.nn.softmax((q - jnp.max(q, axis=-1, keepdims=True)) / entropy_tau, axis=-1)


def munchausen_bonus(
    bonus_quantiles: jnp.ndarray,
    actions: jnp.ndarray,
    alpha=0.9,
    entropy_tau=0.03,
    clip_min=-1.0,
) -> jnp.ndarray:
    """``alpha * clip(tau * log pi(a_t | s_t), l0, 0)``, float32 ``(B,)``.

    Args:
      bonus_quantiles: ``(B, N'', A)`` quantiles at ``s_t`` of the network chosen by
        ``bonus_network`` (any N''); ``q = mean`` over axis 1.
      actions: ``(B,)`` int, the replayed actions ``a_t``.
      alpha, entropy_tau, clip_min: Munchausen alpha, tau and l0.
    """
    q = jnp.mean(bonus_quantiles, axis=1)
    tau_log_pi = scaled_log_policy(q, entropy_tau)
    chosen = jnp.take_along_axis(tau_log_pi, actions[:, None].astype(jnp.int32), axis=1)[:, 0]
    return alpha * jnp.clip(chosen, clip_min, 0.0)


def soft_next_quantiles(next_quantiles: jnp.ndarray, entropy_tau=0.03) -> jnp.ndarray:
    """``sum_a' pi(a'|s') (Z_j(s', a') - tau log pi(a'|s'))``, float32 ``(B, N')``.

    The soft bootstrap of M-IQN: the policy comes from ``q = mean_j Z_j(s', .)`` of the
    same target-network quantiles ``next_quantiles`` ``(B, N', A)``, as in the authors'
    code (M-IQN's code evaluates the policy on a separate draw of fractions).
    """
    q = jnp.mean(next_quantiles, axis=1)
    pi = softmax_policy(q, entropy_tau)[:, None, :]
    tau_log_pi = scaled_log_policy(q, entropy_tau)[:, None, :]
    return jnp.sum(pi * (next_quantiles - tau_log_pi), axis=-1)


def munchausen_targets(
    next_quantiles: jnp.ndarray,
    bonus_quantiles: jnp.ndarray,
    actions: jnp.ndarray,
    returns: jnp.ndarray,
    bootstrap_discount: jnp.ndarray,
    alpha=0.9,
    entropy_tau=0.03,
    clip_min=-1.0,
) -> jnp.ndarray:
    """M-IQN target quantiles ``T Z_j`` (module docstring), float32 ``(B, N')``.

    ``T Z_j = (R + munchausen_bonus) + gamma^n (1 - d) * soft_next_quantiles_j``.

    Args:
      next_quantiles: ``(B, N', A)`` target-network quantiles at the bootstrap state.
      bonus_quantiles: ``(B, N'', A)`` quantiles at ``s_t`` for the bonus, from the
        target network ('target', the default) or the online one ('online').
      actions: ``(B,)`` int replayed actions ``a_t``.
      returns: ``(B,)`` n-step discounted returns ``R = sum_{k<n} gamma^k r_{t+k}``.
      bootstrap_discount: ``(B,)`` ``gamma^n * (1 - terminal)``; 0 drops the bootstrap.
      alpha, entropy_tau, clip_min: Munchausen alpha (0.9), tau (0.03) and l0 (-1).

    Returns:
      ``(B, N')`` float32; a constant for the loss (gradient stopped by the loss).
    """
    bonus = munchausen_bonus(bonus_quantiles, actions, alpha, entropy_tau, clip_min)
    soft_next = soft_next_quantiles(next_quantiles, entropy_tau)
    return (returns + bonus)[:, None] + bootstrap_discount[:, None] * soft_next
