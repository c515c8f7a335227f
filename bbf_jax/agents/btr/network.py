"""The BTR network: IMPALA trunk, adaptive max-pool, IQN, noisy dueling head.

Clark et al., "Beyond The Rainbow" (arXiv 2411.03820 v2), App. E.1, and the authors'
PyTorch code (github.com/VIPTankz/BTR, ``networks.py``: ``ImpalaCNNLargeIQN``,
``ImpalaCNNBlock``, ``ImpalaCNNResidual``, ``FactorizedNoisyLinear``, ``Dueling``) where
the paper is silent::

    x (B, 84, 84, 4) uint8 -> x / 255
    3 stages, channels (16, 32, 32) * width_scale:
        conv3x3 -> [LayerNorm] -> max-pool 3x3/2 pad 1 -> num_blocks residual units
        residual unit: h + conv3x3(relu(conv3x3(relu(h))))   (both convs spectral-normed)
    ReLU -> adaptive max-pool to 6x6 -> flatten             (B, 2304)
    * ReLU(Dense(cos(pi i tau)))                            (B, N, 2304)
    value:     Noisy(2304 -> 512) -> [LayerNorm] -> ReLU -> Noisy(512 -> 1)
    advantage: Noisy(2304 -> 512) -> [LayerNorm] -> ReLU -> Noisy(512 -> A)
    Q = V + A - mean_a A                                    (B, N, A) quantile values

Spectral normalisation (``flax.linen.SpectralNorm``). Only the convolutions inside the
residual units are normalised (3 stages x 2 units x 2 = 12 at paper sizes), as in the
code (``norm_func`` wraps ``ImpalaCNNResidual.conv_0/conv_1`` only) and paper App. E.1.
A conv kernel ``(3, 3, in, out)`` is normalised as the matrix ``(9 * in, out)``; PyTorch
uses ``(out, in * 9)``, a transpose up to a permutation of rows, so the singular values
are the same. The power-iteration vector ``u`` ``(1, out)`` and the last estimate
``sigma`` live in the :data:`SPECTRAL_STATS` collection. Callers:

- training forward (the code's ``net.train()``): ``apply(variables, x, taus,
  update_stats=True, mutable=[SPECTRAL_STATS])`` runs one power iteration per
  normalised conv and returns the new ``u`` (as ``torch.nn.utils.parametrizations.
  spectral_norm`` with ``n_power_iterations=1``);
- evaluation / target / acting without a state update: ``apply(variables, x, taus)``
  (``update_stats=False``, nothing mutable). Flax still takes one power-iteration step
  from the stored ``u`` but does not keep it, so the output is a deterministic function
  of the variables; PyTorch's ``eval()`` takes none. Both use a stop-gradient ``u``
  and ``v``, with gradients flowing through ``sigma = v^T W u``.

:func:`init_btr_params` runs 15 power iterations at initialisation, as PyTorch's
``parametrizations.spectral_norm`` does when it wraps a layer.

Noise. The four noisy layers each get one noise sample per ``noise_key`` (split
deterministically), shared across the batch and the quantile fractions, as the
PyTorch buffers are. The code redraws the online net's noise before every action
selection (``Agent.choose_action``), the target net's before every learning step
(``Agent.learn_call``), and does not redraw the online net's noise for its gradient
step; evaluation zeroes it (``disable_noise``): ``noise_key=None`` here.

LayerNorm (``layer_norm=True``, off in the published agent: paper footnote 2 and
Table H9 are a later finding). Placement as the authors' code: after each stage's
first conv (before the max-pool), over all of (H, W, C) with elementwise affine
parameters (PyTorch ``nn.LayerNorm([C, H, W])``), and after each stream's first noisy
layer, before its ReLU (``nn.LayerNorm(512)``). Epsilon 1e-5 as PyTorch's.

Layout. NHWC throughout; the pooled features are flattened in (h, w, c) order
(PyTorch: (c, h, w)), which matters only when porting weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bbf_jax.networks.iqn import TauEmbedding
from bbf_jax.networks.noisy import FactorizedNoisyDense, uniform_fan_in
from bbf_jax.networks.pooling import adaptive_max_pool, max_pool2d

SPECTRAL_STATS = "spectral_stats"
"""Variable collection holding the spectral-norm ``u`` vectors and ``sigma`` estimates."""

BASE_CHANNELS = (16, 32, 32)
"""IMPALA stage widths before ``width_scale`` (Espeholt et al. 2018; BTR uses x2)."""

NOISE_SCALE_NAMES = frozenset({"kernel_sigma", "bias_sigma"})
"""Parameter names of the noisy layers' sigmas (see :func:`param_count`)."""

_TORCH_LAYER_NORM_EPS = 1e-5


