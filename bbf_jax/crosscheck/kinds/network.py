"""Fixture kind ``network`` (``network_small`` / ``network_full`` files).

Recomputes, from the stored parameters and inputs, every stored output: Q-values,
logits, probabilities, latents, the SPR rollout, ``encode_project`` and the
intermediates (bounded by :meth:`Reductions.output`); and re-initialises the network
with the recorded key to check that the stored parameters are bit-identical to bbf_jax's
initialisation.

Initialisation is compared exactly: threefry is integer arithmetic, and the float part
(uniform bits to floats, ``erf_inv`` for the truncated normal, scaling by the fan-in
standard deviation) is elementwise, each operation correctly rounded. It is exact on
every machine where the compiler fuses the same multiply-adds of ``erf_inv``'s
polynomial into FMAs (both CPUs measured so far, README "Tolerance policy").
"""

from __future__ import annotations

import pathlib

import numpy as np

from bbf_jax import tolerance
from bbf_jax.crosscheck.fixture_io import (
    Fixture,
    FixtureError,
    Row,
    compare,
    compare_trees,
    flatten_tree,
    load_fixture,
    save_fixture,
    unflatten_tree,
)
from bbf_jax.crosscheck.reductions import network_reductions

KIND = "network"


def matches(fixture: Fixture) -> bool:
    return "input/obs_float" in fixture.arrays and "out/logits" in fixture.arrays


def config_from_meta(meta: dict, support: np.ndarray):
    """NetworkConfig + num_actions from a fixture's ``network_config`` JSON block."""
    from bbf_jax.agents.bbf.config import NetworkConfig

    nc = meta.get("network_config")
    if not isinstance(nc, dict) or "num_actions" not in nc:
        raise FixtureError("network fixture JSON lacks 'network_config' with 'num_actions'")
    try:
        cfg = NetworkConfig(
            encoder_type=nc.get("encoder_type", "impala"),
            width_scale=nc.get("width_scale", 4),
            num_blocks=nc.get("ImpalaCNN.num_blocks", nc.get("num_blocks", 2)),
            hidden_dim=nc.get("hidden_dim", 2048),
            renormalize=nc.get("renormalize", True),
            dueling=nc.get("dueling", True),
            noisy=nc.get("noisy", False),
            num_atoms=nc.get("num_atoms", 51),
            vmax=float(np.max(support)) if support.size else 10.0,
            compute_dtype=nc.get("dtype", "float32"),
        )
    except (TypeError, ValueError) as e:
        raise FixtureError(f"network_config not usable: {e}") from None
    return cfg, int(nc["num_actions"])


def compute_outputs(network, params, obs_float, actions) -> dict[str, np.ndarray]:
    """Every output array of the network fixture format, keyed as in the files."""
    import jax

    variables = {"params": params}

    def run(fn, *args):
        return np.asarray(jax.jit(lambda v, *a: network.apply(v, *a, method=fn))(variables, *args))

    out = jax.jit(lambda v, x: network.apply(v, x))(variables, obs_float)
    rolled = jax.jit(lambda v, x, a: network.apply(v, x, a, do_rollout=True))(
        variables, obs_float, actions
    )
    res: dict[str, np.ndarray] = {}
    for prefix, o in (("out", out), ("out_rollout", rolled)):
        for field in ("q_values", "logits", "probabilities", "latent", "representation"):
            res[f"{prefix}/{field}"] = np.asarray(getattr(o, field))
    res["out_eval/q_values"] = res["out/q_values"]
    res["out_eval/logits"] = res["out/logits"]
    res["encode_project"] = run(lambda m, x: m.encode_project(x), obs_float)
    res["intermediate/encoder_raw"] = run(lambda m, x: m.encoder(x), obs_float)
    res["intermediate/encoded_renormalized"] = run(lambda m, x: m.encode(x), obs_float)
    res["intermediate/projection_pre_relu"] = run(
        lambda m, x: m.projection(m.encode(x).reshape(x.shape[0], -1)), obs_float
    )
    carry, latents = jax.jit(
        lambda v, x, a: network.apply(
            v, x, a, method=lambda m, x, a: m.transition_model(m.encode(x), a)
        )
    )(variables, obs_float, actions)
    res["intermediate/transition_latents"] = np.asarray(latents)
    res["intermediate/transition_final_carry"] = np.asarray(carry)
    res["intermediate/spr_projected"] = run(
        lambda m, x, a: m.projection(
            m.transition_model(m.encode(x), a)[1].reshape(x.shape[0], a.shape[1], -1)
        ),
        obs_float,
        actions,
    )
    res["intermediate/spr_predictions"] = res["out_rollout/latent"]
    return res


