"""PyTorch reference of the BTR network, built the way the authors' PyTorch code builds it.

Clark et al., "Beyond The Rainbow" (arXiv 2411.03820), authors' ``networks.py``
(``ImpalaCNNLargeIQN``, ``ImpalaCNNBlock``, ``ImpalaCNNResidual``, ``Dueling``,
``FactorizedNoisyLinear``): NCHW activations, ``nn.Conv2d(..., padding=1)``,
``nn.MaxPool2d(3, 2, padding=1)``, ``torch.nn.utils.parametrizations.spectral_norm`` on
the residual units' convs, ``nn.AdaptiveMaxPool2d``, features flattened in torch's
``(c, h, w)`` order, the IQN cosine embedding, and two noisy streams whose noise lives in
``weight_epsilon`` / ``bias_epsilon`` buffers. Importing this module needs the ``torch``
extra. Two departures, both for cross-checking: the quantile fractions ``taus`` are an
input of :meth:`BTRTorchNetwork.forward` (the authors draw them inside), and the noise
buffers can be set from bbf_jax's draw (:func:`set_noise`).

:func:`load_btr_variables` copies bbf_jax variables (:class:`bbf_jax.agents.btr.network.
BTRNetwork`: ``{'params', 'spectral_stats'}``) into the module. Every layout difference
is handled there, in one table (:func:`_layers`):

* conv kernels HWIO ``(3, 3, in, out)`` -> OIHW ``(out, in, 3, 3)``;
* dense kernels ``(in, out)`` -> ``(out, in)``;
* the flatten order of the pooled features, Flax ``(h, w, c)`` vs torch ``(c, h, w)``:
  the tau embedding's output rows (weight and bias) and the first noisy layers' input
  columns (mu, sigma, and the input noise ``f(p)``) are permuted with
  :func:`bbf_jax.crosscheck.torch_reference.flax_flatten_index`, so the Hadamard product
  and the streams see the same numbers in torch's order;
* the spectral-norm vectors (below).

Spectral norm. Flax's ``SpectralNorm`` keeps ``u`` ``(1, out)`` and, on every forward
pass (also with ``update_stats=False``), takes one power-iteration step from it with the
kernel as the matrix ``W`` ``(9 * in, out)``: ``v1 = N(W u)``, ``u1 = N(W^T v1)``,
``sigma = v1^T W u1`` (``N`` = l2-normalisation); ``update_stats=True`` keeps ``u1`` and
``sigma``, ``False`` discards them, so both compute the same output. PyTorch's
parametrisation keeps ``_u`` ``(out,)`` and ``_v`` ``(in * 9,)`` for the matrix
``(out, in * 9)`` (the transpose up to a permutation of the ``in * 9`` axis) and
normalises by ``sigma = _u^T W _v``; ``eval()`` takes no step, ``train()`` takes one
*starting from* ``_v`` (``_u = N(W _v)``, ``_v = N(W^T _u)``), half a step later than
Flax. So the pair of modes that compute the same thing is Flax's forward and torch's
``eval()`` with the buffers holding Flax's step: the loader sets ``_v = v1`` and
``_u = u1``. ``_u`` then equals the ``u`` Flax's training forward stores. Gradients
agree too: both treat ``u`` and ``v`` as constants and differentiate through ``sigma``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from math import sqrt

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from bbf_jax.crosscheck.fixture_io import flatten_tree
from bbf_jax.crosscheck.torch_reference import flax_flatten_index

SPECTRAL_EPS = 1e-12  # the l2-normalisation epsilon of both frameworks' spectral norm


# ----------------------------------------------------------------------------------
# Modules (the authors' networks.py)
# ----------------------------------------------------------------------------------


class FactorizedNoisyLinear(nn.Module):
    """The authors' factorised-Gaussian noisy layer: ``(..., in) -> (..., out)``.

    Parameters ``weight_mu``, ``weight_sigma`` ``(out, in)``, ``bias_mu``, ``bias_sigma``
    ``(out,)``; buffers ``weight_epsilon = f(q) f(p)^T`` ``(out, in)`` and
    ``bias_epsilon = f(q)`` ``(out,)``, one sample shared by every row, all float32.
    """

    def __init__(self, in_features: int, out_features: int, sigma_0: float = 0.5) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.sigma_0 = sigma_0
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.register_buffer("weight_epsilon", torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        self.register_buffer("bias_epsilon", torch.empty(out_features))
        self.reset_parameters()
        self.reset_noise()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        scale = 1 / sqrt(self.in_features)
        init.uniform_(self.weight_mu, -scale, scale)
        init.uniform_(self.bias_mu, -scale, scale)
        init.constant_(self.weight_sigma, self.sigma_0 * scale)
        init.constant_(self.bias_sigma, self.sigma_0 * scale)

    @torch.no_grad()
    def _get_noise(self, size: int) -> Tensor:
        noise = torch.randn(size, device=self.weight_mu.device)
        return noise.sign().mul_(noise.abs().sqrt_())  # f(x) = sgn(x) sqrt(|x|)

    @torch.no_grad()
    def reset_noise(self) -> None:
        """A fresh sample from torch's RNG (the authors' per-step redraw)."""
        self.set_noise(self._get_noise(self.in_features), self._get_noise(self.out_features))

    @torch.no_grad()
    def set_noise(self, epsilon_in: Tensor, epsilon_out: Tensor) -> None:
        """Sets the buffers from the factor vectors ``f(p)`` ``(in,)`` and ``f(q)`` ``(out,)``."""
        self.weight_epsilon.copy_(epsilon_out.outer(epsilon_in))
        self.bias_epsilon.copy_(epsilon_out)

    @torch.no_grad()
    def disable_noise(self) -> None:
        self.weight_epsilon.zero_()
        self.bias_epsilon.zero_()

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input,
                        self.weight_mu + self.weight_sigma * self.weight_epsilon,
                        self.bias_mu + self.bias_sigma * self.bias_epsilon)


def _identity(module: nn.Module) -> nn.Module:
    return module


def _spectral_norm(module: nn.Module) -> nn.Module:
    return torch.nn.utils.parametrizations.spectral_norm(module)


class ImpalaCNNResidual(nn.Module):
    """``x + conv_1(relu(conv_0(relu(x))))``, ``(B, depth, H, W)`` -> same shape."""

    def __init__(self, depth: int, norm_func):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_0 = norm_func(nn.Conv2d(depth, depth, kernel_size=3, stride=1, padding=1))
        self.conv_1 = norm_func(nn.Conv2d(depth, depth, kernel_size=3, stride=1, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        x_ = self.conv_0(self.relu(x))
        x_ = self.conv_1(self.relu(x_))
        return x + x_


class ImpalaCNNBlock(nn.Module):
    """conv 3x3 -> ``MaxPool2d(3, 2, padding=1)`` -> ``residual_0 ... residual_{n-1}``
    (the authors write out two: ``residual_0``, ``residual_1``)."""

    def __init__(self, depth_in: int, depth_out: int, norm_func, num_blocks: int = 2):
        super().__init__()
        self.num_blocks = num_blocks
        self.conv = nn.Conv2d(depth_in, depth_out, kernel_size=3, stride=1, padding=1)
        self.max_pool = nn.MaxPool2d(3, 2, padding=1)
        for i in range(num_blocks):
            setattr(self, f"residual_{i}", ImpalaCNNResidual(depth_out, norm_func=norm_func))

    def forward(self, x: Tensor) -> Tensor:
        x = self.max_pool(self.conv(x))
        for i in range(self.num_blocks):
            x = getattr(self, f"residual_{i}")(x)
        return x


class Dueling(nn.Module):
    """``V + (A - mean_a A)`` per row; ``(R, F)`` -> ``(R, actions)``."""

    def __init__(self, value_branch: nn.Sequential, advantage_branch: nn.Sequential):
        super().__init__()
        self.flatten = nn.Flatten()
        self.value_branch = value_branch
        self.advantage_branch = advantage_branch

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        advantages = self.advantage_branch(x)
        value = self.value_branch(x)
        return value + (advantages - torch.mean(advantages, dim=1, keepdim=True))

    def noisy_layers(self) -> dict[str, FactorizedNoisyLinear]:
        """The four noisy layers by their bbf_jax path (``value/hidden`` ...)."""
        return {f"{stream}/{layer}": getattr(self, f"{stream}_branch")[i]
                for stream in ("value", "advantage")
                for layer, i in (("hidden", 0), ("out", 2))}


@dataclasses.dataclass(frozen=True)
class BTRSizes:
    """The sizes of a BTR network (the fields of :class:`~bbf_jax.agents.btr.network.
    BTRNetwork` that shape it); :meth:`of` reads them off a bbf_jax network."""

    num_actions: int
    width_scale: float = 2
    num_blocks: int = 2
    hidden: int = 512
    num_cosines: int = 64
    adaptive_pool: int = 6
    spectral_norm: bool = True
    noisy_sigma0: float = 0.5
    in_depth: int = 4

    @classmethod
    def of(cls, network) -> BTRSizes:
        if network.layer_norm:
            raise ValueError("the torch BTR reference implements the published network "
                             "(layer_norm=False)")
        return cls(network.num_actions, network.width_scale, network.num_blocks,
                   network.hidden, network.num_cosines, network.adaptive_pool,
                   network.spectral_norm, network.noisy_sigma0)

    @property
    def channels(self) -> tuple[int, int, int]:
        return tuple(int(c * self.width_scale) for c in (16, 32, 32))

    @property
    def feature_dim(self) -> int:
        return self.channels[-1] * self.adaptive_pool**2


class BTRTorchNetwork(nn.Module):
    """The authors' ``ImpalaCNNLargeIQN`` (maxpool, dueling, noisy) at ``sizes``.

    ``forward(inputt, taus)``: uint8 ``(B, in_depth, 84, 84)`` NCHW frames and float32
    ``(B, N)`` quantile fractions -> float32 quantiles ``(B, N, num_actions)``.
    """

    def __init__(self, sizes: BTRSizes):
        super().__init__()
        self.sizes = sizes
        self.actions = sizes.num_actions
        self.n_cos = sizes.num_cosines
        self.conv_out_size = sizes.feature_dim
        norm_func = _spectral_norm if sizes.spectral_norm else _identity
        c0, c1, c2 = sizes.channels
        self.conv = nn.Sequential(
            ImpalaCNNBlock(sizes.in_depth, c0, norm_func, sizes.num_blocks),
            ImpalaCNNBlock(c0, c1, norm_func, sizes.num_blocks),
            ImpalaCNNBlock(c1, c2, norm_func, sizes.num_blocks),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveMaxPool2d((sizes.adaptive_pool, sizes.adaptive_pool))
        # pi * i rounded once to float32, as the authors' FloatTensor (and bbf_jax).
        pis = torch.FloatTensor([np.pi * i for i in range(self.n_cos)]).view(1, 1, self.n_cos)
        self.register_buffer("pis", pis, persistent=False)
        self.cos_embedding = nn.Linear(self.n_cos, self.conv_out_size)
        h, s0 = sizes.hidden, sizes.noisy_sigma0
        self.dueling = Dueling(
            nn.Sequential(FactorizedNoisyLinear(self.conv_out_size, h, s0), nn.ReLU(),
                          FactorizedNoisyLinear(h, 1, s0)),
            nn.Sequential(FactorizedNoisyLinear(self.conv_out_size, h, s0), nn.ReLU(),
                          FactorizedNoisyLinear(h, self.actions, s0)),
        )

    def features(self, inputt: Tensor) -> Tensor:
        """uint8 ``(B, C, H, W)`` -> float32 ``(B, F)`` pooled features, ``(c, h, w)`` order."""
        x = inputt.float() / 255
        x = self.pool(self.conv(x))
        return x.view(x.shape[0], -1)

    def forward(self, inputt: Tensor, taus: Tensor) -> Tensor:
        batch_size, num_tau = taus.shape
        x = self.features(inputt)
        cos = torch.cos(taus.unsqueeze(-1) * self.pis).view(batch_size * num_tau, self.n_cos)
        cos_x = torch.relu(self.cos_embedding(cos)).view(batch_size, num_tau, self.conv_out_size)
        x = (x.unsqueeze(1) * cos_x).view(batch_size * num_tau, self.conv_out_size)
        return self.dueling(x).view(batch_size, num_tau, self.actions)

    def qvals(self, inputt: Tensor, taus: Tensor) -> Tensor:
        """``(B, actions)``: the mean over the quantile fractions."""
        return self.forward(inputt, taus).mean(dim=1)


# ----------------------------------------------------------------------------------
# bbf_jax variables <-> torch tensors
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One parameter: its bbf_jax path, its torch name and the layout change between.

    ``kind``: 'conv' (HWIO <-> OIHW), 'dense' ((in, out) <-> (out, in)), 'rows' (a dense
    layer whose *outputs* are the pooled features: transpose, then rows to (c, h, w)),
    'cols' (a dense layer whose *inputs* are the pooled features: transpose, then
    columns to (c, h, w)), 'vector' (bias, unchanged) or 'feature_vector' (a bias over
    the pooled features, permuted to (c, h, w)).
    """

    flax: str
    torch: str
    kind: str


