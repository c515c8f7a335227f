"""PyTorch reference of BTR's loss math, written the way the authors' code computes it.

The authors' learn step (``Agent.learn_call``, IQN + Munchausen branch) and their
prioritized replay (``PER.sample`` / ``PER.update_priorities``) of
github.com/VIPTankz/BTR, tensor op for tensor op and in the same layouts, with the
two departures from the paper as switches whose defaults follow the paper:

* ``bonus_network``: 'target' (M-IQN) or 'online' (the code's ``self.net.qvals``);
* ``mode`` of :func:`importance_weights`: 'paper' (exponent beta) or 'code'
  (exponent alpha, the code's ``(capacity * probs) ** -self.alpha``).

It checks :mod:`bbf_jax.quantile` and :mod:`bbf_jax.munchausen` (and a PyTorch port of
them) on plain float32 tensors; no networks are involved, the quantiles are inputs.
Needs the ``torch`` extra.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BONUS_NETWORKS = ("target", "online")
IMPORTANCE_WEIGHT_MODES = ("paper", "code")


def calculate_huber_loss(td_errors: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """Element-wise Huber loss of the authors' ``calculate_huber_loss`` (any shape)."""
    return torch.where(td_errors.abs() <= k, 0.5 * td_errors.pow(2),
                       k * (td_errors.abs() - 0.5 * k))


def _td_errors(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # The code's Q_targets (B, 1, N') minus Q_expected (B, N, 1): (B, N, N').
    return target.unsqueeze(1) - predicted.unsqueeze(-1)


def quantile_huber_loss(
    predicted: torch.Tensor, target: torch.Tensor, taus: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """Per-sample quantile Huber loss, ``(B,)``; IQN eq. 3 as in ``learn_call``.

    ``quantil_l = |taus - 1{td < 0}| * huber(td) / kappa`` on ``td = T Z_j - Z_i`` of
    shape ``(B, N, N')``, then ``sum(dim=1).mean(dim=1)`` (sum over predicted i, mean
    over target j). The code writes ``/ 1.0``; kappa = 1 there.

    Args:
      predicted: ``(B, N)``; target: ``(B, N')``; taus: ``(B, N)``.
    """
    td_error = _td_errors(predicted, target.detach())
    huber_l = calculate_huber_loss(td_error, kappa)
    quantil_l = abs(taus.unsqueeze(-1) - (td_error.detach() < 0).float()) * huber_l / kappa
    return quantil_l.sum(dim=1).mean(dim=1)


def priority_signal(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The code's ``loss_v = |td_error|.sum(dim=1).mean(dim=1)``, ``(B,)``."""
    return torch.abs(_td_errors(predicted, target)).sum(dim=1).mean(dim=1)


def leaf_priorities(signal: torch.Tensor, alpha: float, eps: float = 1e-6) -> torch.Tensor:
    """``PER.update_priorities``: the sum tree stores ``(signal + eps) ** alpha``."""
    return (signal + eps) ** alpha


def munchausen_targets(
    next_quantiles: torch.Tensor,
    online_state_quantiles: torch.Tensor | None,
    target_state_quantiles: torch.Tensor | None,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    gamma_n: float,
    alpha: float = 0.9,
    entropy_tau: float = 0.03,
    lo: float = -1.0,
    bonus_network: str = "target",
) -> torch.Tensor:
    """M-IQN target quantiles of ``learn_call`` (IQN + Munchausen branch), ``(B, N')``.

    Args:
      next_quantiles: ``(B, N', A)`` target-network quantiles at the next state
        (the code's ``Q_targets_next``).
      online_state_quantiles: ``(B, N'', A)`` online-network quantiles at ``s_t`` (the
        code's ``self.net.qvals(states)`` is their mean over axis 1); used when
        ``bonus_network == 'online'``.
      target_state_quantiles: ``(B, N'', A)`` target-network quantiles at ``s_t``;
        used when ``bonus_network == 'target'`` (M-IQN).
      actions: ``(B,)`` int64; rewards: ``(B,)`` n-step returns; dones: ``(B,)`` bool.
      gamma_n: ``gamma ** n`` (a Python float, as the code's ``self.gamma ** self.n``).
      alpha, entropy_tau, lo: Munchausen alpha, tau and l0.
      bonus_network: 'target' or 'online'.
    """
    if bonus_network not in BONUS_NETWORKS:
        raise ValueError(f"bonus_network must be one of {BONUS_NETWORKS}, got {bonus_network!r}")
    state_quantiles = (target_state_quantiles if bonus_network == "target"
                       else online_state_quantiles)
    if state_quantiles is None:
        raise ValueError(f"bonus_network={bonus_network!r} needs that network's quantiles")
    with torch.no_grad():
        Q_targets_next = next_quantiles
        q_t_n = Q_targets_next.mean(dim=1)

        actions = actions.unsqueeze(1)
        rewards = rewards.unsqueeze(1)
        dones = dones.unsqueeze(1)

        logsum = torch.logsumexp(
            (q_t_n - q_t_n.max(1)[0].unsqueeze(-1)) / entropy_tau, 1).unsqueeze(-1)
        tau_log_pi_next = (q_t_n - q_t_n.max(1)[0].unsqueeze(-1)
                           - entropy_tau * logsum).unsqueeze(1)
        pi_target = F.softmax(q_t_n / entropy_tau, dim=1).unsqueeze(1)
        Q_target = (gamma_n * (
            pi_target * (Q_targets_next - tau_log_pi_next) * (~dones.unsqueeze(-1))
        ).sum(2)).unsqueeze(1)

        q_k_target = state_quantiles.mean(dim=1)
        v_k_target = q_k_target.max(1)[0].unsqueeze(-1)
        tau_log_pik = q_k_target - v_k_target - entropy_tau * torch.logsumexp(
            (q_k_target - v_k_target) / entropy_tau, 1).unsqueeze(-1)
        munchausen_addon = tau_log_pik.gather(1, actions)
        munchausen_reward = (rewards + alpha * torch.clamp(munchausen_addon, min=lo, max=0)
                             ).unsqueeze(-1)
        Q_targets = munchausen_reward + Q_target
    return Q_targets[:, 0, :]


def importance_weights(
    priorities: torch.Tensor,
    total_priority: float,
    capacity: int,
    alpha: float,
    beta: float,
    mode: str = "paper",
) -> torch.Tensor:
    """``PER.sample``'s weights ``(capacity * probs) ** -exponent / max``, ``(B,)``.

    ``probs = prios / p_total`` (``prios`` the sampled leaves, ``p_i^alpha``);
    ``capacity`` is the number of transitions stored. The exponent is ``beta`` in
    'paper' mode and ``alpha`` in 'code' mode (the code's accident, kept because "it
    performed better"); both normalise by the batch maximum, as the code does.
    """
    if mode not in IMPORTANCE_WEIGHT_MODES:
        raise ValueError(f"mode must be one of {IMPORTANCE_WEIGHT_MODES}, got {mode!r}")
    exponent = beta if mode == "paper" else alpha
    probs = priorities / total_priority
    weights = (capacity * probs) ** -exponent
    return weights / weights.max()
