"""Convolutional encoders of the BBF network (spec §3.3, §3.4).

Both take batched NHWC inputs ``(B, 84, 84, C)`` scaled to [0, 1]. Module and
parameter names follow the official code exactly (``ResidualStage_i/Conv_j``,
``Conv_i``) because Flax derives each parameter's initial value from its scope path:
identical names give bit-identical initialisation.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

XAVIER_UNIFORM = nn.initializers.xavier_uniform()


def _sown_relu(module: nn.Module, name: str, x):
    """``relu(x)``, also sown into the ``intermediates`` collection as ``name``.

    Sowing is a no-op unless ``intermediates`` is mutable in ``apply`` (as in
    :mod:`bbf_jax.diagnostics`), so parameters and outputs are unchanged.
    """
    y = nn.relu(x)
    module.sow("intermediates", name, y)
    return y


class ResidualStage(nn.Module):
    """One IMPALA stage: conv 3x3 -> max-pool 3x3/2 (SAME) -> pre-activation blocks.

    The SAME max-pool pads with -inf; for inputs 84, 42, 21 the (low, high) pads are
    (0, 1), (0, 1), (1, 1) (outputs 42, 21, 11). Each block is
    ``h + conv(relu(conv(relu(h))))`` with no activation after the addition.
    """

    dims: int
    num_blocks: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = lambda: nn.Conv(  # noqa: E731
            self.dims, (3, 3), strides=1, padding="SAME", kernel_init=XAVIER_UNIFORM,
            dtype=self.dtype,
        )
        x = conv()(x)
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        for i in range(self.num_blocks):
            block_input = x
            x = conv()(_sown_relu(self, f"block{i}_relu0", x))
            x = conv()(_sown_relu(self, f"block{i}_relu1", x))
            x = x + block_input
        return x


class ImpalaEncoder(nn.Module):
    """IMPALA CNN with channels ``(16, 32, 32) * width_scale`` and a final ReLU.

    ``(B, 84, 84, C_in) -> (B, 11, 11, 32 * width_scale)``.
    """

    width_scale: float = 4.0
    num_blocks: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for width in (16, 32, 32):
            x = ResidualStage(int(width * self.width_scale), self.num_blocks, self.dtype)(x)
        return _sown_relu(self, "relu_out", x)

    @property
    def latent_channels(self) -> int:
        return int(32 * self.width_scale)


class DQNEncoder(nn.Module):
    """Three convs (8x8/4, 4x4/2, 3x3/1), each followed by ReLU, **SAME** padding.

    ``(B, 84, 84, C_in) -> (B, 11, 11, 64 * width_scale)`` (not Nature DQN's 7x7x64,
    which would need VALID padding; spec §3.4).
    """

    width_scale: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i, (dims, kernel, stride) in enumerate(((32, 8, 4), (64, 4, 2), (64, 3, 1))):
            x = nn.Conv(
                int(dims * self.width_scale), (kernel, kernel), strides=(stride, stride),
                padding="SAME", kernel_init=XAVIER_UNIFORM, dtype=self.dtype,
            )(x)
            x = _sown_relu(self, f"relu{i}", x)
        return x

    @property
    def latent_channels(self) -> int:
        return int(64 * self.width_scale)


def renormalize(x: jnp.ndarray) -> jnp.ndarray:
    """Per-example min-max scaling over all non-batch elements (spec §3.5).

    ``y = (x - min(x)) / (max(x) - min(x) + 1e-5)`` with min/max over H*W*C of each
    example. ``x``: ``(B, ...)``; returns the same shape and dtype.
    """
    flat = x.reshape(x.shape[0], -1)
    lo = jnp.min(flat, axis=-1, keepdims=True)
    hi = jnp.max(flat, axis=-1, keepdims=True)
    return ((flat - lo) / (hi - lo + 1e-5)).reshape(x.shape)
