"""Plasticity diagnostics on a fixed held-out batch: dormant units, feature rank, churn
and per-module norms.

Every ``RunConfig.diagnostics_every`` gradient steps, and at the first dispatch after
each reset, the runner calls one jitted pure function (:func:`diagnose`) on the online and
target parameters, the online parameters from before the dispatch, and a held-out batch
of ``HELD_OUT_SIZE`` = 256 states (the size of the official churn batch). The batch is
drawn once, at the first diagnostic, uniformly from the valid states of the replay buffer
with its own seed (:class:`bbf_jax.seeds.RunSeeds`), so the training streams are
untouched; it is kept in checkpoints. All quantities are float32 scalars, logged under
these names (``<layer>``: a ReLU output sown by the network, e.g.
``encoder.ResidualStage_0.block0_relu1``, ``encoder.relu_out``, ``projection_relu``;
``<module>``: ``encoder``, ``transition_model``, ``projection``, ``predictor``, ``head``,
those the network has):

``Dormant0.025/<layer>``, ``Dormant0/<layer>``, ``.../total``
    Dormant units (Sokar et al., ICML 2023). A layer's units are its channels (conv) or
    features (dense). With ``a_i`` the mean of ``|h_i|`` over the held-out states (and
    spatial positions) and ``H`` units, unit ``i`` has the score
    ``s_i = a_i / ((1/H) sum_k a_k)`` and is tau-dormant when ``s_i <= tau``; tau = 0
    counts units that are exactly 0 on every held-out state. A layer whose activations
    are all 0 has every unit dormant. ``total``: dormant units of all layers over all
    their units. Measured on the online network without noise.
``SRank/encoder``, ``SRank/projection``
    Effective rank (Kumar et al., ICLR 2021) of the ``(N, d)`` feature matrix with
    singular values ``s_1 >= ... >= s_q``: the least ``k`` with
    ``sum_{i<=k} s_i >= (1 - delta) sum_i s_i``, delta = 0.01 (0 for a zero matrix).
    ``encoder``: the renormalized, flattened encoder output (``d = 11 * 11 * C``, the
    projection's input); ``projection``: the projection after its ReLU (``d =
    hidden_dim``, the Q head's input). Online network.
``Churn/online``, ``Churn/target``, ``QChange/online``, ``QChange/target``
    Policy churn and Q-value change of the online and target networks between
    consecutive diagnostics: the fraction of held-out states whose greedy action changed,
    and the mean over states and actions of ``|Q_now(s, a) - Q_previous(s, a)|``. Not
    logged at the first diagnostic (nothing to compare with). An interval that contains
    a reset includes the reset's change.
``Churn/online_target_agreement``, ``Churn/online_off_policy``, ``Churn/target_off_policy``
    The other official churn metrics: the fraction of states where online and target
    greedy actions agree, and the fractions where each differs from the replayed action.
    The official agent (spec §12) computes its churn metrics every 100 agent steps over
    one train call (2 gradient steps) on a fresh replay sample; here they are taken over
    the diagnostics interval on the fixed batch, whose policy changes are comparable from
    one diagnostic to the next.
``ParamNorm/<module>``, ``UpdateNorm/<module>``, ``EffectiveLR/<module>``
    With ``theta`` the module's online parameters after the dispatch and ``theta_0``
    before it (G gradient steps earlier): ``ParamNorm = ||theta||_2``, ``UpdateNorm =
    ||theta - theta_0||_2`` and ``EffectiveLR = ||theta - theta_0||_2 / (G *
    ||theta_0||_2)``, the relative change per gradient step (0 for a zero ``theta_0``).
    Because a diagnostic also runs at the first dispatch after each reset, the effective
    learning rate right after every reset (fresh weights, wiped optimizer state) is
    always logged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bbf_jax.agents.bbf.learner import global_norm
from bbf_jax.networks import BBFNetwork

HELD_OUT_SIZE = 256
TAUS = (0.025, 0.0)
SRANK_DELTA = 0.01
MODULES = ("encoder", "transition_model", "projection", "predictor", "head")
CHANGE_METRICS = ("Churn/online", "Churn/target", "QChange/online", "QChange/target")


# ----------------------------------------------------------------- pure quantities
def unit_scores(activation: jax.Array) -> jax.Array:
    """``(N, ..., H)`` activations -> ``(H,)`` float32 scores ``s_i`` (module docstring)."""
    a = jnp.abs(activation.astype(jnp.float32)).reshape(-1, activation.shape[-1]).mean(0)
    layer_mean = jnp.mean(a)
    safe = jnp.where(layer_mean > 0, layer_mean, 1.0)
    return jnp.where(layer_mean > 0, a / safe, 0.0)


def dormant_fraction(activation: jax.Array, tau: float) -> jax.Array:
    """Fraction (float32) of the ``H`` units of ``(N, ..., H)`` activations that are
    tau-dormant."""
    return jnp.mean((unit_scores(activation) <= tau).astype(jnp.float32))


def srank(features: jax.Array, delta: float = SRANK_DELTA) -> jax.Array:
    """Effective rank (int32) of ``(N, ...)`` features, flattened to ``(N, d)``."""
    x = features.reshape(features.shape[0], -1).astype(jnp.float32)
    # Thin: the full decomposition's (d, d) buffer is 1 GB at BBF's d = 15,488. Not via
    # the (N, N) Gram matrix: its rounding turns zero singular values into
    # ~sqrt(eps) * s_1 each, which inflates the rank of dead features.
    sv = jnp.linalg.svd(x, full_matrices=False, compute_uv=False)  # descending
    total = jnp.sum(sv)
    k = jnp.sum(jnp.cumsum(sv) < (1.0 - delta) * total) + 1
    return jnp.where(total > 0, jnp.minimum(k, sv.shape[0]), 0).astype(jnp.int32)


def churn(q_before: jax.Array, q_after: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(N, A)`` Q-values -> (fraction of rows whose argmax changed, mean |change|)."""
    changed = jnp.argmax(q_before, axis=-1) != jnp.argmax(q_after, axis=-1)
    return jnp.mean(changed.astype(jnp.float32)), jnp.mean(jnp.abs(q_after - q_before))


