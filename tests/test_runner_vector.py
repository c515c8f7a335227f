"""The runner's vector of train envs, step by step: scripted envs that end episodes and
lose lives at different vector steps drive ``Runner._env_step`` (what each row of the
replay stores, which stacks are zeroed, the episode records and the no-op draws), and
the interval test ``crossed``."""

from __future__ import annotations

import numpy as np
import pytest

from bbf_jax.envs import FrameStack, StepResult
from bbf_jax.replay import SubsequenceReplay
from bbf_jax.runner import Runner, crossed


class ScriptedEnv:
    """Frames encode (env, step); a life is lost at ``life_loss`` steps, the episode
    ends at ``episode_end`` steps; ``reset`` draws its no-op count from the shared rng."""

    def __init__(self, k: int, life_loss: set, episode_end: int):
        self.k, self.life_loss, self.episode_end = k, life_loss, episode_end
        self.t = 0
        self.episode_return = 0.0
        self.episode_length = 0
        self.noops = []

    def frame(self) -> np.ndarray:
        return np.full((84, 84), 10 * self.k + self.t % 10, np.uint8)

    def reset(self, rng) -> np.ndarray:
        self.noops.append(int(rng.integers(30)))
        self.t = self.episode_length = 0
        self.episode_return = 0.0
        return self.frame()

    def step(self, action: int) -> StepResult:
        self.t += 1
        self.episode_length += 1
        self.episode_return += 2.0 * action  # raw reward 2a, stored clipped
        over = self.t == self.episode_end
        return StepResult(self.frame(), 2.0 * action, self.t in self.life_loss or over, over,
                          over)


def vector_runner(envs) -> Runner:
    """A Runner holding only what ``_env_step`` uses (no learner is built)."""
    run = Runner.__new__(Runner)
    run.envs, run.num_envs = envs, len(envs)
    run.replay = SubsequenceReplay(capacity=300, n_envs=len(envs), seq_len=1, max_horizon=3,
                                   prioritized=False)
    run.stack = FrameStack(len(envs), 4)
    run.noop_rng = np.random.default_rng(0)
    run.agent_step = run.episodes = 0
    run._start_episodes()
    return run


def test_vector_step_stores_each_env_and_resets_only_finished_ones():
    envs = [ScriptedEnv(0, {2}, 3), ScriptedEnv(1, set(), 5), ScriptedEnv(2, {1, 4}, 100)]
    run = vector_runner(envs)
    first_noops = [e.noops[0] for e in envs]
    # _start_episodes draws env 0's no-ops first, then env 1's, then env 2's.
    rng = np.random.default_rng(0)
    assert first_noops == [int(rng.integers(30)) for _ in envs]
    records = []
    for _ in range(5):
        before = run.stack.state.copy()
        ended = run._env_step(np.array([1, 0, 1]))
        records.append((before, ended))
    assert run.agent_step == 15 and run.episodes == 2
    # Env 0 ends at its 3rd step (vector step 3, agent step 9), env 1 at its 5th (15).
    assert [e for _, ended in records for e in ended] == [
        {"agent_step": 9, "episode_return": 6.0, "episode_length": 3},
        {"agent_step": 15, "episode_return": 0.0, "episode_length": 5},
    ]
    # After a reset the env draws its no-ops from the shared rng, in env order.
    assert [len(e.noops) for e in envs] == [2, 2, 1]
    storage = run.replay.storage
    # Row v holds each env's o_t (the frame acted on), a_t, clip(r_t) and the flags.
    np.testing.assert_array_equal(storage.action[:5], np.tile([1, 0, 1], (5, 1)))
    np.testing.assert_array_equal(storage.reward[:5], np.tile([1.0, 0.0, 1.0], (5, 1)))
    terminal = np.array(storage.terminal[:5], bool)
    # Env 0 loses a life at step 2 of each episode and ends at step 3.
    np.testing.assert_array_equal(terminal[:, 0], [False, True, True, False, True])
    np.testing.assert_array_equal(terminal[:, 1], [False, False, False, False, True])
    np.testing.assert_array_equal(terminal[:, 2], [True, False, False, True, False])
    assert storage.observation[3, 0, 0, 0] == 0  # env 0's fresh episode, step 0
    assert storage.observation[4, 2, 0, 0] == 24  # env 2 acts on its step-4 frame
    # Stacks (frame value 10 k + step): each env's is zeroed at its own life losses and
    # episode starts only.
    state = run.stack.state
    np.testing.assert_array_equal(state[0, 0, 0], [0, 0, 0, 2])    # life lost at step 2
    np.testing.assert_array_equal(state[1, 0, 0], [0, 0, 0, 10])   # new episode of env 1
    np.testing.assert_array_equal(state[2, 0, 0], [0, 0, 24, 25])  # life lost at step 4
    # Env 2 before vector step 3: kept since its life loss at step 1.
    np.testing.assert_array_equal(records[3][0][2, 0, 0], [0, 21, 22, 23])


@pytest.mark.parametrize("n, every, last, fired", [
    (1, 3, 10, [3, 6, 9]),                            # one env: step % every == 0
    (4, 10, 40, [12, 20, 32, 40]),                    # reaching or crossing a multiple
    (4, 2, 12, [4, 8, 12]),                           # every vector step
    (64, 6400, 12800, [6400, 12800]),
])
def test_crossed_fires_at_the_vector_step_reaching_a_multiple(n, every, last, fired):
    assert [s for s in range(n, last + 1, n) if crossed(s, n, every)] == fired
