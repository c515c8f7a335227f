"""Schedules (spec §6) and reset timing (spec §7.1) against hand-worked values, a jitted
reference of the official epsilon and the official ``schedules.json`` fixture."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax import schedules as S
from bbf_jax.agents.bbf.config import AgentConfig, ResetConfig
from bbf_jax.crosscheck.fixture_io import compare
from bbf_jax.crosscheck.kinds.schedules import float_tolerance

pytestmark = pytest.mark.usefixtures("parity")

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "schedules.json").read_text())
BBF = AgentConfig()


# ---------------------------------------------------------------- exponential_decay


def test_exponential_decay_is_geometric():
    assert S.exponential_decay(0, 10_000, 0, 1, 0.3) == 1.0
    assert S.exponential_decay(5_000, 10_000, 0, 1, 0.3) == pytest.approx(math.sqrt(0.3), 1e-15)
    assert S.exponential_decay(10_000, 10_000, 0, 1, 0.3) == pytest.approx(0.3, 1e-15)
    assert S.exponential_decay(50_000, 10_000, 0, 1, 0.3) == pytest.approx(0.3, 1e-15)
    # Warm-up holds the initial value, then the decay starts.
    assert S.exponential_decay(90, 100, 100, 8, 2) == pytest.approx(8.0, 1e-15)
    assert S.exponential_decay(150, 100, 100, 8, 2) == pytest.approx(4.0, 1e-14)


def test_exponential_decay_reverse_decays_the_complement():
    mid = S.exponential_decay(5_000, 10_000, 0, 0.97, 0.997, reverse=True)
    assert 1 - mid == pytest.approx(math.sqrt(0.03 * 0.003), 1e-12)


def test_zero_decay_period_switch():
    assert S.exponential_decay(4, 0, 5, 0.5, 0.25) == 0.5
    assert S.exponential_decay(5, 0, 5, 0.5, 0.25) == 0.25
    # Official quirk: the reversed branch returns the complemented values.
    assert S.exponential_decay(4, 0, 5, 0.97, 0.997, reverse=True) == pytest.approx(0.03)
    assert S.exponential_decay(6, 0, 5, 0.97, 0.997, reverse=True) == pytest.approx(0.003)
    assert S.exponential_decay(4, 0, 5, 0.97, 0.997, True, zero_period="corrected") == 0.97
    assert S.exponential_decay(6, 0, 5, 0.97, 0.997, True, zero_period="corrected") == 0.997
    with pytest.raises(ValueError, match="zero_period"):
        S.exponential_decay(0, 0, 0, 1, 1, zero_period="fixed")


# ---------------------------------------------------------------- n and gamma


def test_update_horizon_breakpoints():
    ns = [S.update_horizon_at(s, BBF) for s in range(12_001)]
    changes = {s: ns[s] for s in range(1, len(ns)) if ns[s] != ns[s - 1]}
    assert changes == {427: 9, 1350: 8, 2390: 7, 3579: 6, 4966: 5, 6633: 4, 8720: 3}
    assert ns[0] == 10 and ns[-1] == 3
    # The counter rises by 2 per env step in BBF: the even-step breakpoints of spec §6.
    even = [s for s in range(2, 12_001, 2) if ns[s] != ns[s - 2]]
    assert even == [428, 1350, 2390, 3580, 4966, 6634, 8720]


def test_constant_horizon_and_gamma_when_not_annealed():
    agent = AgentConfig(max_update_horizon=None, min_gamma=None)
    assert {S.update_horizon_at(s, agent) for s in (0, 500, 20_000)} == {3}
    assert {S.gamma_at(s, agent) for s in (0, 500, 20_000)} == {0.997}
    short = AgentConfig(cycle_steps=1)
    assert S.gamma_at(0, short) == 0.997


def test_gamma_spec_values():
    for step, gamma in [
        (0, 0.97),
        (2000, 0.98107),
        (4000, 0.98806),
        (6000, 0.99246),
        (8000, 0.99525),
        (10_000, 0.997),
        (30_000, 0.997),
    ]:
        assert S.gamma_at(step, BBF) == pytest.approx(gamma, abs=5e-6)


def _assert_within_policy(actual, expected, what):
    """Integers exactly; float tables within the schedules kind's few-ulp bound."""
    expected = np.asarray(expected)
    row = compare(what, np.asarray(actual, expected.dtype), expected, float_tolerance(expected))
    assert row.ok, row