def _conv3x3(features: int, in_channels: int, name: str) -> nn.Conv:
    """PyTorch ``Conv2d(in, features, 3, stride=1, padding=1)`` with its default init."""
    init = uniform_fan_in(9 * in_channels)
    return nn.Conv(
        features, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
        kernel_init=init, bias_init=init, name=name,
    )


def _layer_norm(axes: Sequence[int], name: str) -> nn.LayerNorm:
    """PyTorch ``nn.LayerNorm`` over ``axes`` with elementwise affine over the same axes."""
    return nn.LayerNorm(
        epsilon=_TORCH_LAYER_NORM_EPS, reduction_axes=tuple(axes), feature_axes=tuple(axes),
        use_fast_variance=False, name=name,
    )


class ResidualUnit(nn.Module):
    """``h + conv1(relu(conv0(relu(h))))`` (code ``ImpalaCNNResidual``), shape-preserving.

    ``conv0``/``conv1`` are spectral-normalised when ``spectral_norm`` (wrappers
    ``conv0_sn``/``conv1_sn``); the parameter tree is the same either way.
    """

    channels: int
    spectral_norm: bool = True
    power_iterations: int = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, update_stats: bool = False) -> jnp.ndarray:
        """``x`` float32 ``(B, H, W, channels)`` -> same shape."""
        h = x
        for j in range(2):
            conv = _conv3x3(self.channels, h.shape[-1], name=f"conv{j}")
            h = nn.relu(h)
            if self.spectral_norm:
                sn = nn.SpectralNorm(
                    conv, n_steps=self.power_iterations, collection_name=SPECTRAL_STATS,
                    name=f"conv{j}_sn",
                )
                h = sn(h, update_stats=update_stats)
            else:
                h = conv(h)
        return x + h


class ImpalaStage(nn.Module):
    """conv3x3 -> [LayerNorm] -> max-pool 3x3/2 pad 1 -> residual units (code
    ``ImpalaCNNBlock``): ``(B, H, W, C_in) -> (B, floor((H - 1) / 2) + 1, ..., channels)``."""

    channels: int
    num_blocks: int = 2
    spectral_norm: bool = True
    layer_norm: bool = False
    power_iterations: int = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, update_stats: bool = False) -> jnp.ndarray:
        # The stage's first conv is never spectral-normalised (code: no norm_func).
        h = _conv3x3(self.channels, x.shape[-1], name="conv")(x)
        if self.layer_norm:
            h = _layer_norm((-3, -2, -1), name="norm")(h)
        h = max_pool2d(h, kernel_size=3, stride=2, padding=1)
        for i in range(self.num_blocks):
            unit = ResidualUnit(
                self.channels, self.spectral_norm, self.power_iterations, name=f"unit{i}"
            )
            h = unit(h, update_stats)
        return h


class NoisyStream(nn.Module):
    """``Noisy(in -> hidden) -> [LayerNorm] -> ReLU -> Noisy(hidden -> outputs)``."""

    hidden: int
    outputs: int
    sigma0: float = 0.5
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, noise_key: jax.Array | None = None) -> jnp.ndarray:
        """``x`` ``(..., in)`` -> float32 ``(..., outputs)``; two layers, two noise keys."""
        keys = (None, None) if noise_key is None else tuple(jax.random.split(noise_key))
        h = FactorizedNoisyDense(self.hidden, self.sigma0, name="hidden")(x, keys[0])
        if self.layer_norm:
            h = _layer_norm((-1,), name="norm")(h)
        h = nn.relu(h)
        return FactorizedNoisyDense(self.outputs, self.sigma0, name="out")(h, keys[1])


class DuelingHead(nn.Module):
    """``Q = V + A - mean_a A`` from two noisy streams (code ``Dueling``).

    ``x`` ``(..., F)`` -> float32 ``(..., num_actions)``; the mean is over actions, per
    row (per example and quantile fraction).
    """

    num_actions: int
    hidden: int = 512
    sigma0: float = 0.5
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, noise_key: jax.Array | None = None) -> jnp.ndarray:
        keys = (None, None) if noise_key is None else tuple(jax.random.split(noise_key))
        value = NoisyStream(self.hidden, 1, self.sigma0, self.layer_norm, name="value")
        advantage = NoisyStream(
            self.hidden, self.num_actions, self.sigma0, self.layer_norm, name="advantage"
        )
        v = value(x, keys[0])
        a = advantage(x, keys[1])
        return v + (a - jnp.mean(a, axis=-1, keepdims=True))


