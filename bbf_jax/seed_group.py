"""Vectorised seeds: N runs of one configuration trained together in one process.

A :class:`SeedGroup` (``RunConfig.seeds``, ``bbf-train --seeds 0 1 2 3``) holds one
:class:`~bbf_jax.runner.Runner` per seed for everything on the host (env, replay buffer
with its background prefetcher, frame stack, counters, logs, checkpoints, evaluation),
each writing ``base_dir/seed_<s>/`` as the single run of that seed would. The device work
of all seeds is grouped: the train states are stacked on a leading seed axis, and each
agent step makes one dispatch per training call that runs the G gradient steps of every
seed (:func:`~bbf_jax.parallel.make_group_train_steps`), one reset of every seed and one
act of every seed. ``RunConfig.seed_batching`` says how a dispatch runs the seeds
(:func:`~bbf_jax.parallel.over_seeds`): 'vmap' batches them into one program, 'map' runs
them one after another. All seeds share the configuration, so they train, reset and
checkpoint at the same agent steps.

Seed ``s`` derives every key and generator as the single run of ``seed = s``
(:mod:`bbf_jax.seeds`) and its checkpoints carry that run's fingerprint: a seed's
directory can be resumed as a single run and vice versa. With 'map' its results are the
single run's bit for bit; with 'vmap' they equal them up to float rounding, which
batching changes (README, "Vectorised seeds").

Data parallelism composes: with ``RunConfig.num_devices = D`` every minibatch of every
seed is split over the D devices. A group runs in one process (several processes are
refused).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from bbf_jax import checkpoint as ckpt
from bbf_jax import faults, parallel, schedules
from bbf_jax.agents.bbf import resets
from bbf_jax.agents.bbf.acting import select_actions
from bbf_jax.agents.bbf.config import ExperimentConfig, ResetConfig
from bbf_jax.agents.bbf.learner import Learner
from bbf_jax.jit_once import jit_once
from bbf_jax.runner import Runner, schedule_summary


def member_config(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The configuration of seed ``seed``'s run: the single run of that seed."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=seed, seeds=()))


def seed_dir(base_dir, seed: int) -> pathlib.Path:
    """The run directory of seed ``seed`` of a group in ``base_dir``."""
    return pathlib.Path(base_dir) / f"seed_{seed}"


def _stack(trees):
    return jax.tree.map(lambda *x: np.stack(x), *jax.device_get(trees))


def make_group_select(learner: Learner, batching: str):
    """Jitted acting of N seeds: ``fn(params, states, keys, epsilon) -> (keys, actions)``
    with ``params`` (N stacked parameter trees), ``states`` ``(N, 1, 84, 84, S)`` uint8,
    ``keys`` ``(N, 2)`` uint32 and ``epsilon`` a float32 scalar; returns the N new keys
    and the ``(N, 1)`` int32 actions, seed k's as the single run's
    :func:`~bbf_jax.agents.bbf.acting.select_actions` (bit for bit with ``batching = 'map'``)."""
    network = learner.network
    return jax.jit(parallel.over_seeds(
        lambda params, states, key, eps: select_actions(network, params, states, key, eps),
        batching, num_shared=1))


def make_group_reset(learner: Learner, reset: ResetConfig, batching: str):
    """Jitted reset of N seeds: ``fn(states) -> states`` on N train states stacked on a
    leading axis, seed k's as the single run's :func:`~bbf_jax.agents.bbf.resets.reset_state` (bit
    for bit with ``batching = 'map'``). Compiled as the single run's reset
    (:func:`~bbf_jax.jit_once.jit_once`: it runs a few times per run)."""
    return jit_once(parallel.over_seeds(
        lambda s: resets.reset_state(learner, s, reset), batching))


class _Member(Runner):
    """A seed's runner whose train state and acting key are its slice of the group's
    stacked ones (read for evaluation and checkpoints, written by a restore)."""

    group: SeedGroup | None = None
    index = 0

    @property
    def state(self):
        if self.group is None:
            return self._own_state
        return jax.tree.map(lambda x: x[self.index], self.group.state)

    @state.setter
    def state(self, value):
        if self.group is None:
            self._own_state = value
        else:
            g = self.group
            g.state = jax.tree.map(lambda s, v: s.at[self.index].set(v), g.state, value)

    @property
    def act_rng(self):
        if self.group is None:
            return self._own_act_rng
        return self.group.act_rng[self.index]

    @act_rng.setter
    def act_rng(self, value):
        if self.group is None:
            self._own_act_rng = value
        else:
            self.group.act_rng = self.group.act_rng.at[self.index].set(value)


class SeedGroup:
    """The runs of ``cfg.run.seeds``, trained in lockstep (module docstring).

    Args:
      cfg: the experiment configuration; ``cfg.run.seeds`` names the seeds.
      base_dir: output folder; seed ``s`` writes ``base_dir/seed_<s>/``.
      config_files, progress: as for :class:`~bbf_jax.runner.Runner`.
      resume_from: None (the newest checkpoint step that every seed has), a step, or
        'latest_valid' (the newest common step that every seed can read).
    """

    def __init__(self, cfg: ExperimentConfig, base_dir, config_files=(), progress: bool = True,
                 resume_from: int | str | None = None):
        if not cfg.run.seeds:
            raise ValueError("a SeedGroup needs RunConfig.seeds")
        if jax.process_count() > 1:
            raise ValueError(f"RunConfig.seeds with {jax.process_count()} processes is not "
                             "supported: a group of seeds runs in one process (its devices "
                             "may split every minibatch, RunConfig.num_devices)")
        self.cfg = cfg
        self.base_dir = pathlib.Path(base_dir)
        self.resume_from = resume_from
        self.progress = progress
        self.members = [
            _Member(member_config(cfg, s), seed_dir(base_dir, s), config_files, progress)
            for s in cfg.run.seeds
        ]
        lead = self.members[0]
        self.derived, self.mesh, learner = lead.derived, lead.mesh, lead.learner
        self.hparams = lead.hparams
        replicated = parallel.replicated(self.mesh)
        self.state = jax.device_put(_stack([m.state for m in self.members]), replicated)
        self.act_rng = jax.device_put(_stack([m.act_rng for m in self.members]), replicated)
        for k, m in enumerate(self.members):
            del m._own_state, m._own_act_rng
            m.group, m.index = self, k
            m._select = lead._select  # evaluation: one compilation for all seeds
        batching = cfg.run.seed_batching
        self.train_fn = parallel.make_group_train_steps(learner, self.mesh, batching)
        self._select = make_group_select(learner, batching)
        self._reset = make_group_reset(learner, cfg.reset, batching)
        self.stop_signal: int | None = None  # set by a signal handler, as Runner's

    @property
    def agent_step(self) -> int:
        return self.members[0].agent_step

    def describe(self) -> str:
        """One line on what this group is."""
        lead, cfg = self.members[0], self.cfg
        n_params = sum(x.size for x in jax.tree.leaves(lead.state.online))
        return (
            f"bbf-train: {lead.env.game} ({lead.env.num_actions} actions), seeds "
            f"{', '.join(map(str, cfg.run.seeds))} ({len(self.members)} runs, seed_batching "
            f"'{cfg.run.seed_batching}'), {n_params:,} parameters each, "
            f"{schedule_summary(cfg, self.derived, self.mesh.size)}, "
            f"output in {self.base_dir}/seed_<seed>"
        )

    # ------------------------------------------------------------ training
    def _train_once(self) -> None:
        got = [m._pipeline().get(*m._schedule()) for m in self.members]
        before = [m._diagnostics_before() for m in self.members]
        self.state, metrics = self.train_fn(self.state, tuple(b for b, _ in got), self.hparams)
        for m in self.members:
            m._advance()
        per_sample = parallel.all_rows(metrics.pop("dqn_loss_per_sample"))  # (N, G, B)
        metrics = jax.device_get(metrics)
        for k, m in enumerate(self.members):
            m._record({name: v[k] for name, v in metrics.items()}, per_sample[k], got[k][1],
                      before[k])

    def _acting_params(self):
        return self.state.target if self.cfg.agent.target_action_selection else self.state.online

    def step(self) -> list[list[dict]]:
        """One agent step of every seed (train, reset check, act, env steps); returns each
        seed's finished episode's stats (a list, empty or of one)."""
        i = self.agent_step
        if self.members[0]._train_due(i):  # every seed has stored i transitions
            for _ in range(self.derived.dispatches_per_update):
                self._train_once()
        due = [m._reset_due(i) for m in self.members]  # the same for every seed
        if due[0]:
            self.state = self._reset(self.state)
        actions = self._act(schedules.epsilon_at(i + 1, self.cfg.agent))
        return [m._env_step(actions[k:k + 1]) for k, m in enumerate(self.members)]

    def _act(self, epsilon: float) -> np.ndarray:
        """Every seed's action on its frame stack: ``(N,)`` int32 (one dispatch)."""
        states = np.stack([m.stack.state for m in self.members])  # (N, 1, 84, 84, S)
        self.act_rng, actions = self._select(self._acting_params(), states, self.act_rng,
                                             jnp.float32(epsilon))
        return np.asarray(actions)[:, 0]

    # ---------------------------------------------------------- checkpoints
    def _resume(self, checkpointers) -> int | None:
        """Restores every seed from one checkpoint step (``resume_from``) and returns it
        (None: nothing to resume). Each seed saves its own checkpoints, so a process that
        died between two seeds' saves leaves the newest step on some seeds only: the
        group resumes from the newest step that all have, and each seed moves its newer
        checkpoints aside.

        Raises:
          CheckpointError: no step common to all seeds, or (as for a single run) no
            usable one.
        """
        steps = [set(c.all_steps()) for c in checkpointers]
        if not any(steps) and self.resume_from in (None, "latest_valid"):
            return None
        common = sorted(set.intersection(*steps))
        if not common and self.resume_from in (None, "latest_valid"):
            have = "; ".join(f"{m.base_dir.name}: {sorted(s) or 'none'}"
                             for m, s in zip(self.members, steps, strict=True))
            raise ckpt.CheckpointError(
                f"the seeds' checkpoints have no step in common ({have}); move the seed "
                f"directories without a usable checkpoint aside to start them afresh")
        candidates = ([self.resume_from] if isinstance(self.resume_from, int)
                      else common[::-1] if self.resume_from == "latest_valid" else common[-1:])
        for step in candidates:
            try:
                for m, c in zip(self.members, checkpointers, strict=True):
                    m.resume_from = step
                    m._resume(c)
            except ckpt.CheckpointMismatch:
                raise
            except ckpt.CheckpointError as e:
                if self.resume_from != "latest_valid" or step == candidates[-1]:
                    raise
                reason = str(e).removesuffix(ckpt.RESUME_HINT)
                print(f"bbf-train: skipping checkpoint {step}: {reason}", flush=True)
                continue
            # A restore writes each seed's slice; keep the layout the programs expect.
            replicated = parallel.replicated(self.mesh)
            self.state = jax.device_put(self.state, replicated)
            self.act_rng = jax.device_put(self.act_rng, replicated)
            return step
        return None

    def _stop_if_signalled(self, checkpointers) -> None:
        if self.stop_signal:
            for m, c in zip(self.members, checkpointers, strict=True):
                if c.latest_step() != self.agent_step:
                    m._save(c)
            for m, c in zip(self.members, checkpointers, strict=True):
                m._saved(c.wait())
            raise faults.Preempted(self.agent_step, self.stop_signal)

    # ------------------------------------------------------------------ run
    def run(self) -> list[dict]:
        """Trains every seed (resuming the group if its directories hold checkpoints),
        evaluates each and writes its ``eval.json``; returns their contents in seed
        order."""
        checkpointers = []
        try:
            for m in self.members:
                m.base_dir.mkdir(parents=True, exist_ok=True)
                checkpointers.append(ckpt.RunCheckpointer(m.base_dir))
                m.checkpointer = checkpointers[-1]
            resumed = self._resume(checkpointers)
            if resumed is not None:
                print(f"bbf-train: resumed {len(self.members)} seeds at agent step "
                      f"{self.agent_step}", flush=True)
            for m in self.members:
                m._open_logs(resumed, member=True)
            total = self.cfg.run.num_train_steps + 1
            bar = tqdm.tqdm(
                total=total, initial=self.agent_step, desc=f"train {len(self.members)} seeds",
                disable=not self.progress, unit="step", dynamic_ncols=True, mininterval=30.0)
            with bar:
                while self.agent_step < total:
                    episodes = self.step()
                    for m, ended, c in zip(self.members, episodes, checkpointers, strict=True):
                        m._after_step(ended, c)
                    bar.update(1)
                    self._stop_if_signalled(checkpointers)
            for m, c in zip(self.members, checkpointers, strict=True):
                m._final_save(c)
            self._stop_if_signalled(checkpointers)
            return [m._finish(c) for m, c in zip(self.members, checkpointers, strict=True)]
        finally:
            for m in self.members:
                m._close()
            for m, c in zip(self.members, checkpointers, strict=True):
                m.checkpointer = None
                m._saved(c.close())
