"""The agents, one folder each: ``bbf`` (BBF and its Atari 100k relatives: DER, SPR,
SR-SPR, DrQ(eps), selected by gin file), ``btr`` (Beyond The Rainbow) and ``brc``
(BRC and its DQN baselines on three LunarLander tasks; its own episode-based runner,
``bbf_jax/agents/brc/runner.py``).

An agent folder holds its config dataclasses (``config.py``, with a
``make_experiment_config()`` that builds its ``ExperimentConfig`` from gin) and its
pure learner (init, ``train_step``, action selection). Everything else (networks'
building blocks, RL math, replay, envs, the runner, checkpoints, metrics, parallelism)
is shared and lives once at the top of :mod:`bbf_jax`. ``Experiment.agent`` in a gin
file picks the agent (default 'bbf').
"""

from __future__ import annotations

import importlib

import gin

from bbf_jax.config import AGENTS, Experiment


def config_module(name: str):
    """``bbf_jax.agents.<name>.config`` (importing it registers its gin configurables)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(AGENTS)}")
    return importlib.import_module(f"bbf_jax.agents.{name}.config")


def register_all() -> None:
    """Imports every agent's config so that gin knows all their configurables."""
    for name in AGENTS:
        config_module(name)


def make_experiment_config():
    """The selected agent's ``ExperimentConfig``, built from the parsed gin bindings.

    Raises:
      ValueError: a binding of another agent's configurable (it would be ignored).
    """
    name = Experiment().agent
    module = config_module(name)
    shared = getattr(module, "SHARED_CONFIGS", None)
    # gin keeps the bindings by (scope, full selector); it has no public listing of them.
    for _, selector in gin.config._CONFIG:
        parts = selector.split(".")
        if parts[:2] == ["bbf_jax", "agents"] and parts[2] != name:
            raise ValueError(f"{parts[-1]} is a configurable of agent '{parts[2]}', but "
                             f"Experiment.agent = '{name}'")
        if parts[:2] == ["bbf_jax", "config"] and shared is not None and parts[-1] not in shared:
            raise ValueError(f"{parts[-1]} does not apply to agent '{name}' (it reads "
                             f"{', '.join(shared)})")
    return module.make_experiment_config()


def agent_name(cfg) -> str:
    """The agent of an ``ExperimentConfig`` (the ``bbf_jax.agents.<name>`` it comes from)."""
    return type(cfg).__module__.split(".")[2]


def num_envs(cfg) -> int:
    """Train envs the agent steps as one vector (BBF: one)."""
    return getattr(cfg.agent, "num_envs", 1)


def make_agent(cfg, num_actions: int, skip_nonfinite: bool = False):
    """The :class:`~bbf_jax.runner.Agent` of ``cfg``'s agent for a game with
    ``num_actions`` actions."""
    module = importlib.import_module(f"bbf_jax.agents.{agent_name(cfg)}.agent")
    return module.make_agent(cfg, num_actions, skip_nonfinite=skip_nonfinite)


def derive(cfg):
    """The update counts (:class:`~bbf_jax.config.Derived`) of ``cfg``'s agent; raises
    ValueError for settings that give no whole number of updates."""
    return config_module(agent_name(cfg)).derive(cfg.agent)
