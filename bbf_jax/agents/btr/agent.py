"""BTR's side of the runner's agent protocol (:class:`bbf_jax.runner.Agent`).

64 train envs stepped as one vector, one gradient step per vector step, constant n and
gamma, the authors' geometric epsilon on top of the noisy nets, acting with the online
network (noise off and epsilon 0.01 in evaluation), PER with priorities
``(mean_j sum_i |delta_ij| + 1e-6) ** 0.2`` and no resets (paper §3.2, Table D6).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bbf_jax.agents.bbf.learner import to_train_batch
from bbf_jax.agents.btr.config import ExperimentConfig, derive
from bbf_jax.agents.btr.learner import METRIC_NAMES, NONFINITE_CHECKED, Learner, make_learner
from bbf_jax.config import Derived
from bbf_jax.replay.priorities import per_importance_weights, per_leaf_priorities


def select_actions(learner: Learner, variables, states, key, epsilon, noise: bool):
    """Epsilon-greedy on the mean of ``num_taus`` quantiles (the authors'
    ``choose_action``).

    Args:
      learner: the BTR learner (network and tau count).
      variables: the online network's variables.
      states: ``(N, 84, 84, 4)`` uint8 frame stacks.
      key: PRNG key.
      epsilon: float32 scalar; an action is uniformly random when ``u < epsilon``.
      noise: draw factorised noise (training), shared by the N envs as the authors'
        one noise sample per ``reset_noise``; off in evaluation.

    Returns:
      ``(new_key, actions (N,) int32)``; greedy ties go to the first action.
    """
    key, k_q, k_u, k_rand = jax.random.split(key, 4)
    n = states.shape[0]
    greedy = jnp.argmax(learner.q_values(variables, states, k_q, noise), axis=-1)
    explore = jax.random.uniform(k_u, (n,)) < epsilon
    random = jax.random.randint(k_rand, (n,), 0, learner.num_actions)
    return key, jnp.where(explore, random, greedy).astype(jnp.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class BTRAgent:
    """The BTR agent of one run (build with :func:`make_agent`)."""

    cfg: ExperimentConfig
    learner: Learner
    derived: Derived

    metric_names = METRIC_NAMES
    per_sample_metric = "td_abs_per_sample"
    nonfinite_checked = NONFINITE_CHECKED
    reset_config = None

    def hparams(self):
        return self.learner.default_hparams()

    def schedule(self, cycle_step: int) -> tuple[int, float]:
        """Constant n and gamma (BTR anneals neither)."""
        return self.cfg.agent.update_horizon, self.cfg.agent.gamma

    def epsilon(self, step: int) -> float:
        """Training epsilon after ``step`` env steps: the authors' per-transition update
        ``eps <- eps - (eps - final) / decay_steps`` in closed form,
        ``final + (start - final) * (1 - 1 / decay_steps) ** step``, and 0 from
        ``epsilon_off_after`` env steps on."""
        a = self.cfg.agent
        if step >= a.epsilon_off_after:
            return 0.0
        decay = (1.0 - 1.0 / a.epsilon_decay_steps) ** step
        return float(a.epsilon_final + (a.epsilon_start - a.epsilon_final) * decay)

    @property
    def epsilon_eval(self) -> float:
        return self.cfg.agent.epsilon_eval

    def acting_params(self, state):
        """BTR acts with the online network (its variables, spectral-norm vectors too)."""
        return state.online

    @functools.cached_property
    def select(self):
        return functools.partial(select_actions, self.learner, noise=True)

    @functools.cached_property
    def select_eval(self):
        return functools.partial(select_actions, self.learner, noise=False)

    def to_train_batch(self, sample, batches_to_group: int, batch_size: int):
        """The shared grouping into ``(G, B, ...)`` with PER importance weights
        (``importance_weights``: beta, or alpha for 'code'), normalised per minibatch."""
        a = self.cfg.agent
        exponent = a.per_beta if a.importance_weights == "paper" else a.priority_exponent
        priorities = np.asarray(sample.sampling_priority, np.float32).reshape(
            batches_to_group, batch_size)
        weights = np.concatenate([per_importance_weights(p, exponent) for p in priorities])
        return to_train_batch(sample, batches_to_group, batch_size, weights)

    def priorities(self, indices, per_sample, metrics):
        """Every sampled leaf gets ``(its mean_j sum_i |delta_ij| + 1e-6) ** alpha``."""
        return (np.asarray(indices).reshape(-1).astype(np.int64),
                per_leaf_priorities(per_sample.reshape(-1), self.cfg.agent.priority_exponent))

    def reset(self, state):
        raise NotImplementedError("BTR has no resets")

    def param_count(self, state) -> int:
        return sum(int(np.size(x)) for x in jax.tree.leaves(state.online["params"]))


def make_agent(cfg: ExperimentConfig, num_actions: int, skip_nonfinite: bool = False) -> BTRAgent:
    learner = make_learner(cfg.agent, cfg.network, num_actions, skip_nonfinite=skip_nonfinite)
    return BTRAgent(cfg, learner, derive(cfg.agent))