def _layers(sizes: BTRSizes) -> list[_Leaf]:
    """Every parameter of the network: bbf_jax path, torch name, layout change."""
    leaves = []
    for s in range(3):
        leaves += [_Leaf(f"stage{s}/conv/kernel", f"conv.{s}.conv.weight", "conv"),
                   _Leaf(f"stage{s}/conv/bias", f"conv.{s}.conv.bias", "vector")]
        for b in range(sizes.num_blocks):
            for j in range(2):
                conv = f"conv.{s}.residual_{b}.conv_{j}"
                weight = (f"{conv}.parametrizations.weight.original" if sizes.spectral_norm
                          else f"{conv}.weight")
                leaves += [_Leaf(f"stage{s}/unit{b}/conv{j}/kernel", weight, "conv"),
                           _Leaf(f"stage{s}/unit{b}/conv{j}/bias", f"{conv}.bias", "vector")]
    leaves += [_Leaf("tau_embedding/dense/kernel", "cos_embedding.weight", "rows"),
               _Leaf("tau_embedding/dense/bias", "cos_embedding.bias", "feature_vector")]
    for stream in ("value", "advantage"):
        for layer, index, kind in (("hidden", 0, "cols"), ("out", 2, "dense")):
            prefix = f"dueling.{stream}_branch.{index}"
            for mat in ("kernel_mu", "kernel_sigma"):
                leaves.append(_Leaf(f"head/{stream}/{layer}/{mat}",
                                    f"{prefix}.weight_{mat.split('_')[1]}", kind))
            for vec in ("bias_mu", "bias_sigma"):
                leaves.append(_Leaf(f"head/{stream}/{layer}/{vec}", f"{prefix}.{vec}", "vector"))
    return leaves


