"""One Atari 2600 game with Dopamine 4.0.5 preprocessing (spec §9.1, §9.3).

The emulator is driven through ``ale_py.ALEInterface`` directly rather than through
gymnasium's ``ALE/<Game>-v5`` and its ``AtariPreprocessing`` wrapper, because

* gymnasium's wrapper restarts the whole game on a life-loss terminal, pads the
  first pooled frame differently and draws no-ops from its own RNG, so it cannot give
  Dopamine's semantics without being rewritten anyway;
* the official order inside one frame-skip iteration (act, add the reward, capture the
  grayscale screen on the last two iterations, *then* test for a terminal and break,
  leaving stale screens in the buffers) has to be copied line by line, which is
  simplest against the raw interface;
* it is the fastest path: no gymnasium ``step`` bookkeeping and no RGB observation is
  ever built. One agent step costs about 270 us on one core of the development CPU
  (four emulated frames ~190 us, two grayscale reads ~27 us, max-pool and resize
  ~53 us), i.e. 2,300-3,200 agent steps/s on an idle core depending on the game
  (``benchmarks/env_throughput.py``).

The emulator settings equal those of ``<Game>NoFrameskip-v4``: emulator frame skip 1,
repeat_action_probability 0 (no sticky actions) and the game's minimal action set;
the ROMs are the ones shipped inside ale-py.

Sticky actions (``EnvConfig.repeat_action_probability`` = p > 0) follow the ALE's rule:
on every emulated frame (inside the frame skip, no-ops included), with probability p
the emulator repeats the action it applied on the previous frame instead of the new
one; a game reset makes that previous action NOOP. The draw is made here, from a numpy
Generator seeded from the run seed, and the ALE's own stickiness stays off, because
``ALEInterface.cloneState`` does not save the previous action: a restored emulator
would continue with whatever action it last applied and a resumed run would diverge.
"""

from __future__ import annotations

import dataclasses
import json

import ale_py
import cv2
import numpy as np

from bbf_jax.atari_games import ATARI_55_GAMES, canonical_game_name, rom_id
from bbf_jax.config import EnvConfig

SCREEN_SIZE = 84  # side of the square observation handed to the agent
_RAW_SCREEN = (210, 160)  # ALE screen (height, width)

# The banner and warnings of the emulator are noise in logs and tests.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What one agent step returns.

    Attributes:
      observation: (84, 84) uint8, max-pool of the last two grayscale screens, resized.
      reward: raw (unclipped) sum of the emulator rewards over the skipped frames.
      terminal: a life was lost (with ``terminal_on_life_loss``) or the game is over;
        a terminal for bootstrapping and for zeroing the agent's frame stack.
      episode_over: the game is over or the episode reached ``max_steps_per_episode``
        agent steps; the caller must ``reset`` before the next step.
      game_over: the emulator reports game over.
    """

    observation: np.ndarray
    reward: float
    terminal: bool
    episode_over: bool
    game_over: bool


def clip_reward(reward):
    """Reward used for learning: ``clip(r, -1, 1)``, not its sign (spec §9.2 step 3)."""
    return np.clip(reward, -1.0, 1.0)


def ale_seed(seed: int) -> int:
    """Deterministic emulator seed (a non-negative int32) derived from the run seed."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0] >> 1)


def sticky_seed(seed: int) -> np.random.SeedSequence:
    """Seed of the sticky-action draws, a stream of the run seed apart from the emulator's."""
    return np.random.SeedSequence([seed, 1])


def pool_and_resize(buffers: np.ndarray) -> np.ndarray:
    """Dopamine's ``_pool_and_resize``: (2, 210, 160) uint8 -> (84, 84) uint8.

    Like Dopamine, the max is written in place into ``buffers[0]`` (it then serves as a
    stale buffer if the next step breaks early; the pooled result is the same either
    way). The resize is OpenCV ``INTER_AREA`` (spec §9.1).
    """
    np.maximum(buffers[0], buffers[1], out=buffers[0])
    return cv2.resize(buffers[0], (SCREEN_SIZE, SCREEN_SIZE), interpolation=cv2.INTER_AREA)