def _init_key(meta: dict):
    import jax

    seed = meta.get("seed")
    if seed is None:
        init = str(meta.get("init", ""))
        seed = 0 if "PRNGKey(0)" in init else None
    return None if seed is None else jax.random.PRNGKey(int(seed))


def verify(fixture: Fixture) -> list[Row]:
    from bbf_jax.networks import init_params, make_network

    support = fixture.get("input/support")
    cfg, num_actions = config_from_meta(fixture.meta, support)
    network = make_network(cfg, num_actions)
    stored = fixture.subtree("params")
    if not stored:
        raise FixtureError(f"{fixture.path.name}: no params/* arrays")
    params = unflatten_tree(stored)
    rows: list[Row] = []
    key = _init_key(fixture.meta)
    if key is not None:
        fresh = flatten_tree(init_params(network, key, use_spr=True, jumps=5))
        rows += compare_trees("init params/", fresh, stored, tolerance.EXACT)
    try:
        outputs = compute_outputs(
            network, params, fixture.get("input/obs_float"), fixture.get("input/actions")
        )
    except (ValueError, TypeError, KeyError) as e:
        msg = f"{fixture.path.name}: parameters do not fit the network ({e})"
        raise FixtureError(msg) from None
    sums = network_reductions(cfg, fixture.get("input/obs_float").shape[0],
                              fixture.get("input/actions").shape[1])
    for name, value in outputs.items():
        if name in fixture.arrays:
            expected = fixture.arrays[name]
            rows.append(compare(name, value, expected, sums.output(expected)))
    return rows


def export(args) -> pathlib.Path:
    """``bbf-crosscheck export --kind network``: bbf_jax's own network fixture file."""
    import jax

    from bbf_jax import gin_utils
    from bbf_jax.networks import init_params, make_network, param_count

    if not args.inputs:
        raise FixtureError("--inputs FILE (a network fixture with input/* arrays) is required")
    inputs = load_fixture(args.inputs)
    obs_uint8 = inputs.get("input/obs_uint8")
    actions = inputs.get("input/actions")
    exp = gin_utils.parse(args.gin_files, args.gin_bindings)
    cfg = exp.network
    network = make_network(cfg, args.num_actions)
    if int(np.max(actions)) >= args.num_actions:
        raise FixtureError(
            f"{args.inputs}: input/actions go up to {int(np.max(actions))}, "
            f"more than --num_actions {args.num_actions} allows"
        )
    params = init_params(
        network, jax.random.PRNGKey(args.seed), use_spr=True, jumps=actions.shape[1]
    )
    # The agent's process_inputs under jit: x * float32(1/255) after XLA's rewrite of /255.
    obs_float = inputs.arrays.get("input/obs_float")
    if obs_float is None:
        obs_float = np.asarray(jax.jit(lambda x: x.astype(np.float32) / 255.0)(obs_uint8))
    support = np.asarray(network.bind({"params": params}).support())
    outputs = compute_outputs(network, params, obs_float, actions)
    arrays = {**flatten_tree(params, "params/")}
    arrays["input/obs_uint8"] = obs_uint8
    arrays["input/actions"] = actions.astype(np.int32)
    arrays["input/obs_float"] = obs_float
    if "input/keys" in inputs.arrays:
        arrays["input/keys"] = inputs.arrays["input/keys"]
    arrays["input/support"] = support
    arrays.update(outputs)
    modules = {k: int(sum(v.size for v in jax.tree.leaves(t))) for k, t in params.items()}
    meta = {
        "description": (
            f"bbf_jax network outputs: {cfg.encoder_type} encoder, width_scale {cfg.width_scale}, "
            f"hidden {cfg.hidden_dim}, {args.num_actions} actions, init PRNGKey({args.seed})"
        ),
        "seed": args.seed,
        "init": f"init_params(PRNGKey({args.seed})): same key for 'params' and 'dropout', "
        "zero state, zero actions, do_rollout=True (official_bbf_spec.md §3.10)",
        "gin_files": list(args.gin_files),
        "gin_bindings": list(args.gin_bindings),
        "network_config": {
            "num_actions": args.num_actions,
            "num_atoms": cfg.num_atoms,
            "noisy": cfg.noisy,
            "dueling": cfg.dueling,
            "distributional": cfg.distributional,
            "dtype": cfg.compute_dtype,
            "renormalize": cfg.renormalize,
            "encoder_type": cfg.encoder_type,
            "ImpalaCNN.num_blocks": cfg.num_blocks,
            "width_scale": cfg.width_scale,
            "hidden_dim": cfg.hidden_dim,
        },
        "param_count_total": param_count(params),
        "param_count_per_top_level_module": modules,
        "input_format": "batched (B, 84, 84, 4) float32 = obs_uint8 / 255",
    }
    return save_fixture(args.out, KIND, arrays, meta)
