"""BBF's configuration: network, agent and reset dataclasses, and derived update counts.

Gin binds their fields by bare class name (``AgentConfig.batch_size = 32``), so gin
files written for BBF keep working wherever these classes live. Defaults are the
official BBF.gin values (``official_bbf_spec.md`` §2); a behaviour of the official code
that we consider a quirk is a named switch whose default is ``"official"``.
"""

from __future__ import annotations

import dataclasses

import gin

from bbf_jax.config import (
    Derived,
    EnvConfig,
    ReplayConfig,
    RunConfig,
    checked,
    choice,
    count,
    flag,
    positive_int,
    probability,
    validate,
)


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

    encoder_type: str = choice("impala", "impala", "dqn")
    width_scale: float = checked(4.0, "number", lo=0, lo_open=True)
    num_blocks: int = positive_int(2)
    hidden_dim: int = positive_int(2048)
    renormalize: bool = flag(True)
    dueling: bool = flag(True)
    noisy: bool = flag(False)
    num_atoms: int = positive_int(51)
    vmax: float = checked(10.0, "number", lo=0, lo_open=True)
    compute_dtype: str = choice("float32", "float32", "bfloat16", "float16")

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

    batch_size: int = positive_int(32)
    replay_ratio: int = positive_int(64)
    batches_to_group: int = positive_int(2)
    spr_weight: float = checked(5.0, "number", lo=0)
    jumps: int = count(5)
    data_augmentation: bool = flag(True)
    double_dqn: bool = flag(True)
    gamma: float = probability(0.997)
    min_gamma: float | None = probability(0.97, optional=True)
    update_horizon: int = positive_int(3)
    max_update_horizon: int | None = checked(10, "int", lo=1, optional=True)
    cycle_steps: int = positive_int(10_000)
    learning_rate: float = checked(1e-4, "number", lo=0)
    encoder_learning_rate: float = checked(1e-4, "number", lo=0)
    adam_eps: float = checked(1.5e-4, "number", lo=0)
    weight_decay: float = checked(0.1, "number", lo=0)
    target_update_tau: float = probability(0.005)
    target_update_period: int = positive_int(1)
    target_action_selection: bool = flag(True)
    min_replay_history: int = count(2000)
    epsilon_train: float = probability(0.0)
    epsilon_eval: float = probability(0.001)
    epsilon_decay_period: int = positive_int(2001)

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

    reset_every: int = count(20_000)
    shrink_factor: float = probability(0.5)
    perturb_factor: float = probability(0.5)
    shrink_perturb_keys: tuple[str, ...] = checked(
        ("encoder", "transition_model"), "choices",
        choices=("encoder", "transition_model", "projection", "predictor", "head"))
    reset_encoder: bool = flag(False)
    reset_projection: bool = flag(True)
    reset_head: bool = flag(True)
    reset_noise: bool = flag(True)
    no_resets_after: int = count(100_000)
    timing: str = choice("official", "official", "v2023")

    def __post_init__(self):
        if isinstance(self.shrink_perturb_keys, str):
            # gin users may write "encoder,transition_model" as in the official gin file.
            keys = tuple(k.strip() for k in self.shrink_perturb_keys.split(",") if k.strip())
            object.__setattr__(self, "shrink_perturb_keys", keys)
        elif isinstance(self.shrink_perturb_keys, list):
            object.__setattr__(self, "shrink_perturb_keys", tuple(self.shrink_perturb_keys))
        validate(self)


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
