"""The Atari training loop of every replay agent (spec §9.2, §11): host state at the
edges, math in jit.

The runner owns the envs, the replay, checkpoints, logs and evaluation; what differs
between agents comes from an :class:`Agent` (``bbf_jax/agents/<name>/agent.py``). It
steps ``N = agent.num_envs`` train envs as one vector (one env for BBF, 64 for BTR);
``agent_step`` counts env steps, ``N`` per vector step. Order of operations in the
vector step that starts at ``agent_step = i`` (``v = i / N``), as in the official agent
and runner (for BBF, ``N = 1`` and ``v = i``):

1. train, if more than ``min_replay_history`` transitions are stored and
   ``v % update_period == 0``: per dispatch, take the prefetched group, run G gradient
   steps, start sampling the next group (n and gamma of the new cycle step), then
   update priorities;
2. reset check on ``i`` (shrink-and-perturb, schedules restart), for agents with resets;
3. act with ``agent.epsilon(i + N)`` (the target network for BBF);
4. step the envs; store ``(o_t, a_t, clip(r_t), d_t, episode_end)`` of each; on an
   episode end reset that env with random no-ops and zero its stack, on a life loss
   zero its stack.

The official stop test is ``total_steps > num_train_steps``, so ``num_train_steps + 1``
agent steps run (spec §9.4; with N envs, the first multiple of N beyond
``num_train_steps``). Evaluation follows (spec §9.5). Logging, evaluation and
checkpoint intervals fire at the vector step that reaches or crosses a multiple of
theirs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import sys
import time
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

import bbf_jax
from bbf_jax import agents, faults, metrics_io, parallel, schedules
from bbf_jax import checkpoint as ckpt
from bbf_jax.atari_games import human_normalized_score
from bbf_jax.config import Derived
from bbf_jax.diagnostics import Diagnostics
from bbf_jax.envs import AtariEnv, FrameStack, clip_reward, env_seeds, evaluate
from bbf_jax.jit_once import jit_once
from bbf_jax.replay import BatchPipeline, ReplaySample, SubsequenceReplay
from bbf_jax.report.curves import plot_run_curves
from bbf_jax.report.verdict import verdict_for_run
from bbf_jax.seeds import RunSeeds


class Agent(Protocol):
    """What the runner needs of an agent (``bbf_jax.agents.<name>.agent.make_agent``).

    Attributes:
      learner: the pure learner: ``init(seed) -> state``, ``train_steps(state, batches
        (G, B, ...), hparams) -> (state, metrics)`` (metrics: the scalars of
        ``metric_names`` and ``NonFinite``, each ``(G,)``, and ``per_sample_metric``
        ``(G, B)``), ``agent.batch_size``.
      derived: update counts (``update_period`` in vector steps).
      metric_names: the scalar training metrics logged (train_log.csv columns).
      per_sample_metric: the learner's per-sample metric that :meth:`priorities` reads.
      nonfinite_checked: the quantities bit i of the learner's ``NonFinite`` stands for.
      reset_config: a ``ResetConfig`` for agents with shrink-and-perturb resets, else None.
      select: pure ``(params, states (N, 84, 84, 4) uint8, key, epsilon) -> (key,
        actions (N,) int32)`` of training.
      select_eval: the same for evaluation; ``select`` itself where the agent acts
        alike in both (one compilation).
    """

    learner: Any
    derived: Derived
    metric_names: tuple[str, ...]
    per_sample_metric: str
    nonfinite_checked: tuple[str, ...]
    reset_config: Any
    select: Any
    select_eval: Any

    def hparams(self) -> Any: ...
    def schedule(self, cycle_step: int) -> tuple[int, float]: ...
    def epsilon(self, step: int) -> float: ...
    @property
    def epsilon_eval(self) -> float: ...
    def acting_params(self, state) -> Any: ...
    def to_train_batch(self, sample: ReplaySample, batches_to_group: int,
                       batch_size: int) -> Any: ...
    def priorities(self, indices, per_sample, metrics) -> tuple[np.ndarray, np.ndarray]: ...
    def reset(self, state) -> Any: ...
    def param_count(self, state) -> int: ...


def fingerprint(cfg) -> dict:
    """What a resumed run must share with its checkpoint: every config but the run's
    budgets, intervals and non-finite policy (a seed of a group shares it with its
    single run, with either ``seed_batching``)."""
    run = dataclasses.asdict(cfg.run)
    for k in ("num_train_steps", "num_eval_episodes", "eval_every", "log_every",
              "checkpoint_every", "diagnostics_every", "on_nonfinite", "seeds",
              "seed_batching"):
        run.pop(k)
    fp = {f.name: dataclasses.asdict(getattr(cfg, f.name))
          for f in dataclasses.fields(cfg) if f.name != "run"}
    fp["run"] = run
    return json.loads(json.dumps(fp, default=list))


def params_digest(params) -> str:
    """sha256 of the acting parameters' bytes (leaves in tree order), to compare runs."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def schedule_summary(cfg, derived: Derived, num_devices: int, num_envs: int = 1) -> str:
    """The updates, budget and devices of a run, as its start-up line states them (shared
    by a single run's and a seed group's ``describe``)."""
    d = derived
    step = "agent step(s)" if num_envs == 1 else f"vector step(s) of {num_envs} envs"
    return (
        f"{d.gradient_steps_per_update} gradient step(s) every {d.update_period} {step} "
        f"in groups of {d.batches_to_group}, {total_steps(cfg, num_envs):,} agent "
        f"steps, {num_devices} device(s) [{jax.devices()[0].platform}]"
    )