def module_norms(params, before, grad_steps: int) -> dict[str, jax.Array]:
    """ParamNorm, UpdateNorm and EffectiveLR (module docstring) of each top-level module
    of ``params`` named in :data:`MODULES`, ``before`` being ``grad_steps`` steps older."""
    out = {}
    for m in MODULES:
        if m not in params:
            continue
        norm_before = global_norm(before[m])
        update = global_norm(jax.tree.map(jnp.subtract, params[m], before[m]))
        out[f"ParamNorm/{m}"] = global_norm(params[m])
        out[f"UpdateNorm/{m}"] = update
        out[f"EffectiveLR/{m}"] = jnp.where(
            norm_before > 0, update / (grad_steps * jnp.where(norm_before > 0, norm_before, 1.0)),
            0.0,
        )
    return out


def layer_activations(intermediates) -> dict[str, jax.Array]:
    """Sown ``intermediates`` tree -> ``{'a.b.c': activation}`` in tree order."""
    flat = jax.tree_util.tree_flatten_with_path(
        intermediates, is_leaf=lambda x: isinstance(x, tuple)
    )[0]
    return {".".join(str(k.key) for k in path): value[0] for path, value in flat}


# --------------------------------------------------------------- the diagnostic
class Previous(NamedTuple):
    """Q-values of the previous diagnostic, ``(N, A)`` float32 each; ``valid`` is a bool
    scalar (False before the first diagnostic)."""

    online_q: Any
    target_q: Any
    valid: Any


def diagnose(network: BBFNetwork, online, target, online_before, states, actions,
             previous: Previous, grad_steps: int) -> tuple[dict[str, jax.Array], Previous]:
    """All diagnostics of one point (module docstring); pure and jittable.

    Args:
      network: the BBF network.
      online, target: current parameters.
      online_before: online parameters before the last dispatch of ``grad_steps``
        (static) gradient steps.
      states: ``(N, 84, 84, 4)`` uint8 held-out states.
      actions: ``(N,)`` int32 replayed actions of those states.
      previous: the previous diagnostic's :class:`Previous`.

    Returns:
      (float32 scalars by name; change metrics NaN when ``previous.valid`` is False,
      this point's :class:`Previous`).
    """
    x = states.astype(jnp.float32) / 255.0
    out, variables = network.apply({"params": online}, x, mutable=["intermediates"])
    target_q = network.apply({"params": target}, x).q_values
    layers = layer_activations(variables["intermediates"])
    metrics = {}
    for tau in TAUS:
        dormant, units = 0.0, 0
        for name, act in layers.items():
            frac = dormant_fraction(act, tau)
            metrics[f"Dormant{tau:g}/{name}"] = frac
            dormant, units = dormant + frac * act.shape[-1], units + act.shape[-1]
        metrics[f"Dormant{tau:g}/total"] = dormant / units
    metrics["SRank/encoder"] = srank(out.representation)
    metrics["SRank/projection"] = srank(layers["projection_relu"])

    online_act = jnp.argmax(out.q_values, axis=-1)
    target_act = jnp.argmax(target_q, axis=-1)
    nan = jnp.float32(jnp.nan)
    for name, q_prev, q_now in (("online", previous.online_q, out.q_values),
                                ("target", previous.target_q, target_q)):
        changed, q_change = churn(q_prev, q_now)
        metrics[f"Churn/{name}"] = jnp.where(previous.valid, changed, nan)
        metrics[f"QChange/{name}"] = jnp.where(previous.valid, q_change, nan)
    metrics["Churn/online_target_agreement"] = jnp.mean(online_act == target_act)
    metrics["Churn/online_off_policy"] = jnp.mean(online_act != actions)
    metrics["Churn/target_off_policy"] = jnp.mean(target_act != actions)
    metrics |= module_norms(online, online_before, grad_steps)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    return metrics, Previous(out.q_values, target_q, jnp.asarray(True))


