"""Action distributions of continuous-control policies on a box ``[low, high]^d``.

* :class:`BoxBeta`: a Beta(alpha, beta) per action dimension on [0, 1], mapped affinely
  to ``[low, high]`` (Chou et al. 2017, "Improving Stochastic Policy Gradients in
  Continuous Control with Deep RL using the Beta Distribution"); with
  ``alpha, beta = softplus(.) + 1`` it is unimodal and its mode is the deterministic
  action.
* :class:`BoxGaussian`: a diagonal Gaussian with state-independent log-std, unbounded
  (the env clips its samples to the box; Stable-Baselines3's ``DiagGaussian``).

Both are pure ``jax.numpy``, batched over leading dimensions: parameters ``(..., d)``,
actions ``(..., d)``, log-probabilities and entropies ``(...)`` (summed over ``d``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import betaln, digamma

LOG_2PI_E = 1.0 + jnp.log(2.0 * jnp.pi)


class BoxBeta(NamedTuple):
    """``a = low + (high - low) * x``, ``x ~ Beta(alpha, beta)`` per dimension."""

    alpha: jax.Array
    beta: jax.Array
    low: jax.Array
    high: jax.Array

    @staticmethod
    def from_logits(alpha_logits, beta_logits, low, high) -> BoxBeta:
        """``alpha, beta = softplus(logits) + 1`` (both > 1: unimodal, finite density)."""
        return BoxBeta(jax.nn.softplus(alpha_logits) + 1.0, jax.nn.softplus(beta_logits) + 1.0,
                       jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32))

    @property
    def scale(self) -> jax.Array:
        return self.high - self.low

    def to_unit(self, actions) -> jax.Array:
        return (actions - self.low) / self.scale

    def log_prob(self, actions) -> jax.Array:
        """``sum_d [log Beta(x_d; alpha_d, beta_d) - log(high_d - low_d)]``: the Beta
        density of ``x = (a - low) / (high - low)`` times the Jacobian ``1 / (high - low)``
        of the affine map. ``x`` is clipped into the open interval so that a boundary
        action (float rounding of a sample) keeps a finite log-density."""
        tiny = jnp.finfo(jnp.float32).eps
        x = jnp.clip(self.to_unit(actions), tiny, 1.0 - tiny)
        log_pdf = ((self.alpha - 1.0) * jnp.log(x) + (self.beta - 1.0) * jnp.log1p(-x)
                   - betaln(self.alpha, self.beta))
        return jnp.sum(log_pdf - jnp.log(self.scale), axis=-1)

    def entropy(self) -> jax.Array:
        """Differential entropy of the mapped Beta: ``sum_d [H(Beta) + log(high - low)]``,
        ``H(Beta) = ln B(a, b) - (a-1) psi(a) - (b-1) psi(b) + (a+b-2) psi(a+b)``."""
        a, b = self.alpha, self.beta
        h = (betaln(a, b) - (a - 1.0) * digamma(a) - (b - 1.0) * digamma(b)
             + (a + b - 2.0) * digamma(a + b))
        return jnp.sum(h + jnp.log(self.scale), axis=-1)

    def mode(self) -> jax.Array:
        """``low + (high - low) (alpha - 1) / (alpha + beta - 2)`` (alpha, beta > 1)."""
        return self.low + self.scale * (self.alpha - 1.0) / (self.alpha + self.beta - 2.0)

    def sample(self, key) -> jax.Array:
        return self.low + self.scale * jax.random.beta(key, self.alpha, self.beta)


class BoxGaussian(NamedTuple):
    """``a ~ N(mean, exp(log_std)^2)`` per dimension, unbounded."""

    mean: jax.Array
    log_std: jax.Array

    def log_prob(self, actions) -> jax.Array:
        z = (actions - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)

    def entropy(self) -> jax.Array:
        """``sum_d [log_std_d + (1 + log 2 pi) / 2]``, broadcast to the batch."""
        h = jnp.broadcast_to(self.log_std + 0.5 * LOG_2PI_E, self.mean.shape)
        return jnp.sum(h, axis=-1)

    def mode(self) -> jax.Array:
        return self.mean

    def sample(self, key) -> jax.Array:
        noise = jax.random.normal(key, self.mean.shape)
        return self.mean + jnp.exp(self.log_std) * noise
