"""PyTorch reference of BBF's losses, optimizer step and target update (spec §5.5-§5.8).

Companion of :mod:`bbf_jax.crosscheck.torch_reference` (needs the ``torch`` extra).
Everything works on plain tensors and :class:`~bbf_jax.crosscheck.torch_reference.
BBFTorchNetwork` modules; per-sample losses are returned unreduced so they can be
compared one by one. Inputs are float32 observations already scaled to [0, 1] and
already augmented (augmentation RNG streams cannot match across frameworks).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from bbf_jax.crosscheck.torch_reference import BBFTorchNetwork, flax_path

_ENCODER_GROUP = ("encoder", "transition_model")  # spec §5.7: lr = encoder_learning_rate


# ----------------------------------------------------------------------------------
# C51 target (spec §5.5)
# ----------------------------------------------------------------------------------


def project_distribution(
    supports: torch.Tensor, weights: torch.Tensor, target_support: torch.Tensor
) -> torch.Tensor:
    """Categorical projection, Bellemare et al. (2017) eq. 7 as in Dopamine.

    ``out_i = sum_j clip(1 - |clip(supports_j, v_min, v_max) - z_i| / dz, 0, 1) * w_j``,
    ``v_min, v_max = z_0, z_{M-1}``, ``dz = (v_max - v_min) / (M - 1)``.

    Args:
      supports: ``(B, K)`` atom locations; weights: ``(B, K)`` their masses (need not
        sum to one); target_support: ``(M,)`` equally spaced.

    Returns:
      ``(B, M)``.
    """
    if supports.shape != weights.shape or supports.dim() != 2:
        raise ValueError(
            f"supports {tuple(supports.shape)} and weights {tuple(weights.shape)} "
            "must both be (B, K)"
        )
    v_min, v_max = target_support[0], target_support[-1]
    delta_z = (v_max - v_min) / (target_support.shape[0] - 1)
    clipped = torch.clamp(supports, v_min, v_max)
    # (B, M, K): row i = target atom z_i, column j = source atom.
    numerator = torch.abs(clipped[:, None, :] - target_support[None, :, None])
    quotient = torch.clamp(1 - numerator / delta_z, 0, 1)
    return (quotient * weights[:, None, :]).sum(-1)


def categorical_target(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    terminals: torch.Tensor,
    next_probabilities: torch.Tensor,
    support: torch.Tensor,
) -> torch.Tensor:
    """``project(R + gamma^n (1 - d) z, p(s', a*), z)``, ``(B, M)`` (spec §5.5).

    Args:
      rewards: ``(B,)`` n-step returns; discounts: ``(B,)`` gamma^n; terminals: ``(B,)``
        bool or float; next_probabilities: ``(B, M)`` the backed-up distribution.
    """
    gamma_with_terminal = discounts * (1.0 - terminals.to(torch.float32))
    supports = rewards[:, None] + gamma_with_terminal[:, None] * support
    return project_distribution(supports, next_probabilities, support)


def select_next_probabilities(
    select_q: torch.Tensor, backup_probabilities: torch.Tensor
) -> torch.Tensor:
    """``p(s', argmax_a Q_select(s', a))``: ``(B, A)``, ``(B, A, M)`` -> ``(B, M)``.

    Double DQN: Q_select from the online network, probabilities from the target.
    Ties go to the first maximal action, as ``jnp.argmax``.
    """
    a_star = torch.argmax(select_q, dim=-1)
    return backup_probabilities[torch.arange(select_q.shape[0]), a_star]


# ----------------------------------------------------------------------------------
# Losses (spec §5.6)
# ----------------------------------------------------------------------------------


def softmax_cross_entropy(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``CE_b = -sum_i target_{b,i} log_softmax(logits_b)_i``, ``(B,)``."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1)


def c51_td_error(ce: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``KL(target || prediction) = CE_b + sum_i target_i log target_i`` with 0 log 0 = 0, ``(B,)``.

    The official priority signal ("TD Error"); ``nan_to_num`` as in the official code.
    """
    return ce + torch.nan_to_num(target * torch.log(target)).sum(-1)


def _l2_normalise(x: torch.Tensor) -> torch.Tensor:
    # Plain division by the norm, no epsilon, as the official loss.
    return x / torch.sqrt((x * x).sum(-1, keepdim=True))


def spr_loss(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``spr_b = (1/K) sum_k M_bk ||P_bk/|P_bk| - Z_bk/|Z_bk|||^2``, ``(B,)``.

    Args:
      predictions: ``(B, K, D)`` online SPR predictions; targets: ``(B, K, D)`` target
        projections (no gradient); mask: ``(B, K)`` same-trajectory mask. The mean
        divides by K however many steps are masked.
    """
    sq = spr_distances(predictions, targets)
    return (sq * mask.to(sq.dtype)).mean(-1)


def spr_distances(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Unmasked per-jump ``||P_bk/|P_bk| - Z_bk/|Z_bk|||^2``: ``(B, K, D)`` -> ``(B, K)``."""
    return (_l2_normalise(predictions) - _l2_normalise(targets)).pow(2).sum(-1)


def weighted_total_loss(
    ce: torch.Tensor, spr: torch.Tensor, weights: torch.Tensor, spr_weight: float
) -> torch.Tensor:
    """``L = mean_b w_b (CE_b + spr_weight * spr_b)`` (importance-weighted, scalar)."""
    return torch.mean(weights * (ce + spr_weight * spr))


@dataclasses.dataclass(frozen=True)
class LossBatch:
    """One minibatch, tensors as the official ``train_one_batch`` sees them after slicing.

    Attributes:
      states: ``(B, K+1, H, W, C)`` float in [0, 1], already augmented; ``states[:, 0]``
        is s_t, ``states[:, 1:]`` the SPR target frames.
      actions: ``(B, K+1)`` int; ``actions[:, 0]`` is the chosen action, ``actions[:, :-1]``
        the rollout actions.
      next_states: ``(B, H, W, C)`` float, s_{t+n}, already augmented.
      rewards: ``(B,)`` n-step returns; discounts: ``(B,)`` gamma^n; terminals: ``(B,)``.
      same_trajectory: ``(B, K)`` SPR mask (the official ``same_traj_mask[:, 1:]``).
      weights: ``(B,)`` importance weights.
    """

    states: torch.Tensor
    actions: torch.Tensor
    next_states: torch.Tensor
    rewards: torch.Tensor
    discounts: torch.Tensor
    terminals: torch.Tensor
    same_trajectory: torch.Tensor
    weights: torch.Tensor


def bbf_loss(
    online: BBFTorchNetwork,
    target: BBFTorchNetwork,
    batch: LossBatch,
    spr_weight: float,
    support: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    double_dqn: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official C51 + SPR loss of one minibatch (spec §5.5-§5.6).

    Args:
      online, target: networks holding the online and target parameters.
      spr_weight: lambda; 0 disables the SPR term and the rollout.
      support: the C51 support (default: ``online.support``).
      noise: ``(B, N)`` per-example normal stream for noisy nets, shared by the online
        and target passes (official ``match_online_target_rngs=True``); SPR targets and
        predictions never see noise.
      double_dqn: select the bootstrap action with the online network (BBF) rather
        than the target network; the backup distribution is the target's either way.

    Returns:
      ``(loss, aux)``: the scalar to differentiate and, per sample, ``ce`` (B,),
      ``td_error`` (B,), ``spr`` (B,), ``spr_per_jump`` (B, K) unmasked, ``target``
      (B, M) the C51 target distribution, ``spr_targets`` and ``spr_predictions``
      (B, K, D), ``logits`` (B, A, M) and ``chosen_logits`` (B, M) of the online
      network at s_t, ``next_q_online`` (B, A), ``next_action`` (B,) and
      ``next_probabilities_target`` (B, A, M) at s_{t+n}. Without SPR the SPR
      entries are None and ``spr`` is zero.
    """
    z = online.support if support is None else support
    use_spr = spr_weight > 0
    with torch.no_grad():
        next_online = online(batch.next_states, noise=noise, support=z)
        next_target = target(batch.next_states, noise=noise, support=z)
        select_q = next_online.q_values if double_dqn else next_target.q_values
        next_action = torch.argmax(select_q, dim=-1)
        next_probs = select_next_probabilities(select_q, next_target.probabilities)
        c51_target = categorical_target(
            batch.rewards, batch.discounts, batch.terminals, next_probs, z
        )
        spr_targets = None
        if use_spr:
            b, k1 = batch.states.shape[:2]
            future = batch.states[:, 1:].reshape(b * (k1 - 1), *batch.states.shape[2:])
            spr_targets = target.encode_project(future).reshape(b, k1 - 1, -1)
    out = online(
        batch.states[:, 0],
        actions=batch.actions[:, :-1],
        do_rollout=use_spr,
        noise=noise,
        support=z,
    )
    chosen = out.logits[torch.arange(out.logits.shape[0]), batch.actions[:, 0].long()]
    ce = softmax_cross_entropy(c51_target, chosen)
    aux = {
        "ce": ce,
        "td_error": c51_td_error(ce, c51_target),
        "target": c51_target,
        "logits": out.logits,
        "chosen_logits": chosen,
        "next_q_online": next_online.q_values,
        "next_action": next_action,
        "next_probabilities_target": next_target.probabilities,
        "spr_targets": spr_targets,
        "spr_predictions": out.latent if use_spr else None,
        "spr_per_jump": None,
    }
    if use_spr:
        aux["spr_per_jump"] = spr_distances(out.latent, spr_targets)
        aux["spr"] = spr_loss(out.latent, spr_targets, batch.same_trajectory)
    else:
        aux["spr"] = torch.zeros_like(ce)
    loss = weighted_total_loss(ce, aux["spr"], batch.weights, spr_weight)
    return loss, aux


# ----------------------------------------------------------------------------------
# Optimizer (spec §5.7) and target network (spec §5.8)
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdamWSettings:
    """The official ``create_scaling_optimizer('adam', ...)`` values for BBF."""

    learning_rate: float = 1e-4
    encoder_learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1.5e-4
    weight_decay: float = 0.1


def _f32(x: float) -> torch.Tensor:
    # optax's Python-float hyperparameters enter the float32 computation as
    # (weakly typed) float32 constants; making them float32 tensors here keeps every
    # operation in float32 on the torch side too.
    return torch.tensor(x, dtype=torch.float32)


class OfficialAdamW:
    """``chain(masked(adamw(enc_lr), enc), masked(adamw(lr), head))`` of optax, by hand.

    Per leaf, in optax's order and float32 arithmetic (spec §5.7)::

        m <- (1 - b1) g + b1 m;   v <- (1 - b2) g^2 + b2 v;   t <- t + 1 (per group)
        u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)  [+ wd * theta if decayed]
        theta <- theta + (-lr) * u

    ``torch.optim.AdamW`` is not used: it shrinks ``theta *= 1 - lr * wd`` *before*
    the Adam step and computes the bias corrections in float64, which agrees with
    optax only up to rounding. Decay applies to every leaf whose Flax leaf has
    ``ndim != 1`` (all kernels, noisy ``kernell`` included; never biases); the torch
    tensors have the same rank as their Flax leaves (layout changes only permute axes).
    Groups: Flax top-level ``encoder``/``transition_model`` vs everything else, each
    with its own step counter.
    """

    def __init__(self, net: BBFTorchNetwork, settings: AdamWSettings = AdamWSettings()):
        self.settings = settings
        self.params: list[tuple[str, torch.nn.Parameter, str, bool]] = []
        for name, p in net.named_parameters():
            path = flax_path(name, net.config, net.with_spr)
            group = "encoder" if path.split("/")[0] in _ENCODER_GROUP else "head"
            self.params.append((name, p, group, p.dim() != 1))
        self.m = {name: torch.zeros_like(p) for name, p, _, _ in self.params}
        self.v = {name: torch.zeros_like(p) for name, p, _, _ in self.params}
        self.count = {"encoder": 0, "head": 0}

    @torch.no_grad()
    def step(self) -> None:
        """Applies one update from the ``.grad`` of every parameter."""
        s = self.settings
        b1, b2 = _f32(s.b1), _f32(s.b2)
        one_m_b1, one_m_b2 = _f32(1 - s.b1), _f32(1 - s.b2)
        for group in self.count:
            self.count[group] += 1
        # optax: 1 - decay ** count, computed in float32 (decay weakly typed, count int32).
        corr1 = {g: 1 - b1 ** _f32(t) for g, t in self.count.items()}
        corr2 = {g: 1 - b2 ** _f32(t) for g, t in self.count.items()}
        lr = {
            "encoder": _f32(-s.encoder_learning_rate),
            "head": _f32(-s.learning_rate),
        }
        wd, eps = _f32(s.weight_decay), _f32(s.eps)
        for name, p, group, decay in self.params:
            if p.grad is None:
                raise ValueError(f"parameter {name} has no gradient; call backward() first")
            g = p.grad
            m = one_m_b1 * g + b1 * self.m[name]
            v = one_m_b2 * (g * g) + b2 * self.v[name]
            self.m[name], self.v[name] = m, v
            u = (m / corr1[group]) / (torch.sqrt(v / corr2[group]) + eps)
            if decay:
                u = u + wd * p
            p.add_(lr[group] * u)


@torch.no_grad()
def ema_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """``theta_target <- theta_target (1 - tau) + theta_online tau`` on every parameter.

    tau is a traced float32 value in the official jitted ``train``, so ``1 - tau`` is
    computed in float32 (spec §5.8).
    """
    t = _f32(tau)
    keep = 1 - t
    online_params = dict(online.named_parameters())
    for name, p in target.named_parameters():
        p.copy_(p * keep + online_params[name] * t)
