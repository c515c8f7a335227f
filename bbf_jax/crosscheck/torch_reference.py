"""PyTorch reference of the BBF network (spec §3), for cross-checking ports.

Importing this module needs the ``torch`` extra; nothing else in bbf_jax imports torch.

The modules are written the way a PyTorch port would write them: NCHW activations,
OIHW conv weights, ``(out, in)`` linear weights, and a projection that consumes the
latent flattened in torch's native ``(c, h, w)`` order. Every place where this differs
from the Flax/official layout is handled (and commented) in exactly one spot:

* XLA ``SAME`` padding (conv and max-pool): :func:`same_pads` / :class:`SameConv2d` /
  :func:`max_pool_same`;
* HWIO <-> OIHW conv kernels and ``(in, out)`` <-> ``(out, in)`` dense kernels:
  :func:`params_to_state_dict` / :func:`state_dict_to_params`;
* the flatten order of the spatial latent (Flax ``(h, w, c)``, torch ``(c, h, w)``): the
  projection kernel's input rows are permuted in the conversion,
  :meth:`BBFTorchNetwork.forward` reports ``representation`` in the Flax order, and a
  noisy projection reorders its input noise (:func:`flax_flatten_index`).

Randomness cannot be matched across frameworks, so noisy layers take explicit noise
(see :class:`NoisyLinear` and :meth:`BBFTorchNetwork.forward`) and augmentation is left
to the caller (feed pre-augmented inputs). Call :func:`set_parity_numerics` before
comparing numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bbf_jax.agents.bbf.config import NetworkConfig

_IMPALA_DIMS = (16, 32, 32)
_DQN_DIMS = (32, 64, 64)
_DQN_KERNELS = (8, 4, 3)
_DQN_STRIDES = (4, 2, 1)
_RENORM_EPS = 1e-5  # spec §3.5


def set_parity_numerics() -> None:
    """Full float32 everywhere: no TF32 matmuls/convs, deterministic kernels.

    The JAX side of a comparison must use ``jax_default_matmul_precision='highest'``.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True)


# ----------------------------------------------------------------------------------
# Shapes and XLA 'SAME' padding
# ----------------------------------------------------------------------------------


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of XLA's 'SAME' along one axis.

    out = ceil(size / stride); total = max((out - 1) * stride + kernel - size, 0);
    low = total // 2, high = total - low, i.e. an odd total puts the extra pad at the
    end (bottom/right). torch's symmetric ``padding=`` cannot express that, e.g. the
    IMPALA max-pool needs (0, 1) for 84 -> 42 and the dqn encoder's 4x4/2 conv needs
    (1, 2) for 21 -> 11.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float) -> torch.Tensor:
    h_lo, h_hi = same_pads(x.shape[-2], kernel, stride)
    w_lo, w_hi = same_pads(x.shape[-1], kernel, stride)
    # F.pad lists the last axis first: (w_lo, w_hi, h_lo, h_hi).
    return F.pad(x, (w_lo, w_hi, h_lo, h_hi), value=value)


