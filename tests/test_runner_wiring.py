"""The training loop's wiring, step by step (spec §4.1, §4.8, §5.2, §6, §7.1, §8, §9.2-9.5).

A scripted env stands in for the emulator: every frame it shows is filled with a
counter (1, 2, ...), so a stored frame or a stack channel names the exact observation;
rewards above 1 in magnitude test clipping; each episode has two life losses and ends
with a game over (even episodes) or a truncation at ``max_steps_per_episode`` (odd
ones). The real :class:`~bbf_jax.runner.Runner` trains a tiny real learner on it; the
runner's own replay, selector, reset and train functions are wrapped (not replaced) to
record what they are given, and every record is checked against values worked out
here from the env's log and the spec's formulas. The first run also computes the
plasticity diagnostics, which must leave every one of those records unchanged.
"""

import csv
import dataclasses

import jax
import numpy as np
import pytest

from bbf_jax import checkpoint as ckpt
from bbf_jax import runner as runner_module
from bbf_jax.agents.bbf.config import AgentConfig, ExperimentConfig, NetworkConfig, ResetConfig
from bbf_jax.atari_games import canonical_game_name
from bbf_jax.config import EnvConfig, ReplayConfig, RunConfig
from bbf_jax.diagnostics import Diagnostics
from bbf_jax.envs import evaluation
from bbf_jax.envs.atari import SCREEN_SIZE, StepResult
from bbf_jax.replay import sampling
from bbf_jax.tolerance import EPS, magnitude, noise

NUM_ACTIONS = 4
REWARDS = (0.0, 3.0, -2.0, 0.5, -0.25, 1.0, 0.0, -7.0)  # by env step, cyclically
LIFE_LOSS_AT = (3, 7)  # episode lengths at which a life is lost
GAME_OVER_AT = 9  # episode length of the game over of even episodes
MAX_STEPS = 11  # odd episodes are truncated here
MIN_REPLAY = 24  # first training at agent step 25 (add_count > 24)
EPS_DECAY = 16
CYCLE_STEPS = 20
RESET_EVERY = 12
STEPS = 60  # agent steps (num_train_steps = 59)
# Official reset timing: next_reset starts at 13; an attempt fires when step > next_reset
# and moves it to step + 12; the attempt at 53 (next 65 > no_resets_after + 1 = 61) is
# skipped.
RESET_STEPS = (14, 27, 40)
G, B = 2, 4  # gradient steps per dispatch, minibatch size
MAX_N, FINAL_N, MIN_GAMMA, GAMMA = 10, 3, 0.97, 0.997
EPS_EVAL = 0.001
# Diagnostics every 35 gradient steps (first run). Dispatches at agent steps i = 25..59
# end at 2 * (i - 24) gradient steps, so steps 42 and 59 cross a multiple of 35; the first
# dispatches after the resets are at 25, 28 and 41. A diagnostic is logged with the
# agent_step after its step (at 60 in the regular log row).
DIAG_EVERY = 35
DIAG_ROWS = [26, 29, 42, 43, 60]


@dataclasses.dataclass(frozen=True)
class EnvStep:
    action: int
    frame: int  # counter value of the returned observation
    reward: float
    terminal: bool
    episode_over: bool


class ScriptedEnv:
    """Stands in for ``AtariEnv`` (same constructor and interface)."""

    def __init__(self, game, config, seed=0):
        self.game = canonical_game_name(game)
        self.config = config
        self.num_actions = NUM_ACTIONS
        self.log = []  # ('reset', frame) or EnvStep, in order
        self._shown = 0
        self._steps = 0
        self._episode = -1
        self.episode_return = 0.0
        self.episode_length = 0

    def _frame(self):
        self._shown += 1
        return self._shown, np.full((SCREEN_SIZE, SCREEN_SIZE), self._shown, np.uint8)

    def reset(self, noop_rng):
        noop_rng.integers(0, self.config.max_noops)  # consumed as a real reset does
        self._episode += 1
        self.episode_return, self.episode_length = 0.0, 0
        value, frame = self._frame()
        self.log.append(("reset", value))
        return frame

    def step(self, action):
        assert 0 <= action < NUM_ACTIONS
        reward = REWARDS[self._steps % len(REWARDS)]
        self._steps += 1
        self.episode_length += 1
        self.episode_return += reward
        length = self.episode_length
        game_over = self._episode % 2 == 0 and length == GAME_OVER_AT
        terminal = game_over or length in LIFE_LOSS_AT
        over = game_over or length >= self.config.max_steps_per_episode
        value, frame = self._frame()
        self.log.append(EnvStep(int(action), value, reward, terminal, over))
        return StepResult(frame, reward, terminal, over, game_over)

    def clone_state(self):  # the run's final checkpoint saves it
        return {"shown": self._shown, "steps": self._steps}


