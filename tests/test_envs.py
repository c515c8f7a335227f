"""AtariEnv against a frame-by-frame reference built in the test on a second emulator."""

from __future__ import annotations

import ale_py
import cv2
import numpy as np
import pytest

from bbf_jax.atari_games import ATARI_100K_GAMES, rom_id
from bbf_jax.config import EnvConfig
from bbf_jax.envs import AtariEnv, clip_reward
from bbf_jax.envs.atari import ale_seed


class ReferenceAle:
    """Plain emulator that records every frame; the test derives Dopamine's
    observations from these records with the rules of spec §9.1 written out case by case."""

    def __init__(self, game: str, seed: int):
        self.ale = ale_py.ALEInterface()
        self.ale.setInt("random_seed", ale_seed(seed))
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.ale.loadROM(str(ale_py.roms.get_rom_path(rom_id(game))))
        self.actions = self.ale.getMinimalActionSet()

    def reset(self) -> np.ndarray:
        self.ale.reset_game()
        self.lives = self.ale.lives()
        return self.ale.getScreenGrayscale()

    def step(self, action: int, frame_skip: int, life_terminal: bool):
        """Emulates up to frame_skip frames; returns (screens, reward, terminal, game_over)."""
        screens, reward, terminal, game_over = [], 0, False, False
        for _ in range(frame_skip):
            reward += self.ale.act(self.actions[action])
            screens.append(self.ale.getScreenGrayscale())
            lives, game_over = self.ale.lives(), self.ale.game_over()
            terminal = game_over or (life_terminal and lives < self.lives)
            self.lives = lives
            if terminal:
                break
        return screens, reward, terminal, game_over


def resize(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize(
    "game, frame_skip, life_terminal, seed",
    [("Jamesbond", 4, True, 0), ("Jamesbond", 3, True, 1), ("Breakout", 4, False, 0)],
    ids=["official", "skip3", "no-life-terminal"],
)
def test_preprocessing_matches_frame_reference(game, frame_skip, life_terminal, seed):
    """Random actions until game over: max-pool/resize of the last two frames, stale
    buffers on an early break (the seeds are chosen so that terminals fall on every
    skip iteration), raw reward sums, life-loss terminals without a game reset."""
    config = EnvConfig(frame_skip=frame_skip, terminal_on_life_loss=life_terminal, max_noops=0)
    env = AtariEnv(game, config, seed=seed)
    ref = ReferenceAle(game, seed=seed)
    obs = env.reset(np.random.default_rng(0))
    reset_screen = ref.reset()
    assert obs.dtype == np.uint8 and obs.shape == (84, 84)
    np.testing.assert_array_equal(obs, resize(reset_screen))
    last_frame = np.zeros_like(reset_screen)  # Dopamine's buffer 1 after reset
    policy = np.random.default_rng(seed + 10)
    prev_obs, life_losses, terminal_iterations = obs, 0, []
    for _ in range(5000):
        action = int(policy.integers(env.num_actions))
        lives_before = ref.lives
        screens, reward, terminal, game_over = ref.step(action, frame_skip, life_terminal)
        result = env.step(action)
        n = len(screens)
        if n == frame_skip:  # both captures happened: the last two frames
            expected = resize(np.maximum(screens[-2], screens[-1]))
            last_frame = screens[-1]
        elif n == frame_skip - 1:  # break right after the first capture
            expected = resize(np.maximum(screens[-1], last_frame))
        else:  # break before any capture: the previous observation again
            expected = prev_obs
        np.testing.assert_array_equal(result.observation, expected)
        assert result.reward == float(reward) and isinstance(result.reward, float)
        assert (result.terminal, result.game_over, result.episode_over) == (
            terminal,
            game_over,
            game_over,
        )
        assert env.lives == ref.ale.lives()
        if ref.ale.lives() < lives_before and not game_over:
            life_losses += 1
            assert result.terminal == life_terminal  # and the game goes on: no reset
        if result.terminal:
            terminal_iterations.append(n)
        prev_obs = result.observation
        if game_over:
            break
    assert game_over, f"{game} did not end within 5000 random steps"
    assert life_losses >= 2
    assert len(terminal_iterations) == (life_losses + 1 if life_terminal else 1)
    if life_terminal:
        assert set(terminal_iterations) == set(range(1, frame_skip + 1))


def test_noop_count_is_drawn_from_0_to_max_noops_minus_1():
    """k = rng.integers(0, 30) no-op steps of 4 frames each (Pong never loses a life
    this early, so the episode frame number counts them)."""
    env = AtariEnv("Pong", EnvConfig(max_noops=30))
    counts = []
    for seed in range(150):
        rng = np.random.default_rng(seed)
        env.reset(rng)
        k = np.random.default_rng(seed).integers(0, 30)
        assert env.ale.getEpisodeFrameNumber() == 4 * k
        # Exactly one draw was consumed.
        twin = np.random.default_rng(seed)
        twin.integers(0, 30)
        assert rng.integers(1 << 30) == twin.integers(1 << 30)
        counts.append(int(k))
        assert env.episode_length == 0 and env.episode_return == 0.0
    assert min(counts) == 0 and max(counts) == 29


def test_no_noops_when_max_noops_is_zero():
    env = AtariEnv("Pong", EnvConfig(max_noops=0))
    rng = np.random.default_rng(5)
    obs = env.reset(rng)
    assert env.ale.getEpisodeFrameNumber() == 0
    assert rng.integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)
    ref = ReferenceAle("Pong", seed=0)
    np.testing.assert_array_equal(obs, resize(ref.reset()))


