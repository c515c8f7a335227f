"""The episode-based runner of the multi-task agents, over a vector of seeds.

Each seed runs its own experiment: three LunarLander envs (one per task), tasks taking
turns by episode (episode i plays ``tasks[i % num_tasks]``), one shared
:class:`~bbf_jax.replay.multitask.MultiTaskReplay`, epsilon-greedy acting with epsilon
multiplied by ``epsilon_decay`` after each episode, ``updates_per_step`` gradient steps
per env step once ``learning_starts`` transitions are stored, a hard target copy every
``target_update_episodes`` episodes and a greedy evaluation of every task every
``eval_every_episodes`` episodes and after the last.

The seeds step in lockstep: their train states are stacked on a leading seed axis and
each env step makes one ``jax.vmap``-ed dispatch to act for every seed and one to train
every seed (as BRO/BRC vectorise seeds). A seed that has finished its episodes is
frozen (its updates are masked out) while the others go on. Seed ``s`` derives its keys
and generators as the single run of ``seed = s`` (:mod:`bbf_jax.seeds`: init and act
keys, training-env seeds, replay sampling, evaluation env seeds); batching seeds
changes float rounding only.

Each run directory gets ``episodes.csv`` (every training episode: task, return,
length, epsilon), ``train_log.csv`` (loss, gradient norm, mean Q every ``log_every``
env steps; with reward normalisation also each task's reward scale), ``evals.csv``
(every evaluation: per-task means and their average), ``eval.json`` (the final
evaluation with per-task returns and the learning curve) and ``curves.png``.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from bbf_jax.agents.brc.config import TASK_NAMES, ExperimentConfig
from bbf_jax.agents.brc.learner import METRIC_NAMES, Learner, TrainState, make_learner
from bbf_jax.agents.brc.normalizer import RewardNormalizer
from bbf_jax.envs.evaluation import env_seeds, play_episodes
from bbf_jax.envs.lunar import NUM_ACTIONS, STATE_DIM, make_lunar_env
from bbf_jax.jit_once import jit_once
from bbf_jax.metrics_io import CsvLog, fresh_run_dirs
from bbf_jax.networks import param_count
from bbf_jax.replay.multitask import Batch, MultiTaskReplay
from bbf_jax.seed_group import seed_dir
from bbf_jax.seeds import RunSeeds, learner_keys

EPISODE_FIELDS = ["episode", "env_step", "task", "episode_return", "episode_length",
                  "epsilon"]
EVAL_FIELDS = ["episode", "env_step", *TASK_NAMES, "average"]


def scale_columns(cfg: ExperimentConfig) -> list[str]:
    """train_log.csv's reward-scale columns, ``reward_scale/<task>`` per task (with
    reward normalisation only)."""
    if not cfg.agent.reward_normalization:
        return []
    return [f"reward_scale/{t}" for t in cfg.tasks.tasks]


def run_dirs(cfg: ExperimentConfig, base_dir) -> list[pathlib.Path]:
    """The run directory of each seed: ``base_dir`` for one seed (``RunConfig.seed``),
    ``base_dir/seed_<s>`` (:func:`~bbf_jax.seed_group.seed_dir`) for each of
    ``RunConfig.seeds``."""
    if not cfg.run.seeds:
        return [pathlib.Path(base_dir)]
    return [seed_dir(base_dir, s) for s in cfg.run.seeds]


def epsilon_after(agent, episodes: int) -> float:
    """Epsilon after ``episodes`` finished episodes:
    ``max(final, start * decay ** episodes)``."""
    return max(agent.epsilon_final, agent.epsilon_start * agent.epsilon_decay ** episodes)


class _Seed:
    """One seed's host state: envs, replay, normaliser, counters and logs."""

    def __init__(self, cfg: ExperimentConfig, seed: int, run_dir: pathlib.Path):
        a = cfg.agent
        self.seed = seed
        self.seeds = RunSeeds(seed)
        self.dir = run_dir
        self.task_ids = cfg.tasks.task_ids()
        self.envs = [make_lunar_env(t, cfg.tasks) for t in cfg.tasks.tasks]
        self.env_seeds = env_seeds(self.seeds.train_env, len(self.envs))
        self.replay = MultiTaskReplay(a.replay_capacity, len(TASK_NAMES), STATE_DIM,
                                      self.seeds.replay)
        self.normalizer = RewardNormalizer(len(TASK_NAMES), a.gamma, a.v_max)
        self.episodes = 0
        self.env_steps = 0
        self.epsilon = a.epsilon_start
        self.evaluations: list[dict] = []
        self.logs = {
            "episodes": CsvLog(run_dir / "episodes.csv", EPISODE_FIELDS),
            "train": CsvLog(run_dir / "train_log.csv", ["env_step", "episode", *METRIC_NAMES,
                                                        *scale_columns(cfg)]),
            "evals": CsvLog(run_dir / "evals.csv", EVAL_FIELDS),
        }
        self._start_episode()

    @property
    def slot(self) -> int:
        return self.episodes % len(self.envs)

    @property
    def task_id(self) -> int:
        return self.task_ids[self.slot]

    def _start_episode(self) -> None:
        env = self.envs[self.slot]
        first = self.episodes < len(self.envs)  # seeds each env at its first reset
        self.state, _ = env.reset(seed=self.env_seeds[self.slot] if first else None)
        self.rewards: list[float] = []

    def step(self, action: int):
        """One env step; stores the transition; returns ``(episode finished, truncated)``."""
        next_state, reward, terminated, truncated, _ = self.envs[self.slot].step(action)
        self.replay.add(self.state, action, reward, next_state, terminated, self.task_id)
        self.rewards.append(float(reward))
        self.state = next_state
        self.env_steps += 1
        return terminated or truncated, truncated

    def finish_episode(self, agent, truncated: bool) -> None:
        self.normalizer.add_episode(self.task_id, self.rewards, truncated)
        self.logs["episodes"].write({
            "episode": self.episodes + 1, "env_step": self.env_steps,
            "task": TASK_NAMES[self.task_id],
            "episode_return": float(np.sum(self.rewards)),
            "episode_length": len(self.rewards), "epsilon": self.epsilon})
        self.episodes += 1
        self.epsilon = epsilon_after(agent, self.episodes)
        self._start_episode()

    def close(self) -> None:
        for env in self.envs:
            env.close()


