"""C51 support, categorical projection and the TD targets built on it (spec §5.5).

Every function is pure ``jax.numpy`` and batched over leading dimensions without
``vmap``; the arithmetic is the per-sample official computation (Dopamine's
``rainbow_agent.project_distribution`` as vmapped in BBF's ``target_output``) op for
op, so batched results equal the official ones bitwise. They are jitted because
XLA fuses ``R + g * z`` into one rounding (as in the official jitted ``train``);
eager op-by-op evaluation would differ in the last bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def make_support(num_atoms: int, vmax: float) -> jnp.ndarray:
    """The C51 atoms ``z = linspace(-vmax, vmax, num_atoms)``, float32 ``(num_atoms,)``."""
    if num_atoms < 2:
        raise ValueError(f"make_support: num_atoms must be >= 2, got {num_atoms}")
    if not vmax > 0:
        raise ValueError(f"make_support: vmax must be > 0, got {vmax}")
    vmax = float(vmax)
    return jnp.linspace(-vmax, vmax, num_atoms, dtype=jnp.float32)


@jax.jit
def project_distribution(supports, weights, target_support) -> jnp.ndarray:
    """Projects ``(supports, weights)`` onto ``target_support`` (Bellemare et al. 2017, eq. 7).

    ``out_i = sum_j clip(1 - |clip(supports_j, v_min, v_max) - z_i| / dz, 0, 1) * weights_j``
    with ``v_min, v_max = target_support[0], target_support[-1]`` and
    ``dz = (v_max - v_min) / (M - 1)``. The weights need not be normalised.

    Args:
      supports: float ``(..., K)``, atom locations of the distribution to project.
      weights: float ``(..., K)``, mass on each of those atoms.
      target_support: float ``(M,)``, increasing and equally spaced.

    Returns:
      float ``(..., M)``: the projected masses.
    """
    supports = jnp.asarray(supports)
    weights = jnp.asarray(weights)
    target_support = jnp.asarray(target_support)
    if target_support.ndim != 1 or target_support.shape[0] < 2:
        raise ValueError(
            f"project_distribution: target_support must have shape (M,) with M >= 2, "
            f"got {target_support.shape}"
        )
    if supports.shape != weights.shape:
        raise ValueError(
            f"project_distribution: supports {supports.shape} and weights {weights.shape} "
            "must have the same shape"
        )
    v_min, v_max = target_support[0], target_support[-1]
    delta_z = (v_max - v_min) / (target_support.shape[0] - 1)
    clipped_support = jnp.clip(supports, v_min, v_max)
    # (..., M, K): rows index the target atom z_i, columns the source atom j, as in
    # the per-sample official code, so the sum over K reduces in the same order.
    numerator = jnp.abs(clipped_support[..., None, :] - target_support[:, None])
    clipped_quotient = jnp.clip(1 - numerator / delta_z, 0, 1)
    return jnp.sum(clipped_quotient * weights[..., None, :], axis=-1)


@jax.jit
def bootstrap_discount(discounts, terminals) -> jnp.ndarray:
    """``gamma_with_terminal = gamma^n * (1 - terminal)`` for each sample, float32 ``(B,)``."""
    return discounts * (1.0 - jnp.asarray(terminals).astype(jnp.float32))


@jax.jit
def shifted_support(rewards, discounts, terminals, support):
    """The Bellman-shifted atoms ``T z_j = R + gamma^n (1 - d) z_j`` (spec §5.5).

    Args:
      rewards: float ``(B,)`` n-step returns R.
      discounts: float ``(B,)`` gamma^n.
      terminals: bool or float ``(B,)``.
      support: float ``(M,)``.

    Returns:
      ``(gamma_with_terminal (B,), supports (B, M))``.
    """
    gamma_with_terminal = bootstrap_discount(discounts, terminals)
    supports = rewards[:, None] + gamma_with_terminal[:, None] * support
    return gamma_with_terminal, supports


@jax.jit
def categorical_target(rewards, discounts, terminals, next_probabilities, support):
    """C51 target distribution: ``project(R + gamma^n (1 - d) z, p(s', a*), z)`` (spec §5.5).

    Args:
      rewards: float ``(B,)``; discounts: float ``(B,)`` (gamma^n);
      terminals: bool or float ``(B,)``;
      next_probabilities: float ``(B, M)``, the backed-up distribution p(s', a*);
      support: float ``(M,)``.

    Returns:
      float ``(B, M)``.
    """
    _, supports = shifted_support(rewards, discounts, terminals, support)
    return project_distribution(supports, next_probabilities, support)


@jax.jit
def scalar_target(rewards, discounts, terminals, next_q) -> jnp.ndarray:
    """Non-distributional (DrQ) target ``y = R + gamma^n (1 - d) Q(s', a*)``, float ``(B,)``.

    Spec §5.5; the loss on it is a Huber loss.
    """
    return rewards + bootstrap_discount(discounts, terminals) * next_q
