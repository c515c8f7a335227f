"""BTR's configuration (Clark et al., "Beyond The Rainbow", arXiv 2411.03820 v2).

Sources of the defaults: "paper" is the paper's text and Table D6; "code" is the
authors' PyTorch code (github.com/VIPTankz/BTR, ``main.py`` argparse defaults), used
where the paper is silent. Where the code departs from the paper, the default follows
the paper and the code's behaviour is a named switch (``bonus_network``,
``importance_weights``).

BTR shares :class:`~bbf_jax.config.ReplayConfig`, :class:`~bbf_jax.config.EnvConfig`
and :class:`~bbf_jax.config.RunConfig` with BBF; ``gin_configs/BTR.gin`` sets them to
BTR's protocol (sticky actions, no life-loss signal, 2^20 prioritized replay).
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
class BTRNetworkConfig:
    """The BTR network (paper App. E.1; :mod:`bbf_jax.agents.btr.network`).

    Attributes:
      width_scale: IMPALA channels ``(16, 32, 32) * width_scale``; 2 (paper).
      num_blocks: residual units per IMPALA stage; 2 (paper).
      pool_size: side of the adaptive max-pool after the trunk; 6 (paper: 6 beat 4
        and 8), giving ``6 * 6 * 64 = 2304`` features.
      spectral_norm: spectral normalisation of the 12 convolutions inside the residual
        units (paper App. E.1), one power iteration per training step.
      layer_norm: the authors' later variant (paper footnote 2, Table H9): LayerNorm
        after each stage's first convolution and before the ReLU of each 512-wide
        dense layer; off in the published agent.
      hidden_dim: width of each dueling stream's noisy hidden layer; 512 (paper).
      num_cosines: cosines of the IQN tau embedding; 64 (code, as IQN).
      noisy_sigma0: factorised-noise sigma_0; 0.5 (paper).
    """

    width_scale: float = checked(2.0, "number", lo=0, lo_open=True)
    num_blocks: int = positive_int(2)
    pool_size: int = positive_int(6)
    spectral_norm: bool = flag(True)
    layer_norm: bool = flag(False)
    hidden_dim: int = positive_int(512)
    num_cosines: int = positive_int(64)
    noisy_sigma0: float = checked(0.5, "number", lo=0)

    def __post_init__(self):
        validate(self)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BTRAgentConfig:
    """BTR's learning and acting hyperparameters (paper §3.2, Table D6; code).

    Attributes:
      num_envs: parallel training envs stepped as one vector; 64 (paper).
      batch_size: minibatch size; 256 (paper).
      update_period: vector steps between gradient steps; 1 (paper: one gradient
        step per vector step, i.e. 1/64 per env step).
      batches_to_group: G, gradient steps fused into one jitted dispatch (unrolled in
        the program): G steps every ``G * update_period`` vector steps, the same ratio
        in fewer dispatches; 1 (the authors' one step per vector step).
      num_taus: quantile fractions for the online, target and acting evaluations; 8.
      kappa: quantile Huber threshold; 1 (paper, as IQN).
      gamma: discount; 0.997 (paper).
      update_horizon: n of the n-step return; 3 (paper).
      munchausen_alpha: scale of the Munchausen bonus; 0.9 (paper, as M-IQN).
      munchausen_tau: entropy temperature; 0.03 (paper).
      munchausen_clip: lower clip l0 of the scaled log-policy bonus; -1 (paper).
      bonus_network: network whose log-policy at ``s_t`` gives the Munchausen bonus:
        'target' (M-IQN, the paper's intent) or 'online' (the authors' code).
      learning_rate: Adam learning rate; 1e-4 (paper).
      adam_eps: Adam epsilon; 0.005 / 256 (paper).
      max_grad_norm: global gradient-norm clip; 10 (paper).
      target_update_period: gradient steps between hard target copies; 500 (paper).
      min_replay_history: transitions stored before learning starts; 200,000 (paper).
      priority_exponent: PER alpha of the stored priorities ``p = loss ** alpha``;
        0.2 (paper).
      importance_weights: 'paper' (PER's ``(N P(i)) ** -beta`` with ``per_beta``) or
        'code' (the authors' ``PER.sample``: ``(N P(i)) ** -alpha``, with
        ``priority_exponent`` in beta's place); both divided by the minibatch maximum.
      per_beta: PER beta of the 'paper' importance weights, constant; 0.45 (the
        code's ``per_beta``, never read there; the paper names no beta).
      epsilon_start: epsilon at the first step; 1.0 (paper).
      epsilon_final: value epsilon decays towards; 0.01 (paper).
      epsilon_decay_steps: the code's geometric decay constant, in env steps:
        ``eps_k = final + (start - final) * (1 - 1 / decay_steps) ** k``; 2,000,000
        (code: ``eps_steps``; the paper's "decay 8M frames").
      epsilon_off_after: env steps after which epsilon is 0 (noise alone explores);
        25,000,000 (paper: 100M frames).
      epsilon_eval: evaluation epsilon; 0.01 (paper; its code sets 0 after 125M frames).
    """

    num_envs: int = positive_int(64)
    batch_size: int = positive_int(256)
    update_period: int = positive_int(1)
    batches_to_group: int = positive_int(1)
    num_taus: int = positive_int(8)
    kappa: float = checked(1.0, "number", lo=0, lo_open=True)
    gamma: float = probability(0.997)
    update_horizon: int = positive_int(3)
    munchausen_alpha: float = checked(0.9, "number", lo=0)
    munchausen_tau: float = checked(0.03, "number", lo=0, lo_open=True)
    munchausen_clip: float = checked(-1.0, "number", hi=0)
    bonus_network: str = choice("target", "target", "online")
    learning_rate: float = checked(1e-4, "number", lo=0)
    adam_eps: float = checked(0.005 / 256, "number", lo=0)
    max_grad_norm: float = checked(10.0, "number", lo=0, lo_open=True)
    target_update_period: int = positive_int(500)
    min_replay_history: int = count(200_000)
    priority_exponent: float = checked(0.2, "number", lo=0)
    importance_weights: str = choice("paper", "paper", "code")
    per_beta: float = probability(0.45)
    epsilon_start: float = probability(1.0)
    epsilon_final: float = probability(0.01)
    epsilon_decay_steps: int = positive_int(2_000_000)
    epsilon_off_after: int = count(25_000_000)
    epsilon_eval: float = probability(0.01)

    def __post_init__(self):
        validate(self)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One BTR experiment: its network and agent, and the shared replay, env and run."""

    network: BTRNetworkConfig = dataclasses.field(default_factory=BTRNetworkConfig)
    agent: BTRAgentConfig = dataclasses.field(default_factory=BTRAgentConfig)
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


def make_experiment_config() -> ExperimentConfig:
    """Builds BTR's config dataclasses from the currently parsed gin bindings.

    ``ReplayConfig.priority_update`` and ``same_trajectory_mask`` are BBF's and do
    not apply: BTR writes every sampled leaf's own priority, and its samples hold one
    state (no SPR mask).

    Raises:
      ValueError: for run options BBF has and BTR not: plasticity diagnostics
        (``RunConfig.diagnostics_every`` must be 0) and groups of seeds
        (``RunConfig.seeds``); for a replay too small for the vector of envs, or a
        warm-up too short to sample from.
    """
    cfg = ExperimentConfig(
        network=BTRNetworkConfig(),
        agent=BTRAgentConfig(),
        replay=ReplayConfig(),
        env=EnvConfig(),
        run=RunConfig(),
    )
    if cfg.run.diagnostics_every:
        raise ValueError(
            f"RunConfig.diagnostics_every = {cfg.run.diagnostics_every}: plasticity "
            "diagnostics exist for agent 'bbf' only; set it to 0 for 'btr' (as BTR.gin does)")
    if cfg.run.seeds:
        raise ValueError("RunConfig.seeds: a group of seeds in one process exists for agent "
                         "'bbf' only; run BTR's seeds as separate runs (bbf-sweep)")
    a = cfg.agent
    # Each env's stream needs n + 1 + stack_size rows before a state can be sampled.
    rows = a.update_horizon + 1 + cfg.replay.stack_size
    if cfg.replay.capacity < a.num_envs * rows or cfg.replay.capacity % a.num_envs:
        raise ValueError(
            f"ReplayConfig.capacity = {cfg.replay.capacity} must be a multiple of "
            f"BTRAgentConfig.num_envs = {a.num_envs} and hold at least {rows} transitions "
            f"per env (update_horizon + 1 + stack_size)")
    if a.min_replay_history < a.num_envs * rows:
        raise ValueError(
            f"BTRAgentConfig.min_replay_history = {a.min_replay_history} is too short to "
            f"sample from: at least {a.num_envs * rows} transitions ({rows} per env of "
            f"num_envs = {a.num_envs})")
    return cfg


def derive(agent: BTRAgentConfig) -> Derived:
    """BTR's update counts: G = ``batches_to_group`` gradient steps, in one dispatch,
    every ``G * update_period`` vector steps; one state per sample (no SPR), n-step
    horizon ``update_horizon``."""
    g = agent.batches_to_group
    return Derived(
        gradient_steps_per_update=g,
        update_period=g * agent.update_period,
        batches_to_group=g,
        dispatches_per_update=1,
        group_size=g * agent.batch_size,
        seq_len=1,
        max_horizon=agent.update_horizon,
    )
