"""The BTR update: Munchausen-IQN with PER, pure and jittable (paper §3, App. E.2).

``train_step(state, batch, hparams) -> (state, metrics)`` performs one gradient step
on a minibatch; ``train_steps`` performs G of them in one dispatch (unrolled).
The batch is the shared replay's :class:`~bbf_jax.agents.bbf.learner.FrameBatch` with
one state per row (``seq_len = 1``); its ``loss_weight`` holds the PER importance
weights (:meth:`BTRAgent.to_train_batch <bbf_jax.agents.btr.agent.BTRAgent>`).

One gradient step (the authors' ``Agent.learn_call``):

1. draw 8 taus each for the online loss, the target's bootstrap and the Munchausen
   bonus, and one noise key each for the online and the target network;
2. target quantiles ``T Z_j = R + alpha * clip(tau log pi(a_t|s_t), l0, 0)
   + gamma^n (1 - d) sum_a' pi(a'|s') (Z_j(s', a') - tau log pi(a'|s'))``
   (:func:`bbf_jax.munchausen.munchausen_targets`) with ``pi = softmax(Q / tau)``, ``Z`` and
   ``pi(.|s')`` from the target network and ``pi(.|s_t)`` from the network
   ``bonus_network`` names;
3. the quantile Huber loss of the online quantiles of ``a_t`` against ``T Z``, weighted
   by the importance weights, averaged over the batch; one spectral-norm power
   iteration in the online forward pass;
4. Adam on the gradients clipped to global norm 10; after every
   ``target_update_period``-th update a hard target copy (with the spectral-norm
   vectors). The authors copy at the start of a learn call with ``grad_steps % 500 ==
   0``: the same copies, used from the same gradient step on.

Noise: both networks draw fresh factorised noise every gradient step. The authors' code
keeps the online network's noise from its last action selection (re-drawn per
``choose_action``) and re-draws the target's per learn call; in expectation the two
agree.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from bbf_jax import munchausen, quantile, seeds
from bbf_jax.agents.btr.config import BTRAgentConfig, BTRNetworkConfig
from bbf_jax.agents.btr.network import SPECTRAL_STATS, BTRNetwork, init_btr_params

METRIC_NAMES = ("TotalLoss", "QuantileLoss", "TDError", "MunchausenBonus", "GradNorm",
                "PNorm")
# The quantities whose non-finite values metric ``NonFinite`` reports, bit i for entry i.
NONFINITE_CHECKED = ("TotalLoss", "QuantileLoss", "TDError", "GradNorm")


@flax.struct.dataclass
class TrainState:
    """Everything the BTR learner carries between dispatches (one pytree).

    Attributes:
      online: online variables: ``{'params': ..., SPECTRAL_STATS: ...}`` (the
        spectral-norm power-iteration vectors live next to the parameters).
      target: target variables, the same tree (a hard copy).
      opt_state: optax state of the Adam chain.
      rng: PRNG key of the training stream.
      act_rng: initial PRNG key of action selection.
      grad_step: int32, gradient steps so far.
    """

    online: Any
    target: Any
    opt_state: Any
    rng: jax.Array
    act_rng: jax.Array
    grad_step: jax.Array


class HParams(NamedTuple):
    """Traced per-dispatch hyperparameters (float32 scalars)."""

    learning_rate: Any


@dataclasses.dataclass(frozen=True)
class Learner:
    """BTR's static parts (network, configs) and its pure functions (build with
    :func:`make_learner`; hashable, so methods jit with ``self`` static)."""

    network: BTRNetwork
    agent: BTRAgentConfig
    net: BTRNetworkConfig
    skip_nonfinite: bool = False

    @property
    def num_actions(self) -> int:
        return self.network.num_actions

    def default_hparams(self) -> HParams:
        return HParams(jnp.float32(self.agent.learning_rate))

    def optimizer(self, learning_rate) -> optax.GradientTransformation:
        """Global-norm clipping, then Adam (paper Table D6: lr 1e-4, eps 0.005/256)."""
        return optax.chain(
            optax.clip_by_global_norm(self.agent.max_grad_norm),
            optax.adam(learning_rate, eps=self.agent.adam_eps),
        )

    # ------------------------------------------------------------------ init
    @functools.cached_property
    def _jit_init(self):
        return jax.jit(functools.partial(init_btr_params, self.network))

    def init(self, seed: int) -> TrainState:
        """Fresh state from one seed (keys as BBF's: :func:`bbf_jax.seeds.learner_keys`)."""
        rng, init_key, act_rng = seeds.learner_keys(seed)
        online = self._jit_init(init_key)
        return TrainState(
            online=online,
            target=jax.tree.map(jnp.array, online),
            opt_state=self.optimizer(self.agent.learning_rate).init(online["params"]),
            rng=rng,
            act_rng=act_rng,
            grad_step=jnp.zeros((), jnp.int32),
        )

    # ------------------------------------------------------------- forward
    def quantiles(self, variables, states, taus, noise_key=None):
        """``(B, N, A)`` quantile values of uint8 ``states`` ``(B, 84, 84, 4)`` at ``taus``
        ``(B, N)``; the spectral-norm vectors are read, not updated (Flax takes one
        power-iteration step from them and discards it)."""
        return self.network.apply(variables, states, taus, noise_key=noise_key)

    def q_values(self, variables, states, key, noise: bool):
        """``(B, A)`` Q-values: the mean over ``num_taus`` fresh taus (the authors'
        ``qvals``); factorised noise from ``key`` when ``noise``."""
        k_tau, k_noise = jax.random.split(key)
        taus = quantile.sample_taus(k_tau, states.shape[0], self.agent.num_taus)
        z = self.quantiles(variables, states, taus, k_noise if noise else None)
        return jnp.mean(z, axis=1)

    # ---------------------------------------------------------- the update
    def train_step(self, state: TrainState, batch, hparams: HParams):
        """One gradient step on a minibatch ``(B, ...)`` (module docstring).

        ``batch``: a ``FrameBatch`` with ``seq_len = 1`` (``state`` ``(B, 1, 84, 84,
        4)`` uint8, ``action`` ``(B, 1)``, ``returns``, ``discount`` = gamma^n,
        ``terminal``, ``next_state``, ``loss_weight`` ``(B,)``).

        Returns ``(new_state, metrics)``: the scalars of :data:`METRIC_NAMES`,
        ``NonFinite`` (int32 bit mask over :data:`NONFINITE_CHECKED`) and
        ``td_abs_per_sample (B,)`` (``mean_j sum_i |delta_ij|``, for priorities).
        """
        a = self.agent
        b, n = batch.state.shape[0], a.num_taus
        k_tau, k_tau_next, k_tau_bonus, k_noise, k_noise_target, carry = (
            jax.random.split(state.rng, 6))
        states, next_states = batch.state[:, 0], batch.next_state
        actions = batch.action[:, 0]
        taus = quantile.sample_taus(k_tau, b, n)

        next_z = self.quantiles(state.target, next_states,
                                quantile.sample_taus(k_tau_next, b, n), k_noise_target)
        bonus_taus = quantile.sample_taus(k_tau_bonus, b, n)
        bonus_z = (
            self.quantiles(state.target, states, bonus_taus, k_noise_target)
            if a.bonus_network == "target"
            else self.quantiles(state.online, states, bonus_taus, k_noise)
        )
        target_z = jax.lax.stop_gradient(munchausen.munchausen_targets(
            next_z, bonus_z, actions, batch.returns, batch.discount * (1.0 - batch.terminal),
            a.munchausen_alpha, a.munchausen_tau, a.munchausen_clip))
        bonus = munchausen.munchausen_bonus(bonus_z, actions, a.munchausen_alpha,
                                            a.munchausen_tau, a.munchausen_clip)

        def loss_fn(params):
            variables = {**state.online, "params": params}
            z, updated = self.network.apply(
                variables, states, taus, noise_key=k_noise, update_stats=True,
                mutable=[SPECTRAL_STATS])
            chosen = jnp.take_along_axis(z, actions[:, None, None], axis=2)[..., 0]  # (B, N)
            per_sample = quantile.quantile_huber_loss(chosen, target_z, taus, a.kappa)
            loss = jnp.mean(batch.loss_weight * per_sample)
            return loss, (per_sample, chosen, updated)

        (loss, (per_sample, chosen, updated)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.online["params"])
        td_abs = quantile.priority_signal(chosen, target_z)
        checked = {
            "TotalLoss": loss,
            "QuantileLoss": jnp.mean(per_sample),
            "TDError": jnp.mean(td_abs),
            "GradNorm": optax.tree.norm(grads),
        }
        nonfinite = sum(jnp.where(jnp.isfinite(checked[k]), 0, 1 << i)
                        for i, k in enumerate(NONFINITE_CHECKED)).astype(jnp.int32)

        updates, opt_state = self.optimizer(hparams.learning_rate).update(
            grads, state.opt_state, state.online["params"])
        online = {**state.online, **updated,
                  "params": optax.apply_updates(state.online["params"], updates)}
        if self.skip_nonfinite:
            keep = functools.partial(jnp.where, nonfinite == 0)
            online = jax.tree.map(keep, online, state.online)
            opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        grad_step = state.grad_step + 1
        target = jax.lax.cond(
            grad_step % a.target_update_period == 0,
            lambda t, o: jax.tree.map(jnp.array, o),
            lambda t, o: t,
            state.target, online)
        metrics = {
            **checked,
            "MunchausenBonus": jnp.mean(bonus),
            "PNorm": optax.tree.norm(online["params"]),
            "NonFinite": nonfinite,
            "td_abs_per_sample": td_abs,
        }
        new_state = state.replace(online=online, target=target, opt_state=opt_state,
                                  rng=carry, grad_step=grad_step)
        return new_state, metrics

    def train_steps(self, state: TrainState, batches, hparams: HParams):
        """G gradient steps in one dispatch: ``batches`` is ``(G, B, ...)``; metrics come
        back stacked ``(G, ...)``.

        The G steps are unrolled in the program rather than a ``lax.scan``: on XLA:CPU
        the scan's loop body ran BTR's step 29 times slower (52.6 s against 1.8 s per
        step at B = 32, paper sizes, 2-core Intel Xeon), and BTR's G is small (1).
        """
        metrics = []
        for g in range(batches.action.shape[0]):
            batch = jax.tree.map(lambda x, g=g: x[g], batches)
            state, m = self.train_step(state, batch, hparams)
            metrics.append(m)
        return state, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)


def make_network(net: BTRNetworkConfig, num_actions: int) -> BTRNetwork:
    return BTRNetwork(
        num_actions=num_actions, width_scale=net.width_scale, num_blocks=net.num_blocks,
        hidden=net.hidden_dim, num_cosines=net.num_cosines, adaptive_pool=net.pool_size,
        spectral_norm=net.spectral_norm, layer_norm=net.layer_norm,
        noisy_sigma0=net.noisy_sigma0)


def make_learner(agent: BTRAgentConfig, net: BTRNetworkConfig, num_actions: int,
                 skip_nonfinite: bool = False) -> Learner:
    return Learner(network=make_network(net, num_actions), agent=agent, net=net,
                   skip_nonfinite=skip_nonfinite)
