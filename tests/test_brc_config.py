"""The multi-task LunarLander configs: the four gin files parse to the design's values,
and bad settings are refused with a message that names them."""

from __future__ import annotations

import pathlib

import pytest

from bbf_jax import gin_utils
from bbf_jax.agents import agent_name
from bbf_jax.agents.brc.config import BRCAgentConfig, LunarTasksConfig
from bbf_jax.envs.lunar import lunar_kwargs

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIN = ROOT / "gin_configs"


def _parse(name, *bindings):
    return gin_utils.parse([str(GIN / name)], list(bindings))


def test_brc_lunar_is_the_design():
    cfg = _parse("BRC_lunar.gin")
    assert agent_name(cfg) == "brc"
    n, a, t = cfg.network, cfg.agent, cfg.tasks
    assert (n.kind, n.width, n.num_blocks, n.embed_dim, n.block) == ("bronet", 256, 3, 32, "design")
    assert (a.value_head, a.num_atoms, a.v_min, a.v_max) == ("categorical", 51, -100.0, 300.0)
    assert (a.gamma, a.learning_rate, a.weight_decay, a.max_grad_norm) == (0.99, 3e-4, 1e-4, 10.0)
    assert (a.batch_size, a.replay_capacity, a.learning_starts) == (64, 100_000, 2_000)
    assert (a.epsilon_start, a.epsilon_final, a.epsilon_decay) == (1.0, 0.01, 0.995)
    assert (a.target_update_episodes, a.episodes_per_task) == (10, 500)
    assert (a.eval_every_episodes, a.eval_episodes_per_task) == (50, 5)
    assert t.tasks == ("standard", "windy", "heavy")
    assert cfg == _parse("BRC_lunar.gin", "RunConfig.seed = 0")  # every value is a default


def test_official_and_baseline_files():
    off = _parse("BRC_lunar_official.gin")
    assert (off.agent.num_atoms, off.agent.v_min, off.agent.v_max) == (101, -10.0, 10.0)
    assert off.agent.reward_normalization and off.network.unit_norm_embedding
    assert off.agent.max_grad_norm is None and off.agent.batch_size == 1024
    shared = _parse("SharedDQN_lunar.gin")
    assert (shared.network.kind, shared.network.embed_dim, shared.network.mlp_hidden) == (
        "shared_mlp", 8, (256, 128))
    assert (shared.agent.value_head, shared.agent.learning_rate) == ("scalar", 5e-4)
    indep = _parse("IndependentDQN_lunar.gin")
    assert indep.network.kind == "independent_mlp" and indep.agent.value_head == "scalar"


def test_task_env_arguments():
    cfg = LunarTasksConfig()
    assert lunar_kwargs("standard", cfg) == {"continuous": False, "max_episode_steps": 1000}
    assert lunar_kwargs("windy", cfg) == {"continuous": False, "max_episode_steps": 400,
                                          "enable_wind": True, "wind_power": 15.0,
                                          "turbulence_power": 1.5}
    assert lunar_kwargs("heavy", cfg) == {"continuous": False, "max_episode_steps": 800,
                                          "gravity": -11.5}
    with pytest.raises(ValueError, match="unknown LunarLander task 'icy'"):
        lunar_kwargs("icy", cfg)


@pytest.mark.parametrize("binding, message", [
    ("LunarTasksConfig.heavy_gravity = -12.0", "heavy_gravity must be a number in \\(-12"),
    ("LunarTasksConfig.tasks = ('standard', 'standard')", "must be distinct"),
    ("LunarTasksConfig.tasks = ('moon',)", "tasks must be a tuple of values"),
    ("RunConfig.num_train_steps = 5000", "RunConfig.num_train_steps = 5000 does not apply"),
    ("EnvConfig.game = 'Pong'", "EnvConfig does not apply to agent 'brc'"),
    ("BTRAgentConfig.batch_size = 4", "configurable of agent 'btr'"),
    ("BRCAgentConfig.task_sampling = 'balanced'",  # 64 is no multiple of 3 tasks
     "batch_size = 64 must be a multiple of the 3 tasks"),
    ("BRCAgentConfig.learning_starts = 200000", "exceeds replay_capacity"),
    ("BRCAgentConfig.v_min = 500.0", "v_min = 500.0 must be below"),
    ("BRCNetworkConfig.kind = 'transformer'", "kind must be one of"),
])
def test_bad_settings_are_named(binding, message):
    with pytest.raises(gin_utils.ConfigError, match=message):
        _parse("BRC_lunar.gin", binding)


def test_reward_normalization_needs_the_categorical_head():
    with pytest.raises(ValueError, match="needs value_head = 'categorical'"):
        BRCAgentConfig(value_head="scalar", reward_normalization=True)
