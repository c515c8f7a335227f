"""Configuration of the multi-task LunarLander agents: BRC and its two DQN baselines.

One value network (or, for Independent DQN, one per task) learns three LunarLander-v3
variants from one shared replay, tasks taking turns episode by episode. Which of the
three agents a gin file trains is :attr:`BRCNetworkConfig.kind` plus the value head
:attr:`BRCAgentConfig.value_head`:

=====================  ===================  ===========  ===================
gin file               ``kind``             value head   parameters
=====================  ===================  ===========  ===================
``BRC_lunar.gin``      'bronet'             categorical  459,820
``SharedDQN_lunar``    'shared_mlp'         scalar       37,788
``IndependentDQN_...`` 'independent_mlp'    scalar       107,148 (3 x 35,716)
=====================  ===================  ===========  ===================

Defaults are the written design of the BRC LunarLander variant (README, "BRC on
LunarLander"); ``BRC_lunar_official.gin`` switches to the official BRC code's choices
(Nauman et al., arXiv 2505.23150; github.com/naumix/BiggerRegularizedCategorical):
101 bins on [-10, 10] with per-task reward normalisation, unit-norm task embeddings,
batch 1024, no gradient clipping. Budgets count episodes (the design's unit), not env
steps, so :class:`~bbf_jax.config.RunConfig`'s step counts do not apply.
"""

from __future__ import annotations

import dataclasses

import gin

from bbf_jax.config import (
    RunConfig,
    check_run_fields,
    checked,
    choice,
    count,
    flag,
    positive_int,
    probability,
    validate,
)

