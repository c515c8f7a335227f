"""``bbf-crosscheck torch --gin_files F ...``: the PyTorch reference against bbf_jax.

Initialises a bbf_jax learner from the gin configuration and a seed, converts its
parameters to the torch reference and runs one training step on both with the same
random batch: network outputs, per-sample losses, gradients, the parameters after one
AdamW step (from bbf_jax's gradients) and the EMA target (from bbf_jax's new parameters)
are compared at float32 (TF32 off, highest JAX matmul precision), with the bounds of the
``losses`` fixture kind (:func:`bbf_jax.crosscheck.kinds.losses.output_tolerance`).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bbf_jax.crosscheck import torch_losses as tl
from bbf_jax.crosscheck import torch_train
from bbf_jax.crosscheck.fixture_io import Row, compare, flatten_tree, format_rows
from bbf_jax.crosscheck.kinds.losses import output_tolerance
from bbf_jax.crosscheck.reductions import network_reductions

TARGET_NOISE = 0.005  # std of the target perturbation (as the losses fixture's target)
NOTE = (
    "note: data augmentation is off (JAX's and torch's RNG streams cannot match); the "
    f"target network is the online one plus {TARGET_NOISE} N(0, 1) noise so that "
    "online/target mix-ups show"
)


class UnsupportedConfig(ValueError):
    """A configuration the torch reference does not implement (message names it)."""


def make_learner(exp, num_actions: int, batch_size: int):
    """The bbf_jax learner of ``exp``: one minibatch per step, augmentation off."""
    from bbf_jax.agents.bbf.learner import make_learner as make

    if exp.network.num_atoms < 2:
        raise UnsupportedConfig(
            "the torch reference implements the C51 loss only (NetworkConfig.num_atoms > 1)"
        )
    if exp.network.compute_dtype != "float32":
        raise UnsupportedConfig(
            f"the torch reference is float32 only, got compute_dtype={exp.network.compute_dtype!r}"
        )
    if batch_size < 1 or num_actions < 1:
        raise UnsupportedConfig(
            f"--batch_size and --num_actions must be >= 1, got {batch_size} and {num_actions}"
        )
    agent = dataclasses.replace(
        exp.agent, batch_size=batch_size, batches_to_group=1, data_augmentation=False
    )
    return make(agent, exp.network, num_actions)


def random_batch(learner, rng: np.random.Generator):
    """A random :class:`~bbf_jax.agents.bbf.learner.TrainBatch` ``(B, ...)`` drawn with numpy.

    uint8 frames, uniform actions, N(0, 1) returns, 20 % terminals, the replay's
    cumulative same-trajectory mask (column 0 always 1), discount float32(gamma^n)
    and importance weights from uniform(0.5, 2) priorities.
    """
    from bbf_jax.agents.bbf.learner import TrainBatch, importance_weights

    agent = learner.agent
    b, t = agent.batch_size, agent.jumps + 1
    frames = rng.integers(0, 256, (b, t + 1, 84, 84, 4), dtype=np.uint8)
    terminal = (rng.random((b, t)) < 0.2).astype(np.float32)
    same = np.cumprod(np.concatenate([np.ones((b, 1)), 1 - terminal[:, :-1]], axis=1), axis=1)
    return TrainBatch(
        state=frames[:, :t],
        action=rng.integers(0, learner.num_actions, (b, t)).astype(np.int32),
        returns=rng.standard_normal(b).astype(np.float32),
        discount=np.full(b, np.float32(agent.gamma**agent.update_horizon)),
        terminal=terminal[:, 0],
        next_state=frames[:, t],
        same_trajectory=same.astype(np.float32),
        loss_weight=importance_weights(rng.uniform(0.5, 2.0, b).astype(np.float32)),
    )


def _noise_width(learner) -> int:
    """Length of the per-example normal stream covering every noisy layer's p and q."""
    from bbf_jax.crosscheck.torch_reference import latent_channels, latent_hw

    net = learner.net
    h, w = latent_hw(net, (84, 84))
    return max(latent_channels(net) * h * w, net.hidden_dim, learner.num_actions * net.num_atoms)


