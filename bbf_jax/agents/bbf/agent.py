"""BBF's side of the runner's agent protocol (:class:`bbf_jax.runner.Agent`).

Everything the Atari runner does differently for BBF lives here: one train env, the
replay-ratio update counts (spec §5.1), annealed n and gamma (spec §6), Dopamine's
linear epsilon, acting with the target network, BBF's importance weights and priority
updates (spec §4.8) and shrink-and-perturb resets (spec §7).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from bbf_jax import schedules
from bbf_jax.agents.bbf import resets
from bbf_jax.agents.bbf.acting import select_actions
from bbf_jax.agents.bbf.config import ExperimentConfig, derive
from bbf_jax.agents.bbf.learner import (
    METRIC_NAMES,
    NONFINITE_CHECKED,
    Learner,
    make_learner,
    to_train_batch,
)
from bbf_jax.config import Derived
from bbf_jax.replay import priorities_to_set


@dataclasses.dataclass(frozen=True, eq=False)
class BBFAgent:
    """The BBF agent of one run (build with :func:`make_agent`)."""

    cfg: ExperimentConfig
    learner: Learner
    derived: Derived

    metric_names = METRIC_NAMES
    per_sample_metric = "dqn_loss_per_sample"
    nonfinite_checked = NONFINITE_CHECKED

    @property
    def reset_config(self):
        """The shrink-and-perturb schedule (spec §7)."""
        return self.cfg.reset

    def hparams(self):
        return self.learner.default_hparams()

    def schedule(self, cycle_step: int) -> tuple[int, float]:
        """n and gamma after ``cycle_step`` gradient steps since the last reset (spec §6)."""
        a = self.cfg.agent
        return schedules.update_horizon_at(cycle_step, a), schedules.gamma_at(cycle_step, a)

    def epsilon(self, step: int) -> float:
        """Training epsilon of the action after ``step`` env steps (spec §6)."""
        return schedules.epsilon_at(step, self.cfg.agent)

    @property
    def epsilon_eval(self) -> float:
        return self.cfg.agent.epsilon_eval

    def acting_params(self, state):
        """The target network for BBF (``target_action_selection``), else the online one."""
        return state.target if self.cfg.agent.target_action_selection else state.online

    @functools.cached_property
    def select(self):
        """Pure ``(params, states (N, 84, 84, 4) uint8, key, epsilon) -> (key, actions
        (N,) int32)`` (:func:`~bbf_jax.agents.bbf.acting.select_actions`)."""
        return functools.partial(select_actions, self.learner.network)

    @property
    def select_eval(self):
        """BBF acts alike in training and evaluation (noise on, spec §8)."""
        return self.select

    to_train_batch = staticmethod(to_train_batch)

    def priorities(self, indices, per_sample, metrics):
        """The replay leaves to update after a dispatch and their priorities (spec §4.8)."""
        return priorities_to_set(indices, per_sample.reshape(-1), metrics["DQNLoss"],
                                 self.cfg.replay.priority_update)

    def reset(self, state):
        """Shrink-and-perturb (pure; the runner jits it once)."""
        return resets.reset_state(self.learner, state, self.cfg.reset)

    def param_count(self, state) -> int:
        return sum(int(np.size(x)) for x in jax.tree.leaves(state.online))


def make_agent(cfg: ExperimentConfig, num_actions: int, skip_nonfinite: bool = False) -> BBFAgent:
    learner = make_learner(cfg.agent, cfg.network, num_actions, skip_nonfinite=skip_nonfinite)
    return BBFAgent(cfg, learner, derive(cfg.agent, n_envs=1))