def experiment(target_action_selection: bool, priority_update: str,
               diagnostics_every: int = 0) -> ExperimentConfig:
    return ExperimentConfig(
        network=NetworkConfig(encoder_type="dqn", width_scale=0.25, hidden_dim=32),
        agent=AgentConfig(
            batch_size=B, replay_ratio=G * B, batches_to_group=G,
            min_replay_history=MIN_REPLAY, epsilon_train=0.0, epsilon_decay_period=EPS_DECAY,
            epsilon_eval=EPS_EVAL, cycle_steps=CYCLE_STEPS, update_horizon=FINAL_N,
            max_update_horizon=MAX_N, gamma=GAMMA, min_gamma=MIN_GAMMA,
            target_action_selection=target_action_selection,
        ),
        reset=ResetConfig(reset_every=RESET_EVERY, no_resets_after=60),
        replay=ReplayConfig(capacity=200, priority_update=priority_update),
        env=EnvConfig(game="Breakout", max_noops=3, max_steps_per_episode=MAX_STEPS),
        run=RunConfig(num_train_steps=STEPS - 1, num_eval_episodes=1, log_every=20,
                      checkpoint_every=0, diagnostics_every=diagnostics_every),
    )


def same_tree(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b)),
                   strict=True))


class Recorder:
    """Wraps the runner's functions; ``events`` holds (agent_step, kind) in call order."""

    def __init__(self, run):
        self.run = run
        self.events, self.acts, self.samples, self.trains, self.priorities = [], [], [], [], []
        # The jitted functions themselves, to count their compilations.
        self.jitted = {name: getattr(run, name) for name in ("_select", "_reset", "train_fn")}
        self._wrap(run, "_select", self._on_select)
        self._wrap(run, "_reset", lambda args, out: self.events.append((run.agent_step, "reset")))
        self._wrap(run, "train_fn", self._on_train)
        self._wrap(run.replay, "sample", self._on_sample)
        self._wrap(run.replay, "update_priorities", self._on_priorities)
        self._wrap(run.env, "step", lambda args, out: self.events.append((run.agent_step, "env")))

    @staticmethod
    def _wrap(obj, name, record):
        fn = getattr(obj, name)

        def wrapped(*args):
            out = fn(*args)
            record(args, out)
            return out

        setattr(obj, name, wrapped)

    def _on_select(self, args, out):
        params, states, _, eps = args
        state = self.run.state
        self.acts.append({
            "step": self.run.agent_step,
            "states": np.array(states),
            "eps": float(eps),
            "target": same_tree(params, state.target),
            "online": same_tree(params, state.online),
        })
        self.events.append((self.run.agent_step, "act"))

    def _on_train(self, args, out):
        _, batch, _ = args
        metrics = out[1]
        self.trains.append({
            "step": self.run.agent_step,
            "online_before": jax.device_get(args[0].online),
            "online_after": jax.device_get(out[0].online),
            "state": np.asarray(batch.state).reshape(G * B, *batch.state.shape[2:]),
            "dqn_loss": np.asarray(metrics["DQNLoss"]),
            "per_sample": np.asarray(metrics["dqn_loss_per_sample"]).reshape(-1),
        })
        self.events.append((self.run.agent_step, "train"))

    def _on_sample(self, args, out):
        num, n, gamma = args
        self.samples.append({"num": num, "n": n, "gamma": gamma, "sample": out})
        self.events.append((self.run.agent_step, "sample"))

    def _on_priorities(self, args, out):
        indices, priorities = args
        self.priorities.append((np.array(indices), np.array(priorities)))
        self.events.append((self.run.agent_step, "priorities"))


def expected_epsilon(step: int) -> float:
    """Dopamine's linear decay to epsilon_train = 0 after the warm-up, at the agent's
    counter ``step``."""
    return min(1.0, max(0.0, (EPS_DECAY + MIN_REPLAY - step) / EPS_DECAY))


def expected_schedule(cycle_step: int) -> tuple[int, float]:
    """n and gamma after ``cycle_step`` gradient steps since the last reset (spec §6)."""
    x = min(cycle_step, CYCLE_STEPS) / CYCLE_STEPS
    n = int(np.round(MAX_N * (FINAL_N / MAX_N) ** x))
    gamma = 1 - (1 - MIN_GAMMA) * ((1 - GAMMA) / (1 - MIN_GAMMA)) ** x
    return n, gamma


