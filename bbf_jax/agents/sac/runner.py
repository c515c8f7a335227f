"""SAC + DrQ's runner: one CarRacing env, a frame replay, one update per agent step.

For ``seed_steps`` agent steps actions are uniform in ``[-1, 1]^3``; after that they
are sampled from the policy and each agent step is followed by ``updates_per_step``
gradient steps on minibatches of the :class:`~bbf_jax.replay.frames.FrameReplay`
(each frame stored once). Policy actions live in ``[-1, 1]^3`` and are mapped to
CarRacing's box at the env (:func:`~bbf_jax.agents.sac.learner.to_env_action`). A
time-limit cut is stored without a terminal, so the target bootstraps through it.
Evaluation plays ``num_eval_episodes`` fresh envs with ``tanh(mean)`` every
``eval_every`` agent steps and at the end, reporting raw returns.

Keys and seeds derive from the run seed (:mod:`bbf_jax.seeds`): init, acting
(``fold_in(act, step)``), updates (``fold_in(train, gradient step)``), the training
env, replay sampling and each evaluation's envs. Files: :class:`~bbf_jax.pixel_runs.
PixelRun`'s; no checkpoints.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import tqdm

from bbf_jax.agents.sac.config import ExperimentConfig
from bbf_jax.agents.sac.learner import ACTION_DIM, METRIC_NAMES, Learner, to_env_action
from bbf_jax.envs.car_racing import CarRacing
from bbf_jax.jit_once import jit_once
from bbf_jax.networks import param_count
from bbf_jax.pixel_runs import PixelRun, summary  # noqa: F401 (bbf-train's)
from bbf_jax.replay.frames import FrameReplay
from bbf_jax.seeds import RunSeeds, learner_keys

ACTOR_METRICS = ("actor_loss", "alpha_loss", "entropy")


def make_runner(cfg: ExperimentConfig, base_dir, progress: bool = True) -> SACRunner:
    return SACRunner(cfg, base_dir, progress)


class SACRunner:
    """Trains SAC + DrQ for ``cfg`` into ``base_dir`` (module docstring).

    Raises:
      ValueError: ``base_dir`` already holds a run.
    """

    def __init__(self, cfg: ExperimentConfig, base_dir, progress: bool = True):
        self.cfg = cfg
        self.files = PixelRun(base_dir, "sac", METRIC_NAMES)
        self.progress = progress
        self.seeds = RunSeeds(cfg.run.seed)
        self.train_key, init_key, self.act_key = learner_keys(cfg.run.seed)
        self.learner = Learner(cfg.network, cfg.agent)
        self.env = CarRacing(cfg.env)
        shape = self.env.observation_space.shape
        self.channels = shape[-1] // cfg.env.frame_stack
        self.replay = FrameReplay(cfg.agent.replay_capacity, (*shape[:2], self.channels),
                                  cfg.env.frame_stack, ACTION_DIM, self.seeds.replay)
        self.state = jit_once(self.learner.init, static_argnums=1)(init_key, shape)
        self._act = jax.jit(self.learner.act)
        self._act_eval = jax.jit(self.learner.act_eval)
        self._update = jax.jit(self.learner.update)

    def describe(self) -> str:
        a, e = self.cfg.agent, self.cfg.env
        return (f"bbf-train: sac+drq ({param_count(self.state.params):,} parameters), "
                f"CarRacing-v3 {e.image_size}x{e.image_size} "
                f"{'gray' if e.grayscale else 'RGB'} x{e.frame_stack}, action repeat "
                f"{e.action_repeat}, batch {a.batch_size}, K = M = {a.num_augmentations}, "
                f"{self.cfg.run.num_train_steps:,} agent steps")

    def _newest(self, obs) -> np.ndarray:
        return obs[..., -self.channels:]

    def run(self) -> list[dict]:
        a, run = self.cfg.agent, self.cfg.run
        start = time.time()
        obs, _ = self.env.reset(seed=self.seeds.train_env)
        self.replay.add_first(self._newest(obs))
        episode_return, length, grad_steps = 0.0, 0, 0
        bar = tqdm.tqdm(total=run.num_train_steps, unit="step", disable=not self.progress,
                        dynamic_ncols=True)
        try:
            for step in range(1, run.num_train_steps + 1):
                key = jax.random.fold_in(self.act_key, step)
                if step <= a.seed_steps:
                    action = np.asarray(jax.random.uniform(key, (ACTION_DIM,), minval=-1.0))
                else:
                    action = np.asarray(self._act(self.state.params, obs[None], key))[0]
                # reward: shaped with CarRacingConfig.reward_shaping, else the raw one
                obs, reward, terminated, truncated, info = self.env.step(to_env_action(action))
                self.replay.add_step(action, reward, terminated, self._newest(obs))
                episode_return += info["raw_reward"]
                length += 1
                if terminated or truncated:
                    self.files.episode(step, episode_return, length)
                    episode_return, length = 0.0, 0
                    obs, _ = self.env.reset()
                    self.replay.add_first(self._newest(obs))
                if step > a.seed_steps:
                    for _u in range(a.updates_per_step):
                        batch = self.replay.sample(a.batch_size)
                        actor_step = grad_steps % a.actor_update_period == 0
                        self.state, metrics = self._update(
                            self.state, batch, jax.random.fold_in(self.train_key, grad_steps))
                        grad_steps += 1
                        if actor_step:
                            actor_metrics = metrics
                    if step % run.log_every == 0:
                        # The actor's metrics of the last update that stepped it.
                        values = jax.device_get({**metrics, **{k: actor_metrics[k] for k in
                                                               ACTOR_METRICS}})
                        self.files.train.write({"agent_step": step,
                                                **{k: float(values[k]) for k in METRIC_NAMES}})
                if run.eval_every and step % run.eval_every == 0:
                    self._evaluate(step)
                bar.update(1)
        finally:
            bar.close()
            self.env.close()
        step = run.num_train_steps
        if not self.files.evaluations or self.files.evaluations[-1]["agent_step"] != step:
            self._evaluate(step)
        return [self.files.write_result(
            seed=run.seed, param_count=param_count(self.state.params), agent_steps=step,
            env_steps=step * self.cfg.env.action_repeat, grad_steps=grad_steps,
            wall_time_s=time.time() - start)]

    def _evaluate(self, step: int) -> None:
        self.files.evaluate(
            self.cfg.env, self.cfg.run.num_eval_episodes, self.seeds.evaluation(step).env_seed,
            lambda obs: to_env_action(self._act_eval(self.state.params, obs)), step)
