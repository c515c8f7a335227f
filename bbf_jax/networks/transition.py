"""SPR transition model (spec §3.7): a conv cell scanned over K actions."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bbf_jax.networks.encoders import XAVIER_UNIFORM, renormalize


class ConvTMCell(nn.Module):
    """One latent step: concat one-hot action planes, two 3x3 conv + ReLU, renormalize.

    ``latent (B, 11, 11, C)``, ``action (B,)`` int -> ``(new_latent, new_latent)``.
    No residual connection and no normalisation layer (unlike the PyTorch SPR).
    """

    num_actions: int
    latent_dim: int
    renormalize: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, latent, action):
        b, h, w, _ = latent.shape
        onehot = jax.nn.one_hot(action, self.num_actions)  # (B, A) float32
        planes = jnp.broadcast_to(onehot[:, None, None, :], (b, h, w, self.num_actions))
        x = jnp.concatenate([latent, planes], axis=-1)
        for _ in range(2):
            x = nn.Conv(
                self.latent_dim, (3, 3), strides=(1, 1), kernel_init=XAVIER_UNIFORM,
                dtype=self.dtype,
            )(x)
            x = nn.relu(x)
        if self.renormalize:
            x = renormalize(x)
        return x, x


class TransitionModel(nn.Module):
    """Rolls a latent forward through ``actions (B, K)``; parameters shared over steps.

    Returns ``(final_latent (B, 11, 11, C), latents (B, K, 11, 11, C))``.
    """

    num_actions: int
    latent_dim: int
    renormalize: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, latent, actions):
        scan = nn.scan(
            ConvTMCell,
            in_axes=1,
            out_axes=1,
            variable_broadcast=["params"],
            split_rngs={"params": False},
        )(
            num_actions=self.num_actions,
            latent_dim=self.latent_dim,
            renormalize=self.renormalize,
            dtype=self.dtype,
        )
        return scan(latent, actions)
