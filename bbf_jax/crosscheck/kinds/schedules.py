"""Kind ``schedules``: n-step, gamma, tau and epsilon schedules and reset timing (spec §6, §7.1).

A JSON-only fixture (README §5): ``fixture.meta`` holds the official values keyed by
step. The agent and reset configs are rebuilt from the fixture's own ``config`` and
``agent_attributes`` and every table is recomputed with :mod:`bbf_jax.schedules`.
"""

from __future__ import annotations

import re

import numpy as np

from bbf_jax import tolerance
from bbf_jax.crosscheck.fixture_io import Fixture, FixtureError, Row, compare

KIND = "schedules"

# Integer tables (n, reset steps) are exact. The float tables are short elementwise
# expressions: the float64 ones (gamma, unrounded n, tau) a power or exp/log of the
# platform's libm, correct to about an ulp each (four roundings allowed); epsilon the
# official jitted float32 arithmetic (a few multiply-adds, four roundings); the support
# jnp.linspace (start + i * step, two roundings).
F64_OPS = 4
F32_OPS = 4
_TABLES = ("update_horizon_n", "gamma", "epsilon_train", "reset_schedule")


def matches(fixture: Fixture) -> bool:
    return not fixture.arrays and all(k in fixture.meta for k in _TABLES)


def _field(fixture: Fixture, *path):
    node = fixture.meta
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise FixtureError(f"{fixture.path.name}: missing JSON field {'/'.join(path)!r}")
        node = node[key]
    return node


def _steps(table: dict) -> list[int]:
    return [int(k) for k in table]


def _whole(fixture: Fixture, value, name: str):
    """An integer setting that the official code may store as a float (2000.0)."""
    if value is None:
        return None
    if float(value) != int(value):
        raise FixtureError(f"{fixture.path.name}: {name} = {value!r} is not a whole number")
    return int(value)


def _configs(fixture: Fixture):
    from bbf_jax.agents.bbf.config import AgentConfig, ResetConfig

    cfg = _field(fixture, "config")
    attrs = _field(fixture, "agent_attributes")
    if cfg.get("max_target_update_tau") is not None:
        raise FixtureError(f"{fixture.path.name}: an annealed target_update_tau is not supported")
    offset = attrs.get("reset_offset", 0)
    if offset not in (0, 1):
        raise FixtureError(f"{fixture.path.name}: reset_offset {offset} is not 0 or 1")
    agent = AgentConfig(
        cycle_steps=int(_field(fixture, "config", "cycle_steps")),
        update_horizon=int(_field(fixture, "config", "update_horizon(final)")),
        max_update_horizon=_whole(fixture, cfg.get("max_update_horizon(initial)"),
                                  "max_update_horizon"),
        min_gamma=cfg.get("min_gamma(initial)"),
        gamma=float(_field(fixture, "config", "gamma(final)")),
        target_update_tau=float(_field(fixture, "config", "target_update_tau")),
        min_replay_history=_whole(fixture, _field(fixture, "agent_attributes",
                                                  "min_replay_history"), "min_replay_history"),
        epsilon_decay_period=_whole(fixture, _field(fixture, "agent_attributes",
                                                    "epsilon_decay_period"),
                                    "epsilon_decay_period"),
        epsilon_train=float(_field(fixture, "agent_attributes", "epsilon_train")),
        epsilon_eval=float(_field(fixture, "epsilon_eval")),
    )
    reset = ResetConfig(
        reset_every=int(_field(fixture, "agent_attributes", "reset_every")),
        no_resets_after=int(_field(fixture, "agent_attributes", "no_resets_after")),
        timing="official" if offset == 1 else "v2023",
    )
    return agent, reset