def test_fixture_n_and_gamma_tables():
    for step, n in FIXTURE["update_horizon_n"].items():
        assert S.update_horizon_at(int(step), BBF) == n
    steps = [int(s) for s in FIXTURE["gamma"]]
    _assert_within_policy([S.gamma_at(s, BBF) for s in steps],
                          np.array(list(FIXTURE["gamma"].values()), np.float64), "gamma")
    steps = [int(s) for s in FIXTURE["gamma_float32"]]
    _assert_within_policy([S.gamma_at(s, BBF) for s in steps],
                          np.array(list(FIXTURE["gamma_float32"].values()), np.float32),
                          "gamma_float32")
    grid = FIXTURE["n_gamma_table_every_500_steps"]
    for step, (n, _) in grid.items():
        assert S.update_horizon_at(int(step), BBF) == n
    _assert_within_policy([S.gamma_at(int(s), BBF) for s in grid],
                          np.array([g for _, g in grid.values()], np.float64), "grid gamma")


# ---------------------------------------------------------------- epsilon


def test_epsilon_fixture_table():
    steps = [int(s) for s in FIXTURE["epsilon_train"]]
    _assert_within_policy([S.epsilon_at(s, BBF) for s in steps],
                          np.array(list(FIXTURE["epsilon_train"].values()), np.float32),
                          "epsilon_train")
    assert S.epsilon_at(123, BBF, eval_mode=True) == FIXTURE["epsilon_eval"] == 0.001


def test_epsilon_shape():
    eps = [S.epsilon_at(s, BBF) for s in range(0, 4100)]
    assert set(eps[:2001]) == {1.0}
    assert set(eps[4001:]) == {0.0}
    assert all(a > b for a, b in zip(eps[2000:4002], eps[2001:4002], strict=False))
    assert S.epsilon_at(3001, BBF) == pytest.approx(1000 / 2001, rel=1e-6)


@pytest.mark.parametrize(
    "decay,warmup,final",
    [(2001.0, 2000.0, 0.0), (250_000.0, 20_000.0, 0.01), (1000.0, 1600.0, 0.1)],
)
def test_epsilon_matches_jitted_official_formula(decay, warmup, final):
    # Dopamine's linearly_decaying_epsilon written as in the official code, jitted with
    # the decay constants static and the step traced (as in the official select_action).
    @jax.jit
    def official(step):
        steps_left = decay + warmup - step
        bonus = (1.0 - final) * steps_left / decay
        return final + jnp.clip(bonus, 0.0, 1.0 - final)

    agent = AgentConfig(epsilon_decay_period=int(decay), min_replay_history=int(warmup),
                        epsilon_train=final)
    steps = np.arange(0, int(decay + warmup) + 10, max(1, int(decay + warmup) // 2000))
    expected = np.asarray(jax.vmap(official)(steps))
    ours = np.array([S.epsilon_at(int(s), agent) for s in steps], np.float32)
    _assert_within_policy(ours, expected, "epsilon")


# ---------------------------------------------------------------- resets


def test_reset_steps_bbf_both_timings():
    assert S.reset_steps(ResetConfig(), 100_000) == [20_002, 40_003, 60_004]
    assert S.reset_steps(ResetConfig(timing="v2023"), 100_000) == [20_000, 40_000, 60_000, 80_000]
    assert S.reset_steps(ResetConfig(reset_every=0), 100_000) == []


def test_reset_steps_hand_worked_small():
    official = ResetConfig(reset_every=3000, no_resets_after=10_000)
    # next_reset 3001 -> fires at 3002 (next 6002), 6003 (next 9003); at 9004 the next
    # would be 12004 > 10001, so it is skipped.
    assert S.reset_steps(official, 10_000) == [3002, 6003]
    v2023 = ResetConfig(reset_every=3000, no_resets_after=10_000, timing="v2023")
    assert S.reset_steps(v2023, 10_000) == [3000, 6000]


def test_reset_check_edges():
    official, v2023 = ResetConfig(), ResetConfig(timing="v2023")
    assert S.first_next_reset(official) == 20_001
    assert S.first_next_reset(v2023) == 20_000
    assert S.reset_check(20_001, 20_001, official) == (False, 20_001)  # strict '>'
    assert S.reset_check(20_002, 20_001, official) == (True, 40_002)
    assert S.reset_check(80_005, 80_004, official) == (False, 100_005)  # skipped, counter moves
    assert S.reset_check(20_000, 20_000, v2023) == (True, 40_000)  # '>='
    assert S.reset_check(80_000, 80_000, v2023) == (True, 100_000)  # 100,000 is not > 100,000
    assert S.reset_check(100_000, 100_000, v2023) == (False, 120_000)
    assert S.reset_check(50_000, 20_001, ResetConfig(reset_every=0)) == (False, 20_001)


def test_reset_trace_matches_fixture():
    events = FIXTURE["reset_schedule"]
    trace = S.reset_trace(ResetConfig(), 110_000)  # "driven for 110000 env steps"
    stored = events["reset_events(training_steps at reset)"]
    assert list(trace.resets) == [e["training_step"] for e in stored] == [20_002, 40_003, 60_004]
    assert trace.final_next_reset == events["final_next_reset"] == 120_006
    assert trace.attempts == events["cumulative_resets(incl. skipped attempts)"] == 5
