"""Configuration: frozen, gin-configurable dataclasses and pure derived values.

Every experiment is described by one :class:`ExperimentConfig` made of small frozen
dataclasses. Gin binds their fields (``AgentConfig.batch_size = 32``); nothing is
ever written back into them. Quantities that follow from several fields (gradient
steps per environment step, group size, ...) come from :func:`derive`.

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
_QUIRK_MODES = ("official", "corrected")


@dataclasses.dataclass(frozen=True)
class Check:
    """What one config field accepts (kept in the field's metadata, see :func:`_f`).

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
            text = "a tuple of " + item.replace("an integer", "distinct integers", 1)
        else:
            text = "an integer" if self.kind == "int" else "a number"
            lo, hi = (_fmt(b) for b in (self.lo, self.hi))
            if self.lo is not None and self.hi is not None:
                left, right = "(["[not self.lo_open], ")]"[not self.hi_open]
                text += f" in {left}{lo}, {hi}{right}"
            elif self.lo is not None:
                text += f" {'>' if self.lo_open else '>='} {lo}"
        return f"None or {text}" if self.optional else text


def _fmt(bound) -> str:
    return "2**32" if bound == 2**32 else f"{bound:g}" if bound is not None else ""


def _f(default, kind: str, **kw) -> Any:
    """A dataclass field with its :class:`Check`."""
    return dataclasses.field(default=default, metadata={"check": Check(kind, **kw)})


def _positive_int(default):
    return _f(default, "int", lo=1)


def _count(default):  # an integer >= 0
    return _f(default, "int", lo=0)


def _probability(default, optional: bool = False):
    return _f(default, "number", lo=0, hi=1, optional=optional)


def _bool(default):
    return _f(default, "bool")


def _choice(default, *choices):
    return _f(default, "choice", choices=choices)


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
class NetworkConfig:
    """The Q network, SPR transition model and heads (spec §3).

    Attributes:
      encoder_type: 'impala' (BBF) or 'dqn' (3-conv Nature/Rainbow encoder, SAME padding).
      width_scale: channel multiplier of the encoder; 4 for BBF.
      num_blocks: residual blocks per IMPALA stage.
      hidden_dim: width of the projection (and of the SPR predictor).
      renormalize: per-example min-max renormalisation of latents (spec §3.5).
      dueling: dueling head (combination in logit space, spec §3.6).
      noisy: factorised noisy dense layers in projection and head (spec §3.9).
      num_atoms: C51 atoms; 1 selects a scalar Q head (DrQ-style Huber loss).
      vmax: the C51 support is linspace(-vmax, vmax, num_atoms).
      compute_dtype: dtype of the encoder and transition-model computation
        ('float32', 'bfloat16', 'float16'); parameters, projection, predictor and
        head always stay float32 (spec §10).
    """

    encoder_type: str = _choice("impala", "impala", "dqn")
    width_scale: float = _f(4.0, "number", lo=0, lo_open=True)
    num_blocks: int = _positive_int(2)
    hidden_dim: int = _positive_int(2048)
    renormalize: bool = _bool(True)
    dueling: bool = _bool(True)
    noisy: bool = _bool(False)
    num_atoms: int = _positive_int(51)
    vmax: float = _f(10.0, "number", lo=0, lo_open=True)
    compute_dtype: str = _choice("float32", "float32", "bfloat16", "float16")

    def __post_init__(self):
        validate(self)

    @property
    def distributional(self) -> bool:
        return self.num_atoms > 1


@gin.configurable
@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Learning hyperparameters (spec §2, §5, §6).

    Attributes:
      batch_size: minibatch size of one gradient step.
      replay_ratio: transitions sampled per environment step (official units:
        divide by batch_size for gradient steps per env step; BBF: 64 -> 2).
      batches_to_group: gradient steps fused into one jitted dispatch (lax.scan).
      spr_weight: weight of the SPR loss; 0 disables SPR and the transition model.
      jumps: SPR prediction horizon K (subsequence length K + 1).
      data_augmentation: DrQ pad-and-crop + intensity augmentation in training.
      double_dqn: select the bootstrap action with the online network.
      gamma: final discount of each annealing cycle.
      min_gamma: discount at the start of each cycle (None: gamma is constant).
      update_horizon: final n of the n-step return.
      max_update_horizon: n at the start of each cycle (None: n is constant).
      cycle_steps: gradient steps over which n and gamma anneal after each reset.
      learning_rate: AdamW learning rate of projection, predictor and head.
      encoder_learning_rate: AdamW learning rate of encoder and transition model.
      adam_eps: Adam epsilon (added outside the square root).
      weight_decay: decoupled AdamW weight decay on rank != 1 leaves.
      target_update_tau: EMA coefficient of the target network.
      target_update_period: gradient steps between target updates.
      target_action_selection: act with the target network (train and eval).
      min_replay_history: transitions collected before learning starts.
      epsilon_train: final training epsilon.
      epsilon_eval: evaluation epsilon.
      epsilon_decay_period: env steps of the linear epsilon decay after warm-up.
    """

    batch_size: int = _positive_int(32)
    replay_ratio: int = _positive_int(64)
    batches_to_group: int = _positive_int(2)
    spr_weight: float = _f(5.0, "number", lo=0)
    jumps: int = _count(5)
    data_augmentation: bool = _bool(True)
    double_dqn: bool = _bool(True)
    gamma: float = _probability(0.997)
    min_gamma: float | None = _probability(0.97, optional=True)
    update_horizon: int = _positive_int(3)
    max_update_horizon: int | None = _f(10, "int", lo=1, optional=True)
    cycle_steps: int = _positive_int(10_000)
    learning_rate: float = _f(1e-4, "number", lo=0)
    encoder_learning_rate: float = _f(1e-4, "number", lo=0)
    adam_eps: float = _f(1.5e-4, "number", lo=0)
    weight_decay: float = _f(0.1, "number", lo=0)
    target_update_tau: float = _probability(0.005)
    target_update_period: int = _positive_int(1)
    target_action_selection: bool = _bool(True)
    min_replay_history: int = _count(2000)
    epsilon_train: float = _probability(0.0)
    epsilon_eval: float = _probability(0.001)
    epsilon_decay_period: int = _positive_int(2001)

    def __post_init__(self):
        validate(self)
        if self.spr_weight > 0 and self.jumps < 1:
            raise ValueError("AgentConfig.jumps must be >= 1 when spr_weight > 0")

    @property
    def use_spr(self) -> bool:
        return self.spr_weight > 0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ResetConfig:
    """Shrink-and-perturb resets (spec §7).

    A reset (spec §7.2) re-initialises every parameter that is not *kept*; the four
    ``reset_*`` flags decide what is kept, and ``shrink_perturb_keys`` which of the
    kept modules are interpolated towards the fresh initialisation instead of being
    copied unchanged. Defaults are the official agent's (BBF.gin leaves the flags
    alone): keep encoder and transition model, re-initialise projection, predictor,
    head and noisy-net sigmas.

    Attributes:
      reset_every: env steps between resets; 0 disables resets.
      shrink_factor: weight of the old parameters.
      perturb_factor: weight of the fresh random initialisation.
      shrink_perturb_keys: top-level modules interpolated as
        ``shrink_factor * old + perturb_factor * fresh`` when they are kept; kept modules
        not listed keep their old values; a listed module that is not kept is
        re-initialised all the same (as in the official code).
      reset_encoder: re-initialise the encoder (and the SPR transition model); False
        keeps them.
      reset_projection: re-initialise the projection (and the SPR predictor); False
        keeps them.
      reset_head: re-initialise the Q head (dueling value and advantage); False keeps it.
      reset_noise: re-initialise the noisy-net sigma leaves (``kernell``, ``biass``);
        False keeps them wherever they are, also inside re-initialised modules. No
        effect without noisy nets.
      no_resets_after: no reset is scheduled beyond this env step.
      timing: 'official' (current official code: reset_offset 1 and a strict '>'
        test, resets at 20,002 / 40,003 / 60,004 for BBF) or 'v2023' (the 2023 code:
        resets at 20,000 / 40,000 / 60,000 / 80,000).
    """

    reset_every: int = _count(20_000)
    shrink_factor: float = _probability(0.5)
    perturb_factor: float = _probability(0.5)
    shrink_perturb_keys: tuple[str, ...] = _f(
        ("encoder", "transition_model"), "choices",
        choices=("encoder", "transition_model", "projection", "predictor", "head"))
    reset_encoder: bool = _bool(False)
    reset_projection: bool = _bool(True)
    reset_head: bool = _bool(True)
    reset_noise: bool = _bool(True)
    no_resets_after: int = _count(100_000)
    timing: str = _choice("official", "official", "v2023")

    def __post_init__(self):
        if isinstance(self.shrink_perturb_keys, str):
            # gin users may write "encoder,transition_model" as in the official gin file.
            keys = tuple(k.strip() for k in self.shrink_perturb_keys.split(",") if k.strip())
            object.__setattr__(self, "shrink_perturb_keys", keys)
        elif isinstance(self.shrink_perturb_keys, list):
            object.__setattr__(self, "shrink_perturb_keys", tuple(self.shrink_perturb_keys))
        validate(self)


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

    capacity: int = _positive_int(200_000)
    prioritized: bool = _bool(True)
    stack_size: int = _positive_int(4)
    nstep_bootstrap: str = _choice("official", *_QUIRK_MODES)
    same_trajectory_mask: str = _choice("official", *_QUIRK_MODES)
    priority_update: str = _choice("official", *_QUIRK_MODES)
    prefetch: str = _choice("official", *_QUIRK_MODES)

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

    game: str = _f("ChopperCommand", "str")
    frame_skip: int = _f(4, "int", lo=2)  # the observation pools the last two frames
    max_noops: int = _count(30)
    max_steps_per_episode: int = _positive_int(27_000)
    terminal_on_life_loss: bool = _bool(True)
    repeat_action_probability: float = _probability(0.0)

    def __post_init__(self):
        validate(self)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The training run.

    Attributes:
      seed: the one seed of the run, in [0, 2**32); every JAX key and numpy Generator
        derives from it, one per purpose (:mod:`bbf_jax.seeds`).
      num_train_steps: agent steps of training. The official runner performs
        num_train_steps + 1 steps (its stop test is '>'; spec §9.4).
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

    seed: int = _f(0, "int", lo=0, hi=2**32, hi_open=True)
    num_train_steps: int = _count(100_000)
    num_eval_episodes: int = _positive_int(100)
    eval_every: int = _count(0)
    log_every: int = _positive_int(100)
    checkpoint_every: int = _count(10_000)
    num_devices: int = _count(1)
    diagnostics_every: int = _count(1000)
    on_nonfinite: str = _choice("stop", "stop", "skip")
    seeds: tuple = _f((), "ints", lo=0, hi=2**32, hi_open=True)
    seed_batching: str = _choice("vmap", "vmap", "map")

    def __post_init__(self):
        validate(self)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"RunConfig.seeds must be distinct, got {self.seeds!r}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    agent: AgentConfig = dataclasses.field(default_factory=AgentConfig)
    reset: ResetConfig = dataclasses.field(default_factory=ResetConfig)
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


def make_experiment_config() -> ExperimentConfig:
    """Builds every config dataclass from the currently parsed gin bindings."""
    return ExperimentConfig(
        network=NetworkConfig(),
        agent=AgentConfig(),
        reset=ResetConfig(),
        replay=ReplayConfig(),
        env=EnvConfig(),
        run=RunConfig(),
    )


@dataclasses.dataclass(frozen=True)
class Derived:
    """Values computed from the configs (spec §5.1); never written back.

    Attributes:
      gradient_steps_per_update: gradient steps made each time the agent trains.
      update_period: env steps between trainings.
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


