"""Dense feature layers (plain or noisy) and the dueling/C51 head (spec §3.6, §3.9)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bbf_jax.networks.encoders import XAVIER_UNIFORM


def _signed_sqrt(x):
    """f(x) = sign(x) * sqrt(|x|), eqs. (10)-(11) of Fortunato et al. (2018)."""
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x))


class NoisyDense(nn.Module):
    """Factorised-Gaussian noisy dense layer with the official parameterisation.

    Parameters (official names): ``kernel`` (w_mu, xavier-uniform, not the paper's
    U(+-1/sqrt(n))), ``kernell`` (w_sigma = 0.5/sqrt(n_in)), ``bias`` (b_mu ~
    U(+-1/sqrt(n_in))), ``biass`` (b_sigma = 0.5/sqrt(n_in)).

    Noise is drawn **per example** from ``noise_keys`` ``(B, 2)``; as in the official
    code both factor vectors p ``(n_in, 1)`` and q ``(1, out)`` are drawn from the same
    key. ``y = x (w_mu + w_sigma * f(p) f(q)^T) + b_mu + b_sigma * f(q)``, evaluated as
    ``x w_mu + ((x * f(p)) w_sigma) * f(q)`` so that no per-example weight matrix is
    materialised (equal up to float32 rounding). ``noise_keys=None`` means no noise.
    """

    features: int

    @nn.compact
    def __call__(self, x, noise_keys=None):
        x = x.astype(jnp.float32)
        n_in = x.shape[-1]
        # The official bounds: -1 / jnp.power(n_in, 0.5) as a float32 scalar.
        bound = 1 / jnp.power(n_in, 0.5)

        def mu_init(key, shape):
            return jax.random.uniform(key, minval=-bound, maxval=bound, shape=shape)

        def sigma_init(key, shape, dtype=jnp.float32):
            del key
            return jnp.ones(shape, dtype) * (0.5 / np.sqrt(n_in))

        w_mu = self.param("kernel", XAVIER_UNIFORM, (n_in, self.features))
        w_sigma = self.param("kernell", sigma_init, (n_in, self.features))
        b_mu = self.param("bias", mu_init, (self.features,))
        b_sigma = self.param("biass", sigma_init, (self.features,))
        y = jnp.matmul(x, w_mu) + b_mu
        if noise_keys is None:
            return y
        p = jax.vmap(lambda k: jax.random.normal(k, (n_in, 1)))(noise_keys)[..., 0]
        q = jax.vmap(lambda k: jax.random.normal(k, (1, self.features)))(noise_keys)[:, 0]
        f_p, f_q = _signed_sqrt(p), _signed_sqrt(q)  # (B, n_in), (B, out)
        if x.ndim == 3:  # (B, K, n_in): the same per-example noise for every step
            f_p, f_q = f_p[:, None], f_q[:, None]
        return y + jnp.matmul(x * f_p, w_sigma) * f_q + b_sigma * f_q


class FeatureLayer(nn.Module):
    """Dense (or noisy dense) layer kept under a child named ``net`` (official tree)."""

    features: int
    noisy: bool = False

    def setup(self):
        if self.noisy:
            self.net = NoisyDense(self.features)
        else:
            self.net = nn.Dense(self.features, kernel_init=XAVIER_UNIFORM, dtype=jnp.float32)

    def __call__(self, x, noise_keys=None):
        if self.noisy:
            return self.net(x, noise_keys)
        return self.net(x)


class LinearHead(nn.Module):
    """Dueling or plain head producing logits ``(B, num_actions, num_atoms)``.

    Dueling (spec §3.6): ``logits[a, i] = value[i] + adv[a, i] - mean_a' adv[a', i]``,
    combined in logit space, per atom.
    """

    num_actions: int
    num_atoms: int
    dueling: bool = True
    noisy: bool = False

    def setup(self):
        self.advantage = FeatureLayer(self.num_actions * self.num_atoms, self.noisy)
        if self.dueling:
            self.value = FeatureLayer(self.num_atoms, self.noisy)

    def __call__(self, x, noise_keys=None):
        batch = x.shape[0]
        adv = self.advantage(x, noise_keys).reshape(batch, self.num_actions, self.num_atoms)
        if not self.dueling:
            return adv
        value = self.value(x, noise_keys).reshape(batch, 1, self.num_atoms)
        return value + (adv - jnp.mean(adv, axis=-2, keepdims=True))