def verify(fixture: Fixture) -> list[Row]:
    from bbf_jax import distributional, schedules

    agent, reset = _configs(fixture)
    rows: list[Row] = []

    def table(name, fn, dtype):
        stored = _field(fixture, name)
        actual = np.array([fn(s) for s in _steps(stored)], dtype)
        expected = np.array(list(stored.values()), dtype)
        rows.append(_compare(name, actual, expected))

    table("update_horizon_n", lambda s: schedules.update_horizon_at(s, agent), np.int64)
    if "update_horizon_n_unrounded" in fixture.meta:
        ratio = agent.update_horizon / agent.max_update_horizon
        table(
            "update_horizon_n_unrounded",
            lambda s: (
                schedules.exponential_decay(s, agent.cycle_steps, 0, 1, ratio)
                * agent.max_update_horizon
            ),
            np.float64,
        )
    changes_key = "update_horizon_n_change_points(step: new n)"
    if changes_key in fixture.meta:
        stored = _field(fixture, changes_key)
        ns = [schedules.update_horizon_at(s, agent) for s in range(agent.cycle_steps + 1)]
        found = [s for s in range(1, len(ns)) if ns[s] != ns[s - 1]]
        rows.append(
            _compare(
                "update_horizon_n_change_points/step",
                np.array(found),
                np.array(_steps(stored)),
            )
        )
        rows.append(
            _compare(
                "update_horizon_n_change_points/n",
                np.array([ns[s] for s in found]),
                np.array(list(stored.values())),
            )
        )
    table("gamma", lambda s: schedules.gamma_at(s, agent), np.float64)
    if "gamma_float32" in fixture.meta:
        table("gamma_float32", lambda s: schedules.gamma_at(s, agent), np.float32)
    if "target_update_tau" in fixture.meta:
        table("target_update_tau", lambda s: agent.target_update_tau, np.float64)
    table("epsilon_train", lambda s: schedules.epsilon_at(s, agent), np.float32)
    rows.append(
        _compare(
            "epsilon_eval",
            np.float64(schedules.epsilon_at(0, agent, eval_mode=True)),
            np.float64(_field(fixture, "epsilon_eval")),
        )
    )
    grid_key = "n_gamma_table_every_500_steps"
    if grid_key in fixture.meta:
        grid = _field(fixture, grid_key)
        steps = _steps(grid)
        rows.append(
            _compare(
                f"{grid_key}/n",
                np.array([schedules.update_horizon_at(s, agent) for s in steps]),
                np.array([v[0] for v in grid.values()]),
            )
        )
        rows.append(
            _compare(
                f"{grid_key}/gamma",
                np.array([schedules.gamma_at(s, agent) for s in steps]),
                np.array([v[1] for v in grid.values()], np.float64),
            )
        )
    rows += _reset_rows(fixture, reset)
    support = _field(fixture, "agent_attributes").get("support")
    if support is not None:
        rows.append(
            _compare(
                "agent_attributes/support",
                distributional.make_support(len(support), abs(support[-1])),
                np.array(support, np.float32),
            )
        )
    return rows


def _compare(name: str, actual, expected) -> Row:
    expected = np.asarray(expected)
    return compare(name, actual, expected, float_tolerance(expected))


def float_tolerance(expected: np.ndarray) -> tolerance.Tolerance:
    """The bound of a schedule table of ``expected``'s dtype (integers: exact)."""
    if expected.dtype == np.float64:
        return tolerance.elementwise(expected, F64_OPS, eps=float(np.finfo(np.float64).eps))
    if expected.dtype == np.float32:
        return tolerance.elementwise(expected, F32_OPS)
    return tolerance.EXACT


def _reset_rows(fixture: Fixture, reset) -> list[Row]:
    from bbf_jax import schedules

    how = str(_field(fixture, "reset_schedule", "how"))
    match = re.search(r"driven for (\d+) env steps", how)
    if not match:
        raise FixtureError(
            f"{fixture.path.name}: reset_schedule/how does not say for how many env steps "
            "the agent was driven ('driven for N env steps')"
        )
    trace = schedules.reset_trace(reset, int(match.group(1)))
    events = _field(fixture, "reset_schedule", "reset_events(training_steps at reset)")
    rows = [
        _compare(
            "reset_schedule/reset_steps",
            np.array(trace.resets, np.int64),
            np.array([e["training_step"] for e in events], np.int64),
        )
    ]
    final_key = "final_next_reset"
    if final_key in fixture.meta["reset_schedule"]:
        rows.append(
            _compare(
                "reset_schedule/final_next_reset",
                np.int64(trace.final_next_reset),
                np.int64(fixture.meta["reset_schedule"][final_key]),
            )
        )
    attempts_key = "cumulative_resets(incl. skipped attempts)"
    if attempts_key in fixture.meta["reset_schedule"]:
        rows.append(
            _compare(
                "reset_schedule/cumulative_resets",
                np.int64(trace.attempts),
                np.int64(fixture.meta["reset_schedule"][attempts_key]),
            )
        )
    return rows