class AtariEnv:
    """An Atari 100k game with the official preprocessing and episode protocol.

    A lost life is reported as ``terminal`` (if ``config.terminal_on_life_loss``) but
    the game goes on; only game over or ``config.max_steps_per_episode`` agent steps
    end an episode (``episode_over``), after which ``reset`` must be called.
    ``episode_return`` (raw) and ``episode_length`` (agent steps, no-ops excluded)
    count the current episode, as the official runner's ``cum_reward``/``cum_length``.

    Args:
      game: one of the 55 games of ``ATARI_55_GAMES``, in any of the forms accepted
        by ``canonical_game_name`` ('ChopperCommand', 'chopper_command', 'choppercommand').
      config: the environment protocol; ``EnvConfig()`` (the official one) if None.
        ``config.game`` is ignored: ``game`` names the game.
      seed: run seed; the emulator's own RNG (unused by these settings; the official
        code never seeds it) and the sticky-action draws are seeded from it.

    Raises:
      ValueError: for an unknown game or an invalid config.
    """

    def __init__(self, game: str, config: EnvConfig | None = None, seed: int = 0):
        self.config = EnvConfig() if config is None else config
        self.game = canonical_game_name(game)
        self._ale = ale_py.ALEInterface()
        self._ale.setInt("random_seed", ale_seed(seed))
        self._ale.setFloat("repeat_action_probability", 0.0)  # stickiness is drawn here
        self._ale.setInt("frame_skip", 1)
        self._ale.loadROM(str(ale_py.roms.get_rom_path(rom_id(self.game))))
        self._actions = list(self._ale.getMinimalActionSet())
        self._sticky_rng = np.random.default_rng(sticky_seed(seed))
        self._applied_action = ale_py.Action.NOOP  # the emulator's action of the last frame
        self.num_actions = len(self._actions)
        self._buffers = np.zeros((2, *_RAW_SCREEN), np.uint8)
        self._lives = 0
        self.game_over = False
        self.episode_return = 0.0
        self.episode_length = 0
        self._needs_reset = True

    @property
    def lives(self) -> int:
        """Lives left in the emulator's game."""
        return self._ale.lives()

    @property
    def ale(self) -> ale_py.ALEInterface:
        """The emulator itself, for inspection (frame numbers, RAM)."""
        return self._ale

    # ----------------------------------------------------------------- episodes
    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Starts an episode: reset, then k no-op steps (spec §9.3).

        ``k = rng.integers(0, max_noops)`` (0..29 for the official 30; no draw when
        ``max_noops`` is 0). A no-op step that is terminal (life loss included) resets
        the game again and the remaining no-ops continue; no new count is drawn.

        Returns:
          (84, 84) uint8, the first observation of the episode.
        """
        obs = self._reset_game()
        if self.config.max_noops > 0:
            for _ in range(int(rng.integers(0, self.config.max_noops))):
                obs, _, terminal, _ = self._skip_frames(0)
                if terminal:
                    obs = self._reset_game()
        self.episode_return = 0.0
        self.episode_length = 0
        self._needs_reset = False
        return obs

    def step(self, action: int) -> StepResult:
        """One agent step: ``action`` (index into the minimal action set) repeated for
        ``frame_skip`` frames, with the episode bookkeeping of the official runner
        (spec §9.2 step 2)."""
        if self._needs_reset:
            raise RuntimeError(
                f"AtariEnv({self.game}).step called before reset() or after the episode "
                "ended (episode_over); call reset(rng) first"
            )
        action = int(action)
        if not 0 <= action < self.num_actions:
            raise ValueError(
                f"action {action} out of range for {self.game} ({self.num_actions} actions)"
            )
        obs, reward, terminal, game_over = self._skip_frames(action)
        self.episode_return += reward
        self.episode_length += 1
        episode_over = game_over or self.episode_length >= self.config.max_steps_per_episode
        self._needs_reset = episode_over
        return StepResult(obs, reward, terminal, episode_over, game_over)

    # ------------------------------------------------------- Dopamine internals
    def _reset_game(self) -> np.ndarray:
        """Dopamine ``reset``: buffer 0 = current screen, buffer 1 = zeros (spec §9.1)."""
        self._ale.reset_game()
        self._applied_action = ale_py.Action.NOOP
        self._lives = self._ale.lives()
        self.game_over = False
        self._ale.getScreenGrayscale(self._buffers[0])
        self._buffers[1].fill(0)
        return pool_and_resize(self._buffers)

    def _skip_frames(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        """Dopamine ``step`` (spec §9.1): returns (obs, raw reward, terminal, game over).

        In each iteration the frame is emulated and its reward added, the screen is
        captured on the last two iterations, and only then is the terminal tested; an
        early break leaves the previous step's screens in the buffers. With sticky
        actions each emulated frame first draws u ~ U[0, 1) and keeps the previous
        frame's action if u < p (the ALE's rule).
        """
        ale, ale_action = self._ale, self._actions[action]
        skip = self.config.frame_skip
        p = self.config.repeat_action_probability
        reward = 0.0
        terminal = game_over = False
        for t in range(skip):
            if p == 0.0 or self._sticky_rng.random() >= p:
                self._applied_action = ale_action
            reward += ale.act(self._applied_action)
            game_over = ale.game_over()
            if self.config.terminal_on_life_loss:
                lives = ale.lives()
                terminal = game_over or lives < self._lives
                self._lives = lives
            else:
                terminal = game_over
            if t >= skip - 2:
                ale.getScreenGrayscale(self._buffers[t - (skip - 2)])
            if terminal:
                break
        self.game_over = game_over
        return pool_and_resize(self._buffers), reward, terminal, game_over

    # ------------------------------------------------------------ checkpoints
    def clone_state(self) -> dict:
        """Everything needed to continue bit-identically: the emulator state (with its
        RNG) serialised to uint8, the sticky-action RNG state (JSON as uint8) and last
        applied action, the two screen buffers, lives and the episode bookkeeping."""
        ale_state = self._ale.cloneState(include_rng=True).serialize()
        sticky_rng = json.dumps(self._sticky_rng.bit_generator.state).encode()
        return {
            "game_index": ATARI_55_GAMES.index(self.game),
            "ale_state": np.frombuffer(ale_state, np.uint8).copy(),
            "sticky_rng": np.frombuffer(sticky_rng, np.uint8).copy(),
            "applied_action": self._applied_action.value,
            "buffers": self._buffers.copy(),
            "lives": int(self._lives),
            "game_over": int(self.game_over),
            "episode_return": float(self.episode_return),
            "episode_length": int(self.episode_length),
            "needs_reset": int(self._needs_reset),
        }

    def restore_state(self, state: dict) -> None:
        """Inverse of ``clone_state``.

        Raises:
          ValueError: if ``state`` lacks a key, was cloned from another game or holds
            buffers of the wrong shape or dtype.
        """
        missing = {
            "game_index",
            "ale_state",
            "sticky_rng",
            "applied_action",
            "buffers",
            "lives",
            "game_over",
            "episode_return",
            "episode_length",
            "needs_reset",
        } - set(state)
        if missing:
            raise ValueError(f"AtariEnv state lacks keys {sorted(missing)}")
        game = ATARI_55_GAMES[int(state["game_index"])]
        if game != self.game:
            raise ValueError(f"AtariEnv state was cloned from {game}, not {self.game}")
        buffers = np.asarray(state["buffers"])
        if buffers.shape != self._buffers.shape or buffers.dtype != np.uint8:
            raise ValueError(
                f"AtariEnv state buffers must be uint8 {self._buffers.shape}, "
                f"got {buffers.dtype} {buffers.shape}"
            )
        ale_bytes = np.asarray(state["ale_state"], np.uint8).tobytes()
        self._ale.restoreState(ale_py.ALEState(ale_bytes))
        sticky_rng = np.asarray(state["sticky_rng"], np.uint8).tobytes()
        self._sticky_rng.bit_generator.state = json.loads(sticky_rng.decode())
        self._applied_action = ale_py.Action(int(state["applied_action"]))
        self._buffers[...] = buffers
        self._lives = int(state["lives"])
        self.game_over = bool(state["game_over"])
        self.episode_return = float(state["episode_return"])
        self.episode_length = int(state["episode_length"])
        self._needs_reset = bool(state["needs_reset"])

