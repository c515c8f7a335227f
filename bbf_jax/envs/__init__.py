"""Atari 100k environments with the official (Dopamine 4.0.5) protocol (spec §8, §9).

* :class:`AtariEnv`: one game, frame skip 4 with max-pooled grayscale 84x84
  observations, life-loss terminals without game resets, random no-op starts.
* :class:`FrameStack`: the agent's (N, 84, 84, 4) stacks, zeroed on terminals.
* :func:`evaluate`: one episode on each of N fresh envs in parallel (spec §9.5).
"""

from bbf_jax.envs.atari import SCREEN_SIZE, AtariEnv, StepResult, clip_reward, pool_and_resize
from bbf_jax.envs.evaluation import EvalResult, env_seeds, evaluate
from bbf_jax.envs.frame_stack import FrameStack

__all__ = [
    "SCREEN_SIZE",
    "AtariEnv",
    "EvalResult",
    "FrameStack",
    "StepResult",
    "clip_reward",
    "env_seeds",
    "evaluate",
    "pool_and_resize",
]