@functools.partial(jax.jit, static_argnums=0)
def _jax_step(learner, state, batch):
    from bbf_jax import augment
    from bbf_jax import losses as losses_lib
    from bbf_jax.networks import BBFNetwork

    agent = learner.agent
    states = augment.process_inputs(batch.state, learner.compute_dtype)
    next_states = augment.process_inputs(batch.next_state, learner.compute_dtype)
    rng = jax.random.split(state.rng, 3)[0]  # the step's key use; augmentation keys unused
    keys = jax.random.split(jax.random.split(rng, 3)[0], states.shape[0])
    noise = keys if learner.net.noisy else None
    td_target = learner.bootstrap_target(state.online, state.target, next_states, batch, keys)
    spr_targets = None
    if agent.use_spr:
        spr_targets = learner.network.apply(
            {"params": state.target}, states[:, 1:], method=BBFNetwork.encode_project
        )

    def loss_fn(p):
        terms = learner.per_sample_losses(p, states[:, 0], batch, td_target, spr_targets, keys)
        return jnp.mean(terms["loss_weighted"]), terms

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.online)
    apply = learner.network.apply
    now = apply({"params": state.online}, states[:, 0], None, False, noise)
    next_online = apply({"params": state.online}, next_states, None, False, noise)
    next_target = apply({"params": state.target}, next_states, None, False, noise)
    new_state, metrics = learner.train_step(state, batch, learner.default_hparams())
    select = next_online if agent.double_dqn else next_target
    out = {
        "TotalLoss": metrics["TotalLoss"],
        "DQNLoss": metrics["DQNLoss"],
        "TD Error": metrics["TDError"],
        "SPRLoss": metrics["SPRLoss"],
        "grad_global_norm": metrics["GradNorm"],
        "per_sample/dqn_loss": terms["dqn_loss"],
        "per_sample/td_error": terms["td_error"],
        "per_sample/spr_loss": terms["spr_loss"],
        "per_sample/loss_unweighted": terms["loss"],
        "per_sample/loss_weighted": terms["loss_weighted"],
        "intermediate/target_distribution": td_target,
        "intermediate/next_q_online": next_online.q_values,
        "intermediate/next_qt_argmax": jnp.argmax(select.q_values, axis=-1).astype(jnp.int32),
        "intermediate/next_probabilities_target": next_target.probabilities,
        "intermediate/logits": now.logits,
        "intermediate/chosen_action_logits": jnp.take_along_axis(
            now.logits, batch.action[:, 0, None, None], axis=1
        )[:, 0],
        "grads": grads,
        "new_online_params": new_state.online,
        "new_target_params": new_state.target,
    }
    if agent.use_spr:
        rolled = apply({"params": state.online}, states[:, 0], batch.action[:, :-1], True, noise)
        _, per_jump = losses_lib.spr_loss(rolled.latent, spr_targets, batch.same_trajectory[:, 1:])
        out["per_sample/spr_loss_per_jump"] = per_jump
        out["intermediate/spr_predictions"] = rolled.latent
        out["intermediate/spr_targets"] = spr_targets
    stream = None
    if learner.net.noisy:
        width = _noise_width(learner)
        stream = jax.vmap(lambda k: jax.random.normal(k, (width,)))(keys)
    return out, stream


def jax_outputs(learner, state, batch) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """bbf_jax's side under the names of :func:`torch_train.train_step_outputs`.

    One jitted computation (compiled once per learner): ``Learner.train_step`` for the
    metrics and new parameters, plus its pieces (``bootstrap_target``,
    ``per_sample_losses``, network applies) for the intermediates and gradients.

    Returns ``(outputs, noise)``: ``noise`` is the ``(B, N)`` per-example normal stream
    of noisy nets (None otherwise), drawn from the per-example keys that
    ``Learner.train_step`` derives from ``state.rng`` (spec §5.3), so the torch step
    can be fed the same noise.
    """
    raw, stream = _jax_step(learner, state, batch)
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            out.update({f"{key}/{k}": v for k, v in flatten_tree(value).items()})
        else:
            out[key] = np.asarray(value)
    return out, None if stream is None else np.asarray(stream)


def compare_with_bbf_jax(exp, num_actions: int, seed: int, batch_size: int) -> list[Row]:
    """One row per array of one training step: torch reference vs bbf_jax."""
    learner = make_learner(exp, num_actions, batch_size)
    rng = np.random.default_rng(seed)
    state = learner.init(seed)
    target = jax.tree.map(
        lambda x: (np.asarray(x) + TARGET_NOISE * rng.standard_normal(x.shape)).astype(np.float32),
        state.online,
    )
    state = state.replace(target=target)
    batch = random_batch(learner, rng)
    expected, noise = jax_outputs(learner, state, batch)
    agent = learner.agent
    inputs = torch_train.StepInputs(
        online=jax.tree.map(np.asarray, state.online),
        target=target,
        states=torch_train.process_inputs(batch.state),
        next_states=torch_train.process_inputs(batch.next_state),
        actions=batch.action,
        returns=batch.returns,
        discounts=batch.discount,
        terminals=batch.terminal,
        same_trajectory=batch.same_trajectory[:, 1:],
        loss_weights=batch.loss_weight,
        support=np.asarray(learner.support()),
        noise=noise,
    )
    settings = torch_train.StepSettings(
        spr_weight=agent.spr_weight,
        double_dqn=agent.double_dqn,
        target_update_tau=agent.target_update_tau,
        adamw=tl.AdamWSettings(
            learning_rate=agent.learning_rate,
            encoder_learning_rate=agent.encoder_learning_rate,
            eps=agent.adam_eps,
            weight_decay=agent.weight_decay,
        ),
    )
    got = torch_train.train_step_outputs(inputs, learner.net, num_actions, settings)

    def subtree(prefix):
        return {k[len(prefix):]: v for k, v in expected.items() if k.startswith(prefix)}

    got.update(torch_train.step_from_reference(
        inputs.online, target, subtree("grads/"), subtree("new_online_params/"), learner.net,
        num_actions, settings,
    ))  # fmt: skip
    sums = network_reductions(learner.net, agent.batch_size, agent.jumps)
    learning_rate = max(agent.learning_rate, agent.encoder_learning_rate)
    rows = []
    for key in expected:
        want = expected[key]
        if key not in got:
            rows.append(Row(key, float("inf"), 0.0, False, "not computed by torch"))
            continue
        rows.append(compare(key, got[key], want, output_tolerance(key, want, sums, learning_rate)))
    return rows


def run(args) -> int:
    """``--gin_files`` mode of ``bbf-crosscheck torch``: exit 0 / 1 / 2 as ``verify``."""
    from bbf_jax import gin_utils

    try:
        exp = gin_utils.parse(args.gin_files, args.gin_bindings)
        rows = compare_with_bbf_jax(exp, args.num_actions, args.seed, args.batch_size)
    except (gin_utils.ConfigError, UnsupportedConfig) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"== bbf_jax vs PyTorch reference: {' '.join(args.gin_files)}, "
        f"{args.num_actions} actions, seed {args.seed}, batch {args.batch_size}"
    )
    print(NOTE)
    print(format_rows(rows))
    bad = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0
