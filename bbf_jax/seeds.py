"""Every seed and key of a run, derived from the one run seed, one purpose each.

JAX keys come from ``root = PRNGKey(seed)``; ``fold_in(root, i)`` equals
``split(root, n)[i]``, so the first two are the official agent's first split (spec §11):

==========================  =====================================================
learner training stream     ``fold_in(root, 0)`` (per-example noise and augmentation
                            keys, reset keys; split once per dispatch and reset)
network init                ``fold_in(root, 1)`` (bit-identical official init)
acting (training)           ``fold_in(root, 2)``
evaluation round ``r``      ``fold_in(fold_in(root, 3), r)``: the policy key
==========================  =====================================================

Host seeds come from ``SeedSequence(seed, spawn_key=k)`` (the children numpy's
``spawn`` would make), never from the root sequence itself:

==========================  =====================================================
training env's emulator     ``k = (0,)``: ``AtariEnv`` seed
training no-ops             ``k = (1,)``: numpy Generator
replay sampling             ``k = (2,)``: seed of the replay's Generator
evaluation round ``r``      ``k = (3, r, 0)``: no-op Generator; ``k = (3, r, 1)``: the
                            seed that ``evaluate`` spawns one emulator seed per env from
diagnostics held-out batch  ``k = (4,)``: numpy Generator (:mod:`bbf_jax.diagnostics`)
==========================  =====================================================

``r`` is the agent step at which the evaluation runs. Each ``AtariEnv`` derives two
streams from its seed ``s``: the emulator's seed (``ale_seed(s)``) and the sticky-action
draws (``sticky_seed(s)``). Every process of a multi-process run derives the same
values (they all step the same env stream).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

_TRAIN, _INIT, _ACT, _EVAL = 0, 1, 2, 3  # JAX purposes
_ENV, _NOOPS, _REPLAY, _EVAL_HOST, _DIAGNOSTICS = 0, 1, 2, 3, 4  # host purposes


def learner_keys(seed) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(train, init, act)`` uint32[2] keys of the learner; ``seed`` may be traced."""
    root = jax.random.PRNGKey(seed)
    train, init = jax.random.split(root)
    return train, init, jax.random.fold_in(root, _ACT)


def _host(seed: int, *spawn_key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=spawn_key)


def _int(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1, np.uint64)[0])


@dataclasses.dataclass(frozen=True)
class EvalSeeds:
    """Seeds of one evaluation round.

    Attributes:
      policy_key: uint32[2] JAX key of epsilon-greedy action selection.
      noop_seed: numpy SeedSequence of the no-op counts.
      env_seed: ``evaluate``'s ``seed`` (env i's emulator seed is its i-th child).
    """

    policy_key: jax.Array
    noop_seed: np.random.SeedSequence
    env_seed: int


@dataclasses.dataclass(frozen=True)
class RunSeeds:
    """The host-side seeds of a run (module docstring); the learner's keys are
    :func:`learner_keys`."""

    seed: int

    def __post_init__(self):
        if not isinstance(self.seed, int | np.integer) or not 0 <= self.seed < 2**32:
            raise ValueError(f"the run seed must be an integer in [0, 2**32), got {self.seed!r}")

    @property
    def train_env(self) -> int:
        """``AtariEnv`` seed of the training env; a vector of N train envs (BTR) uses
        ``bbf_jax.envs.env_seeds(train_env, N)``, one child seed per env."""
        return _int(_host(self.seed, _ENV))

    @property
    def train_noops(self) -> np.random.SeedSequence:
        return _host(self.seed, _NOOPS)

    @property
    def replay(self) -> int:
        """Seed of the replay buffer's numpy Generator."""
        return _int(_host(self.seed, _REPLAY))

    @property
    def diagnostics(self) -> np.random.SeedSequence:
        """Seed of the Generator that draws the diagnostics' held-out batch."""
        return _host(self.seed, _DIAGNOSTICS)

    def evaluation(self, round_: int) -> EvalSeeds:
        """Seeds of the evaluation run at agent step ``round_``."""
        eval_root = jax.random.fold_in(jax.random.PRNGKey(self.seed), _EVAL)
        return EvalSeeds(
            policy_key=jax.random.fold_in(eval_root, round_),
            noop_seed=_host(self.seed, _EVAL_HOST, round_, 0),
            env_seed=_int(_host(self.seed, _EVAL_HOST, round_, 1)),
        )