# ------------------------------------------------------------------- host side
class Diagnostics:
    """Host side of the diagnostics of one run: schedule, held-out batch, previous point.

    Args:
      network: the BBF network.
      every: gradient steps between diagnostics (> 0).
      grad_steps_per_dispatch: G.
      seed: SeedSequence of the held-out batch draw.
    """

    def __init__(self, network: BBFNetwork, every: int, grad_steps_per_dispatch: int,
                 seed: np.random.SeedSequence):
        if every < 1:
            raise ValueError(f"diagnostics interval must be >= 1 gradient step, got {every}")
        self.every = int(every)
        self.g = int(grad_steps_per_dispatch)
        self.rng = np.random.default_rng(seed)
        self.network = network
        self.states = self.actions = None  # the held-out batch (numpy), drawn lazily
        self.previous = None  # Previous of the last diagnostic (numpy), or None
        self.after_reset = False
        self._fn = jax.jit(lambda *a: diagnose(network, *a, grad_steps=self.g))
        self._device_batch = None

    def due(self, grad_steps_before: int) -> bool:
        """Whether the dispatch starting at ``grad_steps_before`` ends with a diagnostic."""
        after = grad_steps_before + self.g
        return self.after_reset or after // self.every > grad_steps_before // self.every

    def metric_names(self, online) -> list[str]:
        """The names :meth:`run` returns, in order (traced, not computed)."""
        n = HELD_OUT_SIZE
        spec = jax.ShapeDtypeStruct
        q = spec((n, self.network.num_actions), jnp.float32)
        shapes = jax.eval_shape(
            self._fn, online, online, online, spec((n, 84, 84, 4), jnp.uint8),
            spec((n,), jnp.int32), Previous(q, q, spec((), jnp.bool_)),
        )[0]
        return list(shapes)

    @staticmethod
    def snapshot(params):
        """A copy of ``params`` that outlives a dispatch that donates its input."""
        return jax.tree.map(lambda x: jnp.array(x, copy=True), params)

    def run(self, online, target, online_before, replay) -> dict[str, float]:
        """Computes one point; returns the metrics to log (change metrics left out at the
        first point)."""
        if self.states is None:
            self.states, self.actions = replay.sample_states(HELD_OUT_SIZE, self.rng)
        if self._device_batch is None:
            self._device_batch = (jnp.asarray(self.states), jnp.asarray(self.actions, jnp.int32))
        previous = self.previous
        if previous is None:
            zeros = np.zeros((HELD_OUT_SIZE, self.network.num_actions), np.float32)
            previous = Previous(zeros, zeros, np.asarray(False))
        metrics, new = self._fn(online, target, online_before, *self._device_batch, previous)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if self.previous is None:
            metrics = {k: v for k, v in metrics.items() if k not in CHANGE_METRICS}
        self.previous = Previous(*jax.device_get(tuple(new)))
        self.after_reset = False
        return metrics

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, np.ndarray]:
        """Numpy arrays to checkpoint (empty before the first diagnostic)."""
        if self.states is None:
            return {}
        return {"states": self.states, "actions": np.asarray(self.actions),
                "online_q": np.asarray(self.previous.online_q),
                "target_q": np.asarray(self.previous.target_q)}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.states = np.asarray(state["states"], np.uint8)
        self.actions = np.asarray(state["actions"], np.int32)
        self.previous = Previous(np.asarray(state["online_q"], np.float32),
                                 np.asarray(state["target_q"], np.float32), np.asarray(True))
        self._device_batch = None