def replay_env_log(log):
    """From the env's log: per agent step, the stack it acted in (frame counters, oldest
    first, 0 = zeroed) and the step itself; zeroed after a terminal and at every reset."""
    stacks, steps, history = [], [], []
    for entry in log:
        if not isinstance(entry, EnvStep):
            history = [entry[1]]
            continue
        stacks.append(([0] * 4 + history)[-4:])
        steps.append(entry)
        history = [entry.frame] if entry.terminal else history + [entry.frame]
    return stacks, steps


@pytest.fixture(scope="module",
                params=[(True, "official", DIAG_EVERY), (False, "corrected", 0)],
                ids=["bbf-target-acting-official-priorities-diagnostics",
                     "online-acting-corrected-no-diagnostics"])
def recorded_run(request, tmp_path_factory):
    cfg = experiment(*request.param)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner_module, "AtariEnv", ScriptedEnv)
        eval_envs = []  # the envs of the run's own evaluations (not the random baseline's)
        evaluating = []

        def eval_env(*args, **kwargs):
            env = ScriptedEnv(*args, **kwargs)
            if evaluating:
                eval_envs.append(env)
            return env

        mp.setattr(evaluation, "AtariEnv", eval_env)
        run = runner_module.Runner(cfg, tmp_path_factory.mktemp("run"), progress=False)
        recorder = Recorder(run)
        run_evaluate = run.evaluate

        def evaluate(num_episodes):
            evaluating.append(True)
            try:
                return run_evaluate(num_episodes)
            finally:
                evaluating.pop()

        run.evaluate = evaluate
        result = run.run()
    return cfg, run, recorder, result, eval_envs


def test_each_stored_row_is_the_observed_step(recorded_run):
    _, run, _, _, _ = recorded_run
    stacks, steps = replay_env_log(run.env.log)
    assert len(steps) == STEPS
    s = run.replay.storage
    assert s.add_count == STEPS
    expected_obs = np.array([stack[-1] for stack in stacks], np.uint8)
    np.testing.assert_array_equal(s.observation[:STEPS, 0], expected_obs[:, None, None]
                                  * np.ones((1, SCREEN_SIZE, SCREEN_SIZE), np.uint8))
    np.testing.assert_array_equal(s.action[:STEPS, 0], [e.action for e in steps])
    np.testing.assert_array_equal(s.reward[:STEPS, 0],
                                  np.array([max(-1.0, min(1.0, e.reward)) for e in steps],
                                           np.float32))
    np.testing.assert_array_equal(s.terminal[:STEPS, 0], [e.terminal for e in steps])
    np.testing.assert_array_equal(s.ended[:STEPS, 0],
                                  [e.terminal or e.episode_over for e in steps])
    # The script covers what it should: clipped rewards, life losses, both episode ends.
    assert {3.0, -2.0, 0.5, -7.0} <= {e.reward for e in steps}
    assert any(e.terminal and not e.episode_over for e in steps)
    assert any(e.terminal and e.episode_over for e in steps)
    assert any(e.episode_over and not e.terminal for e in steps)


def test_acting_sees_the_zeroed_stack_and_scheduled_epsilon(recorded_run):
    _, run, recorder, _, _ = recorded_run
    stacks, steps = replay_env_log(run.env.log)
    train_acts = [a for a in recorder.acts if a["step"] < STEPS]
    assert [a["step"] for a in train_acts] == list(range(STEPS))
    for i, (act, stack) in enumerate(zip(train_acts, stacks, strict=True)):
        assert act["states"].shape == (1, SCREEN_SIZE, SCREEN_SIZE, 4)
        expected = np.broadcast_to(np.array(stack, np.uint8), act["states"].shape)
        np.testing.assert_array_equal(act["states"], expected, err_msg=f"agent step {i}")
        # epsilon(i + 1): the agent's counter is incremented before it acts.
        assert act["eps"] == pytest.approx(expected_epsilon(i + 1), abs=1e-6), i
    assert any(stack[:3] == [0, 0, 0] and steps[i - 1].terminal and not
               steps[i - 1].episode_over for i, stack in enumerate(stacks) if i)


def test_acting_parameters(recorded_run):
    cfg, _, recorder, _, _ = recorded_run
    acting = "target" if cfg.agent.target_action_selection else "online"
    other = "online" if acting == "target" else "target"
    assert all(a[acting] for a in recorder.acts), [a["step"] for a in recorder.acts
                                                   if not a[acting]]
    # Online and target differ once training has run, so the check above has teeth.
    assert sum(not a[other] for a in recorder.acts) >= STEPS - MIN_REPLAY - 2


