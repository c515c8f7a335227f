"""Configuration shared by every agent: field checks, replay, environment, run, agent choice.

Every experiment is described by one frozen dataclass of small frozen dataclasses
(the agent's ``ExperimentConfig``, e.g. :class:`bbf_jax.agents.bbf.config.ExperimentConfig`).
Gin binds their fields by bare class name (``RunConfig.seed = 3``); nothing is ever
written back into them. :class:`Experiment` picks the agent. The classes here are the
parts every agent uses as they are; each agent's own network and learning
hyperparameters live in its folder (``bbf_jax/agents/<name>/config.py``).

Defaults are the official BBF.gin values (``official_bbf_spec.md`` §2). Behaviour of
the official code that we consider a quirk or bug is a named switch whose default is
``"official"``; ``"corrected"`` selects the textbook behaviour.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import gin

QuirkMode = Literal["official", "corrected"]
QUIRK_MODES = ("official", "corrected")


@dataclasses.dataclass(frozen=True)
class Check:
    """What one config field accepts (kept in the field's metadata, see :func:`checked`).

    Attributes:
      kind: 'int' (a Python int, not a bool), 'number' (a finite int or float, not a
        bool), 'bool', 'str' (non-empty), 'choice' (one of ``choices``), 'choices'
        (a tuple of them) or 'ints' (a tuple of 'int's within the bounds).
      lo, hi: inclusive bounds of an int or number (None: unbounded).
      lo_open: ``lo`` itself is excluded (``> lo``).
      hi_open: ``hi`` itself is excluded (``< hi``).
      choices: the allowed values of 'choice' and 'choices'.
      optional: None is allowed too.
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    optional: bool = False

    def allows(self, v: Any) -> bool:
        if v is None:
            return self.optional
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "str":
            return isinstance(v, str) and bool(v.strip())
        if self.kind == "choice":
            return isinstance(v, str) and v in self.choices
        if self.kind == "choices":
            return isinstance(v, tuple) and all(
                isinstance(x, str) and x in self.choices for x in v)
        if self.kind == "ints":
            item = dataclasses.replace(self, kind="int")
            return isinstance(v, tuple) and all(item.allows(x) for x in v)
        ok_type = int if self.kind == "int" else (int, float)
        if isinstance(v, bool) or not isinstance(v, ok_type) or not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def describe(self) -> str:
        if self.kind == "bool":
            text = "True or False"
        elif self.kind == "str":
            text = "a non-empty string"
        elif self.kind == "choice":
            text = f"one of {list(self.choices)}"
        elif self.kind == "choices":
            text = f"a tuple of values from {list(self.choices)}"
        elif self.kind == "ints":
            item = dataclasses.replace(self, kind="int").describe()
            text = "a tuple of " + item.replace("an integer", "integers", 1)
        else:
            text = "an integer" if self.kind == "int" else "a number"
            lo, hi = (_fmt(b) for b in (self.lo, self.hi))
            if self.lo is not None and self.hi is not None:
                left, right = "(["[not self.lo_open], ")]"[not self.hi_open]
                text += f" in {left}{lo}, {hi}{right}"
            elif self.lo is not None:
                text += f" {'>' if self.lo_open else '>='} {lo}"
            elif self.hi is not None:
                text += f" {'<' if self.hi_open else '<='} {hi}"
        return f"None or {text}" if self.optional else text


def _fmt(bound) -> str:
    return "2**32" if bound == 2**32 else f"{bound:g}" if bound is not None else ""


def checked(default, kind: str, **kw) -> Any:
    """A dataclass field with its :class:`Check`."""
    return dataclasses.field(default=default, metadata={"check": Check(kind, **kw)})


def positive_int(default):
    return checked(default, "int", lo=1)


def count(default):  # an integer >= 0
    return checked(default, "int", lo=0)


def probability(default, optional: bool = False):
    return checked(default, "number", lo=0, hi=1, optional=optional)


def flag(default):
    return checked(default, "bool")


def choice(default, *choices):
    return checked(default, "choice", choices=choices)


def validate(config) -> None:
    """Checks every field of a config dataclass against its :class:`Check`.

    The one place where single field values are checked; each config's
    ``__post_init__`` calls it (ResetConfig after turning gin's comma-separated string
    of keys into a tuple) before any check that involves several fields.

    Raises:
      ValueError: ``<Config>.<field> must be <what is allowed>, got <value>`` for the
        first field that fails.
    """
    owner = type(config).__name__
    for field in dataclasses.fields(config):
        check = field.metadata["check"]
        value = getattr(config, field.name)
        if not check.allows(value):
            raise ValueError(f"{owner}.{field.name} must be {check.describe()}, got {value!r}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Subsequence replay memory (spec §4) and its official quirks.

    Attributes:
      capacity: transitions stored (over all envs).
      prioritized: deterministic sum-tree prioritized sampling (else uniform).
      stack_size: frames per state.
      nstep_bootstrap: 'official' bootstraps from the state one step early
        (google-research/google-research#1851, spec §4.5); 'corrected' is the
        textbook n-step target.
      same_trajectory_mask: 'official' never masks batch row 0 and also drops step j
        when d_{t+j} is set (spec §4.6); 'corrected' masks every row, dropping step j
        only if a terminal occurs among d_t..d_{t+j-1}.
      priority_update: 'official' sets only two priorities per call, from the
        minibatch-mean losses (spec §4.8); 'corrected' updates every sampled index
        with its own loss.
      prefetch: 'official' trains on batches sampled two train calls earlier
        (spec §5.2); 'corrected' samples each batch right before it is used.
    """

    capacity: int = positive_int(200_000)
    prioritized: bool = flag(True)
    stack_size: int = positive_int(4)
    nstep_bootstrap: str = choice("official", *QUIRK_MODES)
    same_trajectory_mask: str = choice("official", *QUIRK_MODES)
    priority_update: str = choice("official", *QUIRK_MODES)
    prefetch: str = choice("official", *QUIRK_MODES)

    def __post_init__(self):
        validate(self)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Atari 100k environment protocol (spec §9).

    Attributes:
      game: ALE game, e.g. 'ChopperCommand', 'chopper_command' or 'choppercommand'.
      frame_skip: emulator frames per agent step (rewards summed).
      max_noops: random no-ops at each (re)start are drawn from 0..max_noops-1.
      max_steps_per_episode: agent steps after which an episode is cut.
      terminal_on_life_loss: a lost life is a terminal for learning and stacking.
      repeat_action_probability: sticky actions: on every emulator frame the previous
        frame's action is repeated with this probability (the ALE's rule, drawn by
        ``AtariEnv`` from a generator seeded from the run seed, so that checkpoints
        restore it exactly). 0.0 as in BBF.gin (the Atari 100k protocol); 0.25 is the
        protocol of the official ``RR2_BBF+sticky_*`` score files.
    """

    game: str = checked("ChopperCommand", "str")
    frame_skip: int = checked(4, "int", lo=2)  # the observation pools the last two frames
    max_noops: int = count(30)
    max_steps_per_episode: int = positive_int(27_000)
    terminal_on_life_loss: bool = flag(True)
    repeat_action_probability: float = probability(0.0)

    def __post_init__(self):
        validate(self)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CarRacingConfig:
    """CarRacing-v3 from pixels (continuous actions: steer in [-1, 1], gas and brake in
    [0, 1]) and its preprocessing (:mod:`bbf_jax.envs.car_racing`).

    Attributes:
      grayscale: one luminance channel instead of RGB.
      image_size: frames are resized to ``image_size x image_size`` (96: the native
        frame, no resize).
      frame_stack: frames per observation, stacked on the channel axis.
      action_repeat: env steps per agent step, rewards summed (1, 2, 4 or 8).
      reward_shaping: train on shaped rewards (evaluation always reports the raw env
        returns): -0.05 per env step with no wheel on the road and no -100 for leaving
        the playfield (the episode still ends there).
      max_episode_steps: env steps (before action repeat) after which an episode is
        cut; 1000 (gymnasium's).
    """

    grayscale: bool = flag(False)
    image_size: int = checked(96, "int", lo=16, hi=96)
    frame_stack: int = positive_int(3)
    action_repeat: int = checked(1, "int", lo=1, hi=8)
    reward_shaping: bool = flag(False)
    max_episode_steps: int = positive_int(1000)

    def __post_init__(self):
        validate(self)
        if self.action_repeat not in (1, 2, 4, 8):
            raise ValueError(f"CarRacingConfig.action_repeat must be one of [1, 2, 4, 8], "
                             f"got {self.action_repeat!r}")


# The RunConfig fields the CarRacing agents (PPO, SAC + DrQ) read.
PIXEL_RUN_FIELDS = ("seed", "num_train_steps", "eval_every", "num_eval_episodes", "log_every")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The training run.

    Attributes:
      seed: the one seed of the run, in [0, 2**32); every JAX key and numpy Generator
        derives from it, one per purpose (:mod:`bbf_jax.seeds`).
      num_train_steps: agent (env) steps of training. The official runner performs
        num_train_steps + 1 steps (its stop test is '>'; spec §9.4); an agent with a
        vector of N train envs (BTR) runs to the first multiple of N beyond that.
        This and the intervals below count env steps for every agent; with N envs an
        interval fires at the vector step that reaches or crosses a multiple of it.
      num_eval_episodes: evaluation episodes, one per parallel env.
      eval_every: agent steps between intermediate evaluations (0: only at the end).
      log_every: agent steps between logged training metrics.
      checkpoint_every: agent steps between checkpoints (0: only the final one); each is
        written in the background and bounds what a hard kill loses (a preemption loses
        nothing). 10,000 (as BBF.gin): ten per 100k-step run, the two newest kept (README,
        "Checkpoints").
      num_devices: data-parallel devices; 0 means all local devices.
      diagnostics_every: gradient steps between plasticity diagnostics (dormant units,
        feature rank, churn, norms; :mod:`bbf_jax.diagnostics`), which also run at the
        first dispatch after each reset; 0 disables them. At 1000 a point costs ~0.1% of
        the training time (benchmarks/results/diagnostics.csv; the official agent logs
        its churn metrics every 200 gradient steps).
      on_nonfinite: what a non-finite loss or gradient norm does: 'stop' (the run ends
        with a diagnostic directory, ``base_dir/nonfinite/``) or 'skip' (the update is
        dropped: parameters and optimizer state stay as they were).
      seeds: () (default): one run, of ``seed``. Distinct seeds: one run per seed, all
        trained in one process (:class:`~bbf_jax.seed_group.SeedGroup`: one dispatch
        for every seed's training and one for every seed's act per agent step; see
        ``seed_batching``), each computing its single run of
        ``seed = s`` in ``base_dir/seed_<s>/``; ``seed`` is then unused.
      seed_batching: how a group of ``seeds`` runs its device work (train dispatch,
        reset, act), always one dispatch per call for all seeds: 'vmap' (default) batches
        the seeds into one program (``jax.vmap``; for accelerators, where one seed leaves
        most of the device idle), so each seed computes its single run up to float
        rounding; 'map' runs the seeds one after another inside the dispatch
        (``jax.lax.map``), so each seed computes exactly its single run's program, bit
        for bit (and on CPU faster than 'vmap'). Unused without ``seeds``.
    """

    seed: int = checked(0, "int", lo=0, hi=2**32, hi_open=True)
    num_train_steps: int = count(100_000)
    num_eval_episodes: int = positive_int(100)
    eval_every: int = count(0)
    log_every: int = positive_int(100)
    checkpoint_every: int = count(10_000)
    num_devices: int = count(1)
    diagnostics_every: int = count(1000)
    on_nonfinite: str = choice("stop", "stop", "skip")
    seeds: tuple = checked((), "ints", lo=0, hi=2**32, hi_open=True)
    seed_batching: str = choice("vmap", "vmap", "map")

    def __post_init__(self):
        validate(self)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"RunConfig.seeds must be distinct, got {self.seeds!r}")


def check_run_fields(run: RunConfig, agent: str, reads: tuple[str, ...], hint: str = "") -> None:
    """Refuses a RunConfig field that ``agent`` does not read (``reads`` lists those it
    does) set to anything but its default: the value would be ignored.

    Raises:
      ValueError: ``RunConfig.<field> = <value> does not apply to agent '<agent>' ...``.
    """
    for field in dataclasses.fields(RunConfig):
        value = getattr(run, field.name)
        if field.name not in reads and value != field.default:
            raise ValueError(f"RunConfig.{field.name} = {value!r} does not apply to agent "
                             f"'{agent}' ({hint}it reads RunConfig.{', '.join(reads)})")


@dataclasses.dataclass(frozen=True)
class Derived:
    """Values computed from the configs (spec §5.1); never written back.

    Attributes:
      gradient_steps_per_update: gradient steps made each time the agent trains.
      update_period: vector steps between trainings (env steps with one train env).
      batches_to_group: gradient steps per jitted dispatch (G).
      dispatches_per_update: jitted calls per training env step.
      group_size: transitions sampled per dispatch (G * batch_size).
      seq_len: subsequence length T = jumps + 1 (1 without SPR).
      max_horizon: the replay's n-step horizon used for validity (max n).
    """

    gradient_steps_per_update: int
    update_period: int
    batches_to_group: int
    dispatches_per_update: int
    group_size: int
    seq_len: int
    max_horizon: int


AGENTS = ("bbf", "btr", "brc", "ppo", "sac")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Experiment:
    """Which agent a gin configuration trains.

    Attributes:
      agent: 'bbf' (default, so that every BBF gin file keeps working unchanged),
        'btr' (:mod:`bbf_jax.agents.btr`), 'brc' (:mod:`bbf_jax.agents.brc`: BRC and
        its DQN baselines on LunarLander), 'ppo' (:mod:`bbf_jax.agents.ppo`: PPO on
        CarRacing from pixels) or 'sac' (:mod:`bbf_jax.agents.sac`: SAC + DrQ on
        CarRacing from pixels).
    """

    agent: str = choice("bbf", *AGENTS)

    def __post_init__(self):
        validate(self)
