"""Shrink-and-perturb resets (spec §7.2-§7.3), pure and jittable."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from bbf_jax.agents.bbf.config import ResetConfig
from bbf_jax.agents.bbf.learner import Learner, TrainState
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


NOISE_LEAVES = ("kernell", "biass")  # noisy-net sigma parameters (spec §3.9)


def kept_keys(reset: ResetConfig) -> tuple[str, ...]:
    """Names of the parameter subtrees a reset keeps (spec §7.2 step 3).

    The official ``keys_to_copy``: not ``reset_projection`` -> projection, predictor;
    not ``reset_encoder`` -> encoder, transition_model; not ``reset_noise`` -> every
    ``kernell``/``biass`` leaf; not ``reset_head`` -> head. (The official code adds
    predictor and transition_model only with SPR; without SPR they do not exist.)
    BBF defaults: ``('encoder', 'transition_model')``.
    """
    keys = ()
    if not reset.reset_projection:
        keys += ("projection", "predictor")
    if not reset.reset_encoder:
        keys += ("encoder", "transition_model")
    if not reset.reset_noise:
        keys += NOISE_LEAVES
    if not reset.reset_head:
        keys += ("head",)
    return keys


def copy_kept(source, fresh, keys):
    """The official ``copy_params``: a subtree whose name is in ``keys``, at any depth,
    comes from ``source``; every other leaf comes from ``fresh`` (same structure)."""
    if not isinstance(source, Mapping):
        return fresh
    return {k: (v if k in keys else copy_kept(v, fresh[k], keys)) for k, v in source.items()}


def shrink_perturb(old, fresh, reset: ResetConfig) -> dict:
    """Reset one parameter tree towards a fresh initialisation (spec §7.2 steps 3-4).

    First the top-level modules in ``reset.shrink_perturb_keys`` become
    ``shrink * old + perturb * fresh`` (the official ``interpolate_weights``), then
    every subtree named in :func:`kept_keys` is taken from that result and everything
    else from ``fresh`` (``copy_params``). So a kept module is interpolated if listed
    and unchanged if not; a module that is not kept is fresh even when listed. BBF:
    encoder and transition model half old, half fresh; projection, predictor and head
    fresh.
    """
    keys = tuple(k for k in reset.shrink_perturb_keys if k in old)
    mixed = interpolate(old, fresh, keys, reset.shrink_factor, reset.perturb_factor)
    return copy_kept(mixed, fresh, kept_keys(reset))


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