def test_order_within_each_agent_step(recorded_run):
    _, _, recorder, _, _ = recorded_run
    per_step = {}
    for step, kind in recorder.events:
        if kind != "sample":
            per_step.setdefault(step, []).append(kind)
    for i in range(STEPS):
        expected = ["train", "priorities"] if i > MIN_REPLAY else []
        expected += ["reset"] if i in RESET_STEPS else []
        expected += ["act", "env"]
        assert per_step[i] == expected, i
    # The final evaluation only acts: no training, reset or training-env step.
    assert [kind for step, kind in recorder.events if step == STEPS] == ["act"] * GAME_OVER_AT


def test_samples_follow_cycle_step_and_restart_at_resets(recorded_run):
    _, _, recorder, _, _ = recorded_run
    cycle_step, k = 0, 0
    schedules_seen = set()
    for _, kind in recorder.events:
        if kind == "train":
            cycle_step += G
        elif kind == "reset":
            cycle_step = 0
        elif kind == "sample":
            got = recorder.samples[k]
            n, gamma = expected_schedule(cycle_step)
            assert got["num"] == G * B
            assert got["n"] == n, (k, cycle_step)
            assert got["gamma"] == pytest.approx(gamma, rel=1e-12), (k, cycle_step)
            schedules_seen.add(cycle_step)
            k += 1
    assert k == len(recorder.samples)
    assert 0 in schedules_seen and CYCLE_STEPS in schedules_seen
    # Official prefetch: train call j uses the j-th sample (two drawn at the first call).
    assert len(recorder.trains) == STEPS - MIN_REPLAY - 1
    for j, train in enumerate(recorder.trains):
        np.testing.assert_array_equal(train["state"], recorder.samples[j]["sample"].state)


def test_priorities_go_to_the_batch_just_used(recorded_run):
    cfg, _, recorder, _, _ = recorded_run
    assert len(recorder.priorities) == len(recorder.trains)
    for j, (train, (indices, priorities)) in enumerate(
            zip(recorder.trains, recorder.priorities, strict=True)):
        used = recorder.samples[j]["sample"].indices
        if cfg.replay.priority_update == "official":
            # Only indices[:G] change, each with the mean loss of one minibatch.
            np.testing.assert_array_equal(indices, used[:G])
            losses = train["dqn_loss"]
        else:
            np.testing.assert_array_equal(indices, used)
            losses = train["per_sample"]
        assert priorities.dtype == np.float32
        np.testing.assert_allclose(priorities, np.sqrt(losses.astype(np.float64) + 1e-10),
                                   rtol=1e-6)


def test_truncation_ends_the_episode_without_a_terminal(recorded_run):
    cfg, run, recorder, _, _ = recorded_run
    _, steps = replay_env_log(run.env.log)
    truncated = [t for t, e in enumerate(steps) if e.episode_over and not e.terminal]
    assert truncated
    # Every episode end (truncation or game over) is followed by an env reset.
    log = run.env.log
    for k, entry in enumerate(log):
        if isinstance(entry, EnvStep) and entry.episode_over:
            assert log[k + 1][0] == "reset", k
    h = run.derived.max_horizon
    # No sampled subsequence has its n-step window across a truncation.
    for s in recorder.samples:
        for t in s["sample"].indices:
            assert not any(t <= r < t + h for r in truncated), (t, truncated)
    # And validity rejects every start whose window holds the first truncation.
    r = truncated[0]
    t = np.arange(max(r - h + 1, cfg.replay.stack_size - 1), r + 1)
    valid = sampling.valid_starts(run.replay.storage, t, np.zeros_like(t), max_horizon=h,
                                  seq_len=run.derived.seq_len,
                                  stack_size=cfg.replay.stack_size)
    assert not valid.any()
    after = np.array([r + 1])
    assert sampling.valid_starts(run.replay.storage, after, np.zeros_like(after),
                                 max_horizon=h, seq_len=run.derived.seq_len,
                                 stack_size=cfg.replay.stack_size).all()


def test_each_jitted_function_compiles_once(recorded_run):
    """One input shape each (the evaluation's one env pads to the training batch of 1):
    neither the first act's fresh key, nor resets, nor the evaluation's key recompile."""
    _, _, recorder, _, _ = recorded_run
    sizes = {name: fn._cache_size() for name, fn in recorder.jitted.items()}
    assert sizes == {"_select": 1, "_reset": 1, "train_fn": 1}


