"""Per-sample losses of BBF (spec §5.6). Reductions are left to the caller."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def c51_cross_entropy(chosen_logits: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """C51 loss ``CE_b = -sum_i target_{b,i} log_softmax(logits_b)_i`` (Dopamine losses).

    Args:
      chosen_logits: ``(B, M)`` logits of the replayed action.
      target: ``(B, M)`` projected target distribution (no gradient).

    Returns:
      ``(B,)`` float32.
    """
    return -jnp.sum(target * jax.nn.log_softmax(chosen_logits), axis=-1)


def c51_td_error(cross_entropy: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """KL(target || prediction) = CE + sum target log target, with 0 log 0 = 0. ``(B,)``."""
    return cross_entropy + jnp.nan_to_num(target * jnp.log(target)).sum(-1)


def huber(target: jnp.ndarray, prediction: jnp.ndarray, delta: float = 1.0) -> jnp.ndarray:
    """Dopamine's Huber loss (DrQ scalar-Q variant), element-wise ``(B,)``."""
    x = jnp.abs(target - prediction)
    return jnp.where(x <= delta, 0.5 * x**2, 0.5 * delta**2 + delta * (x - delta))


def spr_loss(predictions: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray):
    """SPR loss on L2-normalised vectors, masked and averaged over K jumps.

    ``spr_b = (1/K) sum_k M_{b,k} ||p_{b,k}/|p_{b,k}| - z_{b,k}/|z_{b,k}| ||^2`` (the
    normalisation has no epsilon; the mean divides by K however many steps are
    masked, as the official code does).

    Args:
      predictions: ``(B, K, H)`` online SPR predictions.
      targets: ``(B, K, H)`` target projections (no gradient).
      mask: ``(B, K)`` same-trajectory mask of steps 1..K.

    Returns:
      ``(spr (B,), per_jump (B, K))`` where per_jump is the unmasked squared distance.
    """
    p = predictions / jnp.linalg.norm(predictions, 2, -1, keepdims=True)
    z = targets / jnp.linalg.norm(targets, 2, -1, keepdims=True)
    per_jump = jnp.power(p - z, 2).sum(-1)
    # Official: (K, B) layout, masked, mean over axis 0 (K).
    spr = (per_jump * mask).T.mean(0)
    return spr, per_jump