def feature_order(sizes: BTRSizes) -> np.ndarray:
    """``order[t]`` = the Flax ``(h, w, c)`` index of torch's ``(c, h, w)`` feature ``t``:
    ``v_flax[order]`` is ``v`` in torch's order."""
    p = sizes.adaptive_pool
    return flax_flatten_index(sizes.channels[-1], p, p).numpy()


def to_torch_layout(value: np.ndarray, kind: str, order: np.ndarray) -> np.ndarray:
    """One bbf_jax array in the layout of its torch parameter (index permutations only,
    so values are bit-identical); ``order`` from :func:`feature_order`."""
    if kind == "conv":
        return value.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    if kind == "dense":
        return value.T
    if kind == "rows":
        return value.T[order]  # (n_cos, F) -> (F, n_cos), rows (h, w, c) -> (c, h, w)
    if kind == "cols":
        return value[order].T  # (F, hidden) -> (hidden, F), columns to (c, h, w)
    if kind == "feature_vector":
        return value[order]
    return value


def from_torch_layout(value: np.ndarray, kind: str, order: np.ndarray) -> np.ndarray:
    """The exact inverse of :func:`to_torch_layout` (used for torch's gradients)."""
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)
    if kind == "dense":
        return value.T
    inverse = np.argsort(order)
    if kind == "rows":
        return value[inverse].T
    if kind == "cols":
        return value.T[inverse]
    if kind == "feature_vector":
        return value[inverse]
    return value