def test_final_evaluation_acts_with_eps_eval(recorded_run):
    cfg, _, recorder, result, eval_envs = recorded_run
    eval_acts = [a for a in recorder.acts if a["step"] == STEPS]
    assert len(eval_envs) == cfg.run.num_eval_episodes
    assert len(eval_acts) == GAME_OVER_AT  # one episode, to its game over
    assert all(a["eps"] == np.float32(EPS_EVAL) for a in eval_acts)
    # A fresh eval env: its stack starts at [0, 0, 0, first frame].
    np.testing.assert_array_equal(eval_acts[0]["states"][:, 0, 0], [[0, 0, 0, 1]])
    expected_return = sum(REWARDS[k % len(REWARDS)] for k in range(GAME_OVER_AT))
    assert result["returns"] == [expected_return] * cfg.run.num_eval_episodes


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(x, dtype=np.float64))
                             for x in jax.tree.leaves(tree))))


def test_diagnostics_are_logged_at_their_dispatches(recorded_run):
    cfg, run, recorder, _, _ = recorded_run
    with (run.base_dir / "train_log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["agent_step"]) for r in rows if r["TotalLoss"]] == [40, 60]
    assert len({r["agent_step"] for r in rows}) == len(rows)  # a diagnostic joins a log row
    if not cfg.run.diagnostics_every:
        assert run.diagnostics is None and not any("/" in k for k in rows[0])
        return
    diag_rows = [r for r in rows if r["SRank/encoder"]]
    assert [int(r["agent_step"]) for r in diag_rows] == DIAG_ROWS
    assert not diag_rows[0]["Churn/online"]  # nothing to compare the first one with
    trains = {t["step"]: t for t in recorder.trains}
    network = run.learner.network
    x = run.diagnostics.states.astype(np.float32) / 255.0
    q_fn = jax.jit(lambda p: network.apply({"params": p}, x).q_values)
    previous = None
    for row in diag_rows:
        t = trains[int(row["agent_step"]) - 1]  # the dispatch the diagnostic ended
        for module in ("encoder", "transition_model", "projection", "predictor", "head"):
            n = sum(x.size for x in jax.tree.leaves(t["online_after"][module]))
            rel = n * EPS + 1e-6  # float32 sum of n squares; 7 digits in the CSV
            param, update = _norm(t["online_after"][module]), _norm(jax.tree.map(
                np.subtract, t["online_after"][module], t["online_before"][module]))
            assert float(row[f"ParamNorm/{module}"]) == pytest.approx(param, rel=rel)
            assert float(row[f"UpdateNorm/{module}"]) == pytest.approx(update, rel=rel + EPS)
        q = np.asarray(q_fn(t["online_after"]), np.float64)
        # Q-values agree with the diagnostic's own within rounding noise of the network;
        # states whose best actions are that close count either way.
        tol = noise(length=11 * 11 * 16, depth=6) * magnitude(q)
        if previous is not None:
            p_best = previous >= previous.max(1, keepdims=True) - 2 * tol
            q_best = q >= q.max(1, keepdims=True) - 2 * tol
            surely = np.sum(~np.any(p_best & q_best, axis=1))
            maybe = np.sum((p_best.sum(1) > 1) | (q_best.sum(1) > 1)
                           | np.any(p_best != q_best, axis=1))
            assert surely <= round(float(row["Churn/online"]) * len(q)) <= maybe
            assert float(row["QChange/online"]) == pytest.approx(
                np.mean(np.abs(q - previous)), abs=2 * tol + 1e-6)
        for k in ("Dormant0/total", "Dormant0.025/total", "Churn/online_target_agreement"):
            assert 0.0 <= float(row[k]) <= 1.0
        assert float(row["Dormant0/total"]) <= float(row["Dormant0.025/total"])
        assert 1 <= float(row["SRank/projection"]) <= 32  # hidden_dim
        previous = q
    # The run's final checkpoint keeps the held-out batch and the last point's Q-values.
    checkpointer = ckpt.RunCheckpointer(run.base_dir)
    try:
        _, host, meta = checkpointer.restore(STEPS, jax.device_get(run.state))
    finally:
        checkpointer.close()
    restored = Diagnostics(network, DIAG_EVERY, G, run.seeds.diagnostics)
    restored.load_state_dict(host["diagnostics"])
    for k, v in run.diagnostics.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[k], v, err_msg=k)
    assert meta["diagnostics_after_reset"] is False
