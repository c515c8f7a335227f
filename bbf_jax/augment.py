"""Input scaling and DrQ augmentation of frame stacks (spec §3.2, §5.4).

Random shift by edge-padding 4 pixels and cropping back at a per-image offset, then a
per-image intensity scale ``1 + 0.05 * clip(N(0, 1), -2, 2)``. The random draws are
made with the same keys, shapes and calls as the official ``drq_image_aug``, so the
output equals the official one bitwise for a given key (under either setting of
``jax_threefry_partitionable``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

INTENSITY_SCALE = 0.05


class DrqDraws(NamedTuple):
    """The random quantities of one augmentation call, one entry per image.

    Attributes:
      offsets_h: int32 ``(N,)`` crop start along H, in ``[0, 2 * pad)``.
      offsets_w: int32 ``(N,)`` crop start along W, in ``[0, 2 * pad)``.
      normal_r: float32 ``(N,)`` the standard normal draw r.
      intensity: float32 ``(N,)`` the factor ``1 + 0.05 * clip(r, -2, 2)``.
    """

    offsets_h: jnp.ndarray
    offsets_w: jnp.ndarray
    normal_r: jnp.ndarray
    intensity: jnp.ndarray


def drq_draws(key: jax.Array, n: int, pad: int = 4) -> DrqDraws:
    """Draws the crop offsets and intensity factors for ``n`` images (spec §5.4).

    ``key1, key2 = split(key)``; ``kx, ky = split(key2)``; offsets are
    ``randint(k, (n,), 0, 2 * pad)`` -- 0..7 for pad 4, i.e. shifts -4..+3 [official
    quirk: the PyTorch original allows 0..8] -- and ``r = normal(key1, (n, 1, 1, 1))``.
    """
    key1, key2 = jax.random.split(key)
    key_x, key_y = jax.random.split(key2)
    offsets_h = jax.random.randint(key_x, (n,), 0, 2 * pad)
    offsets_w = jax.random.randint(key_y, (n,), 0, 2 * pad)
    # Drawn with the official (n, 1, 1, 1) shape so the bits are the official ones.
    r = jax.random.normal(key1, (n, 1, 1, 1))
    intensity = 1.0 + INTENSITY_SCALE * jnp.clip(r, -2.0, 2.0)
    return DrqDraws(offsets_h, offsets_w, r.reshape(n), intensity.reshape(n))


def _crop(image, offset_h, offset_w, height, width):
    return jax.lax.dynamic_slice(image, (offset_h, offset_w, 0), (height, width, image.shape[-1]))


@functools.partial(jax.jit, static_argnames="pad")
def drq_augment(key: jax.Array, x: jnp.ndarray, pad: int = 4) -> jnp.ndarray:
    """DrQ random shift + intensity augmentation (spec §5.4).

    Args:
      key: PRNG key.
      x: float ``(..., H, W, C)`` frame stacks scaled to [0, 1]; every leading index
        (batch element, time step) is one image with its own shift and intensity; the
        C stacked frames of an image share them.
      pad: edge-replication padding on each side of H and W.

    Returns:
      Same shape and dtype as ``x``; not re-clipped to [0, 1].
    """
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"drq_augment: expected (..., H, W, C) images, got shape {x.shape}")
    if pad < 1:
        raise ValueError(f"drq_augment: pad must be >= 1, got {pad}")
    height, width, channels = x.shape[-3:]
    flat = x.reshape(-1, height, width, channels)
    padded = jnp.pad(flat, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    draws = drq_draws(key, flat.shape[0], pad)
    cropped = jax.vmap(_crop, in_axes=(0, 0, 0, None, None))(
        padded, draws.offsets_h, draws.offsets_w, height, width
    )
    out = cropped * draws.intensity[:, None, None, None]
    return out.reshape(x.shape)


def random_shift(key: jax.Array, images, pad: int = 4):
    """SAC+DrQ's augmentation (Kostrikov, Yarats, Fergus 2020, §3.1; their code's
    ``ReplicationPad2d(4)`` + ``RandomCrop``): replicate-pad by ``pad`` pixels and crop
    back at a per-image offset uniform in ``0 .. 2 pad`` (inclusive, unlike BBF's
    ``drq_draws``), without the intensity factor.

    Args:
      key: PRNG key.
      images: ``(B, H, W, C)``, any dtype (uint8 frames stay uint8).

    Returns:
      ``(B, H, W, C)``: image b is ``padded_b[dy:dy + H, dx:dx + W]``.
    """
    b, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
    return jax.vmap(_crop, in_axes=(0, 0, 0, None, None))(
        padded, offsets[:, 0], offsets[:, 1], height, width)


def process_inputs(x, dtype=jnp.float32, augment: bool = False, key: jax.Array | None = None):
    """Network input from raw frames: ``x.astype(dtype) / 255``, then DrQ if ``augment`` (§3.2).

    Args:
      x: uint8 (or float) ``(..., 84, 84, 4)`` frame stacks.
      dtype: compute dtype of the result.
      augment: apply :func:`drq_augment` (training only).
      key: PRNG key, required when ``augment``.
    """
    out = jnp.asarray(x).astype(dtype) / 255.0
    if augment:
        if key is None:
            raise ValueError("process_inputs: augment=True needs a PRNG key")
        out = drq_augment(key, out)
    return out