class SameConv2d(nn.Conv2d):
    """Conv2d with bias and XLA 'SAME' zero padding computed from the input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_same(x, self.kernel_size[0], self.stride[0], 0.0)
        return self._conv_forward(x, self.weight, self.bias)


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """``flax.linen.max_pool(padding='SAME')``: pads with -inf, then a VALID max-pool.

    ``nn.MaxPool2d(3, 2, padding=1)`` has the same output size for 84/42 inputs but
    pads (1, 1) instead of (0, 1), which shifts every window by one pixel.
    """
    return F.max_pool2d(_pad_same(x, kernel, stride, -math.inf), kernel, stride)


def same_out(size: int, stride: int) -> int:
    return -(-size // stride)


def latent_channels(config: NetworkConfig) -> int:
    """C of the spatial latent: final encoder width times width_scale (spec §3.7)."""
    dims = _IMPALA_DIMS if config.encoder_type == "impala" else _DQN_DIMS
    return int(dims[-1] * config.width_scale)


def latent_hw(config: NetworkConfig, obs_hw: tuple[int, int]) -> tuple[int, int]:
    """Spatial size of the latent: 84x84 -> 11x11 for both encoders."""
    strides = (2, 2, 2) if config.encoder_type == "impala" else _DQN_STRIDES
    h, w = obs_hw
    for s in strides:
        h, w = same_out(h, s), same_out(w, s)
    return h, w


def renormalize(x: torch.Tensor) -> torch.Tensor:
    """Per-example min-max scaling over all non-batch values (spec §3.5).

    ``(x - min) / (max - min + 1e-5)``; the reduction is over C*H*W, so the memory
    order of the example (NCHW here, HWC in Flax) does not matter.
    """
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + _RENORM_EPS)).reshape(x.shape)


def make_support(num_atoms: int, vmax: float) -> torch.Tensor:
    """C51 support ``linspace(-vmax, vmax, num_atoms)``: float64 values rounded to float32.

    ``jnp.linspace`` on XLA:CPU differs from this in the last bits of some atoms (its
    vectorised division is not correctly rounded; e.g. the middle atom is -2.98e-7, not
    0), so cross-checks pass the JAX support explicitly (``forward(..., support=)``).
    """
    return torch.from_numpy(np.linspace(-vmax, vmax, num_atoms).astype(np.float32))


# ----------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------


class ResidualStage(nn.Module):
    """conv 3x3 -> SAME max-pool 3x3/2 -> num_blocks pre-activation blocks (spec §3.3)."""

    def __init__(self, in_channels: int, channels: int, num_blocks: int):
        super().__init__()
        self.num_blocks = num_blocks
        # convs[0] is the stage's input conv; block b uses convs[2b+1], convs[2b+2]
        # (the Flax names Conv_0 ... Conv_{2*num_blocks}).
        self.convs = nn.ModuleList(
            [SameConv2d(in_channels, channels, 3)]
            + [SameConv2d(channels, channels, 3) for _ in range(2 * num_blocks)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = max_pool_same(self.convs[0](x))
        for b in range(self.num_blocks):
            h = x
            x = self.convs[2 * b + 1](F.relu(x))
            x = self.convs[2 * b + 2](F.relu(x))
            x = x + h  # no activation after the addition
        return x


class ImpalaEncoder(nn.Module):
    """Three residual stages of width ``int(d * width_scale)``, d in (16, 32, 32), final ReLU."""

    def __init__(self, in_channels: int, width_scale: float, num_blocks: int):
        super().__init__()
        stages = []
        for d in _IMPALA_DIMS:
            width = int(d * width_scale)
            stages.append(ResidualStage(in_channels, width, num_blocks))
            in_channels = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return F.relu(x)


class DQNEncoder(nn.Module):
    """Three SAME convs, kernels 8/4/3, strides 4/2/1, each followed by ReLU (spec §3.4)."""

    def __init__(self, in_channels: int, width_scale: float):
        super().__init__()
        convs = []
        for d, k, s in zip(_DQN_DIMS, _DQN_KERNELS, _DQN_STRIDES, strict=True):
            width = int(d * width_scale)
            convs.append(SameConv2d(in_channels, width, k, s))
            in_channels = width
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return x


def signed_sqrt(x: torch.Tensor) -> torch.Tensor:
    """f(x) = sign(x) sqrt(|x|), eqs. (10)-(11) of Fortunato et al. (2018)."""
    return torch.sign(x) * torch.sqrt(torch.abs(x))


class NoisyLinear(nn.Module):
    """Factorised-Gaussian noisy dense layer with the official parameters (spec §3.9).

    ``weight`` = kernel (w_mu), ``weight_sigma`` = kernell, ``bias`` = bias (b_mu),
    ``bias_sigma`` = biass; weights are ``(out, in)``.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisers' distributions (spec §3.9), from torch's RNG."""
        bound = 1 / math.sqrt(self.in_features)
        nn.init.xavier_uniform_(self.weight)
        nn.init.constant_(self.weight_sigma, 0.5 * bound)
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.constant_(self.bias_sigma, 0.5 * bound)

    def forward(self, x: torch.Tensor, p=None, q=None) -> torch.Tensor:
        """``y = x (w_mu + w_sigma * f(p) f(q)^T) + b_mu + b_sigma * f(q)``.

        Args:
          x: ``(B, in)`` or ``(B, K, in)``.
          p: ``(B, in)`` standard-normal input noise per example, or None for no noise
            (eval mode).
          q: ``(B, out)`` standard-normal output noise per example.

        Evaluated as ``x w_mu + b_mu + ((x * f(p)) w_sigma) * f(q) + b_sigma * f(q)``
        so that no per-example weight matrix is built (equal up to float32 rounding).
        """
        y = F.linear(x, self.weight, self.bias)
        if p is None:
            return y
        f_p, f_q = signed_sqrt(p), signed_sqrt(q)
        if x.dim() == 3:  # the same per-example noise at every step
            f_p, f_q = f_p[:, None], f_q[:, None]
        return y + F.linear(x * f_p, self.weight_sigma) * f_q + self.bias_sigma * f_q


def _noise_slices(noise: torch.Tensor | None, n_in: int, n_out: int):
    """(p, q) for one noisy layer from the per-example normal stream ``noise`` (B, N).

    The official layer draws ``p = normal(key, (n_in, 1))`` and ``q = normal(key, (1,
    out))`` from one key, and all noisy layers of a forward pass get the same
    per-example key. JAX's normal draws of one key are prefixes of each other, so
    every p and q is a prefix of ``normal(key, (N,))`` for N >= all layer widths.
    """
    if noise is None:
        return None, None
    need = max(n_in, n_out)
    if noise.shape[-1] < need:
        raise ValueError(f"noise has {noise.shape[-1]} values per example, a layer needs {need}")
    return noise[:, :n_in], noise[:, :n_out]


def flax_flatten_index(channels: int, height: int, width: int) -> torch.Tensor:
    """For each torch ``(c, h, w)`` flatten position, its Flax ``(h, w, c)`` position.

    ``index[(c * H + h) * W + w] = (h * W + w) * C + c``; ``v_flax[:, index]`` reorders a
    vector indexed in the Flax flatten order into torch's.
    """
    c, h, w = torch.meshgrid(
        torch.arange(channels), torch.arange(height), torch.arange(width), indexing="ij"
    )
    return ((h * width + w) * channels + c).flatten()


class FeatureLayer(nn.Module):
    """nn.Linear, or NoisyLinear when ``noisy`` (the official FeatureLayer).

    ``input_order``: for the projection, whose input is the latent flattened in torch's
    ``(c, h, w)`` order, :func:`flax_flatten_index` of the latent; the official input
    noise p is indexed in the Flax ``(h, w, c)`` order and is reordered with it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        noisy: bool,
        input_order: torch.Tensor | None = None,
    ):
        super().__init__()
        self.noisy = noisy
        if noisy:
            self.net = NoisyLinear(in_features, out_features)
        else:
            self.net = nn.Linear(in_features, out_features)
        self.register_buffer("input_order", input_order, persistent=False)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if not self.noisy:
            return self.net(x)
        p, q = _noise_slices(noise, self.net.in_features, self.net.out_features)
        if p is not None and self.input_order is not None:
            p = p[:, self.input_order]
        return self.net(x, p, q)


