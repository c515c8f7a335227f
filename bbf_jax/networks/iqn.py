"""IQN's quantile-fraction embedding (Dabney et al. 2018, "Implicit Quantile Networks
for Distributional RL", eq. (4)).

``phi(tau) = ReLU(sum_i cos(pi * i * tau) w_i + b)``, ``i = 0 .. n - 1`` with ``n = 64``
cosines; the network multiplies ``phi(tau)`` elementwise into its state features.
BTR uses it unchanged (authors' code ``networks.py``, ``ImpalaCNNLargeIQN.calc_cos`` and
``cos_embedding``), with the cosine index starting at 0 as in IQN.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from bbf_jax.networks.noisy import uniform_fan_in


def cosine_embedding(taus: jnp.ndarray, num_cosines: int = 64) -> jnp.ndarray:
    """``cos(pi * i * tau)`` for ``i = 0 .. num_cosines - 1``.

    Args:
      taus: ``(...)`` quantile fractions in [0, 1), cast to float32.
    Returns:
      float32 ``(..., num_cosines)``; entry ``i = 0`` is 1 for every tau.
    """
    # pi * i rounded once to float32, as the PyTorch code's float32 ``pis`` buffer.
    pis = jnp.asarray(np.pi * np.arange(num_cosines), jnp.float32)
    return jnp.cos(jnp.asarray(taus, jnp.float32)[..., None] * pis)


class TauEmbedding(nn.Module):
    """``taus (B, N) -> ReLU(Dense(cos(pi * i * tau)))``, float32 ``(B, N, features)``.

    The dense layer (``dense``: kernel ``(num_cosines, features)``, bias) uses PyTorch's
    default ``nn.Linear`` initialisation, as the authors' code.

    Attributes:
      features: width of the state features it multiplies (BTR: 2304).
      num_cosines: ``n``; 64 (IQN; BTR code ``--ncos`` default).
    """

    features: int
    num_cosines: int = 64

    @nn.compact
    def __call__(self, taus: jnp.ndarray) -> jnp.ndarray:
        init = uniform_fan_in(self.num_cosines)
        dense = nn.Dense(self.features, kernel_init=init, bias_init=init, name="dense")
        return nn.relu(dense(cosine_embedding(taus, self.num_cosines)))