class MultiTaskRunner:
    """Trains ``cfg``'s agent for every seed of ``cfg.run`` (one, or ``seeds``).

    Args:
      cfg: the experiment.
      base_dir: output directory; each seed writes :func:`run_dirs`.
      progress: show a progress bar of finished episodes.

    Raises:
      ValueError: a run directory already holding a run's files (runs do not
        resume: choose a new directory).
    """

    def __init__(self, cfg: ExperimentConfig, base_dir, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        seeds = cfg.run.seeds or (cfg.run.seed,)
        dirs = fresh_run_dirs(run_dirs(cfg, base_dir), "multi-task LunarLander")
        self.learner: Learner = make_learner(cfg.network, cfg.agent, NUM_ACTIONS)
        self.members = [_Seed(cfg, s, d) for s, d in zip(seeds, dirs, strict=True)]
        keys = [learner_keys(s) for s in seeds]
        self.state: TrainState = jit_once(jax.vmap(self.learner.init))(
            jnp.stack([k[1] for k in keys]))
        self.act_keys = jnp.stack([k[2] for k in keys])
        self.total_episodes = cfg.agent.episodes_per_task * len(cfg.tasks.tasks)
        self._compile()

    def _compile(self) -> None:
        learner = self.learner

        def act(params, states, task_ids, epsilon, key, step):
            return learner.act(params, states, task_ids, epsilon, jax.random.fold_in(key, step))

        def train(state, batches, reward_scale, active):
            new, metrics = learner.train_steps(state, batches, reward_scale)
            keep = lambda n, o: jnp.where(active, n, o)  # noqa: E731 (a finished seed)
            return jax.tree.map(keep, new, state), metrics

        self._act = jax.jit(jax.vmap(act, in_axes=(0, 0, 0, 0, 0, None)))
        self._train = jax.jit(jax.vmap(train))
        self._sync = jax.jit(jax.vmap(learner.sync_target))

        @functools.partial(jax.jit, static_argnums=1)
        def greedy(params, member, states, task_ids):
            one = jax.tree.map(lambda x: x[member], params)
            return jnp.argmax(learner.q_values(one, states, task_ids), axis=-1)

        self._greedy = greedy

    def describe(self) -> str:
        c, a = self.cfg, self.cfg.agent
        seeds = [m.seed for m in self.members]
        one = jax.tree.map(lambda x: x[0], self.state.params)
        return (f"bbf-train: brc ({c.network.kind}, {a.value_head} head, "
                f"{param_count(one):,} parameters), tasks {', '.join(c.tasks.tasks)}, "
                f"{self.total_episodes} episodes per seed, seeds {seeds} "
                f"({len(seeds)} vmapped)")

    def run(self) -> list[dict]:
        """Trains to the end; returns each seed's final ``eval.json`` content."""
        a = self.cfg.agent
        start = time.time()
        bar = tqdm.tqdm(total=self.total_episodes * len(self.members), unit="episode",
                        disable=not self.progress, dynamic_ncols=True)
        step = 0
        try:
            while True:
                active = [m.episodes < self.total_episodes for m in self.members]
                if not any(active):
                    break
                actions = np.asarray(self._act(
                    self.state.params,
                    np.stack([m.state for m in self.members])[:, None],
                    np.asarray([[m.task_id] for m in self.members], np.int32),
                    np.asarray([m.epsilon for m in self.members], np.float32),
                    self.act_keys, np.int32(step)))[:, 0]
                ended = []
                for i, m in enumerate(self.members):
                    ended.append(m.step(int(actions[i])) if active[i] else (False, False))
                step += 1
                if all(m.replay.size >= a.learning_starts
                       for m, on in zip(self.members, active, strict=True) if on):
                    metrics = self._train_all(active)
                    if step % self.cfg.run.log_every == 0:
                        self._log(metrics, active)
                sync = []
                for i, m in enumerate(self.members):
                    done, truncated = ended[i]
                    sync.append(False)
                    if done:
                        m.finish_episode(a, truncated)
                        bar.update(1)
                        sync[i] = m.episodes % a.target_update_episodes == 0
                if any(sync):
                    self.state = self._sync(self.state, np.asarray(sync))
                for i, m in enumerate(self.members):
                    done = ended[i][0]
                    if done and (m.episodes % a.eval_every_episodes == 0
                                 or m.episodes == self.total_episodes):
                        self._evaluate(i)
                        bar.set_postfix(eval_avg=f"{m.evaluations[-1]['average']:.1f}")
        finally:
            bar.close()
            for m in self.members:
                m.close()
        wall = time.time() - start
        return [self._write_result(m, wall) for m in self.members]

    def _train_all(self, active: list[bool]) -> dict:
        a = self.cfg.agent
        # Fields (seeds, updates_per_step, batch_size, ...).
        per_seed = [m.replay.gather(np.stack([m.replay.sample_indices(a.batch_size,
                                                                      a.task_sampling)
                                              for _ in range(a.updates_per_step)]))
                    for m in self.members]
        stacked = Batch(*(np.stack(field) for field in zip(*per_seed, strict=True)))
        scales = np.stack([m.normalizer.scales() if a.reward_normalization
                           else np.ones(len(TASK_NAMES), np.float32) for m in self.members])
        self.state, metrics = self._train(self.state, stacked, scales, np.asarray(active))
        return metrics

    def _log(self, metrics: dict, active: list[bool]) -> None:
        values = jax.device_get(metrics)
        for i, m in enumerate(self.members):
            if active[i]:
                scales = dict(zip(scale_columns(self.cfg),
                                  m.normalizer.scales()[list(m.task_ids)], strict=False))
                m.logs["train"].write({"env_step": m.env_steps, "episode": m.episodes,
                                       **{k: float(values[k][i]) for k in METRIC_NAMES},
                                       **{k: float(v) for k, v in scales.items()}})

    def _evaluate(self, index: int) -> None:
        """Greedy episodes of every task for seed ``index``, all stepped together."""
        m, a, tasks = self.members[index], self.cfg.agent, self.cfg.tasks
        per_task = a.eval_episodes_per_task
        names = [t for t in tasks.tasks for _ in range(per_task)]
        ids = np.asarray([TASK_NAMES.index(t) for t in names], np.int32)
        seeds = env_seeds(m.seeds.evaluation(m.episodes).env_seed, len(names))
        returns = play_episodes([make_lunar_env(t, tasks) for t in names], seeds,
                                lambda states: self._greedy(self.state.params, index, states,
                                                            ids))
        record = {"episode": m.episodes, "env_step": m.env_steps,
                  "returns": {t: returns[[n == t for n in names]].tolist() for t in tasks.tasks}}
        record.update(summarize_eval(record["returns"]))
        m.evaluations.append(record)
        m.logs["evals"].write({"episode": m.episodes, "env_step": m.env_steps,
                               **record["task_means"], "average": record["average"]})

    def _write_result(self, m: _Seed, wall_time: float) -> dict:
        c = self.cfg
        final = m.evaluations[-1]
        one = jax.tree.map(lambda x: x[0], self.state.params)
        result = {
            "agent_name": "brc",
            "network": c.network.kind,
            "value_head": c.agent.value_head,
            "seed": m.seed,
            "seeds_vmapped": len(self.members),
            "param_count": param_count(one),
            "tasks": list(c.tasks.tasks),
            "episodes": m.episodes,
            "env_steps": m.env_steps,
            "wall_time_s": wall_time,
            "final": final,
            "task_means": final["task_means"],
            "average": final["average"],
            "evaluations": m.evaluations,
        }
        (m.dir / "eval.json").write_text(json.dumps(result, indent=1))
        plot_curves(m.dir)
        return result


def make_runner(cfg: ExperimentConfig, base_dir, progress: bool = True) -> MultiTaskRunner:
    return MultiTaskRunner(cfg, base_dir, progress)


def summary(result: dict) -> str:
    """The line ``bbf-train`` prints for a seed's result."""
    tasks = ", ".join(f"{t} {v:.1f}" for t, v in result["task_means"].items())
    return (f"seed {result['seed']}: average return {result['average']:.1f} ({tasks}) "
            f"after {result['episodes']} episodes, {result['env_steps']} env steps")


def summarize_eval(returns: dict[str, list[float]]) -> dict:
    """``{"task_means": {task: mean return}, "average": mean of the task means}``."""
    means = {t: float(np.mean(r)) for t, r in returns.items()}
    return {"task_means": means, "average": float(np.mean(list(means.values())))}


def plot_curves(run_dir) -> pathlib.Path:
    """``curves.png``: evaluation returns per task and their average, and training
    episode returns, against training episodes."""
    from matplotlib.figure import Figure

    run_dir = pathlib.Path(run_dir)
    result = json.loads((run_dir / "eval.json").read_text())
    fig = Figure(figsize=(10, 4))
    ax_eval, ax_train = fig.subplots(1, 2)
    evals = result["evaluations"]
    x = [e["episode"] for e in evals]
    for task in result["tasks"]:
        ax_eval.plot(x, [e["task_means"][task] for e in evals], label=task, alpha=0.7)
    ax_eval.plot(x, [e["average"] for e in evals], "k-", lw=2, label="average")
    ax_eval.axhline(200.0, color="grey", ls="--", lw=1, label="solved (200)")
    ax_eval.set(xlabel="training episode", ylabel="greedy evaluation return",
                title=f"{result['network']} seed {result['seed']}")
    ax_eval.legend(fontsize=8)
    episodes = np.genfromtxt(run_dir / "episodes.csv", delimiter=",", names=True,
                             dtype=None, encoding=None)
    if episodes.size:
        episodes = np.atleast_1d(episodes)
        for task in result["tasks"]:
            rows = episodes[episodes["task"] == task]
            ax_train.plot(rows["episode"], rows["episode_return"], ".", ms=2, label=task)
    ax_train.set(xlabel="training episode", ylabel="training episode return")
    ax_train.legend(fontsize=8)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    return path
