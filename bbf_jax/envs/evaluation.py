"""The evaluation protocol (spec §9.5): one episode on each of N fresh envs, in parallel.

The envs are a plain list of :class:`AtariEnv` stepped in turn. ale-py's C++ vector
env (``ale_py.vector_env.AtariVectorEnv``) is not used, because it does not give the
official semantics:

* with ``life_loss_info=True`` it still emulates all frames of a step in which a life
  is lost, where Dopamine breaks off the frame skip: on Breakout with the same random
  actions the two emulators are one frame apart from the first life loss on (episode
  frame 212 against 211 at agent step 52) and every later observation differs;
* it draws the no-op counts from its own RNG and cannot apply the reset-again rule of
  spec §9.3.

It would be faster only with two threads: ``benchmarks/env_throughput.py`` on the
2-core development machine (while other jobs kept its load near 6-8) measured for 100
envs 1,130 / 780 / 940 agent steps/s (Pong / Breakout / ChopperCommand) for the
``AtariEnv`` list on one core against 1,420 / 810 / 1,040 for the vector env on one
thread and 3,300 / 1,790 / 1,480 on two; on an idle machine one ``AtariEnv`` makes
2,300-3,200 steps/s. Either way an official 100-episode evaluation is bounded by the
network's forward pass on CPU, and exact semantics come first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tqdm

from bbf_jax.config import EnvConfig
from bbf_jax.envs.atari import SCREEN_SIZE, AtariEnv
from bbf_jax.envs.frame_stack import FrameStack


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Raw (unclipped) return and length (agent steps) of each episode, by env index."""

    returns: list[float]
    lengths: list[int]

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))


def env_seeds(seed: int, num_envs: int) -> list[int]:
    """Distinct, deterministic ``AtariEnv`` seeds for ``num_envs`` envs of one run."""
    children = np.random.SeedSequence(seed).spawn(num_envs)
    return [int(c.generate_state(1)[0]) for c in children]


def evaluate(
    game: str,
    config: EnvConfig | None,
    num_episodes: int,
    select_actions: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    seed: int,
    progress: bool = False,
) -> EvalResult:
    """Runs the official evaluation (spec §9.5, runner of §9.2 with ``one_to_one``).

    ``num_episodes`` new envs are built and reset in index order, each with its own
    no-op count drawn from ``rng``. Each loop iteration calls ``select_actions`` once
    with the stacks of the envs still running, (N_live, 84, 84, 4) uint8 in env index
    order, and expects (N_live,) integer actions (epsilon and the network are the
    caller's). A terminal (life loss included) zeroes that env's stack before the new
    frame is pushed; game over or ``config.max_steps_per_episode`` steps finishes the
    env's episode and removes it from the batch.

    Args:
      game: Atari 100k game name.
      config: environment protocol (``EnvConfig()`` if None).
      num_episodes: episodes, one per env (100 officially).
      select_actions: the policy callback.
      rng: draws the no-op counts.
      seed: run seed; the envs' emulator seeds derive from it.
      progress: show a progress bar over finished episodes.

    Returns:
      EvalResult, episodes listed by env index.
    """
    if num_episodes < 1:
        raise ValueError(f"evaluate needs num_episodes >= 1, got {num_episodes}")
    envs = [AtariEnv(game, config, s) for s in env_seeds(seed, num_episodes)]
    stack = FrameStack(num_episodes)
    stack.push(np.stack([env.reset(rng) for env in envs]))
    live = list(range(num_episodes))
    returns: list[float] = [0.0] * num_episodes
    lengths: list[int] = [0] * num_episodes
    bar = tqdm.tqdm(total=num_episodes, desc=f"eval {envs[0].game}", disable=not progress)
    while live:
        actions = np.asarray(select_actions(stack.state))
        if actions.shape != (len(live),):
            raise ValueError(
                f"select_actions returned shape {actions.shape} for {len(live)} live envs; "
                f"expected ({len(live)},)"
            )
        frames = np.empty((len(live), SCREEN_SIZE, SCREEN_SIZE), np.uint8)
        running = np.ones(len(live), bool)
        for b, i in enumerate(live):
            result = envs[i].step(actions[b])
            frames[b] = result.observation
            if result.episode_over:
                returns[i], lengths[i] = envs[i].episode_return, envs[i].episode_length
                envs[i] = None  # frees the emulator
                running[b] = False
                bar.update(1)
            elif result.terminal:
                stack.zero(b)
        stack.push(frames)
        stack.keep(running)
        live = [i for i, r in zip(live, running, strict=True) if r]
    bar.close()
    return EvalResult(returns, lengths)


def play_episodes(envs: list, seeds: list[int],
                  act: Callable[[np.ndarray], np.ndarray],
                  reward_of: Callable[[float, dict], float] = lambda reward, info: reward,
                  ) -> np.ndarray:
    """One episode on each of N fresh gymnasium envs, stepped together (the LunarLander
    and CarRacing agents' evaluations; Atari's official protocol is :func:`evaluate`).

    Env i is reset with ``seeds[i]``. Each loop iteration calls ``act`` once with the
    observations of all N envs (a finished env's last one included; its action is not
    used) and expects N actions; an env stops at termination or truncation. The envs
    are closed at the end.

    Args:
      envs: N gymnasium envs.
      seeds: their reset seeds.
      act: the policy, ``(N, ...)`` observations -> N actions.
      reward_of: what a step adds to the return, from ``(reward, info)`` (default: the
        reward).

    Returns:
      float64 ``(N,)`` episode returns.
    """
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)])
    returns = np.zeros(len(envs))
    running = np.ones(len(envs), bool)
    while running.any():
        actions = np.asarray(act(obs))
        for j in np.flatnonzero(running):
            obs[j], reward, terminated, truncated, info = envs[j].step(actions[j])
            returns[j] += reward_of(reward, info)
            running[j] = not (terminated or truncated)
    for env in envs:
        env.close()
    return returns
