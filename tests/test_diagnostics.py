"""bbf_jax.diagnostics: each quantity worked out by hand, on arrays and a tiny network."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax import diagnostics as diag
from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig
from bbf_jax.agents.bbf.learner import make_learner
from bbf_jax.config import RunConfig
from bbf_jax.replay import SubsequenceReplay
from bbf_jax.report import cli
from bbf_jax.report.curves import metric_panels, read_log, reset_steps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ dormant units
def test_dormant_fraction_of_a_hand_made_dense_layer():
    # Unit means of |h| over the 4 examples: 1, 0, 0.02, 2.98; layer mean 1.0, so the
    # scores are the means themselves.
    h = np.array([[1.0, 0.0, 0.04, 3.0],
                  [1.0, 0.0, 0.0, 2.92],
                  [1.0, 0.0, 0.04, 3.0],
                  [1.0, 0.0, 0.0, 3.0]], np.float32)
    np.testing.assert_allclose(diag.unit_scores(h), [1.0, 0.0, 0.02, 2.98], rtol=4 * 2**-23)
    assert float(diag.dormant_fraction(h, 0.025)) == 0.5  # units 1 (0) and 2 (0.02)
    assert float(diag.dormant_fraction(h, 0.0)) == 0.25  # only unit 1 is always 0
    assert float(diag.dormant_fraction(np.zeros((3, 5), np.float32), 0.0)) == 1.0


def test_dormant_fraction_of_a_conv_layer_averages_over_positions():
    # (N=2, H=1, W=2, C=2): channel 0 has mean |h| 2, channel 1 mean 0.02 -> scores
    # 2 / 1.01 and 0.02 / 1.01 = 0.0198: dormant at tau 0.025, not at tau 0.
    h = np.array([[[[4.0, 0.0], [0.0, 0.08]]], [[[4.0, 0.0], [0.0, 0.0]]]], np.float32)
    assert float(diag.dormant_fraction(h, 0.025)) == 0.5
    assert float(diag.dormant_fraction(h, 0.0)) == 0.0


# -------------------------------------------------------------------- srank
SINGULAR = (50.0, 30.0, 18.5, 1.0, 0.5)  # sum 100; partial sums 50, 80, 98.5, 99.5, 100


def test_srank_of_matrices_with_known_singular_values():
    d = np.zeros((6, 5), np.float32)
    d[np.arange(5), np.arange(5)] = SINGULAR
    assert int(diag.srank(d)) == 4  # first partial sum >= 99 is 99.5
    assert int(diag.srank(d, delta=0.02)) == 3  # first >= 98 is 98.5
    assert int(diag.srank(d, delta=0.6)) == 1
    # Rotations on both sides keep the singular values: a permutation with sign flips
    # (exact) on the left, a Givens rotation on the right.
    left = np.eye(6, dtype=np.float32)[[3, 0, 5, 1, 2, 4]] * np.array([1, -1, 1, 1, -1, 1],
                                                                        np.float32)[:, None]
    c = np.float32(np.sqrt(0.5))
    right = np.eye(5, dtype=np.float32)
    right[:2, :2] = [[c, -c], [c, c]]
    assert int(diag.srank(left @ d @ right)) == 4
    assert int(diag.srank(np.zeros((4, 3), np.float32))) == 0
    assert int(diag.srank(np.outer(np.arange(1, 5), np.ones(7)).astype(np.float32))) == 1
    # Extra axes are flattened: (N, 2, 3) is an (N, 6) matrix.
    assert int(diag.srank(np.eye(6, dtype=np.float32).reshape(6, 2, 3))) == 6


# -------------------------------------------------------------------- churn
def test_churn_of_two_known_q_tables():
    before = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 5.0]], np.float32)  # greedy 1, 0, 1
    after = np.array([[2.0, 1.0], [3.0, 1.0], [0.0, 6.0]], np.float32)  # greedy 0, 0, 1
    changed, q_change = diag.churn(before, after)
    assert float(changed) == pytest.approx(1 / 3, rel=2**-23)
    assert float(q_change) == 0.5  # |1| + |1| + |1| over 6 entries


# -------------------------------------------------------------------- norms
def test_module_norms_of_known_parameter_sets():
    after = {"encoder": {"w": np.array([3.0, 4.0], np.float32)},
             "head": {"b": np.array([0.0, 0.0, 2.0], np.float32), "k": np.zeros((2, 2))},
             "other": {"w": np.ones(3, np.float32)}}
    before = {"encoder": {"w": np.array([3.0, 0.0], np.float32)},
              "head": {"b": np.array([0.0, 0.0, 1.0], np.float32), "k": np.zeros((2, 2))},
              "other": {"w": np.ones(3, np.float32)}}
    got = {k: float(v) for k, v in diag.module_norms(after, before, grad_steps=2).items()}
    assert sorted(got) == sorted(f"{q}/{m}" for q in ("ParamNorm", "UpdateNorm", "EffectiveLR")
                                 for m in ("encoder", "head"))  # only the listed modules
    assert got["ParamNorm/encoder"] == 5.0 and got["UpdateNorm/encoder"] == 4.0
    assert got["EffectiveLR/encoder"] == pytest.approx(4 / (2 * 3), rel=2 * 2**-23)
    assert got["ParamNorm/head"] == 2.0 and got["UpdateNorm/head"] == 1.0
    assert got["EffectiveLR/head"] == 0.5
    zero = {"head": {"b": np.zeros(2, np.float32)}}
    assert float(diag.module_norms(zero, zero, 1)["EffectiveLR/head"]) == 0.0


# ------------------------------------------------- the whole function, tiny network
NUM_ACTIONS, N = 3, 8


@pytest.fixture(scope="module")
def tiny():
    learner = make_learner(AgentConfig(), NetworkConfig(encoder_type="dqn", width_scale=0.25,
                                                        hidden_dim=16), NUM_ACTIONS)
    params = learner.init_params(jax.random.PRNGKey(0))
    states = np.random.default_rng(0).integers(0, 256, (N, 84, 84, 4), dtype=np.uint8)
    actions = np.array([1, 1, 2, 0, 1, 2, 1, 1], np.int32)
    fn = jax.jit(lambda *a: diag.diagnose(learner.network, *a, grad_steps=2))
    return learner, params, states, actions, fn


def _greedy(params, action):
    """``params`` whose head prefers ``action`` in every state: zero head kernels, and the
    advantage bias puts +8 on the top atom of ``action`` (Q ~ +vmax for it)."""
    head = jax.tree.map(jnp.zeros_like, params["head"])
    bias = np.zeros((NUM_ACTIONS, 51), np.float32)
    bias[action, -1] = 8.0
    head["advantage"]["net"]["bias"] = jnp.asarray(bias.reshape(-1))
    return {**params, "head": head}


def _first(fn, online, target, before, states, actions):
    zeros = np.zeros((N, NUM_ACTIONS), np.float32)
    return fn(online, target, before, states, actions,
              diag.Previous(zeros, zeros, np.asarray(False)))


def test_diagnose_on_known_parameter_sets(tiny):
    learner, params, states, actions, fn = tiny
    a1, a2 = _greedy(params, 1), _greedy(params, 2)
    m, prev = _first(fn, a1, a2, a1, states, actions)
    assert all(np.isnan(m[k]) for k in diag.CHANGE_METRICS)  # no previous point
    assert bool(prev.valid)
    assert float(m["Churn/online_target_agreement"]) == 0.0  # 1 everywhere vs 2 everywhere
    assert float(m["Churn/online_off_policy"]) == 3 / 8  # replayed actions other than 1
    assert float(m["Churn/target_off_policy"]) == 6 / 8  # replayed actions other than 2
    # The same parameters again: no churn and no Q change, bit for bit.
    same, _ = fn(a1, a2, a1, states, actions, prev)
    for k in diag.CHANGE_METRICS:
        assert float(same[k]) == 0.0, k
    # Online and target swap their preferred action: every greedy action changes.
    swapped, _ = fn(a2, a1, a1, states, actions, prev)
    assert float(swapped["Churn/online"]) == float(swapped["Churn/target"]) == 1.0
    assert float(swapped["QChange/online"]) > 0.0
    # Norms per module: the update against the 'before' parameters.
    for module in ("encoder", "transition_model", "projection", "predictor"):
        assert float(swapped[f"UpdateNorm/{module}"]) == 0.0
    # The heads differ in two bias entries, 8 -> 0 and 0 -> 8 (sums of squares exact).
    assert float(swapped["ParamNorm/head"]) == 8.0
    assert float(swapped["UpdateNorm/head"]) == np.float32(np.sqrt(128.0))
    assert float(swapped["EffectiveLR/head"]) == pytest.approx(np.sqrt(128.0) / (2 * 8),
                                                               rel=2 * 2**-23)


def test_dead_layers_are_dormant_and_have_rank_zero(tiny):
    learner, params, states, actions, fn = tiny
    m, _ = _first(fn, params, params, params, states, actions)
    layers = [k.split("/", 1)[1] for k in m if k.startswith("Dormant0/")]
    assert layers == ["encoder.relu0", "encoder.relu1", "encoder.relu2", "projection_relu",
                      "total"]
    assert 1 <= float(m["SRank/encoder"]) <= N and 1 <= float(m["SRank/projection"]) <= N
    # A projection with zero weights and a negative bias is dead after its ReLU.
    proj = jax.tree.map(jnp.zeros_like, params["projection"])
    proj["net"]["bias"] = -jnp.ones_like(proj["net"]["bias"])
    # The last encoder conv with zero kernel and negative bias: a dead encoder output.
    enc = jax.tree.map(jnp.array, params["encoder"])
    enc["Conv_2"] = {"kernel": jnp.zeros_like(enc["Conv_2"]["kernel"]),
                     "bias": -jnp.ones_like(enc["Conv_2"]["bias"])}
    dead = {**params, "projection": proj, "encoder": enc}
    m, _ = _first(fn, dead, dead, dead, states, actions)
    for tau in ("0", "0.025"):
        assert float(m[f"Dormant{tau}/projection_relu"]) == 1.0
        assert float(m[f"Dormant{tau}/encoder.relu2"]) == 1.0
    assert float(m["SRank/projection"]) == 0.0 and float(m["SRank/encoder"]) == 0.0
    hidden, conv = 16, 16  # units of projection_relu and of each DQN conv at width 1/4
    units = {"encoder.relu0": 8, "encoder.relu1": conv, "encoder.relu2": conv,
             "projection_relu": hidden}
    total = sum(float(m[f"Dormant0/{k}"]) * u for k, u in units.items()) / sum(units.values())
    assert float(m["Dormant0/total"]) == pytest.approx(total, rel=4 * 2**-23)


# ---------------------------------------------------------------- held-out batch
def test_held_out_states_leave_the_replay_stream_alone():
    replay = SubsequenceReplay(capacity=64, n_envs=1, seq_len=2, max_horizon=3, stack_size=4,
                               prioritized=False, seed=5)
    for i in range(1, 41):  # frame i (a constant image) with action i % 3, episode ends at 20
        replay.add(np.full((1, 84, 84), i, np.uint8), [i % 3], [0.0], [i == 20], [i == 20])
    rng_state = replay.rng.bit_generator.state
    states, actions = replay.sample_states(50, np.random.default_rng(1))
    assert replay.rng.bit_generator.state == rng_state
    assert states.shape == (50, 84, 84, 4) and states.dtype == np.uint8
    newest = states[:, 0, 0, -1].astype(int)
    np.testing.assert_array_equal(actions, newest % 3)  # the action taken in that state
    # Stacks are consecutive frames, zeroed before the episode start (frame 21).
    for s in states[:, 0, 0, :].astype(int):
        expected = [f if f >= (21 if s[-1] >= 21 else 1) else 0 for f in s[-1] - 3 + np.arange(4)]
        assert s.tolist() == expected
    again, _ = replay.sample_states(50, np.random.default_rng(1))
    np.testing.assert_array_equal(again, states)


# ------------------------------------------------------------------- settings, plots
@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_bad_interval_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="RunConfig.diagnostics_every must be an integer >= 0"):
        RunConfig(diagnostics_every=bad)
    assert RunConfig(diagnostics_every=0).diagnostics_every == 0


def test_curves_group_diagnostics_and_mark_resets(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.csv").write_text(
        "agent_step,grad_steps,num_resets,TotalLoss,Dormant0.025/a,Dormant0.025/total,"
        "SRank/encoder\n"
        "100,0,0,1.0,,,\n110,20,0,,0.1,0.2,5\n200,200,1,0.5,,,\n210,220,1,,0.3,0.4,4\n"
        "300,400,2,0.25,0.2,0.3,6\n")
    cols = read_log(run / "train_log.csv")
    assert metric_panels(c for c in cols if c != "agent_step") == {
        "grad_steps": ["grad_steps"], "num_resets": ["num_resets"], "TotalLoss": ["TotalLoss"],
        "Dormant0.025": ["Dormant0.025/a", "Dormant0.025/total"],
        "SRank": ["SRank/encoder"]}
    assert reset_steps(cols).tolist() == [200.0, 300.0]
    out = tmp_path / "out"
    assert cli.main(["--curves", str(run), "--out", str(out), "--panels", "Dormant0.025",
                     "SRank", "Churn"]) == 0
    printed = capsys.readouterr().out
    assert "no Churn columns; not plotted" in printed
    (png,) = out.glob("*.png")
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert cli.main(["--panels", "SRank"]) == 2
    assert "--panels needs --curves" in capsys.readouterr().err


def test_train_step_benchmark_times_a_diagnostics_point(tiny, monkeypatch):
    """benchmarks/train_step.py --diagnostics: one point timed on a real train state."""
    learner, _, _, _, _ = tiny
    script = pathlib.Path(__file__).parents[1] / "benchmarks" / "train_step.py"
    monkeypatch.syspath_prepend(str(script.parent))  # its helpers, as when run as a script
    spec = importlib.util.spec_from_file_location("train_step_benchmark", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    timing = bench.measure_diagnostics(learner, learner.init(0), group=2, repeats=2)
    assert timing["diag_ms"] > 0 and timing["diag_compile_s"] > 0