def spectral_step(weight: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Flax's power-iteration step from its stored ``u`` ``(out,)``, in torch's layout:
    ``(u1, v1)`` with ``v1 = N(W^T u)`` ``(in * 9,)`` and ``u1 = N(W v1)`` ``(out,)`` for
    ``W = weight.flatten(1)`` ``(out, in * 9)`` (module docstring)."""
    w = weight.flatten(1)
    v1 = F.normalize(torch.mv(w.T, u), dim=0, eps=SPECTRAL_EPS)
    u1 = F.normalize(torch.mv(w, v1), dim=0, eps=SPECTRAL_EPS)
    return u1, v1


def spectral_modules(net: BTRTorchNetwork) -> dict[str, nn.Module]:
    """The spectral-normalised convs by their bbf_jax ``spectral_stats`` prefix
    (``stage0/unit0/conv0_sn/conv0/kernel``)."""
    if not net.sizes.spectral_norm:
        return {}
    return {f"stage{s}/unit{b}/conv{j}_sn/conv{j}/kernel":
            getattr(getattr(net.conv[s], f"residual_{b}"), f"conv_{j}")
            for s in range(3) for b in range(net.sizes.num_blocks) for j in range(2)}


@torch.no_grad()
def load_btr_variables(net: BTRTorchNetwork, variables: Mapping) -> None:
    """Copies bbf_jax BTR ``variables`` (``{'params': ..., 'spectral_stats': ...}``, nested
    dicts of arrays) into ``net``: every parameter, and the spectral buffers ``_v = v1``,
    ``_u = u1`` of Flax's power-iteration step from the stored ``u`` (module docstring),
    so that ``net.eval()`` computes bbf_jax's forward. Raises ValueError on a missing or
    extra parameter, a missing ``u`` or a shape mismatch."""
    params = flatten_tree(variables["params"])
    sizes = net.sizes
    leaves = _layers(sizes)
    expected = {leaf.flax for leaf in leaves}
    if set(params) != expected:
        raise ValueError(f"params do not match the network: missing "
                         f"{sorted(expected - set(params))[:5]}, unexpected "
                         f"{sorted(set(params) - expected)[:5]}")
    order = feature_order(sizes)
    named = dict(net.named_parameters())
    for leaf in leaves:
        value = torch.tensor(to_torch_layout(params[leaf.flax], leaf.kind, order))
        target = named[leaf.torch]
        if target.shape != value.shape:
            raise ValueError(f"{leaf.flax}: shape {tuple(value.shape)} in torch layout, "
                             f"the torch network has {tuple(target.shape)}")
        target.copy_(value)
    stats = flatten_tree(variables.get("spectral_stats", {}))
    for prefix, conv in spectral_modules(net).items():
        if f"{prefix}/u" not in stats:
            raise ValueError(f"spectral_stats has no {prefix}/u for a normalised conv")
        u = torch.tensor(stats[f"{prefix}/u"][0])
        u1, v1 = spectral_step(conv.parametrizations.weight.original, u)
        conv.parametrizations.weight[0]._u.copy_(u1)
        conv.parametrizations.weight[0]._v.copy_(v1)


def btr_torch_network(network, variables: Mapping, in_depth: int = 4) -> BTRTorchNetwork:
    """A :class:`BTRTorchNetwork` of bbf_jax ``network``'s sizes holding ``variables``,
    in ``eval()`` mode, with its noise disabled."""
    net = BTRTorchNetwork(dataclasses.replace(BTRSizes.of(network), in_depth=in_depth))
    load_btr_variables(net, variables)
    disable_noise(net)
    return net.eval()


def spectral_sigmas(net: BTRTorchNetwork) -> dict[str, tuple[Tensor, Tensor]]:
    """``{prefix: (u, sigma)}``: each normalised conv's ``_u`` and its ``sigma = _u^T W _v``
    (what ``eval()`` divides the kernel by)."""
    out = {}
    with torch.no_grad():
        for prefix, conv in spectral_modules(net).items():
            sn = conv.parametrizations.weight[0]
            w = conv.parametrizations.weight.original.flatten(1)
            out[prefix] = (sn._u.clone(), torch.vdot(sn._u, torch.mv(w, sn._v)))
    return out


def grads_to_flax(net: BTRTorchNetwork) -> dict[str, np.ndarray]:
    """The ``.grad`` of every parameter as a '/'-flat bbf_jax params dict (zeros for a
    parameter without a gradient)."""
    order = feature_order(net.sizes)
    named = dict(net.named_parameters())
    out = {}
    for leaf in _layers(net.sizes):
        p = named[leaf.torch]
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out[leaf.flax] = from_torch_layout(g.detach().cpu().numpy(), leaf.kind, order)
    return out


# ----------------------------------------------------------------------------------
# Noise: bbf_jax's draw into the torch buffers
# ----------------------------------------------------------------------------------


def jax_noise_vectors(noise_key: jax.Array, sizes: BTRSizes) -> dict[str, tuple]:
    """bbf_jax's factor vectors ``(f(p), f(q))`` of each noisy layer for ``noise_key``.

    The key tree of :class:`~bbf_jax.agents.btr.network.DuelingHead` and ``NoisyStream``:
    the head splits the key into (value, advantage), each stream splits its key into
    (hidden, out), and each layer draws
    :func:`bbf_jax.networks.noisy.factorised_noise` from its key. Returns
    ``{'value/hidden': (f_in, f_out), ...}``, float32 JAX arrays (jittable: call it inside
    the computation that draws the key), ``f_in`` of the hidden layers in the Flax
    ``(h, w, c)`` feature order.
    """
    from bbf_jax.networks.noisy import factorised_noise

    outs = {"value": 1, "advantage": sizes.num_actions}
    vectors = {}
    for stream, stream_key in zip(("value", "advantage"), jax.random.split(noise_key),
                                  strict=True):
        widths = {"hidden": (sizes.feature_dim, sizes.hidden),
                  "out": (sizes.hidden, outs[stream])}
        for layer, key in zip(("hidden", "out"), jax.random.split(stream_key), strict=True):
            vectors[f"{stream}/{layer}"] = factorised_noise(key, *widths[layer])
    return vectors


def set_noise(net: BTRTorchNetwork, vectors: Mapping[str, tuple] | None) -> None:
    """Sets every noisy layer's buffers to bbf_jax's sample ``vectors`` (from
    :func:`jax_noise_vectors`); None: no noise (the authors' ``disable_noise``)."""
    if vectors is None:
        disable_noise(net)
        return
    order = feature_order(net.sizes)
    for name, layer in net.dueling.noisy_layers().items():
        f_in, f_out = (np.asarray(v, np.float32) for v in vectors[name])
        if name.endswith("/hidden"):
            f_in = f_in[order]  # the hidden layers' inputs are the features, (c, h, w) here
        layer.set_noise(torch.tensor(f_in), torch.tensor(f_out))


def disable_noise(net: BTRTorchNetwork) -> None:
    for layer in net.dueling.noisy_layers().values():
        layer.disable_noise()
