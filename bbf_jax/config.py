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
from typing import Literal

import gin

QuirkMode = Literal["official", "corrected"]
_QUIRK_MODES = ("official", "corrected")


def _check_choice(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name} = {value!r} is not one of {list(choices)}")


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

    encoder_type: str = "impala"
    width_scale: float = 4.0
    num_blocks: int = 2
    hidden_dim: int = 2048
    renormalize: bool = True
    dueling: bool = True
    noisy: bool = False
    num_atoms: int = 51
    vmax: float = 10.0
    compute_dtype: str = "float32"

    def __post_init__(self):
        _check_choice("NetworkConfig", "encoder_type", self.encoder_type, ("impala", "dqn"))
        _check_choice(
            "NetworkConfig", "compute_dtype", self.compute_dtype, ("float32", "bfloat16", "float16")
        )
        if self.num_atoms < 1:
            raise ValueError(f"NetworkConfig.num_atoms must be >= 1, got {self.num_atoms}")

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

    batch_size: int = 32
    replay_ratio: int = 64
    batches_to_group: int = 2
    spr_weight: float = 5.0
    jumps: int = 5
    data_augmentation: bool = True
    double_dqn: bool = True
    gamma: float = 0.997
    min_gamma: float | None = 0.97
    update_horizon: int = 3
    max_update_horizon: int | None = 10
    cycle_steps: int = 10_000
    learning_rate: float = 1e-4
    encoder_learning_rate: float = 1e-4
    adam_eps: float = 1.5e-4
    weight_decay: float = 0.1
    target_update_tau: float = 0.005
    target_update_period: int = 1
    target_action_selection: bool = True
    min_replay_history: int = 2000
    epsilon_train: float = 0.0
    epsilon_eval: float = 0.001
    epsilon_decay_period: int = 2001

    def __post_init__(self):
        for name in ("batch_size", "replay_ratio", "batches_to_group", "target_update_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"AgentConfig.{name} must be >= 1, got {getattr(self, name)}")
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

    reset_every: int = 20_000
    shrink_factor: float = 0.5
    perturb_factor: float = 0.5
    shrink_perturb_keys: tuple[str, ...] = ("encoder", "transition_model")
    reset_encoder: bool = False
    reset_projection: bool = True
    reset_head: bool = True
    reset_noise: bool = True
    no_resets_after: int = 100_000
    timing: str = "official"

    def __post_init__(self):
        _check_choice("ResetConfig", "timing", self.timing, ("official", "v2023"))
        for name in ("reset_encoder", "reset_projection", "reset_head", "reset_noise"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"ResetConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.shrink_perturb_keys, str):
            # gin users may write "encoder,transition_model" as in the official gin file.
            keys = tuple(k.strip() for k in self.shrink_perturb_keys.split(",") if k.strip())
            object.__setattr__(self, "shrink_perturb_keys", keys)
        for key in self.shrink_perturb_keys:
            _check_choice(
                "ResetConfig",
                "shrink_perturb_keys",
                key,
                ("encoder", "transition_model", "projection", "predictor", "head"),
            )


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

    capacity: int = 200_000
    prioritized: bool = True
    stack_size: int = 4
    nstep_bootstrap: str = "official"
    same_trajectory_mask: str = "official"
    priority_update: str = "official"
    prefetch: str = "official"

    def __post_init__(self):
        for name in ("nstep_bootstrap", "same_trajectory_mask", "priority_update", "prefetch"):
            _check_choice("ReplayConfig", name, getattr(self, name), _QUIRK_MODES)
        if self.capacity < 1:
            raise ValueError(f"ReplayConfig.capacity must be >= 1, got {self.capacity}")


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

    game: str = "ChopperCommand"
    frame_skip: int = 4
    max_noops: int = 30
    max_steps_per_episode: int = 27_000
    terminal_on_life_loss: bool = True
    repeat_action_probability: float = 0.0

    def __post_init__(self):
        p = self.repeat_action_probability
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(
                f"EnvConfig.repeat_action_probability must be a number in [0, 1], got {p!r}")


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
      checkpoint_every: agent steps between checkpoints (0: only the final one).
      num_devices: data-parallel devices; 0 means all local devices.
      diagnostics_every: gradient steps between plasticity diagnostics (dormant units,
        feature rank, churn, norms; :mod:`bbf_jax.diagnostics`), which also run at the
        first dispatch after each reset; 0 disables them. At 1000 a point costs ~0.1% of
        the training time (benchmarks/results/diagnostics.csv; the official agent logs
        its churn metrics every 200 gradient steps).
    """

    seed: int = 0
    num_train_steps: int = 100_000
    num_eval_episodes: int = 100
    eval_every: int = 0
    log_every: int = 100
    checkpoint_every: int = 10_000
    num_devices: int = 1
    diagnostics_every: int = 1000

    def __post_init__(self):
        d = self.diagnostics_every
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(
                f"RunConfig.diagnostics_every must be an integer >= 0 (0 disables), got {d!r}")


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
