"""Factorised-Gaussian noisy dense layer with one noise sample per layer (NoisyNets).

Fortunato et al. (2018), "Noisy Networks for Exploration", §3 and eqs. (10)-(11), as in
BTR's ``FactorizedNoisyLinear`` (authors' code, ``networks.py``):

- ``w = w_mu + w_sigma * (f(p) f(q)^T)``, ``b = b_mu + b_sigma * f(q)`` with
  ``p ~ N(0, I_in)``, ``q ~ N(0, I_out)`` and ``f(x) = sign(x) sqrt(|x|)``;
- ``w_mu, b_mu ~ U(-1/sqrt(in), 1/sqrt(in))``; ``w_sigma = b_sigma = sigma0 / sqrt(in)``;
- **one** noise sample per layer, shared by every example of the batch (the PyTorch
  layer keeps its epsilon in a buffer redrawn by ``reset_noise``). Here the sample is
  a pure function of an explicit PRNG key: the caller decides when noise is redrawn by
  passing a new key, and ``noise_key=None`` means no noise (the code's
  ``disable_noise``, which zeroes epsilon: the output is exactly the mean layer's).

This differs from :class:`bbf_jax.networks.heads.NoisyDense`, BBF's official layer,
which draws noise per example and initialises ``w_mu`` with Xavier-uniform.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from bbf_jax.networks.heads import _signed_sqrt


def uniform_fan_in(fan_in: int):
    """Initialiser ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    NoisyNets' ``mu`` initialisation (Fortunato et al. §3.2, factorised case), and also
    PyTorch's default ``nn.Linear`` / ``nn.Conv2d`` weight and bias initialisation
    (``kaiming_uniform_(a=sqrt(5))`` has bound ``1/sqrt(fan_in)``), which the BTR code
    leaves in place for its convolutions and its IQN embedding.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def factorised_noise(key: jax.Array, n_in: int, n_out: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(f(p), f(q))``: float32 ``(n_in,)`` and ``(n_out,)`` factor vectors from ``key``.

    ``p`` and ``q`` come from independent halves of ``key``; ``E f(x) = 0`` and
    ``E f(x)^2 = E|x| = sqrt(2/pi)`` for ``x ~ N(0, 1)``.
    """
    key_in, key_out = jax.random.split(key)
    f_in = _signed_sqrt(jax.random.normal(key_in, (n_in,), jnp.float32))
    f_out = _signed_sqrt(jax.random.normal(key_out, (n_out,), jnp.float32))
    return f_in, f_out


class FactorizedNoisyDense(nn.Module):
    """Dense layer ``(..., in) -> (..., features)`` with factorised Gaussian noise.

    Parameters: ``kernel_mu`` and ``kernel_sigma`` ``(in, features)`` (Flax's
    input-major layout, the transpose of PyTorch's ``weight_mu``), ``bias_mu`` and
    ``bias_sigma`` ``(features,)``, all float32.

    Attributes:
      features: output width.
      sigma0: NoisyNets' sigma_0; 0.5 (BTR paper App. E.1, code default).
    """

    features: int
    sigma0: float = 0.5

    @nn.compact
    def __call__(self, x: jnp.ndarray, noise_key: jax.Array | None = None) -> jnp.ndarray:
        """``x`` ``(..., in)`` -> float32 ``(..., features)``; noise shared by all rows.

        Args:
          x: inputs, cast to float32.
          noise_key: PRNG key of this layer's noise sample, or None for no noise.
        """
        x = jnp.asarray(x, jnp.float32)
        n_in = x.shape[-1]
        sigma_init = nn.initializers.constant(self.sigma0 / math.sqrt(n_in))
        kernel_mu = self.param("kernel_mu", uniform_fan_in(n_in), (n_in, self.features))
        kernel_sigma = self.param("kernel_sigma", sigma_init, (n_in, self.features))
        bias_mu = self.param("bias_mu", uniform_fan_in(n_in), (self.features,))
        bias_sigma = self.param("bias_sigma", sigma_init, (self.features,))
        if noise_key is None:
            return jnp.matmul(x, kernel_mu) + bias_mu
        f_in, f_out = factorised_noise(noise_key, n_in, self.features)
        # One weight sample for the whole batch, so materialising it (in x out) is
        # cheaper than the per-example factorised product (one matmul instead of two).
        kernel = kernel_mu + kernel_sigma * jnp.outer(f_in, f_out)
        bias = bias_mu + bias_sigma * f_out
        return jnp.matmul(x, kernel) + bias
