"""Host-side schedules: n-step horizon, discount, epsilon and reset timing (spec §6, §7.1).

Pure NumPy functions of a step counter and the frozen configs, evaluated on the host
exactly as the official agent evaluates them (float64 NumPy for the annealing
schedules, float32 for epsilon, Python ints for reset bookkeeping).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bbf_jax.agents.bbf.config import AgentConfig, ResetConfig
from bbf_jax.config import QuirkMode


def exponential_decay(
    step: float,
    decay_period: float,
    warmup: float,
    initial: float,
    final: float,
    reverse: bool = False,
    zero_period: QuirkMode = "official",
) -> float:
    """Geometric interpolation from ``initial`` to ``final`` over ``decay_period`` steps (§6).

    ``bonus = clip((decay_period + warmup - step) / decay_period, 0, 1)`` and the value is
    ``exp(bonus * (ln a - ln b) + ln b)`` with ``a, b = initial, final``; with
    ``reverse=True`` the interpolation runs on ``1 - initial`` and ``1 - final`` and the
    result is complemented, so ``1 - value`` decays geometrically (used for gamma).

    ``decay_period == 0`` switches from initial to final at ``warmup``. The official code
    then forgets to complement the reversed values (``zero_period='official'`` returns
    ``1 - initial`` / ``1 - final``); ``'corrected'`` returns ``initial`` / ``final``.
    """
    if zero_period not in ("official", "corrected"):
        raise ValueError(
            f"exponential_decay: zero_period={zero_period!r} is not one of "
            "['official', 'corrected']"
        )
    a, b = (1 - initial, 1 - final) if reverse else (initial, final)
    if decay_period == 0:
        if reverse and zero_period == "corrected":
            a, b = initial, final
        return float(a if step < warmup else b)
    start, end = np.log(a), np.log(b)
    bonus = np.clip((decay_period + warmup - step) / decay_period, 0.0, 1.0)
    value = np.exp(bonus * (start - end) + end)
    return float(1 - value if reverse else value)


def update_horizon_at(cycle_step: int, agent: AgentConfig) -> int:
    """n of the n-step return after ``cycle_step`` gradient steps since the last reset (§6).

    ``n = round(max_n * exponential_decay(s, cycle_steps, 0, 1, n / max_n))`` with NumPy's
    round-half-to-even; constant ``update_horizon`` when ``max_update_horizon`` is None.
    BBF: 10 falling to 3, changing at s = 427, 1350, 2390, 3579, 4966, 6633, 8720.
    """
    if agent.max_update_horizon is None:
        return int(agent.update_horizon)
    ratio = agent.update_horizon / agent.max_update_horizon
    frac = exponential_decay(cycle_step, agent.cycle_steps, 0, 1, ratio)
    return int(np.round(frac * agent.max_update_horizon))


def gamma_at(cycle_step: int, agent: AgentConfig) -> float:
    """Discount after ``cycle_step`` gradient steps since the last reset (§6).

    ``1 - gamma`` decays geometrically from ``1 - min_gamma`` to ``1 - gamma`` over
    ``cycle_steps``; constant ``gamma`` when ``min_gamma`` is None or ``cycle_steps <= 1``.
    """
    if agent.min_gamma is None or agent.cycle_steps <= 1:
        return float(agent.gamma)
    return exponential_decay(
        cycle_step, agent.cycle_steps, 0, agent.min_gamma, agent.gamma, reverse=True
    )


def epsilon_at(step: int, agent: AgentConfig, eval_mode: bool = False) -> float:
    """Exploration epsilon at env step counter ``step`` (Dopamine ``linearly_decaying_epsilon``).

    ``eps = eps_f + clip((1 - eps_f) * (decay + warmup - step) / decay, 0, 1 - eps_f)``
    with ``decay = epsilon_decay_period``, ``warmup = min_replay_history`` and
    ``eps_f = epsilon_train``, evaluated in float32 in the official order (the official
    function is jitted), so values equal the official ones bitwise. ``step`` is the
    agent's training-step counter at action time (env step index + 1, §6). In eval mode
    it is ``epsilon_eval``.
    """
    if eval_mode:
        return float(agent.epsilon_eval)
    f32 = np.float32
    # Python-float constants are folded in double before they meet the float32 step.
    # XLA then compiles ``(c * steps_left) / decay`` as ``steps_left * (c * (1 / decay))``
    # with the constants folded in float32; true division differs in the last bit for
    # about a third of the steps.
    steps_left = f32(agent.epsilon_decay_period + agent.min_replay_history) - f32(step)
    coef = f32(1.0 - agent.epsilon_train) * (f32(1.0) / f32(agent.epsilon_decay_period))
    bonus = steps_left * coef
    bonus = np.clip(bonus, f32(0.0), f32(1.0 - agent.epsilon_train))
    return float(f32(agent.epsilon_train) + bonus)


def first_next_reset(reset: ResetConfig) -> int:
    """Initial ``next_reset``: ``reset_every + 1`` ('official') or ``reset_every`` ('v2023')."""
    return reset.reset_every + _reset_offset(reset)


def reset_check(training_steps: int, next_reset: int, reset: ResetConfig) -> tuple[bool, int]:
    """One end-of-train-step reset check (spec §7.1).

    Called once per training-mode agent step with the step counter before it is
    incremented. An attempt fires when ``training_steps > next_reset`` ('official') or
    ``>= next_reset`` ('v2023'); it moves ``next_reset`` to ``training_steps + reset_every``
    and is *skipped* (no reset, counter still moved) when that exceeds
    ``no_resets_after + offset`` (offset 1 for 'official', 0 for 'v2023').

    Returns:
      ``(perform_reset, new_next_reset)``.
    """
    if reset.reset_every <= 0:
        return False, next_reset
    offset = _reset_offset(reset)
    due = (
        training_steps > next_reset
        if reset.timing == "official"
        else (training_steps >= next_reset)
    )
    if not due:
        return False, next_reset
    new_next = training_steps + reset.reset_every
    return new_next <= reset.no_resets_after + offset, new_next


@dataclasses.dataclass(frozen=True)
class ResetTrace:
    """What the reset bookkeeping did over a run.

    Attributes:
      resets: agent steps (``training_steps`` values) at which weights were reset.
      attempts: reset attempts, performed or skipped (official ``cumulative_resets``).
      final_next_reset: the ``next_reset`` counter at the end.
    """

    resets: tuple[int, ...]
    attempts: int
    final_next_reset: int


def reset_trace(reset: ResetConfig, num_agent_steps: int) -> ResetTrace:
    """Runs :func:`reset_check` for ``training_steps = 0 .. num_agent_steps - 1``."""
    next_reset = first_next_reset(reset)
    resets, attempts = [], 0
    for step in range(num_agent_steps):
        perform, new_next = reset_check(step, next_reset, reset)
        if new_next != next_reset:  # a due attempt always moves the counter
            attempts += 1
        next_reset = new_next
        if perform:
            resets.append(step)
    return ResetTrace(tuple(resets), attempts, next_reset)


def reset_steps(reset: ResetConfig, num_train_steps: int) -> list[int]:
    """Agent steps at which a run of ``num_train_steps`` resets its weights (spec §7.1).

    The official runner makes ``num_train_steps + 1`` training agent steps (§9.4) and
    checks for a reset in every one of them (learning need not have started). BBF with
    100,000 steps: [20002, 40003, 60004] ('official'), [20000, 40000, 60000, 80000] ('v2023').
    """
    return list(reset_trace(reset, num_train_steps + 1).resets)


def _reset_offset(reset: ResetConfig) -> int:
    # The current official code delays the first reset by reset_offset = 1 and widens
    # the no_resets_after bound by the same amount; the 2023 code has neither.
    return 1 if reset.timing == "official" else 0