def test_terminal_noop_resets_again_without_new_draw():
    """Assault loses a life after 258 no-op frames: with 10-frame steps the 26th no-op
    step is terminal, the game is reset and the remaining no-ops continue."""
    config = EnvConfig(frame_skip=10, max_noops=30)
    seed = next(s for s in range(100) if np.random.default_rng(s).integers(0, 30) == 29)
    env = AtariEnv("Assault", config)
    obs = env.reset(np.random.default_rng(seed))

    ref = ReferenceAle("Assault", seed=0)
    buffers = np.stack([ref.reset(), np.zeros((210, 160), np.uint8)])
    resets = 0
    for _ in range(29):
        screens, _, terminal, _ = ref.step(0, 10, True)
        if len(screens) >= 9:
            buffers[0] = screens[8]
        if len(screens) == 10:
            buffers[1] = screens[9]
        if terminal:
            buffers = np.stack([ref.reset(), np.zeros((210, 160), np.uint8)])
            resets += 1
    assert resets == 1
    np.testing.assert_array_equal(obs, resize(buffers.max(axis=0)))
    assert env.ale.getEpisodeFrameNumber() == ref.ale.getEpisodeFrameNumber() == 30
    assert env.lives == ref.ale.lives()


def test_episode_cap_and_reset_required():
    env = AtariEnv("Pong", EnvConfig(max_steps_per_episode=5, max_noops=0))
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(rng)
    results = [env.step(0) for _ in range(5)]
    assert [r.episode_over for r in results] == [False] * 4 + [True]
    assert not any(r.game_over or r.terminal for r in results)
    assert env.episode_length == 5
    assert env.episode_return == sum(r.reward for r in results)
    with pytest.raises(RuntimeError, match="episode_over"):
        env.step(0)
    env.reset(rng)
    assert env.episode_length == 0
    assert not env.step(0).episode_over


@pytest.mark.parametrize("name", ["ChopperCommand", "chopper_command", "choppercommand"])
def test_game_name_forms(name):
    env = AtariEnv(name)
    assert env.game == "ChopperCommand"
    assert env.num_actions == 18


def test_unknown_game_and_bad_inputs():
    with pytest.raises(ValueError, match="valid names: Alien") as err:
        AtariEnv("Tetris")
    assert all(g in str(err.value) for g in ATARI_100K_GAMES)
    with pytest.raises(ValueError, match="frame_skip"):
        AtariEnv("Pong", EnvConfig(frame_skip=1))
    with pytest.raises(ValueError, match="max_noops"):
        AtariEnv("Pong", EnvConfig(max_noops=-1))
    with pytest.raises(ValueError, match="max_steps_per_episode"):
        AtariEnv("Pong", EnvConfig(max_steps_per_episode=0))
    env = AtariEnv("Pong")
    env.reset(np.random.default_rng(0))
    with pytest.raises(ValueError, match="out of range for Pong"):
        env.step(6)


def test_emulator_seed_is_deterministic():
    def state(seed):
        return AtariEnv("Pong", seed=seed).clone_state()["ale_state"]

    np.testing.assert_array_equal(state(1), state(1))
    assert not np.array_equal(state(1), state(2))


def test_clone_restore_continues_identically():
    """Clone mid-episode (Breakout, around life losses), restore into a fresh env and
    replay the same actions: every step and the bookkeeping are identical."""
    policy = np.random.default_rng(2)
    actions = policy.integers(4, size=260)
    env = AtariEnv("Breakout", EnvConfig(max_noops=30), seed=7)
    env.reset(np.random.default_rng(1))
    for a in actions[:60]:
        env.step(a)
    saved = env.clone_state()

    def play(e):
        out = []
        for a in actions[60:]:
            out.append(e.step(a))
            if out[-1].episode_over:
                break
        return out, (e.episode_return, e.episode_length, e.lives, e.game_over)

    first, first_book = play(env)
    assert any(r.terminal for r in first)  # a life loss lies in the replayed stretch
    other = AtariEnv("breakout", seed=99)
    other.restore_state({k: np.copy(v) for k, v in saved.items()})
    second, second_book = play(other)
    assert first_book == second_book
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.observation, b.observation)
        assert (a.reward, a.terminal, a.episode_over, a.game_over) == (
            b.reward,
            b.terminal,
            b.episode_over,
            b.game_over,
        )


def test_restore_rejects_foreign_state():
    saved = AtariEnv("Pong").clone_state()
    with pytest.raises(ValueError, match="cloned from Pong, not Breakout"):
        AtariEnv("Breakout").restore_state(saved)
    with pytest.raises(ValueError, match="lacks keys"):
        AtariEnv("Pong").restore_state({"ale_state": saved["ale_state"]})
    with pytest.raises(ValueError, match="buffers"):
        AtariEnv("Pong").restore_state({**saved, "buffers": np.zeros((2, 84, 84), np.uint8)})


def test_clip_reward():
    np.testing.assert_array_equal(
        clip_reward(np.array([-30.0, -1.0, -0.5, 0.0, 0.25, 1.0, 200.0])),
        [-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0],
    )
    assert clip_reward(7.0) == 1.0
