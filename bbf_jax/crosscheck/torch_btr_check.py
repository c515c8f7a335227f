"""``bbf-crosscheck torch btr``: bbf_jax's BTR network and update against PyTorch.

Builds a bbf_jax BTR learner (:mod:`bbf_jax.agents.btr.learner`) and a state from a
seed, converts its variables to the PyTorch reference (:mod:`bbf_jax.crosscheck.
torch_btr`, built like the authors' code) and compares, on the same random uint8 states
and on the taus and noise keys ``Learner.train_step`` draws (explicit torch inputs):

1. the online quantiles ``(B, N, A)`` without noise and with bbf_jax's noise sample
   (set into the torch noise buffers);
2. the spectral-norm vectors: the ``u`` and ``sigma`` that ``Learner.train_step`` keeps
   against the ``_u`` / ``sigma`` of the torch convs in ``eval()`` (the mode pair that
   computes Flax's forward, :mod:`~bbf_jax.crosscheck.torch_btr`);
3. one training step: ``Learner.train_step``'s metrics and its pieces (target-network
   quantiles at s' and s_t, the Munchausen target, the online quantiles of the
   replayed action, the per-sample quantile Huber loss) against the torch networks with
   the loss math of :mod:`bbf_jax.crosscheck.torch_btr_losses` (the authors'
   ``learn_call``);
4. the gradient of that loss w.r.t. every parameter.

All float32, TF32 off, JAX matmul precision 'highest'. Bounds follow
:mod:`bbf_jax.tolerance` (see :class:`BTRReductions` and :func:`loss_bounds`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bbf_jax import munchausen, quantile, seeds, tolerance
from bbf_jax.agents.bbf.learner import TrainBatch
from bbf_jax.agents.btr.config import BTRAgentConfig, BTRNetworkConfig
from bbf_jax.agents.btr.learner import Learner, TrainState, make_learner
from bbf_jax.agents.btr.network import SPECTRAL_STATS, init_btr_params
from bbf_jax.crosscheck import torch_btr
from bbf_jax.crosscheck import torch_btr_losses as tb
from bbf_jax.crosscheck.fixture_io import (
    Row,
    compare,
    flatten_tree,
    format_rows,
    unflatten_tree,
)

OBS_HW = 84
SMALL = BTRNetworkConfig(width_scale=0.25, num_blocks=1, hidden_dim=32, num_cosines=8)
"""``--small``: channels (4, 8, 8), one residual unit per stage (6 normalised convs),
288 pooled features, 32-wide streams, 8 cosines."""
TARGET_NOISE = 0.005  # std of the target perturbation, so online/target mix-ups show
NOTE = (f"note: the target network is the online one plus {TARGET_NOISE} N(0, 1) noise; "
        "torch runs in eval() with the spectral buffers set to Flax's power-iteration "
        "step; the gradient rows use bbf_jax's target quantiles (the target row bounds "
        "the torch target on its own)")

Convert = Callable[..., torch_btr.BTRTorchNetwork]


# ----------------------------------------------------------------------------------
# Tolerances
# ----------------------------------------------------------------------------------


def _pooled(n: int) -> int:
    """Side after ``MaxPool2d(3, 2, padding=1)``: ``floor((n + 2 - 3) / 2) + 1``."""
    return (n - 1) // 2 + 1


@dataclasses.dataclass(frozen=True)
class BTRReductions:
    """The sums of a BTR forward and backward pass, as :mod:`bbf_jax.tolerance` needs them.

    A forward output is bounded by the rounding-noise model of
    :func:`bbf_jax.tolerance.network_output`, ``sqrt(depth * length) * u * max|expected|``,
    not by the worst case of a float32 sum of K terms (``K * eps * sum|x_i|``,
    :func:`bbf_jax.tolerance.summation`): stacked ``depth`` times, that worst case
    (``depth * K * eps``, 1e-3 of the output at the small sizes, 1.5e-2 at the paper's)
    is orders of magnitude above what two evaluation orders differ by, and would let
    through a spectral norm evaluated in the wrong mode, which moves the quantiles by
    about 1e-4 of their magnitude. ``length`` is the longest
    dot product (a conv's ``9 * in``, the features ``F`` into the streams), ``depth``
    the stacked sums of the deepest path: each stage's first conv, each residual conv
    plus, when spectral-normalised, the three sums behind its ``sigma`` (``W u``,
    ``W^T v``, ``v^T W u``, whose rounding scales the whole conv output), the tau
    embedding, the two noisy layers and the dueling mean.

    Gradients (:func:`bbf_jax.tolerance.gradient`): the noise of ``2 * depth`` sums of up
    to ``backward_length = B * 84 * 84`` terms (the first conv's kernel gradient), plus
    kinks: where a ReLU input or a max-pool candidate lies within rounding of its switch,
    the two sides send one term of the backward pass elsewhere. A kink at a layer's own
    output moves one of the terms its kernel gradient sums (:meth:`positions`: the
    ``B * H * W`` positions of a conv's output, the ``B * N`` rows of the tau embedding
    and of the streams' hidden layers, each followed by a ReLU), about
    ``1 / sqrt(positions)`` of it. A kink in the trunk further on moves one entry of
    the backward field there, which reaches the gradient through a linear map: about
    ``1 / sqrt(terms)`` of it, ``terms`` the ``B * H * W * C`` entries of the smallest
    such field (:meth:`later_terms`). The trunk's fields are large (1e5 max-pool windows
    per stage at the paper's sizes), so near-ties occur in nearly every pass there (at
    seed 0 one in stage 1's max-pool moves every conv gradient below it by ~1e-3), and
    :data:`bbf_jax.tolerance.KINK_PEAK` of them are allowed. The adaptive max-pool and
    the dense layers have few units near a switch (the policy's dense-layer rule); the
    streams' output layers read continuous inputs and get the noise alone.
    """

    sizes: torch_btr.BTRSizes
    batch_size: int
    num_taus: int

    @property
    def forward_length(self) -> int:
        s = self.sizes
        return max(9 * s.in_depth, 9 * max(s.channels), s.feature_dim, s.hidden, s.num_cosines,
                   s.num_actions)

    @property
    def depth(self) -> int:
        s = self.sizes
        residual = 2 * s.num_blocks * (4 if s.spectral_norm else 1)
        return 3 * (1 + residual) + 4

    @property
    def backward_length(self) -> int:
        return self.batch_size * OBS_HW**2

    def output(self, expected) -> tolerance.Tolerance:
        return tolerance.network_output(expected, self.forward_length, self.depth)

    def output_scalar(self, expected) -> float:
        return float(self.output(expected).atol)

    def positions(self, path: str) -> int | None:
        """Batch positions summed by the gradient of the parameter at ``path`` that a kink
        can change; None for layers without a kink before their gradient sum."""
        parts = path.split("/")
        if parts[0].startswith("stage"):
            hw = OBS_HW
            for _ in range(int(parts[0][len("stage"):])):
                hw = _pooled(hw)
            if parts[1].startswith("unit"):  # the residual units run after the max-pool
                hw = _pooled(hw)
            return self.batch_size * hw * hw
        if parts[0] == "tau_embedding" or (parts[0] == "head" and parts[2] == "hidden"):
            return self.batch_size * self.num_taus
        return None

    def later_terms(self, path: str) -> int | None:
        """Entries of the smallest trunk field after the layer of the parameter at
        ``path`` (each stage's max-pool output and its units' ReLUs, ``B * H * W * C`` at
        the pooled size, from the layer's own stage on); None outside the trunk."""
        top = path.split("/")[0]
        if not top.startswith("stage"):
            return None
        first, hw, fields = int(top[len("stage"):]), OBS_HW, []
        for stage, c in enumerate(self.sizes.channels):
            hw = _pooled(hw)
            if stage >= first:
                fields.append(self.batch_size * hw * hw * c)
        return min(fields)

    def gradient(self, path: str, expected) -> tolerance.Tolerance:
        """Relative norm :meth:`gradient_relative`; elementwise the noise and
        ``KINK_PEAK`` own-output kinks times ``max|e|`` (:func:`bbf_jax.tolerance.
        gradient`), plus the later kinks' share of ``||e||`` (spread over the whole
        gradient, no entry moves more than the norm does)."""
        noise = tolerance.noise(self.backward_length, 2 * self.depth)
        positions, later = self.positions(path), self.later_terms(path)
        peak = noise + (tolerance.KINK_PEAK / math.sqrt(positions) if positions else 0.0)
        atol = peak * tolerance.magnitude(expected)
        if later:
            norm = float(np.linalg.norm(np.asarray(expected, np.float64)))
            atol += tolerance.KINK_PEAK / math.sqrt(later) * norm
        return tolerance.Tolerance(atol, rel_norm=self.gradient_relative(path))

    def gradient_relative(self, path: str) -> float:
        """``noise + 1 / sqrt(positions) + KINK_PEAK / sqrt(later_terms)`` (the terms
        that apply)."""
        positions, later = self.positions(path), self.later_terms(path)
        rel = tolerance.noise(self.backward_length, 2 * self.depth)
        if positions:
            rel += 1 / math.sqrt(positions)
        if later:
            rel += tolerance.KINK_PEAK / math.sqrt(later)
        return rel

    @staticmethod
    def spectral(expected, fan_in: int, fan_out: int, matvecs: int) -> tolerance.Tolerance:
        """The power-iteration step's ``u1`` (``matvecs`` = 2: ``W u0``, ``W^T v1``, each
        l2-normalised) or ``sigma = v1^T W u1`` (3), for a ``(fan_in, fan_out)`` matrix
        (``fan_in = 9 * in``). Short sums, so the rigorous bound of
        :func:`bbf_jax.tolerance.summation` applies: each matrix-vector product and the
        squared norm after it sum at most ``fan_in + fan_out`` terms between them, plus
        eight elementwise roundings (square roots, divisions) on either side, all
        relative to ``max|expected|``: ``u0`` and ``v1`` are near the top singular
        vectors, so ``||W u||`` is near its largest and cancellation cannot amplify.
        """
        terms = matvecs * (fan_in + fan_out) + 8
        return tolerance.summation(terms, tolerance.magnitude(expected))


def loss_bounds(jax_out: Mapping[str, np.ndarray], agent: BTRAgentConfig,
                sums: BTRReductions) -> dict[str, float]:
    """Bounds of the loss pieces, propagated from the quantiles' bounds.

    With ``e_z``, ``e_next``, ``e_bonus`` the :meth:`BTRReductions.output` bounds of the
    online quantiles, the target quantiles at s' and those at s_t:

    * bonus ``alpha * clip(tau log pi(a_t))``: ``d(tau log pi_a) = dq_a - sum_b pi_b dq_b``,
      so at most ``2 alpha e_bonus``;
    * soft bootstrap ``sum_a pi_a (Z_ja - tau log pi_a)``: its change is
      ``sum_a pi_a dZ_ja + sum_a dpi_a (Z_ja - q_a)`` with ``sum_a |dpi_a| <= 2 e / tau``,
      so at most ``e_next (1 + 2 spread / tau)``, ``spread = max |Z_ja - q_a|`` (a low
      temperature amplifies the quantiles' rounding);
    * target ``T = R + bonus + gamma^n (1 - d) soft``: the two above, plus ``A + 8``
      roundings of its terms, each at most ``|R| + alpha |l0| + max|Z_next| + A tau / e``
      (``pi |tau log pi| <= tau / e``);
    * per-sample loss ``mean_j sum_i rho(delta_ij)``: ``|d rho / d delta| =
      |tau - 1{delta < 0}| |clip(delta, -kappa, kappa)| / kappa <= 1``, so at most
      ``N (e_z + e_T)``, plus ``N N' + 8`` roundings of the value;
    * the metrics: importance-weighted mean (``max w`` times that), plain means, the
      priority signal ``mean_j sum_i |delta|`` (``N (e_z + e_T)``), the bonus mean.
    """
    eps = tolerance.EPS
    a, n = agent, agent.num_taus
    num_actions = jax_out["step/next_quantiles"].shape[-1]
    e_z = sums.output_scalar(jax_out["quantiles_noisy"])
    e_next = sums.output_scalar(jax_out["step/next_quantiles"])
    e_bonus = sums.output_scalar(jax_out["step/bonus_quantiles"])
    next_z = np.asarray(jax_out["step/next_quantiles"], np.float64)
    spread = float(np.max(np.abs(next_z - next_z.mean(axis=1, keepdims=True))))
    gamma_n = float(np.max(jax_out["input/discount"]))
    bonus = 2 * a.munchausen_alpha * e_bonus + (num_actions + 8) * eps * (
        a.munchausen_alpha * abs(a.munchausen_clip) + tolerance.magnitude(
            jax_out["step/bonus_quantiles"]))
    term = (tolerance.magnitude(jax_out["input/returns"]) + a.munchausen_alpha
            * abs(a.munchausen_clip) + tolerance.magnitude(next_z)
            + num_actions * a.munchausen_tau / math.e)
    target = (bonus + gamma_n * (1 + 2 * spread / a.munchausen_tau) * e_next
              + (num_actions + 8) * eps * term)
    per_sample_value = tolerance.magnitude(jax_out["step/per_sample_loss"])
    per_sample = n * (e_z + target) + (n * n + 8) * eps * per_sample_value
    b = jax_out["input/returns"].shape[0]
    weights = tolerance.magnitude(jax_out["input/loss_weight"])

    def mean_of(bound: float, key: str) -> float:
        return bound + (b + 1) * eps * tolerance.magnitude(jax_out[key])

    td_abs = n * (e_z + target) + (n * n + 2) * eps * tolerance.magnitude(
        jax_out["train_step/td_abs_per_sample"])
    return {
        "step/target_quantiles": target,
        "step/per_sample_loss": per_sample,
        "train_step/TotalLoss": mean_of(weights * per_sample, "train_step/TotalLoss"),
        "train_step/QuantileLoss": mean_of(per_sample, "train_step/QuantileLoss"),
        "train_step/TDError": mean_of(td_abs, "train_step/TDError"),
        "train_step/td_abs_per_sample": td_abs,
        "train_step/MunchausenBonus": mean_of(bonus, "train_step/MunchausenBonus"),
    }


# ----------------------------------------------------------------------------------
# bbf_jax's side
# ----------------------------------------------------------------------------------


@functools.cache
def make_btr_learner(small: bool, num_actions: int, batch_size: int) -> Learner:
    """The learner of the check: paper sizes (``BTRNetworkConfig()``) or :data:`SMALL`,
    BTR's agent defaults with ``batch_size`` (cached: its jitted functions compile once)."""
    if batch_size < 1 or num_actions < 2:
        raise ValueError(f"--batch_size must be >= 1 and --num_actions >= 2, got "
                         f"{batch_size} and {num_actions}")
    net = SMALL if small else BTRNetworkConfig()
    return make_learner(BTRAgentConfig(batch_size=batch_size), net, num_actions)


def initial_variables(network, rng: np.random.Generator, power_iterations: int = 15) -> dict:
    """Variables of bbf_jax ``network`` from its initial distribution, drawn with numpy.

    The tree is :func:`~bbf_jax.agents.btr.network.init_btr_params`'s (from
    ``jax.eval_shape``, nothing compiled); every kernel and bias ~ ``U(+-1/sqrt(fan_in))``
    (PyTorch's default and NoisyNets' ``mu``), the noisy sigmas ``sigma0 / sqrt(fan_in)``,
    and each spectral ``u`` after ``power_iterations`` float32 steps of Flax's power
    iteration from a normal start (``sigma`` the last estimate), as ``init_btr_params``
    draws them. The check does not depend on the values, only on their scale; drawing
    them here skips compiling the initialisation, which costs nearly as much as the
    whole training step.
    """
    shapes = jax.eval_shape(lambda k: init_btr_params(network, k), jax.random.PRNGKey(0))
    flat_shapes = flatten_tree(jax.tree.map(lambda x: np.empty(x.shape, np.float32),
                                            shapes["params"]))
    params = {}
    for path, leaf in flat_shapes.items():
        layer, name = path.rsplit("/", 1)
        kernel = flat_shapes[f"{layer}/kernel" if name in ("kernel", "bias")
                             else f"{layer}/kernel_mu"]
        bound = 1 / math.sqrt(math.prod(kernel.shape[:-1]))
        if name.endswith("_sigma"):
            params[path] = np.full(leaf.shape, network.noisy_sigma0 * bound, np.float32)
        else:
            params[path] = rng.uniform(-bound, bound, leaf.shape).astype(np.float32)
    stats = {}
    for path in sorted(flatten_tree(shapes.get(SPECTRAL_STATS, {}))):
        if not path.endswith("/u"):
            continue
        stage, unit, _, conv, _, _ = path.split("/")
        w = params[f"{stage}/{unit}/{conv}/kernel"]
        w = w.reshape(-1, w.shape[-1])  # Flax's (9 * in, out) matrix
        u = rng.standard_normal((1, w.shape[1])).astype(np.float32)
        for _ in range(power_iterations):
            v = u @ w.T
            v /= np.linalg.norm(v)
            u = v @ w
            u /= np.linalg.norm(u)
        stats[path] = u
        stats[path[:-len("u")] + "sigma"] = (v @ w @ u.T)[0, 0]
    variables = {"params": unflatten_tree(params)}
    if stats:
        # The spectral collection's variable names hold '/' ('conv0/kernel/u' under
        # 'conv0_sn'), so rebuild it on the eval_shape tree rather than unflattening.
        variables[SPECTRAL_STATS] = jax.tree_util.tree_map_with_path(
            lambda p, _: stats["/".join(k.key for k in p)], shapes[SPECTRAL_STATS])
    return variables


@functools.partial(jax.jit, static_argnums=0)
def _jax_side(learner: Learner, online, target, batch: TrainBatch, seed):
    """``Learner.init(seed)``'s state with the given variables, then
    ``Learner.train_step``, its pieces with the keys it draws (the same split of
    ``state.rng``), the noise vectors of those keys and the online quantiles without
    noise at the step's taus; one compilation (the pieces' forwards are those of
    ``train_step``)."""
    a = learner.agent
    train_key, _, act_rng = seeds.learner_keys(seed)
    state = TrainState(
        online=online, target=target,
        opt_state=learner.optimizer(a.learning_rate).init(online["params"]),
        rng=train_key, act_rng=act_rng, grad_step=jnp.zeros((), jnp.int32))
    states, next_states, actions = batch.state[:, 0], batch.next_state, batch.action[:, 0]
    new_state, metrics = learner.train_step(state, batch, learner.default_hparams())
    out = {f"train_step/{k}": v for k, v in metrics.items() if k != "NonFinite"}
    b, n = states.shape[0], a.num_taus
    k_tau, k_tau_next, k_tau_bonus, k_noise, k_noise_target, _ = jax.random.split(state.rng, 6)
    step_taus = quantile.sample_taus(k_tau, b, n)
    taus_next = quantile.sample_taus(k_tau_next, b, n)
    taus_bonus = quantile.sample_taus(k_tau_bonus, b, n)
    next_z = learner.quantiles(state.target, next_states, taus_next, k_noise_target)
    bonus_z = (learner.quantiles(state.target, states, taus_bonus, k_noise_target)
               if a.bonus_network == "target"
               else learner.quantiles(state.online, states, taus_bonus, k_noise))
    target_z = munchausen.munchausen_targets(
        next_z, bonus_z, actions, batch.returns, batch.discount * (1.0 - batch.terminal),
        a.munchausen_alpha, a.munchausen_tau, a.munchausen_clip)

    def loss_fn(params):
        z, _ = learner.network.apply({**state.online, "params": params}, states, step_taus,
                                     noise_key=k_noise, update_stats=True,
                                     mutable=[SPECTRAL_STATS])
        chosen = jnp.take_along_axis(z, actions[:, None, None], axis=2)[..., 0]
        per_sample = quantile.quantile_huber_loss(chosen, target_z, step_taus, a.kappa)
        return jnp.mean(batch.loss_weight * per_sample), (z, chosen, per_sample)

    (_, (z, chosen, per_sample)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.online["params"])
    sizes = torch_btr.BTRSizes.of(learner.network)
    out.update({
        "quantiles": learner.quantiles(state.online, states, step_taus),
        "quantiles_noisy": z,
        "step/taus": step_taus, "step/taus_next": taus_next, "step/taus_bonus": taus_bonus,
        "step/next_quantiles": next_z, "step/bonus_quantiles": bonus_z,
        "step/target_quantiles": target_z, "step/online_quantiles": chosen,
        "step/per_sample_loss": per_sample,
    })
    noise = {"online": torch_btr.jax_noise_vectors(k_noise, sizes),
             "target": torch_btr.jax_noise_vectors(k_noise_target, sizes)}
    return out, noise, grads, new_state.online[SPECTRAL_STATS]


def random_batch(learner: Learner, rng: np.random.Generator) -> TrainBatch:
    """A :class:`TrainBatch` of one state per row: uint8 frames, uniform actions,
    N(0, 1) returns, 20 % terminals, float32 gamma^n, importance weights in (0.5, 1]
    with maximum 1."""
    a = learner.agent
    b = a.batch_size
    frames = rng.integers(0, 256, (b, 2, OBS_HW, OBS_HW, 4), dtype=np.uint8)
    weights = rng.uniform(0.5, 1.0, b).astype(np.float32)
    return TrainBatch(
        state=frames[:, :1],
        action=rng.integers(0, learner.num_actions, (b, 1)).astype(np.int32),
        returns=rng.standard_normal(b).astype(np.float32),
        discount=np.full(b, np.float32(a.gamma**a.update_horizon)),
        terminal=(rng.random(b) < 0.2).astype(np.float32),
        next_state=frames[:, 1],
        same_trajectory=np.ones((b, 1), np.float32),
        loss_weight=weights / weights.max(),
    )


@dataclasses.dataclass(frozen=True)
class Reference:
    """bbf_jax's side of one check, as numpy: the online and target variables, the batch,
    every output (``quantiles``, ``quantiles_noisy``, ``train_step/...``, ``step/...``,
    ``input/...``), the noise vectors of the online and target keys
    (:func:`~bbf_jax.crosscheck.torch_btr.jax_noise_vectors`), the gradients and the
    spectral stats ``train_step`` keeps ('/'-flat dicts)."""

    learner: Learner
    online: dict
    target: dict
    batch: TrainBatch
    outputs: dict
    noise: dict
    grads: dict
    kept_stats: dict


@functools.cache
def jax_reference(seed: int, small: bool, num_actions: int, batch_size: int) -> Reference:
    """bbf_jax's side for a seed and sizes, at full float32 matmul precision whatever the
    caller's setting (cached: checking several conversions of the same network costs
    only their torch side). The target network is the online one plus
    :data:`TARGET_NOISE` N(0, 1) noise on every parameter."""
    with jax.default_matmul_precision("highest"):
        return _jax_reference(seed, small, num_actions, batch_size)


def _jax_reference(seed: int, small: bool, num_actions: int, batch_size: int) -> Reference:
    learner = make_btr_learner(small, num_actions, batch_size)
    rng = np.random.default_rng(seed)
    online = initial_variables(learner.network, rng)
    target = {**online, "params": jax.tree.map(
        lambda x: (x + TARGET_NOISE * rng.standard_normal(x.shape)).astype(np.float32),
        online["params"])}
    batch = random_batch(learner, rng)
    out, noise, grads, kept = _jax_side(learner, online, target, batch, seed)
    outputs = {k: np.asarray(v) for k, v in out.items()}
    outputs.update({"input/discount": batch.discount, "input/returns": batch.returns,
                    "input/loss_weight": batch.loss_weight})
    return Reference(learner, online, target, batch, outputs, jax.tree.map(np.asarray, noise),
                     flatten_tree(jax.tree.map(np.asarray, grads)),
                     flatten_tree(jax.tree.map(np.asarray, kept)))


# ----------------------------------------------------------------------------------
# The comparison
# ----------------------------------------------------------------------------------


def _nchw(x: np.ndarray) -> torch.Tensor:
    """NHWC uint8 frames -> contiguous NCHW (pure data movement)."""
    return torch.tensor(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _t(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x))


def _torch_step(learner: Learner, online: torch_btr.BTRTorchNetwork,
                target: torch_btr.BTRTorchNetwork, ref: Reference) -> dict[str, np.ndarray]:
    """The training step with the torch networks and :mod:`torch_btr_losses`, on the
    batch, taus and noise of ``ref``; sets the ``.grad`` of ``online``'s parameters."""
    batch, jax_out = ref.batch, ref.outputs
    a = learner.agent
    states, next_states = _nchw(batch.state[:, 0]), _nchw(batch.next_state)
    actions = torch.from_numpy(batch.action[:, 0]).long()
    taus = _t(jax_out["step/taus"])
    torch_btr.set_noise(target, ref.noise["target"])
    torch_btr.set_noise(online, ref.noise["online"])
    with torch.no_grad():
        next_z = target(next_states, _t(jax_out["step/taus_next"]))
        bonus_net = target if a.bonus_network == "target" else online
        bonus_z = bonus_net(states, _t(jax_out["step/taus_bonus"]))
    gamma_n = np.unique(batch.discount)
    if gamma_n.size != 1:
        raise ValueError("the authors' target takes one gamma ** n for the batch")
    munchausen_args = dict(alpha=a.munchausen_alpha, entropy_tau=a.munchausen_tau,
                           lo=a.munchausen_clip, bonus_network=a.bonus_network)
    target_z = tb.munchausen_targets(
        next_z, bonus_z, bonus_z, actions, _t(batch.returns), _t(batch.terminal).bool(),
        float(gamma_n[0]), **munchausen_args)
    # The bonus alone: the same target with zero rewards and every bootstrap cut.
    bonus = tb.munchausen_targets(
        next_z, bonus_z, bonus_z, actions, torch.zeros(len(actions)),
        torch.ones(len(actions), dtype=torch.bool), float(gamma_n[0]), **munchausen_args)[:, 0]
    online.zero_grad(set_to_none=True)
    z = online(states, taus)
    index = actions[:, None, None].expand(-1, z.shape[1], 1)
    chosen = z.gather(2, index)[..., 0]
    weights = _t(batch.loss_weight)
    per_sample = tb.quantile_huber_loss(chosen, target_z, taus, a.kappa)
    # Gradients against bbf_jax's target: they check the online network's backward pass;
    # the target's own rounding is bounded by its row.
    jax_target = _t(jax_out["step/target_quantiles"])
    (weights * tb.quantile_huber_loss(chosen, jax_target, taus, a.kappa)).mean().backward()
    grads = torch_btr.grads_to_flax(online)
    with torch.no_grad():
        td_abs = tb.priority_signal(chosen, target_z)
        out = {
            "quantiles_noisy": z,
            "step/next_quantiles": next_z, "step/bonus_quantiles": bonus_z,
            "step/target_quantiles": target_z, "step/online_quantiles": chosen,
            "step/per_sample_loss": per_sample,
            "train_step/TotalLoss": (weights * per_sample).mean(),
            "train_step/QuantileLoss": per_sample.mean(),
            "train_step/TDError": td_abs.mean(),
            "train_step/td_abs_per_sample": td_abs,
            "train_step/MunchausenBonus": bonus.mean(),
        }
        out = {k: v.detach().numpy() for k, v in out.items()}
    out["train_step/GradNorm"] = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64))
                                             for g in grads.values()))
    out.update({f"grads/{k}": v for k, v in grads.items()})
    return out


def compare_btr(seed: int = 0, small: bool = False, num_actions: int = 6,
                batch_size: int = 4,
                convert: Convert = torch_btr.btr_torch_network) -> list[Row]:
    """One row per compared array: bbf_jax's BTR network and training step vs the torch
    reference (module docstring).

    Args:
      seed: seeds the variables, the inputs and the target perturbation.
      small: :data:`SMALL` sizes instead of the paper's.
      num_actions, batch_size: A and B.
      convert: ``(network, variables) -> BTRTorchNetwork`` in ``eval()`` mode; the
        default is the reference conversion (a test swaps in broken ones).
    """
    ref = jax_reference(seed, small, num_actions, batch_size)
    learner, want = ref.learner, ref.outputs
    sums = BTRReductions(torch_btr.BTRSizes.of(learner.network), batch_size,
                         learner.agent.num_taus)
    rows: list[Row] = []

    # 1-2. Quantiles without noise; the step (quantiles with noise, loss, gradients).
    online = convert(learner.network, ref.online)
    with torch.no_grad():
        torch_btr.set_noise(online, None)
        clean = online(_nchw(ref.batch.state[:, 0]), _t(want["step/taus"])).numpy()
    got = _torch_step(learner, online, convert(learner.network, ref.target), ref)
    got["quantiles"] = clean
    for name in ("quantiles", "quantiles_noisy"):
        rows.append(compare(name, got[name], want[name], sums.output(want[name])))

    # 3. Spectral norm: the u and sigma train_step keeps vs torch's buffers.
    convs = torch_btr.spectral_modules(online)
    for prefix, (u, sigma) in torch_btr.spectral_sigmas(online).items():
        fan_in = 9 * convs[prefix].parametrizations.weight.original.shape[1]
        want_u, want_sigma = ref.kept_stats[f"{prefix}/u"][0], ref.kept_stats[f"{prefix}/sigma"]
        name = "spectral/" + prefix.split("_sn/")[0]
        rows.append(compare(f"{name}/u", u.numpy(), want_u,
                            sums.spectral(want_u, fan_in, u.shape[0], 2)))
        rows.append(compare(f"{name}/sigma", sigma.numpy(), want_sigma,
                            sums.spectral(want_sigma, fan_in, u.shape[0], 3)))

    # 4-5. The step's pieces and metrics, and the gradients.
    for name in ("step/next_quantiles", "step/bonus_quantiles", "step/online_quantiles"):
        # The online quantiles' bound comes from all A actions' magnitudes.
        scale = want["quantiles_noisy" if "online" in name else name]
        rows.append(compare(name, got[name], want[name], sums.output_scalar(scale)))
    for name, bound in loss_bounds(want, learner.agent, sums).items():
        rows.append(compare(name, got[name], want[name], bound))
    # | ||a|| - ||e|| | <= ||a - e|| <= sqrt(sum over leaves of (r_leaf ||e_leaf||)^2).
    norm_bound = math.sqrt(sum(
        (sums.gradient_relative(path) * np.linalg.norm(g.astype(np.float64))) ** 2
        for path, g in ref.grads.items()))
    rows.append(compare("train_step/GradNorm", got["train_step/GradNorm"],
                        want["train_step/GradNorm"], norm_bound))
    for path, g in ref.grads.items():
        rows.append(compare(f"grads/{path}", got[f"grads/{path}"], g, sums.gradient(path, g)))
    return rows


def report(rows: list[Row], header: str) -> int:
    """Prints the table; exit status 0 when every row is ok, else 1."""
    print(header)
    print(NOTE)
    print(format_rows(rows))
    bad = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


def run(args) -> int:
    """``bbf-crosscheck torch btr [--small] [--seed N] [--num_actions A] [--batch_size B]``:
    exit 0 when everything agrees, 1 on any mismatch, 2 on unusable arguments."""
    try:
        make_btr_learner(args.small, args.num_actions, args.batch_size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = compare_btr(args.seed, args.small, args.num_actions, args.batch_size)
    sizes = "small sizes" if args.small else "paper sizes"
    header = (f"== bbf_jax BTR vs PyTorch reference: {sizes}, {args.num_actions} actions, "
              f"seed {args.seed}, batch {args.batch_size}")
    return report(rows, header)
