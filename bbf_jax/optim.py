"""The BBF optimizer (spec §5.7): two masked AdamW groups built with optax."""

from __future__ import annotations

import jax
import optax

from bbf_jax.agents.bbf.config import AgentConfig

ENCODER_KEYS = frozenset({"encoder", "transition_model"})


def _decay_mask(params):
    # Decoupled weight decay on every kernel, never on rank-1 leaves (biases).
    return jax.tree.map(lambda x: x.ndim != 1, params)


def _adamw(learning_rate, agent: AgentConfig) -> optax.GradientTransformation:
    return optax.adamw(
        learning_rate,
        b1=0.9,
        b2=0.999,
        eps=agent.adam_eps,
        weight_decay=agent.weight_decay,
        mask=_decay_mask,
    )


def make_optimizer(
    agent: AgentConfig, learning_rate=None, encoder_learning_rate=None
) -> optax.GradientTransformation:
    """``chain(masked(adamw_enc, {encoder, transition_model}), masked(adamw_head, rest))``.

    Each group is ``optax.adamw(lr, b1=0.9, b2=0.999, eps=adam_eps, weight_decay,
    mask=ndim != 1)`` with its own Adam step count. The learning rates may be traced
    scalars (the optimizer state does not depend on them), so annealing them never
    recompiles; they default to the config values.
    """
    lr = agent.learning_rate if learning_rate is None else learning_rate
    enc_lr = agent.encoder_learning_rate if encoder_learning_rate is None else encoder_learning_rate
    encoder_mask = lambda p: {k: k in ENCODER_KEYS for k in p}  # noqa: E731
    head_mask = lambda p: {k: k not in ENCODER_KEYS for k in p}  # noqa: E731
    return optax.chain(
        optax.masked(_adamw(enc_lr, agent), encoder_mask),
        optax.masked(_adamw(lr, agent), head_mask),
    )