def total_steps(cfg, num_envs: int = 1) -> int:
    """Agent (env) steps a run makes: the official ``num_train_steps + 1``, rounded up to
    whole vector steps of ``num_envs``."""
    return -(-(cfg.run.num_train_steps + 1) // num_envs) * num_envs


def crossed(step: int, num_envs: int, every: int) -> bool:
    """Whether the vector step that ended at env step ``step`` reached or crossed a
    multiple of ``every`` (with one env: ``step % every == 0``)."""
    return step // every > (step - num_envs) // every


class Runner:
    """One training run of one game and seed, writing everything under ``base_dir``.

    Args:
      cfg: the experiment configuration (an agent's ``ExperimentConfig``).
      base_dir: output folder (logs, checkpoints, eval.json); an existing checkpoint
        there is resumed.
      config_files: names of the gin files, recorded in eval.json.
      progress: show a progress bar.
      resume_from: which checkpoint to resume: None (the newest), a step, or
        'latest_valid' (the newest that can be read; see :meth:`_resume`).
    """

    def __init__(self, cfg, base_dir, config_files=(), progress: bool = True,
                 resume_from: int | str | None = None):
        self.cfg = cfg
        self.base_dir = pathlib.Path(base_dir)
        self.config_files = [pathlib.Path(f).name for f in config_files]
        self.progress = progress
        self.resume_from = resume_from
        self.seeds = RunSeeds(cfg.run.seed)
        # P processes compute the run of one: each steps the same env stream (same
        # seeds, actions broadcast from process 0), holds the same replay, draws the same
        # global group and feeds its own B / P rows of every minibatch. Process 0 alone
        # writes logs and evaluates.
        self.primary = jax.process_index() == 0
        n = agents.num_envs(cfg)
        # One env keeps the run seed's own env seed; a vector spawns one per env.
        seeds = [self.seeds.train_env] if n == 1 else env_seeds(self.seeds.train_env, n)
        self.envs = [AtariEnv(cfg.env.game, cfg.env, seed=s) for s in seeds]
        self.env = self.envs[0]  # game and action set (the same for every env)
        self.agent = agents.make_agent(cfg, self.env.num_actions,
                                       skip_nonfinite=cfg.run.on_nonfinite == "skip")
        self.learner, self.derived = self.agent.learner, self.agent.derived
        self.num_envs = n
        self.mesh = parallel.make_mesh(cfg.run.num_devices)
        self.train_fn = parallel.make_parallel_train_steps(self.learner, self.mesh)
        put = parallel.make_put_fn(self.mesh, self.derived.batches_to_group,
                                  cfg.agent.batch_size, self.agent.to_train_batch)
        # The device batch, plus the host indices its priorities are written back to.
        self.put_batch = lambda sample: (put(sample), sample.indices)
        init_state = self.learner.init(cfg.run.seed)
        self.state = parallel.replicate(init_state, self.mesh)
        # The live acting key stays on the host side (acting runs on local devices).
        self.act_rng = self._like_acting_params(init_state.act_rng)
        self.noop_rng = np.random.default_rng(self.seeds.train_noops)
        self.replay = SubsequenceReplay.from_config(
            cfg.replay, self.derived, n_envs=n, seed=self.seeds.replay
        )
        self.pipeline: BatchPipeline | None = None
        self.hparams = self.agent.hparams()
        self._select = jax.jit(self.agent.select)
        # None: the agent acts alike in evaluation (one compilation, ``_select``).
        self._select_eval = (None if self.agent.select_eval is self.agent.select
                             else jax.jit(self.agent.select_eval))
        self._reset = jit_once(self.agent.reset) if self.agent.reset_config else None
        self.stack = FrameStack(n, cfg.replay.stack_size)
        # Loop counters (host side).
        self.agent_step = 0
        self.grad_steps = 0
        self.cycle_step = 0
        self.next_reset = (schedules.first_next_reset(self.agent.reset_config)
                           if self.agent.reset_config else 0)
        self.num_resets = 0
        self.episodes = 0
        self.frames = None  # (N, 84, 84) uint8: newest raw frame of each current state (o_t)
        self._log_acc: dict[str, list] = {}
        # Plasticity diagnostics: computed on every process (identical checkpoints),
        # logged by process 0.
        every = cfg.run.diagnostics_every
        self.diagnostics = Diagnostics(
            self.learner.network, every, self.derived.batches_to_group, self.seeds.diagnostics
        ) if every else None
        self._diag_row: dict[str, float] = {}
        # Set (to the signal number) by a signal handler: the run then stops after the
        # current agent step with a checkpoint (:class:`Preempted`).
        self.stop_signal: int | None = None
        self.skipped_updates = 0  # gradient steps dropped by on_nonfinite = 'skip'
        # Set by :meth:`run`: the checkpointer, and the log of finished saves.
        self.checkpointer: ckpt.RunCheckpointer | None = None
        self._checkpoint_log = metrics_io.NullLog()
        self.bar = self.tb = None  # progress bar and TensorBoard writer while running

    # --------------------------------------------------------------- setup
    def describe(self) -> str:
        """One line on what this run is."""
        n_params = self.agent.param_count(self.state)
        summary = schedule_summary(self.cfg, self.derived, self.mesh.size, self.num_envs)
        return (
            f"bbf-train: {agents.agent_name(self.cfg)}, {self.env.game} "
            f"({self.env.num_actions} actions), seed {self.cfg.run.seed}, {n_params:,} "
            f"parameters, {summary}, output in {self.base_dir}"
        )

    def _pipeline(self) -> BatchPipeline:
        if self.pipeline is None:
            group = self.derived.group_size  # the global group, on every process
            self.pipeline = BatchPipeline(
                lambda n, gamma: self.replay.sample(group, n, gamma),
                self.put_batch,
                mode=self.cfg.replay.prefetch,
            )
        return self.pipeline

    def _start_episodes(self) -> None:
        """Resets every env with random no-ops (env 0 first) and zeroes the stacks."""
        self.frames = np.stack([env.reset(self.noop_rng) for env in self.envs])
        self.stack.zero(slice(None))
        self.stack.push(self.frames)

    # ------------------------------------------------------------ training
    def _schedule(self) -> tuple[int, float]:
        return self.agent.schedule(self.cycle_step)

    def _train_due(self, i: int) -> bool:
        """Whether the vector step starting at agent step ``i`` trains (the official
        test: more than ``min_replay_history`` transitions stored, on the update period)."""
        n = self.num_envs
        return (self.replay.add_count * n > self.cfg.agent.min_replay_history
                and (i // n) % self.derived.update_period == 0)

    def _train_once(self) -> None:
        pipeline = self._pipeline()
        batch, indices = pipeline.get(*self._schedule())
        before = self._diagnostics_before()
        self.state, metrics = self.train_fn(self.state, batch, self.hparams)
        self._advance()
        per_sample = parallel.all_rows(metrics.pop(self.agent.per_sample_metric))
        metrics = jax.device_get(parallel.local_replica(metrics))
        self._record(metrics, per_sample, indices, before)

    def _diagnostics_before(self):
        """The diagnostics' snapshot before a dispatch that ends at a diagnostic, else None."""
        diag = self.diagnostics
        if diag is not None and diag.due(self.grad_steps):
            return diag.snapshot(parallel.local_replica(self.state.online))
        return None

    def _advance(self) -> None:
        """Counts a dispatch and starts sampling the next group (drawn while the device
        computes)."""
        g = self.derived.batches_to_group
        self.grad_steps += g
        self.cycle_step += g
        self.pipeline.launch(*self._schedule())

    def _record(self, metrics: dict, per_sample: np.ndarray, indices, before) -> None:
        """After a dispatch: non-finite check, priorities, metrics and diagnostics.

        ``metrics`` holds the dispatch's host metrics ``(G,)`` (without the per-sample
        metric), ``per_sample`` the agent's ``(G, B)`` per-sample metric and
        ``indices`` the replay indices of the group.
        """
        self.pipeline.sync()  # no buffer mutation while a sample is being drawn
        nonfinite = metrics.pop("NonFinite")
        if nonfinite.any():
            self._on_nonfinite(nonfinite, metrics, indices)
            return  # 'skip': the steps were dropped; no priorities, nothing logged
        if self.cfg.replay.prioritized:
            self.replay.update_priorities(*self.agent.priorities(indices, per_sample, metrics))
        for k in self.agent.metric_names:
            self._log_acc.setdefault(k, []).append(float(np.mean(metrics[k])))
        if before is not None:
            local = parallel.local_replica(self.state)
            self._diag_row = self.diagnostics.run(local.online, local.target, before,
                                                  self.replay)

    def _on_nonfinite(self, flags, metrics, indices) -> None:
        """'stop': writes ``base_dir/nonfinite`` and raises :class:`faults.NonFiniteStop`;
        'skip': counts the dropped steps and says so (at 1, 2, 4, ... of them)."""
        first = self.grad_steps - self.derived.batches_to_group + 1
        checked = self.agent.nonfinite_checked
        message = faults.nonfinite_message(flags, self.agent_step, first, checked)
        if self.cfg.run.on_nonfinite == "skip":
            self.skipped_updates += int(np.count_nonzero(flags))
            if self.primary and self.skipped_updates & (self.skipped_updates - 1) == 0:
                print(f"bbf-train: skipped the update: {message} "
                      f"({self.skipped_updates} skipped so far)", file=sys.stderr, flush=True)
            return
        directory = self.base_dir / "nonfinite"
        if self.checkpointer is not None:
            self._saved(self.checkpointer.wait())  # the newest checkpoint, complete
        if self.primary:
            faults.write_nonfinite_report(directory, message, self.agent_step, first, flags,
                                          metrics, indices, self.base_dir / "checkpoints",
                                          checked)
        raise faults.NonFiniteStop(message, directory)

    def _acting_params(self):
        return parallel.local_replica(self.agent.acting_params(self.state))

    def _like_acting_params(self, key):
        """``key`` placed as the acting parameters are, so that ``_select`` sees the
        shardings of its own output key from the first call on and compiles once per
        shape."""
        return jax.device_put(key, jax.tree.leaves(self._acting_params())[0].sharding)

    def _act(self, epsilon: float) -> np.ndarray:
        key, actions = self._select(
            self._acting_params(), self.stack.state, self.act_rng, jnp.float32(epsilon)
        )
        self.act_rng = key
        # Every process computes the same actions; process 0's are authoritative, so that
        # float differences between hosts (e.g. autotuned kernels) cannot fork the
        # env streams.
        return parallel.from_process_0(np.asarray(actions))

    def step(self) -> list[dict]:
        """One vector step (train, reset check, act, env steps, store); returns the
        stats of the episodes it finished."""
        i = self.agent_step
        if self._train_due(i):
            for _ in range(self.derived.dispatches_per_update):
                self._train_once()
        if self._reset_due(i):
            self.state = self._reset(self.state)
        return self._env_step(self._act(self.agent.epsilon(i + self.num_envs)))

    def _reset_due(self, i: int) -> bool:
        """The reset check of agent step ``i``; when it fires, counts the reset and
        restarts the schedules (the caller resets the train state)."""
        reset = self.agent.reset_config
        if reset is None or reset.reset_every <= 0:
            return False
        do_reset, self.next_reset = schedules.reset_check(i, self.next_reset, reset)
        if do_reset:
            self.cycle_step = 0
            self.num_resets += 1
            if self.diagnostics is not None:
                self.diagnostics.after_reset = True
        return do_reset

    def _env_step(self, actions: np.ndarray) -> list[dict]:
        """Steps env k with ``actions[k]`` and stores the transitions; returns the stats
        of the episodes that ended (env order)."""
        n = self.num_envs
        results = [env.step(int(a)) for env, a in zip(self.envs, actions, strict=True)]
        self.replay.add(
            self.frames, actions, [clip_reward(r.reward) for r in results],
            [r.terminal for r in results], [r.episode_over for r in results],
        )
        episodes, frames = [], np.empty_like(self.frames)
        for k, (env, result) in enumerate(zip(self.envs, results, strict=True)):
            if result.episode_over:
                episodes.append({"agent_step": self.agent_step + n,
                                 "episode_return": env.episode_return,
                                 "episode_length": env.episode_length})
                frames[k] = env.reset(self.noop_rng)
            else:
                frames[k] = result.observation
            if result.episode_over or result.terminal:
                self.stack.zero(k)
        self.episodes += len(episodes)
        self.frames = frames
        self.stack.push(frames)
        self.agent_step += n
        return episodes

    # ---------------------------------------------------------- evaluation
    def evaluate(self, num_episodes: int) -> dict:
        """The official evaluation (spec §9.5) with the acting network and epsilon_eval."""
        cfg = self.cfg
        params = self._acting_params()
        seeds = self.seeds.evaluation(self.agent_step)
        key = self._like_acting_params(seeds.policy_key)
        eps = jnp.float32(self.agent.epsilon_eval)
        select = self._select_eval or self._select

        def policy(states):
            nonlocal key
            n = states.shape[0]
            bucket = 1 << (n - 1).bit_length()  # few shapes -> few compilations
            padded = np.zeros((bucket,) + states.shape[1:], states.dtype)
            padded[:n] = states
            key, actions = select(params, padded, key, eps)
            return np.asarray(actions)[:n]

        result = evaluate(
            cfg.env.game, cfg.env, num_episodes, policy,
            np.random.default_rng(seeds.noop_seed), seed=seeds.env_seed, progress=self.progress,
        )
        mean = float(np.mean(result.returns))
        return {
            "agent_name": agents.agent_name(cfg),
            "game": self.env.game,
            "seed": cfg.run.seed,
            "agent_steps": self.agent_step,
            "grad_steps": self.grad_steps,
            "num_processes": jax.process_count(),
            "eval_episodes": num_episodes,
            "returns": [float(r) for r in result.returns],
            "lengths": [int(n) for n in result.lengths],
            "mean_return": mean,
            "human_normalized_score": human_normalized_score(self.env.game, mean),
            "config": self.config_files,
            "bbf_jax_version": bbf_jax.__version__,
            "params_sha256": params_digest(params),
        }

    # ---------------------------------------------------------- checkpoints
    def _saved(self, report: ckpt.SaveReport | None) -> None:
        """Prints and logs a finished save (process 0)."""
        if report is None or not self.primary:
            return
        print(report.line(), flush=True)
        self._checkpoint_log.write({"agent_step": report.step,
                                    "size_bytes": report.size_bytes,
                                    "blocking_seconds": report.blocking_seconds,
                                    "total_seconds": report.total_seconds})

    def _save(self, checkpointer: ckpt.RunCheckpointer) -> None:
        """Starts the checkpoint of this agent step (written in the background)."""
        pending = self.pipeline.pending() if self.pipeline is not None else []
        env_states = [{k: np.asarray(v) for k, v in env.clone_state().items()}
                      for env in self.envs]
        host = {
            "replay": ckpt.flat_to_tree(self.replay.state_dict()),
            "pending": {str(j): dict(s._asdict()) for j, s in enumerate(pending)},
            # One env: its state alone (the single-env layout); a vector: one per env.
            "env": env_states[0] if self.num_envs == 1 else {
                str(k): s for k, s in enumerate(env_states)},
            "stack": self.stack.state,
            "frame": self.frames[0] if self.num_envs == 1 else self.frames,
            "act_rng": np.asarray(self.act_rng),
        }
        if self.diagnostics is not None and self.diagnostics.state_dict():
            host["diagnostics"] = self.diagnostics.state_dict()
        meta = {
            "fingerprint": fingerprint(self.cfg),
            "agent_step": self.agent_step,
            "grad_steps": self.grad_steps,
            "cycle_step": self.cycle_step,
            "next_reset": self.next_reset,
            "num_resets": self.num_resets,
            "episodes": self.episodes,
            "pipeline": self.pipeline is not None,
            "noop_rng": self.noop_rng.bit_generator.state,
            "log_acc": self._log_acc,
            "diagnostics_after_reset": bool(self.diagnostics and self.diagnostics.after_reset),
            "skipped_updates": self.skipped_updates,
        }
        self._saved(checkpointer.save(
            self.agent_step, jax.device_get(parallel.local_replica(self.state)), host, meta))

    def _restore(self, checkpointer: ckpt.RunCheckpointer, step: int) -> None:
        state, host, meta = checkpointer.restore(
            step, jax.device_get(parallel.local_replica(self.state))
        )
        ckpt.check_fingerprint(meta["fingerprint"], fingerprint(self.cfg), checkpointer.directory)
        self.state = parallel.replicate(state, self.mesh)
        try:
            self.replay.load_state_dict(ckpt.tree_to_flat(host["replay"]))
            env_states = ([host["env"]] if self.num_envs == 1
                          else [host["env"][str(k)] for k in range(self.num_envs)])
            for env, env_state in zip(self.envs, env_states, strict=True):
                env.restore_state(env_state)
        except (KeyError, ValueError) as e:
            raise ckpt.CheckpointError(f"checkpoint {step} does not fit this run: {e}") from None
        self.stack.state[...] = host["stack"]
        self.frames = np.asarray(host["frame"]).reshape(self.stack.state.shape[:-1])
        self.act_rng = self._like_acting_params(jnp.asarray(host["act_rng"], jnp.uint32))
        for k in ("agent_step", "grad_steps", "cycle_step", "next_reset", "num_resets",
                  "episodes"):
            setattr(self, k, int(meta[k]))
        self.noop_rng.bit_generator.state = meta["noop_rng"]
        self._log_acc = {k: list(v) for k, v in meta["log_acc"].items()}
        if self.diagnostics is not None:
            self.diagnostics.load_state_dict(host.get("diagnostics", {}))
            self.diagnostics.after_reset = bool(meta.get("diagnostics_after_reset", False))
        self.skipped_updates = int(meta.get("skipped_updates", 0))
        if meta["pipeline"]:
            try:
                samples = [ReplaySample(**host["pending"][str(j)])
                           for j in range(len(host["pending"]))]
            except TypeError:
                raise ckpt.CheckpointError(
                    f"checkpoint {step} holds prefetched batches of another layout "
                    f"(fields {sorted(host['pending']['0'])}); this bbf_jax cannot resume it"
                ) from None
            self._pipeline().restore_pending(samples)

    def _resume(self, checkpointer: ckpt.RunCheckpointer) -> int | None:
        """Restores the checkpoint chosen by ``resume_from`` and returns its step (None:
        nothing to resume). Checkpoints newer than it are moved aside
        (:meth:`~bbf_jax.checkpoint.RunCheckpointer.discard_after`).

        Raises:
          CheckpointError: no usable checkpoint; with 'latest_valid', an unreadable one
            is reported and the next older one tried, but one of another run is an error.
        """
        steps = checkpointer.all_steps()
        if not steps and self.resume_from in (None, "latest_valid"):
            return None
        for step in ckpt.resume_candidates(steps, self.resume_from):
            try:
                self._restore(checkpointer, step)
                break
            except ckpt.CheckpointMismatch:
                raise
            except ckpt.CheckpointError as e:
                if self.resume_from != "latest_valid" or step == steps[0]:
                    raise
                if self.primary:
                    reason = str(e).removesuffix(ckpt.RESUME_HINT)
                    print(f"bbf-train: skipping checkpoint {step}: {reason}", flush=True)
        discarded = checkpointer.discard_after(step)
        if discarded and self.primary:
            print(f"bbf-train: moved checkpoints {discarded} to "
                  f"{self.base_dir / 'checkpoints_discarded'}", flush=True)
        return step

    def _stop_if_signalled(self, checkpointer: ckpt.RunCheckpointer) -> None:
        """Saves and raises :class:`faults.Preempted` once a signal has arrived. Process 0's
        flag decides, so that every process stops after the same agent step."""
        signum = parallel.from_process_0(self.stop_signal or 0)
        if signum:
            if checkpointer.latest_step() != self.agent_step:
                self._save(checkpointer)
            self._saved(checkpointer.wait())
            raise faults.Preempted(self.agent_step, signum)

    # ------------------------------------------------------------------ run
    def run(self) -> dict | None:
        """Trains (resuming from ``base_dir`` if a checkpoint exists), evaluates, and
        writes ``eval.json``; returns its content (None on processes other than 0,
        which neither log nor evaluate)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        parallel.wait_for_all_processes("bbf_jax_run_start")
        # Every process takes part in each save (orbax synchronises them); the state
        # saved is the same on all.
        checkpointer = self.checkpointer = ckpt.RunCheckpointer(self.base_dir)
        try:
            self._open_logs(self._resume(checkpointer))
            while self.agent_step < self.cfg.run.num_train_steps + 1:
                self._after_step(self.step(), checkpointer)
                self._stop_if_signalled(checkpointer)
            self._final_save(checkpointer)
            self._stop_if_signalled(checkpointer)
            return self._finish(checkpointer)
        finally:
            self._close()
            self.checkpointer = None
            self._saved(checkpointer.close())

    def _open_logs(self, resumed: int | None, member: bool = False) -> None:
        """Opens the logs (truncated to the resumed step) and the progress bar (a member
        of a :class:`~bbf_jax.seed_group.SeedGroup` has none, and its group says what it
        resumed); starts the first episode of a fresh run."""
        log = metrics_io.CsvLog if self.primary else metrics_io.NullLog
        diag_names = (self.diagnostics.metric_names(parallel.local_replica(self.state.online))
                      if self.diagnostics is not None else [])
        self.train_log = log(
            self.base_dir / "train_log.csv",
            ["agent_step", "grad_steps", "num_resets", "steps_per_second",
             *self.agent.metric_names, *diag_names],
        )
        self.episode_log = log(
            self.base_dir / "episodes.csv", ["agent_step", "episode_return", "episode_length"]
        )
        self._checkpoint_log = log(
            self.base_dir / "checkpoints.csv",
            ["agent_step", "size_bytes", "blocking_seconds", "total_seconds"],
        )
        if resumed is not None:
            if self.primary and not member:
                print(f"bbf-train: resumed at agent step {self.agent_step}", flush=True)
            for f in (self.train_log, self.episode_log, self._checkpoint_log):
                f.truncate_after(self.agent_step)
        else:
            self._start_episodes()
        self.tb = (metrics_io.TensorBoard if self.primary else metrics_io.NullLog)(
            self.base_dir, purge_step=self.agent_step or None
        )
        self.bar = tqdm.tqdm(total=total_steps(self.cfg, self.num_envs), initial=self.agent_step,
                             desc=f"train {self.env.game}",
                             disable=member or not (self.progress and self.primary), unit="step",
                             dynamic_ncols=True,
                             mininterval=0.5 if sys.stderr.isatty() else 30.0)
        self._window = (time.perf_counter(), self.agent_step)
        self._last_return = None

    def _after_step(self, episodes: list[dict], checkpointer: ckpt.RunCheckpointer) -> None:
        """Logs the vector step just made, evaluates and saves when due."""
        cfg, n = self.cfg, self.num_envs
        self.bar.update(n)
        for episode in episodes:
            self.episode_log.write(episode)
            self.tb.scalars(episode["agent_step"], {
                "Train/EpisodeReturn": episode["episode_return"],
                "Train/EpisodeLength": episode["episode_length"],
            })
            self._last_return = episode["episode_return"]
        diag_row, self._diag_row = self._diag_row, {}
        if crossed(self.agent_step, n, cfg.run.log_every) and self._log_acc:
            now = time.perf_counter()
            window_start, window_step = self._window
            sps = (self.agent_step - window_step) / max(now - window_start, 1e-9)
            self._window = (now, self.agent_step)
            row = {k: float(np.mean(v)) for k, v in self._log_acc.items()}
            self._log_acc = {}
            row.update(agent_step=self.agent_step, grad_steps=self.grad_steps,
                       num_resets=self.num_resets, steps_per_second=sps, **diag_row)
            self.train_log.write(row)
            self.tb.scalars(self.agent_step, {f"Train/{k}": row[k] for k in
                                              (*self.agent.metric_names, "steps_per_second")})
            postfix = {"loss": f"{row['TotalLoss']:.3f}"}
            if self._last_return is not None:
                postfix["return"] = self._last_return
            self.bar.set_postfix(postfix, refresh=False)
        elif diag_row:  # a row of its own, other metrics blank
            self.train_log.write(dict(diag_row, agent_step=self.agent_step,
                                      grad_steps=self.grad_steps, num_resets=self.num_resets))
        self.tb.scalars(self.agent_step, diag_row)
        total = cfg.run.num_train_steps + 1
        if self.primary and cfg.run.eval_every \
                and crossed(self.agent_step, n, cfg.run.eval_every) and self.agent_step < total:
            result = self.evaluate(cfg.run.num_eval_episodes)
            with (self.base_dir / "evals.jsonl").open("a") as f:
                f.write(json.dumps(result) + "\n")
            self.tb.scalars(self.agent_step, {"Eval/AverageReturns": result["mean_return"]})
        if cfg.run.checkpoint_every and crossed(self.agent_step, n, cfg.run.checkpoint_every):
            self._save(checkpointer)
        else:
            self._saved(checkpointer.poll())

    def _final_save(self, checkpointer: ckpt.RunCheckpointer) -> None:
        self.bar.close()
        if checkpointer.latest_step() != self.agent_step:
            self._save(checkpointer)

    def _finish(self, checkpointer: ckpt.RunCheckpointer) -> dict | None:
        """The final evaluation (while the last checkpoint is written), verdict,
        ``eval.json`` and ``curves.png`` (process 0)."""
        if not self.primary:
            self._saved(checkpointer.wait())
            return None
        result = self.evaluate(self.cfg.run.num_eval_episodes)
        self._saved(checkpointer.wait())
        result["verdict"] = verdict_for_run(result, self.cfg, self.progress)
        self.tb.scalars(self.agent_step, {
            "Eval/AverageReturns": result["mean_return"],
            "Eval/NormalizedScore": result["human_normalized_score"]})
        tmp = self.base_dir / "eval.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(self.base_dir / "eval.json")
        plot_run_curves(self.base_dir, self.base_dir / "curves.png")
        return result

    def _close(self) -> None:
        for log in (self.bar, self.tb):
            if log is not None:
                log.close()
        if self.pipeline is not None:
            self.pipeline.close()