def derive(agent: AgentConfig, n_envs: int = 1) -> Derived:
    """Derives update counts from the replay ratio (spec §5.1), as the official code does.

    With ``B = batch_size``, ``RR = replay_ratio`` and ``n_envs`` parallel train envs:
    ``updates = max(1, RR * n_envs // B)`` gradient steps every
    ``update_period = max(1, B // RR * n_envs)`` env steps, i.e. ``(B // RR) * n_envs``
    (integer division first, the official ``set_replay_settings``), run as ``updates / G``
    dispatches of ``G = min(batches_to_group, updates)`` steps. With one env this is
    ``B / RR`` env steps per gradient step; with ``n_envs > 1`` and ``RR < B`` the official
    period grows with ``n_envs`` instead of shrinking (kept as is; ``bbf-train`` uses one
    train env).

    Raises:
      ValueError: if the replay ratio does not give a whole number of gradient steps
        per env step (or of env steps per gradient step), or if G does not divide the
        number of gradient steps.
    """
    rr, b = agent.replay_ratio, agent.batch_size
    if (rr * n_envs) >= b and (rr * n_envs) % b:
        raise ValueError(
            f"invalid replay ratio: AgentConfig.replay_ratio={rr} transitions per env step "
            f"with batch_size={b} and {n_envs} env(s) is not a whole number of gradient "
            f"steps ({rr * n_envs / b:g}); use a multiple of {b}"
        )
    if rr < b and b % rr:
        raise ValueError(
            f"invalid replay ratio: AgentConfig.replay_ratio={rr} with batch_size={b} "
            f"gives one gradient step every {b / rr:g} env steps; use a divisor of {b}"
        )
    updates = max(1, rr * n_envs // b)
    period = max(1, b // rr * n_envs)
    group = min(agent.batches_to_group, updates)
    if updates % group:
        raise ValueError(
            f"AgentConfig.batches_to_group={agent.batches_to_group} does not divide the "
            f"{updates} gradient steps per env step"
        )
    seq_len = agent.jumps + 1 if agent.use_spr else 1
    max_horizon = max(agent.update_horizon, agent.max_update_horizon or 0)
    return Derived(
        gradient_steps_per_update=updates,
        update_period=period,
        batches_to_group=group,
        dispatches_per_update=updates // group,
        group_size=group * b,
        seq_len=seq_len,
        max_horizon=max_horizon,
    )
