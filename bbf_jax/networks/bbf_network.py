"""The BBF / SPR network (official ``RainbowDQNNetwork``), batched (spec §3).

The official module sees one unbatched example and is vmapped by its callers; this
module takes a leading batch axis and keeps the per-example semantics (renormalize,
dueling mean, softmax and noise are all per example). Module names equal the
official ones, so parameter trees load without conversion and initialising with the
same key gives bit-identical parameters (see :func:`init_params`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bbf_jax.agents.bbf.config import NetworkConfig
from bbf_jax.networks.encoders import DQNEncoder, ImpalaEncoder, renormalize
from bbf_jax.networks.heads import FeatureLayer, LinearHead
from bbf_jax.networks.transition import TransitionModel

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class NetworkOutput(NamedTuple):
    """Outputs of :meth:`BBFNetwork.__call__` (the official ``SPROutputType``).

    Attributes:
      q_values: ``(B, A)`` float32.
      logits: ``(B, A, num_atoms)`` float32.
      probabilities: ``(B, A, num_atoms)`` softmax over atoms; None when num_atoms == 1.
      latent: spatial latent ``(B, 11, 11, C)``, or the SPR predictions
        ``(B, K, hidden_dim)`` when ``do_rollout`` is True.
      representation: flattened renormalized latent ``(B, 11 * 11 * C)`` (row-major
        over (h, w, c)).
    """

    q_values: jnp.ndarray
    logits: jnp.ndarray
    probabilities: jnp.ndarray | None
    latent: jnp.ndarray
    representation: jnp.ndarray


class BBFNetwork(nn.Module):
    """Encoder + transition model + shared projection + SPR predictor + Q head.

    Attributes:
      num_actions: size of the (minimal) action set.
      config: the :class:`~bbf_jax.agents.bbf.config.NetworkConfig`.
    """

    num_actions: int
    config: NetworkConfig

    @property
    def compute_dtype(self) -> Any:
        return _DTYPES[self.config.compute_dtype]

    def setup(self):
        cfg = self.config
        if cfg.encoder_type == "impala":
            self.encoder = ImpalaEncoder(cfg.width_scale, cfg.num_blocks, self.compute_dtype)
            latent_dim = int(32 * cfg.width_scale)
        else:
            self.encoder = DQNEncoder(cfg.width_scale, self.compute_dtype)
            latent_dim = int(64 * cfg.width_scale)
        self.transition_model = TransitionModel(
            self.num_actions, latent_dim, cfg.renormalize, self.compute_dtype
        )
        self.projection = FeatureLayer(cfg.hidden_dim, cfg.noisy)
        self.predictor = nn.Dense(
            cfg.hidden_dim, dtype=jnp.float32, kernel_init=nn.initializers.xavier_uniform()
        )
        self.head = LinearHead(self.num_actions, cfg.num_atoms, cfg.dueling, cfg.noisy)

    def support(self) -> jnp.ndarray:
        """C51 support ``linspace(-vmax, vmax, num_atoms)`` (float32)."""
        return jnp.linspace(-self.config.vmax, self.config.vmax, self.config.num_atoms)

    def encode(self, x):
        """``x (B, 84, 84, C)`` in [0, 1] -> renormalized latent ``(B, 11, 11, C_lat)``."""
        latent = self.encoder(x)
        if self.config.renormalize:
            latent = renormalize(latent)
        return latent

    def encode_project(self, x):
        """SPR target path: encode -> flatten -> projection without noise or ReLU.

        ``x (B, ..., 84, 84, C)`` (extra leading axes allowed) -> ``(B, ..., hidden_dim)``.
        """
        lead = x.shape[:-3]
        latent = self.encode(x.reshape((-1,) + x.shape[-3:]))
        projected = self.projection(latent.reshape(latent.shape[0], -1))
        return projected.reshape(lead + projected.shape[-1:])

    def rollout(self, latent, actions):
        """SPR predictions for K future steps (spec §3.8).

        ``latent (B, 11, 11, C)``, ``actions (B, K)`` -> ``(B, K, hidden_dim)``:
        transition model, flatten, projection **without noise**, predictor (no ReLU in
        between).
        """
        _, latents = self.transition_model(latent, actions)
        flat = latents.reshape(latents.shape[:2] + (-1,))
        return self.predictor(self.projection(flat))

    def __call__(self, x, actions=None, do_rollout: bool = False, noise_keys=None):
        """Q-values, distribution and (optionally) SPR predictions.

        Args:
          x: ``(B, 84, 84, C)`` float in [0, 1].
          actions: ``(B, K)`` int actions for the rollout (needed if do_rollout).
          do_rollout: compute SPR predictions into ``latent``.
          noise_keys: ``(B, 2)`` per-example PRNG keys for noisy layers; None means no
            noise (the official ``eval_mode=True``). Ignored without noisy layers.
        """
        spatial = self.encode(x)
        representation = spatial.reshape(spatial.shape[0], -1)
        hidden = nn.relu(self.projection(representation, noise_keys))
        # The Q head's input, for bbf_jax.diagnostics (a no-op unless sown into).
        self.sow("intermediates", "projection_relu", hidden)
        logits = self.head(hidden, noise_keys)
        latent = self.rollout(spatial, actions) if do_rollout else spatial
        if self.config.num_atoms > 1:
            probabilities = jax.nn.softmax(logits, axis=-1)
            q_values = jnp.sum(self.support() * probabilities, axis=-1)
        else:
            probabilities = None
            q_values = logits[..., 0]
        return NetworkOutput(q_values, logits, probabilities, latent, representation)


def make_network(config: NetworkConfig, num_actions: int) -> BBFNetwork:
    if num_actions < 1:
        raise ValueError(f"num_actions must be >= 1, got {num_actions}")
    return BBFNetwork(num_actions=num_actions, config=config)


def init_params(network: BBFNetwork, key, use_spr: bool, jumps: int = 5) -> dict:
    """Initial parameters exactly as the official agent makes them (spec §3.10).

    Same key for the 'params' and 'dropout' streams, a zero state, zero actions of
    length ``jumps`` and ``do_rollout = use_spr`` (without SPR the transition model
    and predictor are not created). Returns the ``params`` collection (nested dict).
    """
    x = jnp.zeros((1, 84, 84, 4), network.compute_dtype)
    actions = jnp.zeros((1, max(jumps, 1)), jnp.int32)
    variables = network.init({"params": key, "dropout": key}, x, actions, do_rollout=use_spr)
    return variables["params"]


def param_count(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
