"""Value networks of the multi-task agents: BroNet (BRC), Shared DQN's and Independent
DQN's MLPs.

Every network maps ``(states (B, 8) float32, task_ids (B,) int32)`` to float32
``(B, num_actions, num_outputs)``: ``num_outputs`` = atoms of the categorical head
(logits) or 1 (the scalar Q of DQN).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from bbf_jax.agents.brc.config import TASK_NAMES, BRCNetworkConfig

_ORTHOGONAL = nn.initializers.orthogonal(math.sqrt(2.0))


class TaskEmbedding(nn.Module):
    """``Embed(num_tasks, dim)`` initialised N(0, 1/dim) (variance), optionally scaled to
    unit L2 norm (official BRC, ``networks.py``)."""

    num_tasks: int
    dim: int
    unit_norm: bool

    @nn.compact
    def __call__(self, task_ids):
        init = nn.initializers.normal(stddev=1.0 / math.sqrt(self.dim))
        e = nn.Embed(self.num_tasks, self.dim, embedding_init=init)(task_ids)
        if self.unit_norm:
            e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
        return e


class BroNet(nn.Module):
    """BRC's network: task embedding, residual MLP trunk, linear head.

    'design' (:class:`BRCNetworkConfig`): ``h = ReLU(Dense(concat(s, e)))``, then
    ``num_blocks`` times ``h = h + Dense(ReLU(Dense(LN(h))))``, then ``LN(h)``;
    'paper' (Nauman et al. 2024, BRO §3; BRC's ``BroNet``): ``h = ReLU(LN(Dense(.)))``
    and ``h = h + LN(Dense(ReLU(LN(Dense(h)))))``, no final LN, orthogonal(sqrt 2)
    init. Head: ``Dense(num_actions * num_outputs)``.
    """

    cfg: BRCNetworkConfig
    num_actions: int
    num_outputs: int

    @nn.compact
    def __call__(self, states, task_ids):
        c = self.cfg
        paper = c.block == "paper"
        dense = (lambda n: nn.Dense(n, kernel_init=_ORTHOGONAL)) if paper else nn.Dense
        e = TaskEmbedding(len(TASK_NAMES), c.embed_dim, c.unit_norm_embedding)(task_ids)
        h = jnp.concatenate([states, e], axis=-1)
        h = dense(c.width)(h)
        h = nn.relu(nn.LayerNorm()(h) if paper else h)
        for _ in range(c.num_blocks):
            if paper:
                r = nn.LayerNorm()(dense(c.width)(h))
                r = nn.LayerNorm()(dense(c.width)(nn.relu(r)))
            else:
                r = dense(c.width)(nn.LayerNorm()(h))
                r = dense(c.width)(nn.relu(r))
            h = h + r
        if not paper:
            h = nn.LayerNorm()(h)
        out = dense(self.num_actions * self.num_outputs)(h)
        return out.reshape(*out.shape[:-1], self.num_actions, self.num_outputs)


class MLP(nn.Module):
    """``Dense -> ReLU`` per hidden size, then ``Dense(num_actions * num_outputs)``."""

    hidden: tuple
    num_actions: int
    num_outputs: int

    @nn.compact
    def __call__(self, x):
        for n in self.hidden:
            x = nn.relu(nn.Dense(n)(x))
        out = nn.Dense(self.num_actions * self.num_outputs)(x)
        return out.reshape(*out.shape[:-1], self.num_actions, self.num_outputs)


class SharedMLP(nn.Module):
    """Shared DQN: ``MLP(concat(s, Embed(task)))``, one network for every task."""

    cfg: BRCNetworkConfig
    num_actions: int
    num_outputs: int

    @nn.compact
    def __call__(self, states, task_ids):
        e = TaskEmbedding(len(TASK_NAMES), self.cfg.embed_dim,
                          self.cfg.unit_norm_embedding)(task_ids)
        x = jnp.concatenate([states, e], axis=-1)
        return MLP(self.cfg.mlp_hidden, self.num_actions, self.num_outputs)(x)


class IndependentMLPs(nn.Module):
    """Independent DQN: one MLP per task (parameters stacked on a leading task axis,
    ``params['members']``); each sample is valued by its task's MLP only, so no
    parameter receives gradient from another task's samples."""

    cfg: BRCNetworkConfig
    num_actions: int
    num_outputs: int

    @nn.compact
    def __call__(self, states, task_ids):
        members = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=None, axis_size=len(TASK_NAMES))
        out = members(self.cfg.mlp_hidden, self.num_actions, self.num_outputs,
                      name="members")(states)
        # out: (num_tasks, B, A, K); pick each sample's own task.
        return jnp.take_along_axis(out, task_ids[None, :, None, None], axis=0)[0]


def make_network(cfg: BRCNetworkConfig, num_actions: int, num_outputs: int) -> nn.Module:
    kind = {"bronet": BroNet, "shared_mlp": SharedMLP, "independent_mlp": IndependentMLPs}
    return kind[cfg.kind](cfg, num_actions, num_outputs)