class LinearHead(nn.Module):
    """Dueling (or plain) head in logit space, per atom (spec §3.6)."""

    def __init__(self, hidden: int, num_actions: int, num_atoms: int, dueling: bool, noisy: bool):
        super().__init__()
        self.num_actions = num_actions
        self.num_atoms = num_atoms
        self.advantage = FeatureLayer(hidden, num_actions * num_atoms, noisy)
        self.value = FeatureLayer(hidden, num_atoms, noisy) if dueling else None

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """``(B, hidden)`` -> logits ``(B, A, atoms)``."""
        adv = self.advantage(x, noise).reshape(-1, self.num_actions, self.num_atoms)
        if self.value is None:
            return adv
        value = self.value(x, noise).reshape(-1, 1, self.num_atoms)
        # Per example: the mean is over the action axis only.
        return value + (adv - adv.mean(dim=1, keepdim=True))


class TransitionModel(nn.Module):
    """SPR dynamics: K steps of one shared ConvTMCell (spec §3.7)."""

    def __init__(self, channels: int, num_actions: int, renormalize: bool):
        super().__init__()
        self.num_actions = num_actions
        self.renormalize = renormalize
        # Input channels of convs[0]: the latent's C channels first, then the A one-hot
        # planes, the same concatenation order as the Flax kernel's input axis.
        self.convs = nn.ModuleList(
            [SameConv2d(channels + num_actions, channels, 3), SameConv2d(channels, channels, 3)]
        )

    def step(self, latent: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        b, _, h, w = latent.shape
        planes = F.one_hot(action.long(), self.num_actions).to(latent.dtype)
        planes = planes[:, :, None, None].expand(b, self.num_actions, h, w)
        x = torch.cat([latent, planes], dim=1)
        x = F.relu(self.convs[0](x))
        x = F.relu(self.convs[1](x))
        return renormalize(x) if self.renormalize else x

    def forward(self, latent: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """latent ``(B, C, H, W)``, actions ``(B, K)`` -> latents ``(B, K, C, H, W)``."""
        outs = []
        for k in range(actions.shape[1]):
            latent = self.step(latent, actions[:, k])
            outs.append(latent)
        return torch.stack(outs, dim=1)


def _official_init(module: nn.Module) -> None:
    """Xavier-uniform kernels and zero biases (spec §3.10), drawn from torch's RNG.

    Only the distributions match the official init (the values cannot: different
    RNGs); parity runs load parameters with :func:`network_from_params`. Torch's
    xavier fans for OIHW (in*kh*kw, out*kh*kw) equal Flax's for HWIO.
    """
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


class NetworkOutput(NamedTuple):
    """Outputs of :meth:`BBFTorchNetwork.forward` (batched official ``SPROutputType``).

    Attributes:
      q_values: ``(B, A)``.
      logits: ``(B, A, num_atoms)``.
      probabilities: softmax of logits over atoms; None when num_atoms == 1.
      latent: spatial latent ``(B, C, H, W)`` (NCHW), or SPR predictions
        ``(B, K, hidden_dim)`` when ``do_rollout``.
      representation: ``(B, H * W * C)`` in the Flax flatten order (h, w, c).
    """

    q_values: torch.Tensor
    logits: torch.Tensor
    probabilities: torch.Tensor | None
    latent: torch.Tensor
    representation: torch.Tensor


class BBFTorchNetwork(nn.Module):
    """Encoder, transition model, projection, predictor and Q head (spec §3).

    Args:
      config: the network's :class:`~bbf_jax.agents.bbf.config.NetworkConfig`. Only float32 is
        supported (``compute_dtype`` must be 'float32').
      num_actions: A.
      obs_shape: one observation as ``(H, W, C)`` (the official ``state_shape``).
      with_spr: build the transition model and predictor (the official init creates
        them only when ``spr_weight > 0``).
    """

    def __init__(
        self,
        config: NetworkConfig,
        num_actions: int,
        obs_shape: tuple[int, int, int] = (84, 84, 4),
        with_spr: bool = True,
    ):
        super().__init__()
        if config.compute_dtype != "float32":
            raise ValueError(
                f"the torch reference is float32 only, got compute_dtype={config.compute_dtype!r}"
            )
        self.config = config
        self.num_actions = num_actions
        self.obs_shape = tuple(obs_shape)
        self.with_spr = with_spr
        in_ch = obs_shape[2]
        if config.encoder_type == "impala":
            self.encoder = ImpalaEncoder(in_ch, config.width_scale, config.num_blocks)
        else:
            self.encoder = DQNEncoder(in_ch, config.width_scale)
        c = latent_channels(config)
        h, w = latent_hw(config, obs_shape[:2])
        self.latent_shape = (c, h, w)
        hidden = config.hidden_dim
        self.projection = FeatureLayer(
            c * h * w, hidden, config.noisy, input_order=flax_flatten_index(c, h, w)
        )
        self.head = LinearHead(hidden, num_actions, config.num_atoms, config.dueling, config.noisy)
        if with_spr:
            self.transition_model = TransitionModel(c, num_actions, config.renormalize)
            self.predictor = nn.Linear(hidden, hidden)
        # Not in the state_dict: the support is an input of the official network.
        self.register_buffer(
            "support", make_support(config.num_atoms, config.vmax), persistent=False
        )
        self.apply(_official_init)

    def _to_nchw(self, x: torch.Tensor, layout: str) -> torch.Tensor:
        if layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        elif layout != "NCHW":
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
        expect = (self.obs_shape[2], *self.obs_shape[:2])
        if x.dim() != 4 or tuple(x.shape[1:]) != expect:
            raise ValueError(
                f"observations must be {layout} with one example of shape "
                f"{self.obs_shape} (H, W, C); got {tuple(x.shape)}"
            )
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW float input -> spatial latent ``(B, C, H, W)``, renormalized if configured."""
        latent = self.encoder(x)
        return renormalize(latent) if self.config.renormalize else latent

    def encode_project(
        self, x: torch.Tensor, layout: str = "NHWC", noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """SPR target path (spec §3.8): encode -> flatten -> projection, no ReLU.

        The official agent calls it with eval_mode=True, i.e. ``noise=None``.
        """
        latent = self.encode(self._to_nchw(x, layout))
        return self.projection(latent.flatten(1), noise)

    def rollout(self, latent: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """SPR predictions ``(B, K, hidden)``: transition model, projection without noise,
        predictor, no ReLU in between (spec §3.8)."""
        if not self.with_spr:
            raise ValueError("this network was built with with_spr=False (no transition model)")
        latents = self.transition_model(latent, actions)  # (B, K, C, H, W)
        projected = self.projection(latents.flatten(2), None)
        return self.predictor(projected)

    def forward(
        self,
        x: torch.Tensor,
        actions: torch.Tensor | None = None,
        do_rollout: bool = False,
        noise: torch.Tensor | None = None,
        layout: str = "NHWC",
        support: torch.Tensor | None = None,
    ) -> NetworkOutput:
        """The official ``__call__`` over a batch.

        Args:
          x: observations in [0, 1], float32, ``(B, H, W, C)`` (layout 'NHWC', as stored
            in fixtures and replay) or ``(B, C, H, W)`` (layout 'NCHW').
          actions: ``(B, K)`` integer actions for the rollout (needed iff do_rollout).
          do_rollout: return SPR predictions in ``latent``.
          noise: ``(B, N)`` per-example standard-normal values shared by all noisy layers
            (see :func:`_noise_slices`); None = no noise (the official eval_mode).
          layout: 'NHWC' or 'NCHW'.
          support: ``(num_atoms,)`` C51 support; default :func:`make_support`.
        """
        latent = self.encode(self._to_nchw(x, layout))
        # The projection weight's input columns are stored in torch's (c, h, w) flatten
        # order (converted in params_to_state_dict), so the NCHW latent flattens natively.
        hidden = F.relu(self.projection(latent.flatten(1), noise))
        logits = self.head(hidden, noise)
        if self.config.num_atoms > 1:
            probabilities = torch.softmax(logits, dim=-1)
            z = self.support if support is None else support
            q_values = (probabilities * z).sum(-1)
        else:
            probabilities = None
            q_values = logits[..., 0]
        representation = latent.permute(0, 2, 3, 1).flatten(1)  # Flax (h, w, c) order
        if do_rollout:
            if actions is None:
                raise ValueError("do_rollout=True needs actions of shape (B, K)")
            latent = self.rollout(latent, actions)
        return NetworkOutput(q_values, logits, probabilities, latent, representation)


# ----------------------------------------------------------------------------------
# Parameter conversion between the Flax/official tree and a torch state_dict
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layer:
    flax: str  # '/'-joined Flax path of the layer (holds kernel/bias leaves)
    torch: str  # torch module prefix
    kind: str  # 'conv' | 'dense' | 'noisy'
    flatten_rows: bool = False  # input rows are the flattened spatial latent


_LEAVES = {
    "conv": (("kernel", "weight"), ("bias", "bias")),
    "dense": (("kernel", "weight"), ("bias", "bias")),
    "noisy": (
        ("kernel", "weight"),
        ("kernell", "weight_sigma"),
        ("bias", "bias"),
        ("biass", "bias_sigma"),
    ),
}


def _layers(config: NetworkConfig, with_spr: bool) -> list[_Layer]:
    """Every parameterised layer: Flax path <-> torch prefix."""
    layers = []
    if config.encoder_type == "impala":
        for s in range(len(_IMPALA_DIMS)):
            for j in range(2 * config.num_blocks + 1):
                layers.append(
                    _Layer(
                        f"encoder/ResidualStage_{s}/Conv_{j}",
                        f"encoder.stages.{s}.convs.{j}",
                        "conv",
                    )
                )
    else:
        for j in range(len(_DQN_DIMS)):
            layers.append(_Layer(f"encoder/Conv_{j}", f"encoder.convs.{j}", "conv"))
    if with_spr:
        for j in range(2):
            layers.append(
                _Layer(
                    f"transition_model/ScanConvTMCell_0/Conv_{j}",
                    f"transition_model.convs.{j}",
                    "conv",
                )
            )
    feature = "noisy" if config.noisy else "dense"
    layers.append(_Layer("projection/net", "projection.net", feature, flatten_rows=True))
    if with_spr:
        layers.append(_Layer("predictor", "predictor", "dense"))
    layers.append(_Layer("head/advantage/net", "head.advantage.net", feature))
    if config.dueling:
        layers.append(_Layer("head/value/net", "head.value.net", feature))
    return layers


def _flax_kernel_to_torch(kernel: np.ndarray, layer: _Layer, config: NetworkConfig) -> np.ndarray:
    if layer.kind == "conv":
        # Flax conv kernels are HWIO (kh, kw, in, out); torch wants OIHW.
        return kernel.transpose(3, 2, 0, 1)
    if layer.flatten_rows:
        # Flax flattens the (H, W, C) latent row-major: row = (h * W + w) * C + c. torch
        # flattens (C, H, W): column = (c * H + h) * W + w. Reorder the rows to (c, h, w)
        # while transposing (in, out) -> (out, in).
        c = latent_channels(config)
        hw = kernel.shape[0] // c
        side = math.isqrt(hw)
        if side * side * c != kernel.shape[0]:
            raise ValueError(
                f"projection kernel has {kernel.shape[0]} input rows, not a square "
                f"H x W x {c} latent"
            )
        return kernel.reshape(side, side, c, -1).transpose(3, 2, 0, 1).reshape(kernel.shape[1], -1)
    # Flax Dense kernels are (in, out); torch Linear weights are (out, in).
    return kernel.T


def _torch_kernel_to_flax(weight: np.ndarray, layer: _Layer, config: NetworkConfig) -> np.ndarray:
    """Exact inverse of :func:`_flax_kernel_to_torch` (pure index permutations)."""
    if layer.kind == "conv":
        return weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if layer.flatten_rows:
        c = latent_channels(config)
        side = math.isqrt(weight.shape[1] // c)
        if side * side * c != weight.shape[1]:
            raise ValueError(
                f"projection weight has {weight.shape[1]} input columns, not a square "
                f"{c} x H x W latent"
            )
        # (out, c, h, w) -> (h, w, c, out) -> rows in Flax (h, w, c) order.
        return weight.reshape(-1, c, side, side).transpose(2, 3, 1, 0).reshape(-1, weight.shape[0])
    return weight.T  # (out, in) -> (in, out)


def _flat_params(params: Mapping) -> dict[str, np.ndarray]:
    """Nested (dict/FrozenDict) or '/'-joined flat params -> flat dict of numpy arrays.

    A single top-level ``'params'`` level (Flax variables) is stripped.
    """
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, path + "/")
            else:
                flat[path] = np.asarray(value)

    walk(params, "")
    if flat and all(k.startswith("params/") for k in flat):
        flat = {k[len("params/") :]: v for k, v in flat.items()}
    return flat


def _has_spr(flat_keys) -> bool:
    tm = any(k.startswith("transition_model/") for k in flat_keys)
    pred = any(k.startswith("predictor/") for k in flat_keys)
    if tm != pred:
        raise ValueError(
            "params hold only one of transition_model / predictor; need both or neither"
        )
    return tm


def params_to_state_dict(params: Mapping, config: NetworkConfig) -> dict[str, torch.Tensor]:
    """Flax/official params (nested or '/'-flat) -> state_dict of :class:`BBFTorchNetwork`.

    Only index permutations are applied, so values are bit-identical and
    :func:`state_dict_to_params` inverts this exactly.
    """
    flat = _flat_params(params)
    layers = _layers(config, _has_spr(flat))
    expected = {f"{lay.flax}/{leaf}" for lay in layers for leaf, _ in _LEAVES[lay.kind]}
    _check_keys("params", set(flat), expected)
    sd: dict[str, torch.Tensor] = {}
    for lay in layers:
        for leaf, tname in _LEAVES[lay.kind]:
            value = flat[f"{lay.flax}/{leaf}"]
            if value.ndim != 1:
                value = _flax_kernel_to_torch(value, lay, config)
            # torch.tensor copies, so torch-side updates never write into the caller's arrays.
            sd[f"{lay.torch}.{tname}"] = torch.tensor(np.ascontiguousarray(value))
    return sd


def state_dict_to_params(state_dict: Mapping[str, torch.Tensor], config: NetworkConfig) -> dict:
    """torch state_dict -> nested Flax params dict of numpy arrays (exact inverse)."""
    names = set(state_dict)
    with_spr = any(k.startswith("transition_model.") for k in names)
    layers = _layers(config, with_spr)
    expected = {f"{lay.torch}.{tname}" for lay in layers for _, tname in _LEAVES[lay.kind]}
    _check_keys("state_dict", names, expected)
    tree: dict = {}
    for lay in layers:
        node = tree
        for part in lay.flax.split("/"):
            node = node.setdefault(part, {})
        for leaf, tname in _LEAVES[lay.kind]:
            value = state_dict[f"{lay.torch}.{tname}"].detach().cpu().numpy()
            if value.ndim != 1:
                value = _torch_kernel_to_flax(value, lay, config)
            node[leaf] = np.ascontiguousarray(value)
    return tree


def flax_path(torch_name: str, config: NetworkConfig, with_spr: bool = True) -> str:
    """The Flax leaf path ('encoder/ResidualStage_0/Conv_0/kernel') of a torch parameter."""
    for lay in _layers(config, with_spr):
        for leaf, tname in _LEAVES[lay.kind]:
            if torch_name == f"{lay.torch}.{tname}":
                return f"{lay.flax}/{leaf}"
    raise KeyError(f"{torch_name!r} is not a parameter of the BBF torch network")


def _check_keys(what: str, got: set, expected: set) -> None:
    missing, extra = sorted(expected - got), sorted(got - expected)
    if missing or extra:
        raise ValueError(
            f"{what} do not match the network config: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
            f"{' ...' if len(extra) > 5 else ''}"
        )


def network_from_params(
    params: Mapping,
    config: NetworkConfig,
    num_actions: int,
    obs_shape: tuple[int, int, int] = (84, 84, 4),
) -> BBFTorchNetwork:
    """A :class:`BBFTorchNetwork` holding ``params`` (SPR parts iff present in params)."""
    sd = params_to_state_dict(params, config)
    with_spr = any(k.startswith("transition_model.") for k in sd)
    net = BBFTorchNetwork(config, num_actions, obs_shape, with_spr=with_spr)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"params do not fit num_actions={num_actions}, obs_shape={obs_shape}: {e}"
        ) from None
    return net
