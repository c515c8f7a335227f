"""One BBF training step of the PyTorch reference, keyed like the ``losses`` fixture.

The official ``train_one_batch`` (spec §5.3-§5.8) on explicit inputs: C51 + SPR loss,
its gradient, one AdamW step from a fresh optimizer state, then the EMA target. The
outputs carry the names of a ``losses`` case (official README §4) without the
``<case>/`` prefix, with gradients and parameters mapped back to the Flax layout, so
they can be compared array by array with a fixture or with bbf_jax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from bbf_jax.agents.bbf.config import NetworkConfig
from bbf_jax.crosscheck import torch_losses as tl
from bbf_jax.crosscheck import torch_reference as tr
from bbf_jax.crosscheck.fixture_io import flatten_tree

# XLA compiles the official ``x / 255`` into a multiply by the float32 reciprocal; doing
# the same gives bit-identical network inputs (``/ 255`` differs in the last bit of a
# few values, a 1e-7 effect on every output).
_INV_255 = np.float32(1.0 / 255.0)


def process_inputs(raw: np.ndarray) -> np.ndarray:
    """uint8 frames -> float32 in [0, 1] as the JAX side computes ``x / 255`` (no augmentation)."""
    return raw.astype(np.float32) * _INV_255


@dataclasses.dataclass(frozen=True)
class StepInputs:
    """What one training step consumes, as numpy arrays.

    Attributes:
      online, target: parameter trees (nested or '/'-flat Flax layout).
      states: ``(B, K+1, H, W, C)`` float32 network inputs (scaled, augmented if the
        run augments); ``states[:, 0]`` is s_t, ``states[:, 1:]`` the SPR target frames.
      next_states: ``(B, H, W, C)`` float32, s_{t+n}.
      actions: ``(B, K+1)`` int; column 0 is the replayed action, columns 0..K-1 the
        rollout actions.
      returns, discounts: ``(B,)`` float32 n-step return and gamma^n.
      terminals: ``(B,)`` bool or float.
      same_trajectory: ``(B, K)`` SPR mask (the official ``same_traj_mask[:, 1:]``).
      loss_weights: ``(B,)`` float32 importance weights.
      support: ``(M,)`` float32 C51 support (pass the JAX one: ``jnp.linspace`` on
        XLA:CPU is not correctly rounded).
      noise: optional ``(B, N)`` per-example normal stream for noisy nets.
    """

    online: Mapping
    target: Mapping
    states: np.ndarray
    next_states: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    discounts: np.ndarray
    terminals: np.ndarray
    same_trajectory: np.ndarray
    loss_weights: np.ndarray
    support: np.ndarray
    noise: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The static settings of the official train call (BBF defaults)."""

    spr_weight: float = 5.0
    double_dqn: bool = True
    target_update_tau: float = 0.005
    adamw: tl.AdamWSettings = tl.AdamWSettings()


def _t(x, dtype=None) -> torch.Tensor:
    return torch.tensor(np.ascontiguousarray(x), dtype=dtype)


def _flax(named: Mapping[str, torch.Tensor], config: NetworkConfig) -> dict[str, np.ndarray]:
    return flatten_tree(tr.state_dict_to_params(named, config))


