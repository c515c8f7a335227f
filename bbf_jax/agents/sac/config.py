"""SAC + DrQ's configuration (Kostrikov, Yarats, Fergus 2020, "Image Augmentation Is
All You Need"; values of the authors' code, github.com/denisyarats/drq, ``config.yaml``)
for CarRacing from pixels.

Design choices over the code: a replay of 30k transitions (code: 100k) that stores
each frame once, and K = M = 1 augmentations (``num_augmentations``; the code's 2 is the
switch). SAC reads :class:`~bbf_jax.config.CarRacingConfig` (RGB 84x84, 3 frames for
DrQ) and from :class:`~bbf_jax.config.RunConfig` the seed, ``num_train_steps`` (agent
steps), ``eval_every``, ``num_eval_episodes`` and ``log_every``; it writes no
checkpoints.
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
    count,
    positive_int,
    probability,
    validate,
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SACNetworkConfig:
    """Encoder, actor and critics (:mod:`bbf_jax.agents.sac.learner`).

    Attributes:
      conv_filters: filters of each of the 4 3x3 convolutions (strides 2, 1, 1, 1); 32.
      feature_dim: the encoder head's Dense -> LayerNorm -> tanh width; 50.
      hidden_dim: width of the actor's and each critic's 2 hidden layers; 1024.
      log_std_min, log_std_max: the actor's log-std range; -10, 2.
    """

    conv_filters: int = positive_int(32)
    feature_dim: int = positive_int(50)
    hidden_dim: int = positive_int(1024)
    log_std_min: float = checked(-10.0, "number")
    log_std_max: float = checked(2.0, "number")

    def __post_init__(self):
        validate(self)
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"SACNetworkConfig.log_std_min = {self.log_std_min} must be below "
                             f"log_std_max = {self.log_std_max}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SACAgentConfig:
    """SAC's updates and DrQ's augmentation.

    Attributes:
      batch_size: 512 (code).
      learning_rate: Adam for actor, critics and temperature; 1e-3.
      init_temperature: 0.1.
      gamma: 0.99.
      critic_tau: EMA rate of the target critic (its encoder included); 0.01.
      actor_update_period: gradient steps between actor and temperature updates; 2.
      target_update_period: gradient steps between target EMA updates; 2.
      replay_capacity: transitions; 30,000 (frames stored once).
      seed_steps: agent steps of uniformly random actions before learning; 1,000.
      updates_per_step: gradient steps per agent step after the seed steps; 1.
      image_pad: DrQ's shift: replicate padding in pixels; 4.
      num_augmentations: K = M, augmentations averaged in the target (K) and in the
        critic loss (M); 1 (the design), 2 (the code).
    """

    batch_size: int = positive_int(512)
    learning_rate: float = checked(1e-3, "number", lo=0, lo_open=True)
    init_temperature: float = checked(0.1, "number", lo=0, lo_open=True)
    gamma: float = probability(0.99)
    critic_tau: float = probability(0.01)
    actor_update_period: int = positive_int(2)
    target_update_period: int = positive_int(2)
    replay_capacity: int = positive_int(30_000)
    seed_steps: int = count(1_000)
    updates_per_step: int = positive_int(1)
    image_pad: int = count(4)
    num_augmentations: int = checked(1, "int", lo=1, hi=2)

    def __post_init__(self):
        validate(self)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One SAC+DrQ experiment."""

    network: SACNetworkConfig = dataclasses.field(default_factory=SACNetworkConfig)
    agent: SACAgentConfig = dataclasses.field(default_factory=SACAgentConfig)
    env: CarRacingConfig = dataclasses.field(default_factory=CarRacingConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


SHARED_CONFIGS = ("Experiment", "RunConfig", "CarRacingConfig")


def make_experiment_config() -> ExperimentConfig:
    """Builds SAC's config from the parsed gin bindings.

    Raises:
      ValueError: a RunConfig field SAC does not read set to another value than its
        default.
    """
    cfg = ExperimentConfig(network=SACNetworkConfig(), agent=SACAgentConfig(),
                           env=CarRacingConfig(), run=RunConfig())
    check_run_fields(cfg.run, "sac", PIXEL_RUN_FIELDS, "it writes no checkpoints; ")
    return cfg
