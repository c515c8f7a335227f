"""PPO's configuration (Schulman et al. 2017) for CarRacing from pixels.

Defaults are the design's values for CarRacing (8 envs, minibatch 256, lr 2.5e-4,
clip 0.1, entropy 0.01, value coefficient 0.5, GAE lambda 0.95, gamma 0.99, 10 epochs,
gradient clip 0.5, advantage normalisation); where it is silent they are
Stable-Baselines3's PPO and ``CnnPolicy`` defaults (marked "SB3"): the Nature CNN
shared by policy and value, orthogonal init (gains sqrt 2, 0.01 for the policy head,
1 for the value head), Adam eps 1e-5, unclipped value loss, per-minibatch advantage
normalisation, initial log-std 0. The rollout length is SB3 zoo's CarRacing value,
512 steps per env (8 x 512 = 4096 = 16 minibatches of 256).

PPO reads :class:`~bbf_jax.config.CarRacingConfig` and from
:class:`~bbf_jax.config.RunConfig` the seed, ``num_train_steps`` (agent steps of all
envs together, SB3's "timesteps"), ``eval_every``, ``num_eval_episodes`` and
``log_every``; it writes no checkpoints.
"""

from __future__ import annotations

import dataclasses

import gin

from bbf_jax.config import (
    PIXEL_RUN_FIELDS,
    CarRacingConfig,
    RunConfig,
    check_run_fields,
    checked,
    choice,
    positive_int,
    probability,
    validate,
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PPOAgentConfig:
    """PPO's policy, rollout and update.

    Attributes:
      policy: 'beta' (Beta per action on [0, 1] mapped to the action box, alpha and
        beta = softplus + 1; evaluation acts with its mode) or 'gaussian' (diagonal
        Gaussian with state-independent log-std, samples clipped to the box at the env;
        evaluation acts with the mean).
      num_envs: envs stepped as one vector; 8.
      rollout_length: steps per env between updates; 512 (SB3 zoo CarRacing).
      minibatch_size: 256; ``num_envs * rollout_length`` must be a multiple of it.
      num_epochs: passes over each rollout; 10.
      learning_rate: Adam; 2.5e-4.
      adam_eps: 1e-5 (SB3).
      clip_range: the probability-ratio clip epsilon; 0.1.
      entropy_coef: 0.01.
      value_coef: 0.5.
      max_grad_norm: global-norm gradient clip; 0.5.
      gamma: 0.99.
      gae_lambda: 0.95.
      normalize_advantage: per-minibatch ``(A - mean) / (std + 1e-8)``; on.
      log_std_init: the Gaussian policy's initial log-std; 0 (SB3).
      update_loop: how an update runs its epochs x minibatches: 'scan' (one jitted
        dispatch, ``lax.scan`` over epochs and minibatches), 'dispatch' (one jitted
        dispatch per minibatch, the same results) or 'auto' (default: 'dispatch' on the
        CPU backend, where XLA runs the scanned convolutional step ~11x slower:
        5.6 s against 0.49 s per minibatch of 256, measured; 'scan' elsewhere).
    """

    policy: str = choice("beta", "beta", "gaussian")
    num_envs: int = positive_int(8)
    rollout_length: int = positive_int(512)
    minibatch_size: int = positive_int(256)
    num_epochs: int = positive_int(10)
    learning_rate: float = checked(2.5e-4, "number", lo=0, lo_open=True)
    adam_eps: float = checked(1e-5, "number", lo=0, lo_open=True)
    clip_range: float = checked(0.1, "number", lo=0, lo_open=True)
    entropy_coef: float = checked(0.01, "number", lo=0)
    value_coef: float = checked(0.5, "number", lo=0)
    max_grad_norm: float = checked(0.5, "number", lo=0, lo_open=True)
    gamma: float = probability(0.99)
    gae_lambda: float = probability(0.95)
    normalize_advantage: bool = checked(True, "bool")
    log_std_init: float = checked(0.0, "number")
    update_loop: str = choice("auto", "auto", "scan", "dispatch")

    def __post_init__(self):
        validate(self)
        if (self.num_envs * self.rollout_length) % self.minibatch_size:
            raise ValueError(
                f"PPOAgentConfig: num_envs * rollout_length = "
                f"{self.num_envs * self.rollout_length} must be a multiple of "
                f"minibatch_size = {self.minibatch_size}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PPONetworkConfig:
    """The Nature CNN (Mnih et al. 2015; SB3's ``NatureCNN``) shared by policy and value.

    Attributes:
      channels: the three convolutions' filters (kernels 8, 4, 3; strides 4, 2, 1);
        (32, 64, 64).
      hidden_dim: the dense feature layer; 512.
    """

    channels: tuple = checked((32, 64, 64), "ints", lo=1)
    hidden_dim: int = positive_int(512)

    def __post_init__(self):
        validate(self)
        if len(self.channels) != 3:
            raise ValueError(f"PPONetworkConfig.channels must name 3 convolutions, got "
                             f"{self.channels!r}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One PPO experiment."""

    network: PPONetworkConfig = dataclasses.field(default_factory=PPONetworkConfig)
    agent: PPOAgentConfig = dataclasses.field(default_factory=PPOAgentConfig)
    env: CarRacingConfig = dataclasses.field(default_factory=CarRacingConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


SHARED_CONFIGS = ("Experiment", "RunConfig", "CarRacingConfig")


def make_experiment_config() -> ExperimentConfig:
    """Builds PPO's config from the parsed gin bindings.

    Raises:
      ValueError: a RunConfig field PPO does not read set to another value than its
        default, or a budget shorter than one rollout.
    """
    cfg = ExperimentConfig(network=PPONetworkConfig(), agent=PPOAgentConfig(),
                           env=CarRacingConfig(), run=RunConfig())
    check_run_fields(cfg.run, "ppo", PIXEL_RUN_FIELDS, "it writes no checkpoints; ")
    per_update = cfg.agent.num_envs * cfg.agent.rollout_length
    if cfg.run.num_train_steps < per_update:
        raise ValueError(f"RunConfig.num_train_steps = {cfg.run.num_train_steps} is shorter "
                         f"than one rollout ({per_update} agent steps: num_envs * "
                         "rollout_length)")
    return cfg