def train_step_outputs(
    inputs: StepInputs,
    config: NetworkConfig,
    num_actions: int,
    settings: StepSettings = StepSettings(),
) -> dict[str, np.ndarray]:
    """Every array of a ``losses`` case (names without the ``<case>/`` prefix).

    Scalars ``TotalLoss``, ``DQNLoss``, ``TD Error``, ``SPRLoss``, ``mean_loss`` (and
    the same as ``official_aux/*`` of shape (1,), plus ``official_aux/GradNorm``);
    ``per_sample/*`` (B,) / (B, K); ``intermediate/*``; ``grads/<path>`` and
    ``grad_global_norm`` (gradient of TotalLoss w.r.t. the online params);
    ``new_online_params/<path>`` after one AdamW step from a fresh state and
    ``new_target_params/<path>`` = ``(1 - tau) target + tau new_online``.
    """
    obs_shape = tuple(inputs.states.shape[-3:])
    online = tr.network_from_params(inputs.online, config, num_actions, obs_shape)
    target = tr.network_from_params(inputs.target, config, num_actions, obs_shape)
    if online.with_spr != (settings.spr_weight > 0):
        raise ValueError(
            f"spr_weight={settings.spr_weight} needs params "
            f"{'with' if settings.spr_weight > 0 else 'without'} transition_model/predictor"
        )
    batch = tl.LossBatch(
        states=_t(inputs.states, torch.float32),
        actions=_t(inputs.actions, torch.long),
        next_states=_t(inputs.next_states, torch.float32),
        rewards=_t(inputs.returns, torch.float32),
        discounts=_t(inputs.discounts, torch.float32),
        terminals=_t(inputs.terminals),
        same_trajectory=_t(inputs.same_trajectory, torch.float32),
        weights=_t(inputs.loss_weights, torch.float32),
    )
    noise = None if inputs.noise is None else _t(inputs.noise, torch.float32)
    loss, aux = tl.bbf_loss(
        online, target, batch, settings.spr_weight, support=_t(inputs.support, torch.float32),
        noise=noise, double_dqn=settings.double_dqn,
    )  # fmt: skip
    online.zero_grad(set_to_none=True)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in online.named_parameters()}
    # optax.global_norm: sqrt of the sum of every leaf's sum of squares, in float32.
    grad_norm = torch.sqrt(sum((g * g).sum() for g in grads.values()))
    tl.OfficialAdamW(online, settings.adamw).step()
    tl.ema_update(target, online, settings.target_update_tau)

    def np32(x: torch.Tensor) -> np.ndarray:
        return x.detach().numpy().astype(np.float32)

    with torch.no_grad():
        unweighted = aux["ce"] + settings.spr_weight * aux["spr"]
        weighted = batch.weights * unweighted
    means = {
        "TotalLoss": loss,
        "DQNLoss": aux["ce"].mean(),
        "TD Error": aux["td_error"].mean(),
        "SPRLoss": aux["spr"].mean(),
    }
    out: dict[str, np.ndarray] = {}
    for name, value in means.items():
        out[name] = np32(value)
        out[f"official_aux/{name}"] = np32(value).reshape(1)
    out["official_aux/GradNorm"] = np32(grad_norm).reshape(1)
    out["mean_loss"] = np32(loss)
    out["per_sample/dqn_loss"] = np32(aux["ce"])
    out["per_sample/td_error"] = np32(aux["td_error"])
    out["per_sample/spr_loss"] = np32(aux["spr"])
    out["per_sample/loss_unweighted"] = np32(unweighted)
    out["per_sample/loss_weighted"] = np32(weighted)
    it = "intermediate/"
    out[it + "target_distribution"] = np32(aux["target"])
    out[it + "next_q_online"] = np32(aux["next_q_online"])
    out[it + "next_qt_argmax"] = aux["next_action"].numpy().astype(np.int32)
    out[it + "next_probabilities_target"] = np32(aux["next_probabilities_target"])
    out[it + "logits"] = np32(aux["logits"])
    out[it + "chosen_action_logits"] = np32(aux["chosen_logits"])
    if aux["spr_predictions"] is not None:
        out["per_sample/spr_loss_per_jump"] = np32(aux["spr_per_jump"])
        out[it + "spr_predictions"] = np32(aux["spr_predictions"])
        out[it + "spr_targets"] = np32(aux["spr_targets"])
    for path, g in _flax(grads, config).items():
        out[f"grads/{path}"] = g
    out["grad_global_norm"] = np32(grad_norm)
    for path, v in _flax(online.state_dict(), config).items():
        out[f"new_online_params/{path}"] = v
    for path, v in _flax(target.state_dict(), config).items():
        out[f"new_target_params/{path}"] = v
    return out


def step_from_reference(
    online: Mapping[str, np.ndarray],
    target: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    new_online: Mapping[str, np.ndarray],
    config: NetworkConfig,
    num_actions: int,
    settings: StepSettings = StepSettings(),
) -> dict[str, np.ndarray]:
    """The optimizer and EMA stages run on the reference's own inputs (flat flax dicts).

    ``new_online_params/<path>``: one AdamW step of ``online`` with the given ``grads``;
    ``new_target_params/<path>``: ``(1 - tau) target + tau new_online``. Checked this way
    they are short elementwise computations with a tight bound, independent of how far
    the gradients of the two sides differ (:mod:`bbf_jax.tolerance`).
    """
    net = tr.network_from_params(online, config, num_actions)
    grad_sd = tr.params_to_state_dict(grads, config)
    for name, p in net.named_parameters():
        p.grad = grad_sd[name].clone()
    tl.OfficialAdamW(net, settings.adamw).step()
    target_net = tr.network_from_params(target, config, num_actions)
    tl.ema_update(target_net, tr.network_from_params(new_online, config, num_actions),
                  settings.target_update_tau)
    out = {f"new_online_params/{k}": v for k, v in _flax(net.state_dict(), config).items()}
    out.update(
        {f"new_target_params/{k}": v for k, v in _flax(target_net.state_dict(), config).items()}
    )
    return out