TASK_NAMES = ("standard", "windy", "heavy")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LunarTasksConfig:
    """The three LunarLander-v3 tasks (discrete actions, 8-dim state, 4 actions).

    Attributes:
      tasks: which tasks, in round-robin order (episode i plays ``tasks[i % len]``);
        all three by default. The task id of a task is its index in ``TASK_NAMES``,
        so a subset keeps its embeddings' rows.
      standard_max_steps: episode limit of 'standard' (gymnasium's 1000).
      windy_max_steps: episode limit of 'windy'; 400 (design).
      heavy_max_steps: episode limit of 'heavy'; 800 (design).
      wind_power: 'windy' wind strength; 15 (design; gymnasium's default value).
      turbulence_power: 'windy' rotational turbulence; 1.5 (design; gymnasium's).
      heavy_gravity: 'heavy' gravity in m/s^2; -11.5. The design asks for "stronger
        gravity" than the standard -10; gymnasium asserts ``-12 < gravity < 0``, and
        -11.5 is the strongest value a round number allows below that bound (+15%).
    """

    tasks: tuple = checked(TASK_NAMES, "choices", choices=TASK_NAMES)
    standard_max_steps: int = positive_int(1000)
    windy_max_steps: int = positive_int(400)
    heavy_max_steps: int = positive_int(800)
    wind_power: float = checked(15.0, "number", lo=0)
    turbulence_power: float = checked(1.5, "number", lo=0)
    heavy_gravity: float = checked(-11.5, "number", lo=-12, hi=0, lo_open=True, hi_open=True)

    def __post_init__(self):
        validate(self)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"LunarTasksConfig.tasks must be distinct task names from "
                             f"{list(TASK_NAMES)}, got {self.tasks!r}")

    def task_ids(self) -> tuple[int, ...]:
        """The task id (row of the task embedding) of each task of ``tasks``."""
        return tuple(TASK_NAMES.index(t) for t in self.tasks)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BRCNetworkConfig:
    """The value network (:mod:`bbf_jax.agents.brc.network`).

    Attributes:
      kind: 'bronet' (BRC: task embedding + residual MLP), 'shared_mlp' (Shared DQN:
        task embedding + MLP) or 'independent_mlp' (Independent DQN: one MLP per task,
        no embedding).
      width: BroNet width; 256 (design).
      num_blocks: BroNet residual blocks; 3 (design).
      block: 'design': pre-LayerNorm blocks ``x + Dense(ReLU(Dense(LN(x))))`` after a
        Dense + ReLU stem, a final LayerNorm, flax's default (LeCun-normal) init;
        'paper': the BRO/BRC papers' and code's BroNet, a Dense -> LN -> ReLU stem and
        post-LayerNorm blocks ``x + LN(Dense(ReLU(LN(Dense(x)))))``, no final LN,
        orthogonal init with scale sqrt(2) (461,356 parameters at the defaults).
      embed_dim: task embedding size; 32 for BroNet (design and official), 8 for
        Shared DQN (its gin file). Unused by 'independent_mlp'.
      unit_norm_embedding: the official BRC scales each task embedding to unit L2
        norm; the design does not.
      mlp_hidden: hidden layer sizes of the DQN MLPs; (256, 128). The design gives
        only the parameter counts; these sizes are the ones that give exactly
        37,788 (Shared DQN: 3x8 embedding, 16 -> 256 -> 128 -> 4) and 3 x 35,716
        = 107,148 (Independent DQN: 8 -> 256 -> 128 -> 4 per task).
    """

    kind: str = choice("bronet", "bronet", "shared_mlp", "independent_mlp")
    width: int = positive_int(256)
    num_blocks: int = count(3)
    block: str = choice("design", "design", "paper")
    embed_dim: int = positive_int(32)
    unit_norm_embedding: bool = flag(False)
    mlp_hidden: tuple = checked((256, 128), "ints", lo=1)

    def __post_init__(self):
        validate(self)
        if not self.mlp_hidden:
            raise ValueError("BRCNetworkConfig.mlp_hidden must name at least one layer")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BRCAgentConfig:
    """Learning, acting and evaluation (design values; the official BRC's in comments).

    Attributes:
      value_head: 'categorical' (C51 cross-entropy against the projected target,
        Bellemare et al. 2017; BRC) or 'scalar' (DQN, mean squared TD error).
      num_atoms: atoms of the categorical support; 51 (design; official 101).
      v_min, v_max: support bounds; -100, 300 (design; official -10, 10).
      reward_normalization: scale each task's rewards by ``v_max / M_k``, with ``M_k``
        the largest absolute discounted Monte-Carlo value seen in task k's episodes
        (official BRC ``RewardNormalizer``), so every task fits the support; off in
        the design.
      gamma: discount; 0.99.
      learning_rate: 3e-4 (design BRC; Shared DQN's gin file: 5e-4).
      weight_decay: AdamW decoupled weight decay on kernels; 1e-4 (optax's default,
        as the official code); 0 gives Adam.
      max_grad_norm: global-norm gradient clip; 10 (design); None: no clipping
        (official). Independent DQN clips each task's network on its own.
      batch_size: 64 (design; official 1024).
      replay_capacity: transitions of the one shared replay; 100,000.
      task_sampling: how a minibatch mixes tasks: 'uniform' draws transitions
        uniformly from the shared replay (the design), 'balanced' draws
        ``batch_size / num_tasks`` from each task's transitions (needs a multiple).
      learning_starts: transitions stored before the first gradient step; 2,000.
      updates_per_step: gradient steps per env step once learning has started; 1.
      epsilon_start, epsilon_final: epsilon-greedy bounds; 1.0, 0.01.
      epsilon_decay: epsilon is multiplied by this after every episode, never below
        ``epsilon_final``; 0.995.
      target_update_episodes: episodes between hard target-network copies; 10.
      episodes_per_task: training episodes of each task; 500 (1,500 in all).
      eval_every_episodes: training episodes between evaluations (and one after the
        last); 50.
      eval_episodes_per_task: greedy evaluation episodes of each task; 5.
    """

    value_head: str = choice("categorical", "categorical", "scalar")
    num_atoms: int = checked(51, "int", lo=2)
    v_min: float = checked(-100.0, "number")
    v_max: float = checked(300.0, "number")
    reward_normalization: bool = flag(False)
    gamma: float = probability(0.99)
    learning_rate: float = checked(3e-4, "number", lo=0, lo_open=True)
    weight_decay: float = checked(1e-4, "number", lo=0)
    max_grad_norm: float | None = checked(10.0, "number", lo=0, lo_open=True, optional=True)
    batch_size: int = positive_int(64)
    replay_capacity: int = positive_int(100_000)
    task_sampling: str = choice("uniform", "uniform", "balanced")
    learning_starts: int = positive_int(2_000)
    updates_per_step: int = positive_int(1)
    epsilon_start: float = probability(1.0)
    epsilon_final: float = probability(0.01)
    epsilon_decay: float = probability(0.995)
    target_update_episodes: int = positive_int(10)
    episodes_per_task: int = positive_int(500)
    eval_every_episodes: int = positive_int(50)
    eval_episodes_per_task: int = positive_int(5)

    def __post_init__(self):
        validate(self)
        if not self.v_min < self.v_max:
            raise ValueError(f"BRCAgentConfig.v_min = {self.v_min} must be below "
                             f"v_max = {self.v_max}")
        if self.epsilon_final > self.epsilon_start:
            raise ValueError(f"BRCAgentConfig.epsilon_final = {self.epsilon_final} must not "
                             f"exceed epsilon_start = {self.epsilon_start}")
        if self.reward_normalization and self.value_head != "categorical":
            raise ValueError("BRCAgentConfig.reward_normalization fits rewards to the "
                             "categorical support; it needs value_head = 'categorical'")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One multi-task LunarLander experiment."""

    network: BRCNetworkConfig = dataclasses.field(default_factory=BRCNetworkConfig)
    agent: BRCAgentConfig = dataclasses.field(default_factory=BRCAgentConfig)
    tasks: LunarTasksConfig = dataclasses.field(default_factory=LunarTasksConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


# The RunConfig fields a BRC run reads; the others count Atari env steps or name
# features of the Atari runner, so a value other than the default would be ignored.
_RUN_FIELDS = ("seed", "seeds", "log_every")


def make_experiment_config() -> ExperimentConfig:
    """Builds the config dataclasses from the currently parsed gin bindings.

    Raises:
      ValueError: a RunConfig field this agent does not read set to a non-default
        value, a replay smaller than the warm-up, or a 'balanced' batch that does
        not split evenly over the tasks.
    """
    cfg = ExperimentConfig(network=BRCNetworkConfig(), agent=BRCAgentConfig(),
                           tasks=LunarTasksConfig(), run=RunConfig())
    check_run_fields(cfg.run, "brc", _RUN_FIELDS, "budgets count episodes: "
                     "BRCAgentConfig.episodes_per_task, eval_every_episodes; ")
    a = cfg.agent
    if a.learning_starts > a.replay_capacity:
        raise ValueError(f"BRCAgentConfig.learning_starts = {a.learning_starts} exceeds "
                         f"replay_capacity = {a.replay_capacity}")
    if a.task_sampling == "balanced" and a.batch_size % len(cfg.tasks.tasks):
        raise ValueError(f"BRCAgentConfig.batch_size = {a.batch_size} must be a multiple "
                         f"of the {len(cfg.tasks.tasks)} tasks for task_sampling = "
                         "'balanced'")
    return cfg


# The shared configurables (bbf_jax.config) this agent reads; bindings of the others
# (EnvConfig, ReplayConfig: Atari's) are refused.
SHARED_CONFIGS = ("Experiment", "RunConfig")
