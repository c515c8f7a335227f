"""Shrink-and-perturb resets (spec §7.2-§7.3), pure and jittable."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bbf_jax.config import ResetConfig
from bbf_jax.learner import Learner, TrainState
from bbf_jax.optim import make_optimizer


def interpolate(old, fresh, keys, shrink_factor, perturb_factor) -> dict:
    """``old * shrink + fresh * perturb`` on the top-level modules in ``keys``; others kept.

    The official ``interpolate_weights`` (also used for the EMA target with
    ``(1 - tau, tau)``).
    """
    return {
        k: (
            jax.tree.map(lambda o, n: o * shrink_factor + n * perturb_factor, v, fresh[k])
            if k in keys
            else v
        )
        for k, v in old.items()
    }


def shrink_perturb(old, fresh, reset: ResetConfig) -> dict:
    """Reset one parameter tree towards a fresh initialisation (spec §7.2 step 4).

    Modules in ``reset.shrink_perturb_keys`` become ``shrink * old + perturb * fresh``;
    every other top-level module (projection, predictor, head for BBF) is replaced
    by ``fresh``.
    """
    keys = tuple(k for k in reset.shrink_perturb_keys if k in old)
    mixed = interpolate(old, fresh, keys, reset.shrink_factor, reset.perturb_factor)
    return {k: (mixed[k] if k in keys else fresh[k]) for k in old}


def reset_with_key(learner: Learner, state: TrainState, reset_key, reset: ResetConfig):
    """The official ``jit_reset`` for a given key (spec §7.2-§7.3).

    ``k_online, k_target = split(reset_key)``; two fresh initialisations; the online
    and target trees are shrink-perturbed towards *different* random points; the
    whole optimizer state (both Adam groups, counts included) is re-initialised;
    the schedule counter restarts. Returns ``(new_state, fresh_online, fresh_target)``.
    """
    k_online, k_target = jax.random.split(reset_key)
    fresh_online = learner.init_params(k_online)
    fresh_target = learner.init_params(k_target)
    online = shrink_perturb(state.online, fresh_online, reset)
    target = shrink_perturb(state.target, fresh_target, reset)
    new_state = state.replace(
        online=online,
        target=target,
        opt_state=make_optimizer(learner.agent).init(online),
        cycle_step=jnp.zeros((), jnp.int32),
    )
    return new_state, fresh_online, fresh_target


def reset_state(learner: Learner, state: TrainState, reset: ResetConfig) -> TrainState:
    """One reset as the agent performs it: ``rng, reset_key = split(rng)`` then reset."""
    rng, reset_key = jax.random.split(state.rng)
    new_state, _, _ = reset_with_key(learner, state.replace(rng=rng), reset_key, reset)
    return new_state
