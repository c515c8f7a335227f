"""IQN pieces of BTR's loss: quantile fractions, the quantile Huber loss and its PER terms.

BTR (Clark et al., "Beyond The Rainbow", arXiv 2411.03820, App. E.2) trains an Implicit
Quantile Network (Dabney, Ostrovski, Silver, Munos 2018, "IQN") on the Munchausen
target of :mod:`bbf_jax.munchausen`. The loss of one sample is IQN eq. 3,

    L = (1 / N') sum_{i<N} sum_{j<N'} rho^kappa_{tau_i}(delta_ij),
    delta_ij = T Z_j - Z_i,
    rho^kappa_tau(d) = |tau - 1{d < 0}| * L_kappa(d) / kappa,
    L_kappa(d) = d^2 / 2 if |d| <= kappa else kappa * (|d| - kappa / 2),

summed over the N predicted fractions and averaged over the N' target samples, as the
authors' ``Agent.learn_call`` does (``quantil_l.sum(dim=1).mean(dim=1)`` on a
``(B, N, N')`` array). The priority signal written back to prioritized replay is read
off the same TD errors (:func:`priority_signal`; its leaves and the importance weights
are :mod:`bbf_jax.replay.priorities`' host functions).

All functions are pure ``jax.numpy``, float32, batched over the leading axis and
jittable as they stand (no Python branching on array values); the caller jits the
train step around them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# ----------------------------------------------------------------------------------
# Quantile fractions
# ----------------------------------------------------------------------------------


def sample_taus(key: jax.Array, batch: int, num_taus: int) -> jnp.ndarray:
    """IQN quantile fractions ``tau ~ U[0, 1)``, float32 ``(batch, num_taus)``.

    One independent draw per sample and per network evaluation, as the authors'
    ``calc_cos`` (``torch.rand(batch_size, n_tau)``, also on ``[0, 1)``). ``batch`` and
    ``num_taus`` are shapes: static under ``jax.jit``.
    """
    return jax.random.uniform(key, (batch, num_taus), jnp.float32)


# ----------------------------------------------------------------------------------
# Quantile Huber loss (IQN eq. 3)
# ----------------------------------------------------------------------------------


def quantile_td_errors(predicted: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Pairwise TD errors ``delta_ij = target_j - predicted_i``, float32 ``(B, N, N')``.

    Args:
      predicted: ``(B, N)`` quantiles ``Z_{tau_i}(s_t, a_t)`` of the replayed action.
      target: ``(B, N')`` target quantiles ``T Z_j`` (gradient stopped here).

    Axis 1 indexes the predicted fraction i, axis 2 the target sample j, the layout of
    the authors' ``Q_targets - Q_expected`` ((B, 1, N') minus (B, N, 1)).
    """
    target = jax.lax.stop_gradient(target)
    return target[:, None, :] - predicted[:, :, None]


def quantile_huber_loss(
    predicted: jnp.ndarray,
    target: jnp.ndarray,
    taus: jnp.ndarray,
    kappa: float = 1.0,
) -> jnp.ndarray:
    """Per-sample quantile Huber loss of IQN (Dabney et al. 2018, eq. 3), float32 ``(B,)``.

    ``loss_b = mean_j sum_i |tau_i - 1{delta_ij < 0}| * L_kappa(delta_ij) / kappa`` with
    ``delta_ij = target_j - predicted_i`` and ``L_kappa`` the Huber loss (module
    docstring): the sum runs over the N predicted fractions, the mean over the N'
    target samples, the authors' reduction order. The asymmetric weight is a step
    function of ``delta``, so no gradient flows through it (the authors detach it);
    ``target`` is treated as a constant.

    Args:
      predicted: ``(B, N)`` online quantiles of the replayed action at fractions ``taus``.
      target: ``(B, N')`` target quantiles (any N').
      taus: ``(B, N)`` the fractions ``predicted`` was evaluated at, in ``[0, 1)``.
      kappa: Huber threshold (> 0); 1 in BTR and IQN.

    Returns:
      ``(B,)`` float32, unweighted: prioritized replay's importance weights multiply it.
    """
    delta = quantile_td_errors(predicted, target)
    abs_delta = jnp.abs(delta)
    huber = jnp.where(abs_delta <= kappa, 0.5 * delta**2, kappa * (abs_delta - 0.5 * kappa))
    weight = jnp.abs(taus[:, :, None] - (delta < 0).astype(jnp.float32))
    return jnp.mean(jnp.sum(weight * huber / kappa, axis=1), axis=1)


# ----------------------------------------------------------------------------------
# Prioritized replay: priorities written back, importance weights
# ----------------------------------------------------------------------------------


def priority_signal(predicted: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """The authors' priority signal ``mean_j sum_i |delta_ij|``, float32 ``(B,)``.

    ``Agent.learn_call``'s ``loss_v = |td_error|.sum(dim=1).mean(dim=1)``: the
    absolute TD errors reduced like the loss (sum over predicted i, mean over target j).
    :func:`bbf_jax.replay.priorities.per_leaf_priorities` turns it into the stored
    sum-tree value.
    """
    return jnp.mean(jnp.sum(jnp.abs(quantile_td_errors(predicted, target)), axis=1), axis=1)
