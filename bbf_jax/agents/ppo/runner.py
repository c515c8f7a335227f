"""PPO's runner: rollouts of N CarRacing envs, one jitted update per rollout.

Each iteration steps the vector env (:func:`~bbf_jax.envs.car_racing.make_vector_env`)
``rollout_length`` times with sampled actions (a Gaussian's are clipped to the box at
the env; the stored action is the sample), computes GAE over the rollout
(:func:`bbf_jax.gae.gae`) and makes one dispatch of ``num_epochs`` x minibatch updates.
An episode cut by its time limit bootstraps: its last reward becomes
``r + gamma V(final observation)`` (Stable-Baselines3's rule). Iterations run until
``RunConfig.num_train_steps`` agent steps (all envs together) are reached or passed.
Evaluation plays ``num_eval_episodes`` fresh envs with the deterministic action (the
Beta's mode or the Gaussian's mean) and reports the raw env returns, every
``eval_every`` agent steps (at the first update after each multiple) and at the end.

Keys and seeds derive from the run seed (:mod:`bbf_jax.seeds`): network init, acting
(``fold_in(act, vector step)``), the update's shuffling (``fold_in(train, update)``),
the training envs and each evaluation's envs. The run directory's files are
:class:`~bbf_jax.pixel_runs.PixelRun`'s; no checkpoints.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from bbf_jax.agents.ppo.config import ExperimentConfig
from bbf_jax.agents.ppo.learner import (
    ACTION_HIGH,
    ACTION_LOW,
    METRIC_NAMES,
    Rollout,
    make_learner,
)
from bbf_jax.envs.car_racing import make_vector_env
from bbf_jax.gae import gae
from bbf_jax.jit_once import jit_once
from bbf_jax.networks import param_count
from bbf_jax.pixel_runs import PixelRun, summary  # noqa: F401 (bbf-train's)
from bbf_jax.runner import crossed
from bbf_jax.seeds import RunSeeds, learner_keys


def raw_rewards(info: dict, num_envs: int) -> np.ndarray:
    """Each env's raw (unshaped) reward of a vector step: from ``info``, or from
    ``info["final_info"]`` for an env that the step reset (its ``info`` is then the new
    episode's reset info)."""
    out = np.zeros(num_envs)
    for part in (info, info.get("final_info", {})):
        if "raw_reward" in part:
            mask = part["_raw_reward"]
            out[mask] = part["raw_reward"][mask]
    return out


def update_loop(agent) -> str:
    """``PPOAgentConfig.update_loop`` resolved: 'auto' is 'dispatch' on the CPU backend,
    'scan' on accelerators."""
    if agent.update_loop != "auto":
        return agent.update_loop
    return "dispatch" if jax.default_backend() == "cpu" else "scan"


def make_update(learner):
    """``(state, rollout, key) -> (state, metrics)`` as :func:`update_loop` says."""
    if update_loop(learner.agent) == "scan":
        return jax.jit(learner.update)
    step = jax.jit(learner.minibatch_step)
    take = jax.jit(lambda rollout, rows: jax.tree.map(lambda x: x[rows], rollout))
    return lambda state, rollout, key: learner.update_stepwise(state, rollout, key, step, take)


def make_runner(cfg: ExperimentConfig, base_dir, progress: bool = True) -> PPORunner:
    return PPORunner(cfg, base_dir, progress)


class PPORunner:
    """Trains PPO for ``cfg`` into ``base_dir`` (see the module docstring).

    Raises:
      ValueError: ``base_dir`` already holds a run.
    """

    def __init__(self, cfg: ExperimentConfig, base_dir, progress: bool = True):
        self.cfg = cfg
        self.files = PixelRun(base_dir, "ppo", METRIC_NAMES)
        self.progress = progress
        a = cfg.agent
        self.seeds = RunSeeds(cfg.run.seed)
        self.train_key, init_key, self.act_key = learner_keys(cfg.run.seed)
        self.learner = make_learner(cfg.network, a)
        self.envs, self.env_seeds = make_vector_env(cfg.env, a.num_envs, self.seeds.train_env)
        self.state = jit_once(self.learner.init, static_argnums=1)(
            init_key, self.envs.single_observation_space.shape)
        self._act = jax.jit(self.learner.act)
        self._value = jax.jit(lambda p, o: self.learner.distribution(p, o)[1])
        self._act_eval = jax.jit(self.learner.act_eval)
        self._update = make_update(self.learner)

    def describe(self) -> str:
        a, e = self.cfg.agent, self.cfg.env
        return (f"bbf-train: ppo ({a.policy} policy, {param_count(self.state.params):,} "
                f"parameters), CarRacing-v3 {e.image_size}x{e.image_size} "
                f"{'gray' if e.grayscale else 'RGB'} x{e.frame_stack}, action repeat "
                f"{e.action_repeat}, {a.num_envs} envs x {a.rollout_length} steps per "
                f"update, {self.cfg.run.num_train_steps:,} agent steps")

    def run(self) -> list[dict]:
        a, run = self.cfg.agent, self.cfg.run
        per_update = a.num_envs * a.rollout_length
        num_updates = -(-run.num_train_steps // per_update)
        start = time.time()
        obs, _ = self.envs.reset(seed=self.env_seeds)
        returns = np.zeros(a.num_envs)
        lengths = np.zeros(a.num_envs, np.int64)
        step = 0
        bar = tqdm.tqdm(total=num_updates * per_update, unit="step", disable=not self.progress,
                        dynamic_ncols=True)
        try:
            for update in range(num_updates):
                buf = {k: [] for k in ("obs", "actions", "log_probs", "values", "rewards",
                                       "terminals")}
                for _ in range(a.rollout_length):
                    key = jax.random.fold_in(self.act_key, step // a.num_envs)
                    actions, log_probs, values = jax.device_get(
                        self._act(self.state.params, obs, key))
                    env_actions = np.clip(actions, ACTION_LOW, ACTION_HIGH)
                    next_obs, reward, terminated, truncated, info = self.envs.step(env_actions)
                    reward = np.asarray(reward, np.float32)
                    cut = truncated & ~terminated
                    if cut.any():
                        final = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)])
                        reward[cut] += a.gamma * np.asarray(
                            self._value(self.state.params, final))
                    for k, v in zip(buf, (obs, actions, log_probs, values, reward,
                                          terminated | truncated), strict=True):
                        buf[k].append(v)
                    returns += raw_rewards(info, a.num_envs)
                    lengths += 1
                    step += a.num_envs
                    for i in np.flatnonzero(terminated | truncated):
                        self.files.episode(step, returns[i], lengths[i])
                        returns[i], lengths[i] = 0.0, 0
                    obs = next_obs
                    bar.update(a.num_envs)
                self._train(update, buf, obs, step)
                if run.eval_every and crossed(step, per_update, run.eval_every):
                    self._evaluate(step)
        finally:
            bar.close()
            self.envs.close()
        if not self.files.evaluations or self.files.evaluations[-1]["agent_step"] != step:
            self._evaluate(step)
        c = self.cfg
        return [self.files.write_result(
            policy=a.policy, seed=run.seed, param_count=param_count(self.state.params),
            agent_steps=step, env_steps=step * c.env.action_repeat,
            wall_time_s=time.time() - start)]

    def _train(self, update: int, buf: dict, last_obs, step: int) -> None:
        a = self.cfg.agent
        stacked = {k: np.stack(v) for k, v in buf.items()}  # (T, N, ...)
        last_values = self._value(self.state.params, last_obs)
        advantages, returns = gae(stacked["rewards"], stacked["values"], stacked["terminals"],
                                  last_values, a.gamma, a.gae_lambda)
        flat = lambda x: jnp.reshape(x, (-1, *x.shape[2:]))  # noqa: E731
        rollout = Rollout(flat(stacked["obs"]), flat(stacked["actions"]),
                          flat(stacked["log_probs"]), flat(advantages), flat(returns))
        self.state, metrics = self._update(self.state, rollout,
                                           jax.random.fold_in(self.train_key, update))
        if crossed(step, a.num_envs * a.rollout_length, self.cfg.run.log_every):
            values = jax.device_get(metrics)
            self.files.train.write({"agent_step": step,
                                    **{k: float(values[k]) for k in METRIC_NAMES}})

    def _evaluate(self, step: int) -> None:
        """``num_eval_episodes`` fresh envs, deterministic actions, raw returns."""
        self.files.evaluate(self.cfg.env, self.cfg.run.num_eval_episodes,
                            self.seeds.evaluation(step).env_seed,
                            lambda obs: self._act_eval(self.state.params, obs), step)
