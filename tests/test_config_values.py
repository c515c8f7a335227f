"""Every gin-bound config field is checked against its type and range (bbf_jax/config.py
and each agent's config)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bbf_jax import config as C
from bbf_jax import gin_utils
from bbf_jax.agents.bbf import config as BBF
from bbf_jax.agents.brc import config as BRC
from bbf_jax.agents.btr import config as BTR
from bbf_jax.agents.ppo import config as PPO
from bbf_jax.agents.sac import config as SAC

CONFIGS = {c.__name__: c for c in (BBF.NetworkConfig, BBF.AgentConfig, BBF.ResetConfig,
                                   C.ReplayConfig, C.EnvConfig, C.RunConfig, C.Experiment,
                                   C.CarRacingConfig, BTR.BTRNetworkConfig, BTR.BTRAgentConfig,
                                   BRC.LunarTasksConfig, BRC.BRCNetworkConfig,
                                   BRC.BRCAgentConfig, PPO.PPOAgentConfig,
                                   PPO.PPONetworkConfig, SAC.SACNetworkConfig,
                                   SAC.SACAgentConfig)}
NAN, INF = math.nan, math.inf

# field: (values it accepts, values it rejects, what the error says is allowed)
INT1 = ([1, 7], [0, -1, 2.0, "4", True, None], "an integer >= 1")
INT0 = ([0, 3], [-1, 1.5, "3", False, None], "an integer >= 0")
POS = ([0.25, 1, 4.0], [0, -1.0, "big", NAN, INF, True, None], "a number > 0")
NONNEG = ([0, 0.5, 1e3], [-1e-9, "x", NAN, INF, False, None], "a number >= 0")
PROB = ([0, 0.25, 1], [-0.1, 1.5, "0.5", NAN, True, None], "a number in [0, 1]")
BOOL = ([True, False], [1, 0, "no", "True", None], "True or False")
QUIRK = (["official", "corrected"], ["Official", "fixed", 1, None],
         "one of ['official', 'corrected']")

TABLE = {
    "NetworkConfig": {
        "encoder_type": (["impala", "dqn"], ["resnet", 1, None], "one of ['impala', 'dqn']"),
        "width_scale": POS,
        "num_blocks": INT1,
        "hidden_dim": INT1,
        "renormalize": BOOL,
        "dueling": BOOL,
        "noisy": BOOL,
        "num_atoms": INT1,
        "vmax": POS,
        "compute_dtype": (["float32", "bfloat16", "float16"], ["float64", "f32", None],
                          "one of ['float32', 'bfloat16', 'float16']"),
    },
    "AgentConfig": {
        "batch_size": INT1,
        "replay_ratio": INT1,
        "batches_to_group": INT1,
        "spr_weight": NONNEG,
        "jumps": ([1, 5], [-1, 2.5, "5", None], "an integer >= 0"),
        "data_augmentation": BOOL,
        "double_dqn": BOOL,
        "gamma": PROB,
        "min_gamma": ([None, 0, 0.97], [-0.5, 1.01, "0.9", NAN], "None or a number in [0, 1]"),
        "update_horizon": INT1,
        "max_update_horizon": ([None, 1, 10], [0, 10.0, "10"], "None or an integer >= 1"),
        "cycle_steps": INT1,
        "learning_rate": NONNEG,
        "encoder_learning_rate": NONNEG,
        "adam_eps": NONNEG,
        "weight_decay": NONNEG,
        "target_update_tau": PROB,
        "target_update_period": INT1,
        "target_action_selection": BOOL,
        "min_replay_history": INT0,
        "epsilon_train": PROB,
        "epsilon_eval": PROB,
        "epsilon_decay_period": INT1,
    },
    "ResetConfig": {
        "reset_every": INT0,
        "shrink_factor": PROB,
        "perturb_factor": PROB,
        "shrink_perturb_keys": ([(), ("encoder",), ("head", "projection")],
                                [("encoder", "bogus"), ("encoder", 1), 3, None],
                                "a tuple of values from ['encoder', 'transition_model', "
                                "'projection', 'predictor', 'head']"),
        "reset_encoder": BOOL,
        "reset_projection": BOOL,
        "reset_head": BOOL,
        "reset_noise": BOOL,
        "no_resets_after": INT0,
        "timing": (["official", "v2023"], ["corrected", None], "one of ['official', 'v2023']"),
    },
    "ReplayConfig": {
        "capacity": INT1,
        "prioritized": BOOL,
        "stack_size": INT1,
        "nstep_bootstrap": QUIRK,
        "same_trajectory_mask": QUIRK,
        "priority_update": QUIRK,
        "prefetch": QUIRK,
    },
    "EnvConfig": {
        "game": (["Pong", "chopper_command"], ["", "  ", 3, None], "a non-empty string"),
        "frame_skip": ([2, 4], [1, 0, 4.0, None], "an integer >= 2"),
        "max_noops": INT0,
        "max_steps_per_episode": INT1,
        "terminal_on_life_loss": BOOL,
        "repeat_action_probability": PROB,
    },
    "RunConfig": {
        "seed": ([0, 2**32 - 1], [-1, 2**32, 1.0, "0", None], "an integer in [0, 2**32)"),
        "num_train_steps": INT0,
        "num_eval_episodes": INT1,
        "eval_every": INT0,
        "log_every": INT1,
        "checkpoint_every": INT0,
        "num_devices": INT0,
        "diagnostics_every": INT0,
        "on_nonfinite": (["stop", "skip"], ["ignore", "Stop", None], "one of ['stop', 'skip']"),
        "seeds": ([(), (0,), (3, 0, 2**32 - 1)],
                  [[0, 1], (-1,), (2**32,), (1.0,), ("0",), (True,), 0, None],
                  "a tuple of integers in [0, 2**32)"),
        "seed_batching": (["vmap", "map"], ["pmap", "Map", "", None],
                          "one of ['vmap', 'map']"),
    },
    "Experiment": {
        "agent": (["bbf", "btr", "brc", "ppo", "sac"], ["BBF", "rainbow", "", None],
                  "one of ['bbf', 'btr', 'brc', 'ppo', 'sac']"),
    },
    "BTRNetworkConfig": {
        "width_scale": POS,
        "num_blocks": INT1,
        "pool_size": INT1,
        "spectral_norm": BOOL,
        "layer_norm": BOOL,
        "hidden_dim": INT1,
        "num_cosines": INT1,
        "noisy_sigma0": NONNEG,
    },
    "BTRAgentConfig": {
        "num_envs": INT1,
        "batch_size": INT1,
        "update_period": INT1,
        "batches_to_group": INT1,
        "num_taus": INT1,
        "kappa": POS,
        "gamma": PROB,
        "update_horizon": INT1,
        "munchausen_alpha": NONNEG,
        "munchausen_tau": POS,
        "munchausen_clip": ([-1.0, 0, -3], [0.5, "x", NAN, INF, True, None], "a number <= 0"),
        "bonus_network": (["target", "online"], ["Target", "both", None],
                          "one of ['target', 'online']"),
        "learning_rate": NONNEG,
        "adam_eps": NONNEG,
        "max_grad_norm": POS,
        "target_update_period": INT1,
        "min_replay_history": INT0,
        "priority_exponent": NONNEG,
        "importance_weights": (["paper", "code"], ["Paper", "beta", None],
                               "one of ['paper', 'code']"),
        "per_beta": PROB,
        "epsilon_start": PROB,
        "epsilon_final": PROB,
        "epsilon_decay_steps": INT1,
        "epsilon_off_after": INT0,
        "epsilon_eval": PROB,
    },
}

TABLE.update({
    "CarRacingConfig": {
        "grayscale": BOOL,
        "image_size": ([16, 84, 96], [15, 97, 84.0, "84", True, None],
                       "an integer in [16, 96]"),
        "frame_stack": INT1,
        "action_repeat": ([1, 2, 4, 8], [0, 9, 2.0, True, None], "an integer in [1, 8]"),
        "reward_shaping": BOOL,
        "max_episode_steps": INT1,
    },
    "PPOAgentConfig": {
        "policy": (["beta", "gaussian"], ["Beta", "normal", None], "one of ['beta', 'gaussian']"),
        "num_envs": INT1,
        "rollout_length": ([32, 512], [0, -1, 32.0, "32", True, None], "an integer >= 1"),
        "minibatch_size": ([1, 256, 4096], [0, -1, 256.0, "256", True, None], "an integer >= 1"),
        "num_epochs": INT1,
        "learning_rate": POS,
        "adam_eps": POS,
        "clip_range": POS,
        "entropy_coef": NONNEG,
        "value_coef": NONNEG,
        "max_grad_norm": POS,
        "gamma": PROB,
        "gae_lambda": PROB,
        "normalize_advantage": BOOL,
        "log_std_init": ([-1.0, 0, 0.5], ["x", NAN, INF, True, None], "a number"),
        "update_loop": (["auto", "scan", "dispatch"], ["loop", None],
                        "one of ['auto', 'scan', 'dispatch']"),
    },
    "PPONetworkConfig": {
        "channels": ([(32, 64, 64), (4, 8, 8)], [(0, 8, 8), (4.0, 8, 8), [32, 64, 64], None],
                     "a tuple of integers >= 1"),
        "hidden_dim": INT1,
    },
    "SACNetworkConfig": {
        "conv_filters": INT1,
        "feature_dim": INT1,
        "hidden_dim": INT1,
        "log_std_min": ([-10.0, 0, 1.5], ["x", NAN, -INF, True, None], "a number"),
        "log_std_max": ([-9.0, 2, 5.0], ["x", NAN, INF, True, None], "a number"),
    },
    "SACAgentConfig": {
        "batch_size": INT1,
        "learning_rate": POS,
        "init_temperature": POS,
        "gamma": PROB,
        "critic_tau": PROB,
        "actor_update_period": INT1,
        "target_update_period": INT1,
        "replay_capacity": INT1,
        "seed_steps": INT0,
        "updates_per_step": INT1,
        "image_pad": INT0,
        "num_augmentations": ([1, 2], [0, 3, 1.0, True, None], "an integer in [1, 2]"),
    },
    "LunarTasksConfig": {
        "tasks": ([("standard",), ("windy", "heavy"), ("heavy", "standard", "windy")],
                  [("moon",), "standard", ["standard"], (1,), None],
                  "a tuple of values from ['standard', 'windy', 'heavy']"),
        "standard_max_steps": INT1,
        "windy_max_steps": INT1,
        "heavy_max_steps": INT1,
        "wind_power": NONNEG,
        "turbulence_power": NONNEG,
        "heavy_gravity": ([-11.99, -11.5, -0.5], [-12, -12.5, 0, 1.0, "x", NAN, True, None],
                          "a number in (-12, 0)"),
    },
    "BRCNetworkConfig": {
        "kind": (["bronet", "shared_mlp", "independent_mlp"], ["BroNet", "mlp", None],
                 "one of ['bronet', 'shared_mlp', 'independent_mlp']"),
        "width": INT1,
        "num_blocks": INT0,
        "block": (["design", "paper"], ["bro", None], "one of ['design', 'paper']"),
        "embed_dim": INT1,
        "unit_norm_embedding": BOOL,
        "mlp_hidden": ([(256, 128), (64,), (32, 32)], [(0,), (64, -1), (1.5,), [64], 64, None],
                       "a tuple of integers >= 1"),
    },
    "BRCAgentConfig": {
        "value_head": (["categorical", "scalar"], ["c51", None],
                       "one of ['categorical', 'scalar']"),
        "num_atoms": ([2, 51, 101], [1, 0, 51.0, True, None], "an integer >= 2"),
        "v_min": ([-100.0, 0, 299.5], ["low", NAN, -INF, True, None], "a number"),
        "v_max": ([-99.0, 10, 300.0], ["high", NAN, INF, False, None], "a number"),
        "reward_normalization": BOOL,
        "gamma": PROB,
        "learning_rate": POS,
        "weight_decay": NONNEG,
        "max_grad_norm": ([10.0, 0.5, None], [0, -1.0, "x", NAN, INF, True],
                          "None or a number > 0"),
        "batch_size": INT1,
        "replay_capacity": INT1,
        "task_sampling": (["uniform", "balanced"], ["Uniform", "per_task", None],
                          "one of ['uniform', 'balanced']"),
        "learning_starts": INT1,
        "updates_per_step": INT1,
        "epsilon_start": ([0.01, 0.5, 1], [-0.1, 1.5, "0.5", NAN, True, None],
                          "a number in [0, 1]"),
        "epsilon_final": PROB,
        "epsilon_decay": PROB,
        "target_update_episodes": INT1,
        "episodes_per_task": INT1,
        "eval_every_episodes": INT1,
        "eval_episodes_per_task": INT1,
    },
})

CASES = [(c, f) for c, fields in TABLE.items() for f in fields]


def test_table_covers_every_field():
    for name, cls in CONFIGS.items():
        assert set(TABLE[name]) == {f.name for f in dataclasses.fields(cls)}, name


@pytest.mark.parametrize("config, field", CASES, ids=[f"{c}.{f}" for c, f in CASES])
def test_field_values(config, field):
    cls = CONFIGS[config]
    good, bad, allowed = TABLE[config][field]
    for value in good:
        assert getattr(cls(**{field: value}), field) == value
    for value in bad:
        with pytest.raises(ValueError) as e:
            cls(**{field: value})
        # The binding, what is allowed and the value (gin adds a line naming the
        # configurable, which gin_utils.parse drops: last test).
        assert str(e.value).splitlines()[0] == f"{config}.{field} must be {allowed}, got {value!r}"


def test_defaults_pass_their_own_checks():
    for cls in CONFIGS.values():
        cls()


def test_seeds_must_be_distinct():
    with pytest.raises(ValueError) as e:
        C.RunConfig(seeds=(1, 2, 1))
    assert str(e.value).splitlines()[0] == "RunConfig.seeds must be distinct, got (1, 2, 1)"


def test_comma_separated_shrink_perturb_keys_are_a_tuple():
    assert BBF.ResetConfig(shrink_perturb_keys="encoder, head").shrink_perturb_keys == (
        "encoder", "head")


def test_bad_gin_value_is_one_line_naming_the_binding():
    with pytest.raises(gin_utils.ConfigError) as e:
        gin_utils.parse((), ["NetworkConfig.width_scale = 'big'"])
    assert str(e.value) == ("bad gin configuration: NetworkConfig.width_scale must be a "
                            "number > 0, got 'big'")
