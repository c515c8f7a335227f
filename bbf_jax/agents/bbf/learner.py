"""The BBF update: pure, jittable gradient steps (spec §5.3-§5.8, §10, §11).

``train_step(state, batch, hparams) -> (state, metrics)`` performs one gradient step
on a minibatch; ``train_steps`` performs G of them in one dispatch with ``lax.scan``
(the official ``batches_to_group``). Everything that anneals (the n-step discount
and returns, which arrive inside the batch, tau and the learning rates in
``hparams``) is a traced input, so stepping through the schedules never recompiles.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.dynamic_scale import DynamicScale

from bbf_jax import augment, distributional, losses, seeds
from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig
from bbf_jax.jit_once import jit_once
from bbf_jax.networks import BBFNetwork, init_params, make_network
from bbf_jax.optim import make_optimizer
from bbf_jax.replay.priorities import importance_weights
from bbf_jax.replay.sampling import stack_frames

__all__ = ["FrameBatch", "HParams", "Learner", "TrainBatch", "TrainState",
           "importance_weights", "make_learner", "to_train_batch"]

METRIC_NAMES = ("TotalLoss", "DQNLoss", "TDError", "SPRLoss", "GradNorm", "PNorm")
# The quantities whose non-finite values metric ``NonFinite`` reports, bit i for entry i.
NONFINITE_CHECKED = ("TotalLoss", "DQNLoss", "TDError", "SPRLoss", "GradNorm")


@flax.struct.dataclass
class TrainState:
    """Everything the learner carries between dispatches (one pytree).

    Attributes:
      online: online parameters (nested dict, the official tree without 'params').
      target: EMA target parameters, same tree.
      opt_state: optax state of :func:`~bbf_jax.optim.make_optimizer`.
      loss_scale: flax ``DynamicScale`` for float16 compute, else None.
      rng: PRNG key of the training stream (split once per dispatch and per reset).
      act_rng: initial PRNG key of action selection (the runner carries the live key of
        each process on the host side).
      grad_step: int32, gradient steps so far (target update period counter).
      cycle_step: int32, gradient steps since the last reset (schedules).
    """

    online: Any
    target: Any
    opt_state: Any
    loss_scale: DynamicScale | None
    rng: jax.Array
    act_rng: jax.Array
    grad_step: jax.Array
    cycle_step: jax.Array


class TrainBatch(NamedTuple):
    """One minibatch ``(B, ...)`` or a group of them ``(G, B, ...)``.

    Attributes:
      state: ``(..., T, 84, 84, 4)`` uint8 frame stacks of the subsequence.
      action: ``(..., T)`` int32 actions; column 0 is the replayed action, columns
        0..K-1 drive the SPR rollout.
      returns: ``(...,)`` float32 n-step return.
      discount: ``(...,)`` float32 gamma^n (also for terminal samples).
      terminal: ``(...,)`` float32 in {0, 1}.
      next_state: ``(..., 84, 84, 4)`` uint8 bootstrap state.
      same_trajectory: ``(..., T)`` float32 SPR mask (columns 1..K are used).
      loss_weight: ``(...,)`` float32 importance weights (1 for uniform replay).
    """

    state: Any
    action: Any
    returns: Any
    discount: Any
    terminal: Any
    next_state: Any
    same_trajectory: Any
    loss_weight: Any


class FrameBatch(NamedTuple):
    """A :class:`TrainBatch` as the replay sends it: each frame once, stacked on the device.

    ``(T + 2S - 1)`` frames per subsequence travel instead of ``(T + 1) * S``; the
    :attr:`state` and :attr:`next_state` properties build the stacks with
    :func:`~bbf_jax.replay.sampling.stack_frames` inside the jitted step, so the learner
    reads it like a :class:`TrainBatch` and sees the same uint8 values.

    Attributes:
      frames: ``(..., T + 2S - 1, 84, 84)`` uint8: the T states' frames, then the
        bootstrap state's S frames.
      stack_mask: ``(..., T + 1, S)`` bool: channel i of state j (j = T: the bootstrap
        state) is kept, else zeroed (an earlier episode or life).
      action, returns, discount, terminal, same_trajectory, loss_weight: as in
        :class:`TrainBatch`.
    """

    frames: Any
    stack_mask: Any
    action: Any
    returns: Any
    discount: Any
    terminal: Any
    same_trajectory: Any
    loss_weight: Any

    @property
    def state(self):
        """``(..., T, 84, 84, S)`` uint8 frame stacks of the subsequence."""
        return stack_frames(self.frames, self.stack_mask, jnp)[0]

    @property
    def next_state(self):
        """``(..., 84, 84, S)`` uint8 bootstrap state."""
        return stack_frames(self.frames, self.stack_mask, jnp)[1]


class HParams(NamedTuple):
    """Traced per-dispatch hyperparameters (float32 scalars)."""

    target_update_tau: Any
    learning_rate: Any
    encoder_learning_rate: Any


def global_norm(tree) -> jax.Array:
    """``sqrt(sum over leaves of sum(x**2))`` summed leaf by leaf in tree order, the
    official ``tree_norm`` (so GradNorm matches it bitwise)."""
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))


@dataclasses.dataclass(frozen=True)
class Learner:
    """The static parts of the update (network, configs) and its pure functions.

    Build with :func:`make_learner`. Instances are hashable, so methods can be
    jitted with ``self`` static. With ``skip_nonfinite`` a gradient step whose loss or
    gradient norm is not finite leaves parameters and optimizer state unchanged (the
    mechanism of float16 loss scaling; ``RunConfig.on_nonfinite = 'skip'``).
    """

    network: BBFNetwork
    agent: AgentConfig
    net: NetworkConfig
    skip_nonfinite: bool = False

    @property
    def num_actions(self) -> int:
        return self.network.num_actions

    @property
    def compute_dtype(self):
        return self.network.compute_dtype

    def support(self) -> jnp.ndarray:
        return jnp.linspace(-self.net.vmax, self.net.vmax, self.net.num_atoms)

    def default_hparams(self) -> HParams:
        a = self.agent
        return HParams(
            jnp.float32(a.target_update_tau),
            jnp.float32(a.learning_rate),
            jnp.float32(a.encoder_learning_rate),
        )

    # ------------------------------------------------------------------ init
    def init_params(self, key) -> dict:
        """:func:`bbf_jax.networks.init_params` as one jitted program: a fresh process
        would otherwise compile hundreds of initializer ops one by one (seconds), and a
        jitted program enters the persistent compilation cache. Compiled with
        :func:`~bbf_jax.jit_once.jit_once` (it runs once per run and reset).
        Bit-identical to the eager call (``jax.random``'s samplers are jitted units
        either way; tested)."""
        return self._jit_init_params(key)

    @functools.cached_property
    def _jit_init_params(self):
        return jit_once(functools.partial(
            init_params, self.network, use_spr=self.agent.use_spr, jumps=self.agent.jumps))

    def init(self, seed: int) -> TrainState:
        """Fresh state from one seed (the official agent's first key split, §11; the
        acting key is a third, separate key: :mod:`bbf_jax.seeds`)."""
        rng, init_key, act_rng = seeds.learner_keys(seed)
        online = self.init_params(init_key)
        return self.state_from_params(online, rng, act_rng)

    def state_from_params(self, online, rng, act_rng) -> TrainState:
        target = jax.tree.map(jnp.array, online)
        loss_scale = DynamicScale() if self.net.compute_dtype == "float16" else None
        return TrainState(
            online=online,
            target=target,
            opt_state=make_optimizer(self.agent).init(online),
            loss_scale=loss_scale,
            rng=rng,
            act_rng=act_rng,
            grad_step=jnp.zeros((), jnp.int32),
            cycle_step=jnp.zeros((), jnp.int32),
        )

    # ------------------------------------------------------------- the loss
    def _apply(self, params, x, actions=None, do_rollout=False, noise_keys=None):
        return self.network.apply({"params": params}, x, actions, do_rollout, noise_keys)

    def bootstrap_target(self, online, target, next_states, batch: TrainBatch, keys):
        """TD target per sample (spec §5.5): double-DQN selection, target backup.

        Returns ``(B, M)`` distributions (C51) or ``(B,)`` values (scalar Q).
        """
        noise = keys if self.net.noisy else None
        target_out = self._apply(target, next_states, noise_keys=noise)
        select_out = (
            self._apply(online, next_states, noise_keys=noise)
            if self.agent.double_dqn
            else target_out
        )
        next_action = jnp.argmax(select_out.q_values, axis=-1)  # (B,)
        if self.net.distributional:
            next_probs = jnp.take_along_axis(
                target_out.probabilities, next_action[:, None, None], axis=1
            )[:, 0]
            return distributional.categorical_target(
                batch.returns, batch.discount, batch.terminal, next_probs, self.support()
            )
        next_q = jnp.take_along_axis(target_out.q_values, next_action[:, None], axis=1)[:, 0]
        return distributional.scalar_target(batch.returns, batch.discount, batch.terminal, next_q)

    def per_sample_losses(self, params, states0, batch: TrainBatch, td_target, spr_targets, keys):
        """Per-sample loss terms on the online network (spec §5.6).

        Returns a dict of ``(B,)`` arrays: ``dqn_loss``, ``td_error``, ``spr_loss``,
        ``loss`` (unweighted), ``loss_weighted``.
        """
        use_spr = self.agent.use_spr
        noise = keys if self.net.noisy else None
        out = self._apply(
            params, states0, batch.action[:, :-1] if use_spr else None, use_spr, noise
        )
        replay_action = batch.action[:, 0]
        if self.net.distributional:
            chosen = jnp.take_along_axis(out.logits, replay_action[:, None, None], axis=1)[:, 0]
            dqn_loss = losses.c51_cross_entropy(chosen, td_target)
            td_error = losses.c51_td_error(dqn_loss, td_target)
        else:
            chosen_q = jnp.take_along_axis(out.q_values, replay_action[:, None], axis=1)[:, 0]
            dqn_loss = losses.huber(td_target, chosen_q)
            td_error = dqn_loss
        if use_spr:
            spr, _ = losses.spr_loss(out.latent, spr_targets, batch.same_trajectory[:, 1:])
        else:
            spr = jnp.zeros_like(dqn_loss)
        loss = dqn_loss + self.agent.spr_weight * spr
        return {
            "dqn_loss": dqn_loss,
            "td_error": td_error,
            "spr_loss": spr,
            "loss": loss,
            "loss_weighted": batch.loss_weight * loss,
        }

    # ---------------------------------------------------------- the update
    def train_step(self, state: TrainState, batch: TrainBatch, hparams: HParams):
        """One gradient step on a minibatch ``(B, ...)`` (official ``train_one_batch``).

        ``batch`` is a :class:`TrainBatch` or a :class:`FrameBatch` (stacked here).

        Key use per step (spec §5.3): ``rng, k_aug, k_aug_next = split(rng, 3)``;
        ``rng, _, carry = split(rng, 3)``; per-example network keys
        ``split(rng, B)`` (shared by the online and target passes); ``carry`` is
        the next step's rng.

        Returns ``(new_state, metrics)``; metrics hold the scalars of
        :data:`METRIC_NAMES`, ``NonFinite`` (int32, bit i set when
        ``NONFINITE_CHECKED[i]`` is NaN or infinite; with float16 compute the gradient
        norm is left to the loss scale, which skips such steps itself), and
        ``dqn_loss_per_sample (B,)`` for priorities (and ``LossScale`` with float16).
        """
        dtype = self.compute_dtype
        aug = self.agent.data_augmentation
        rng, k_states, k_next = jax.random.split(state.rng, 3)
        states = augment.process_inputs(batch.state, dtype, aug, k_states)  # (B, T, 84, 84, 4)
        next_states = augment.process_inputs(batch.next_state, dtype, aug, k_next)
        states0 = states[:, 0]
        rng, _, carry = jax.random.split(rng, 3)
        keys = jax.random.split(rng, states.shape[0])

        td_target = jax.lax.stop_gradient(
            self.bootstrap_target(state.online, state.target, next_states, batch, keys)
        )
        spr_targets = None
        if self.agent.use_spr:
            spr_targets = jax.lax.stop_gradient(
                self.network.apply(
                    {"params": state.target}, states[:, 1:], method=BBFNetwork.encode_project
                )
            )

        def loss_fn(params):
            terms = self.per_sample_losses(params, states0, batch, td_target, spr_targets, keys)
            return jnp.mean(terms["loss_weighted"]), terms

        loss_scale = state.loss_scale
        if loss_scale is not None:
            loss_scale, is_finite, (_, terms), grads = loss_scale.value_and_grad(
                loss_fn, has_aux=True
            )(state.online)
        else:
            (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.online)
            is_finite = None
        checked = {
            "TotalLoss": jnp.mean(terms["loss_weighted"]),
            "DQNLoss": jnp.mean(terms["dqn_loss"]),
            "TDError": jnp.mean(terms["td_error"]),
            "SPRLoss": jnp.mean(terms["spr_loss"]),
            "GradNorm": global_norm(grads),
        }
        nonfinite = sum(
            jnp.where(jnp.isfinite(checked[k]), 0, 1 << i)
            for i, k in enumerate(NONFINITE_CHECKED)
            if not (k == "GradNorm" and loss_scale is not None)
        ).astype(jnp.int32)
        if self.skip_nonfinite:
            is_finite = nonfinite == 0 if is_finite is None else is_finite & (nonfinite == 0)

        optimizer = make_optimizer(self.agent, hparams.learning_rate, hparams.encoder_learning_rate)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.online)
        online = optax.apply_updates(state.online, updates)
        if is_finite is not None:
            # A non-finite float16 step (or any non-finite step with skip_nonfinite)
            # leaves params and optimizer state unchanged (§10).
            keep = functools.partial(jnp.where, is_finite)
            online = jax.tree.map(keep, online, state.online)
            opt_state = jax.tree.map(keep, opt_state, state.opt_state)

        # EMA target after the online update: (1 - tau) old + tau new (spec §5.8).
        target = jax.lax.cond(
            state.grad_step % self.agent.target_update_period == 0,
            lambda t, o: optax.incremental_update(o, t, hparams.target_update_tau),
            lambda t, o: t,
            state.target,
            online,
        )
        metrics = {
            **checked,
            "PNorm": global_norm(online),
            "NonFinite": nonfinite,
            "dqn_loss_per_sample": terms["dqn_loss"],
        }
        if loss_scale is not None:
            metrics["LossScale"] = loss_scale.scale
        new_state = state.replace(
            online=online,
            target=target,
            opt_state=opt_state,
            loss_scale=loss_scale,
            rng=carry,
            grad_step=state.grad_step + 1,
            cycle_step=state.cycle_step + 1,
        )
        return new_state, metrics

    def train_steps(self, state: TrainState, batches: TrainBatch, hparams: HParams):
        """G gradient steps in one dispatch: ``batches`` is ``(G, B, ...)``.

        ``rng, train_rng = split(state.rng)``; ``train_rng`` is carried through the
        G steps (as the official train function does); ``rng`` is kept. Metrics
        come back stacked ``(G, ...)``.
        """
        rng, train_rng = jax.random.split(state.rng)
        state, metrics = jax.lax.scan(
            lambda s, b: self.train_step(s, b, hparams), state.replace(rng=train_rng), batches
        )
        return state.replace(rng=rng), metrics

    # ------------------------------------------------------------- helpers
    @functools.cached_property
    def jit_train_steps(self):
        """Jitted :meth:`train_steps` (the state is donated off CPU)."""
        donate = () if jax.default_backend() == "cpu" else (0,)
        return jax.jit(self.train_steps, donate_argnums=donate)


def make_learner(
    agent: AgentConfig, net: NetworkConfig, num_actions: int, skip_nonfinite: bool = False
) -> Learner:
    return Learner(network=make_network(net, num_actions), agent=agent, net=net,
                   skip_nonfinite=skip_nonfinite)


def to_train_batch(sample, batches_to_group: int, batch_size: int,
                   loss_weight=None) -> FrameBatch:
    """Host sample of ``N = G * B`` transitions -> :class:`FrameBatch` ``(G, B, ...)``.

    ``sample`` has the fields of ``bbf_jax.replay.ReplaySample``; minibatch g is rows
    ``g*B .. (g+1)*B - 1`` (the official split). ``loss_weight`` ``(N,)``: the
    importance weights; None: BBF's, normalised over all N (spec §4.8).
    """
    n = batches_to_group * batch_size
    if sample.frames.shape[0] != n:
        raise ValueError(f"sample has {sample.frames.shape[0]} rows, expected G*B = {n}")

    def group(x, dtype=None):
        x = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
        return x.reshape((batches_to_group, batch_size) + x.shape[1:])

    return FrameBatch(
        frames=group(sample.frames),
        stack_mask=group(sample.stack_mask, np.bool_),
        action=group(sample.action, np.int32),
        returns=group(sample.returns, np.float32),
        discount=group(sample.discount, np.float32),
        terminal=group(sample.terminal, np.float32),
        same_trajectory=group(sample.same_trajectory, np.float32),
        loss_weight=group(importance_weights(sample.sampling_priority)
                          if loss_weight is None else loss_weight),
    )