class BTRNetwork(nn.Module):
    """BTR's IQN network (paper App. E.1); see the module docstring.

    Attributes:
      num_actions: A, the size of the action set.
      width_scale: IMPALA widths ``(16, 32, 32) * width_scale``; 2 (paper).
      num_blocks: residual units per stage; 2 (paper).
      hidden: width of each stream's hidden noisy layer; 512 (paper, code).
      num_cosines: cosines of the tau embedding; 64 (code).
      adaptive_pool: side of the adaptive max-pool; 6 (paper: beats 4 and 8).
      spectral_norm: spectral-normalise the residual units' convs; True (paper).
      layer_norm: the authors' later LayerNorm variant; False (published agent).
      noisy_sigma0: NoisyNets' sigma_0; 0.5 (paper).
      power_iterations: power-iteration steps per forward pass; 1 (PyTorch default).
    """

    num_actions: int
    width_scale: float = 2
    num_blocks: int = 2
    hidden: int = 512
    num_cosines: int = 64
    adaptive_pool: int = 6
    spectral_norm: bool = True
    layer_norm: bool = False
    noisy_sigma0: float = 0.5
    power_iterations: int = 1

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(int(c * self.width_scale) for c in BASE_CHANNELS)

    @property
    def feature_dim(self) -> int:
        """Width of the pooled features: ``channels[-1] * adaptive_pool ** 2`` (2304)."""
        return self.channels[-1] * self.adaptive_pool**2

    def setup(self):
        self.stages = [
            ImpalaStage(
                c, self.num_blocks, self.spectral_norm, self.layer_norm, self.power_iterations,
                name=f"stage{i}",
            )
            for i, c in enumerate(self.channels)
        ]
        self.tau_embedding = TauEmbedding(self.feature_dim, self.num_cosines)
        self.head = DuelingHead(self.num_actions, self.hidden, self.noisy_sigma0, self.layer_norm)

    def features(self, x: jnp.ndarray, update_stats: bool = False) -> jnp.ndarray:
        """State features: ``x`` uint8 ``(B, H, W, C)`` (or float in [0, 255]) -> float32
        ``(B, feature_dim)``, flattened in (h, w, c) order.

        Scaled by 1/255 inside (the code's ``inputt.float() / 255``; also how the BBF
        network's callers scale). ReLU before the adaptive max-pool, as the code's
        ``nn.Sequential(..., nn.ReLU())`` then ``self.pool``; the two commute.
        """
        h = jnp.asarray(x).astype(jnp.float32) / 255.0
        for stage in self.stages:
            h = stage(h, update_stats)
        h = adaptive_max_pool(nn.relu(h), self.adaptive_pool)
        return h.reshape(h.shape[0], -1)

    def __call__(
        self,
        x: jnp.ndarray,
        taus: jnp.ndarray,
        noise_key: jax.Array | None = None,
        update_stats: bool = False,
    ) -> jnp.ndarray:
        """Quantile values ``Z_tau(x, a)``.

        Args:
          x: uint8 ``(B, 84, 84, 4)`` stacked frames (NHWC).
          taus: float32 ``(B, N)`` quantile fractions in [0, 1).
          noise_key: PRNG key for the noisy layers' sample, or None for no noise.
          update_stats: run and keep one power iteration (needs ``mutable=[SPECTRAL_STATS]``).
        Returns:
          float32 ``(B, N, num_actions)``.
        """
        state = self.features(x, update_stats)  # (B, F)
        embedded = state[:, None, :] * self.tau_embedding(taus)  # (B, N, F)
        return self.head(embedded, noise_key)


def init_btr_params(
    network: BTRNetwork,
    key: jax.Array,
    input_shape: tuple[int, int, int] = (84, 84, 4),
    init_power_iterations: int = 15,
) -> dict:
    """Initial variables of ``network``: ``{'params': ..., SPECTRAL_STATS: ...}``.

    The spectral collection (absent when ``spectral_norm`` is False) holds ``u`` after
    ``init_power_iterations`` power-iteration steps from a random start, as PyTorch's
    ``parametrizations.spectral_norm`` does (15) when it wraps a layer. Parameters do not
    depend on that number.

    Args:
      network: the module (unbound).
      key: PRNG key for parameters and the initial ``u``.
      input_shape: ``(H, W, C)`` of one observation.
      init_power_iterations: >= 1.
    """
    if init_power_iterations < 1:
        raise ValueError(f"init_power_iterations must be >= 1, got {init_power_iterations}")
    x = jnp.zeros((1, *input_shape), jnp.uint8)
    taus = jnp.zeros((1, 1), jnp.float32)
    warm = network.clone(power_iterations=init_power_iterations)
    return dict(warm.init({"params": key}, x, taus, update_stats=True))


def param_count(variables: dict, noise_scales: bool = True) -> int:
    """Number of trainable parameters (the ``'params'`` collection only).

    Args:
      variables: a variables dict with ``'params'``, or a params tree.
      noise_scales: count the noisy layers' ``kernel_sigma`` / ``bias_sigma``. With
        False each noisy layer counts as a plain dense layer, the convention under which
        the BTR paper reports 2.91M parameters (Fig. E7 caption).
    """
    params = variables.get("params", variables)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    total = 0
    for path, leaf in leaves:
        name = getattr(path[-1], "key", None)
        if noise_scales or name not in NOISE_SCALE_NAMES:
            total += int(leaf.size)
    return total
