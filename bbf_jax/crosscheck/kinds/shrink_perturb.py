"""Fixture kind ``shrink_perturb``: the official ``jit_reset`` (official README §6).

From the stored old online/target parameters and ``input/rng``, recomputes the two
fresh initialisations, the shrink-and-perturbed online and target trees and
``interpolate_weights``, and checks that every other module is replaced by the
fresh initialisation and that the optimizer state is fully re-initialised.

Everything is compared exactly: the fresh initialisations are as exact as the network
kind's (integer PRNG bits, elementwise correctly rounded float operations),
``0.5 * old + 0.5 * fresh`` is one rounding of exact halves, and the optimizer state is
zeros and counts.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

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
from bbf_jax.crosscheck.kinds.losses import infer_network
from bbf_jax.tolerance import EXACT

KIND = "shrink_perturb"
RESET_KEYS = ("encoder", "transition_model")


def matches(fixture: Fixture) -> bool:
    return "input/rng" in fixture.arrays and any(
        k.startswith("random_online/") for k in fixture.arrays
    )


def compute(arrays: dict, shrink: float = 0.5, perturb: float = 0.5) -> tuple[dict, list[Row]]:
    import jax.numpy as jnp

    from bbf_jax.agents.bbf.config import AgentConfig, ResetConfig
    from bbf_jax.agents.bbf.learner import make_learner

    old_online = {k[len("input/old_online/"):]: v for k, v in arrays.items()
                  if k.startswith("input/old_online/")}
    old_target = {k[len("input/old_target/"):]: v for k, v in arrays.items()
                  if k.startswith("input/old_target/")}
    if not old_online or not old_target or "input/rng" not in arrays:
        raise FixtureError("needs input/old_online/*, input/old_target/* and input/rng")
    net_cfg, num_actions = infer_network(old_online)
    learner = make_learner(AgentConfig(), net_cfg, num_actions)
    reset_cfg = ResetConfig(shrink_factor=shrink, perturb_factor=perturb,
                            shrink_perturb_keys=RESET_KEYS)
    online, target = unflatten_tree(old_online), unflatten_tree(old_target)
    key = jnp.asarray(arrays["input/rng"], dtype=jnp.uint32)
    # One jitted computation (the official jit_reset is jitted too).
    new_state, fresh_on, fresh_tg, interp, fresh_opt = _jitted_reset()(
        learner, reset_cfg, online, target, key
    )
    out = {}
    for prefix, tree in (("random_online/", fresh_on), ("random_target/", fresh_tg)):
        out.update({prefix + k: v for k, v in flatten_tree(tree).items()})
    for prefix, tree in (("output/new_online/", new_state.online),
                         ("output/new_target/", new_state.target),
                         ("output/interpolate_weights/", interp)):
        out.update({prefix + k: v for k, v in flatten_tree(tree).items()
                    if k.split("/")[0] in RESET_KEYS})
    checks = []
    # Modules outside RESET_KEYS come from the fresh inits; the optimizer is re-initialised.
    rest = lambda t: {k: v for k, v in flatten_tree(t).items()  # noqa: E731
                      if k.split("/")[0] not in RESET_KEYS}
    checks += compare_trees("check new_online == random_online: ", rest(new_state.online),
                            rest(fresh_on), EXACT)
    checks += compare_trees("check new_target == random_target: ", rest(new_state.target),
                            rest(fresh_tg), EXACT)
    checks += compare_trees("check opt_state == init(new_online): ",
                            flatten_opt(new_state.opt_state), flatten_opt(fresh_opt), EXACT)
    return out, checks


@functools.cache
def _jitted_reset():
    from bbf_jax.jit_once import jit_once

    return jit_once(_reset_outputs, static_argnums=(0, 1))  # as the runner's reset


def _reset_outputs(learner, reset_cfg, online, target, key):
    """Traceable body of :func:`compute`.

    Returns ``(new_state, fresh_online, fresh_target, interpolated, fresh_opt_state)``.
    """
    import jax
    import jax.numpy as jnp

    from bbf_jax.agents.bbf.resets import interpolate, reset_with_key
    from bbf_jax.optim import make_optimizer

    state = learner.state_from_params(online, jax.random.PRNGKey(0), jax.random.PRNGKey(0))
    # An optimizer state with a step taken, so that its re-initialisation is visible.
    opt = make_optimizer(learner.agent)
    _, stepped = opt.update(jax.tree.map(jnp.ones_like, online), state.opt_state, online)
    state = state.replace(target=target, opt_state=stepped)
    new_state, fresh_on, fresh_tg = reset_with_key(learner, state, key, reset_cfg)
    interp = interpolate(online, fresh_on, RESET_KEYS, reset_cfg.shrink_factor,
                         reset_cfg.perturb_factor)
    return new_state, fresh_on, fresh_tg, interp, opt.init(new_state.online)


def flatten_opt(opt_state) -> dict:
    import jax

    leaves = jax.tree_util.tree_leaves_with_path(opt_state)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def verify(fixture: Fixture) -> list[Row]:
    out, checks = compute(fixture.arrays)
    rows = []
    for key in sorted(k for k in fixture.arrays if k.startswith(("random_", "output/"))):
        if key not in out:
            rows.append(Row(key, float("inf"), 0.0, False, "not computed by bbf_jax"))
        else:
            rows.append(compare(key, out[key], fixture.arrays[key], EXACT))
    return rows + checks


def export(args) -> pathlib.Path:
    """bbf_jax's own reset file: inputs from ``--inputs`` (a shrink_perturb or losses
    file) or generated from ``--seed`` with the gin config's network."""
    import jax

    from bbf_jax import gin_utils
    from bbf_jax.agents.bbf.config import AgentConfig
    from bbf_jax.agents.bbf.learner import make_learner

    if args.inputs:
        src = load_fixture(args.inputs)
        arrays = {k: v for k, v in src.arrays.items() if k.startswith("input/")}
        if "input/old_online/encoder/ResidualStage_0/Conv_0/kernel" not in arrays and not any(
            k.startswith("input/old_online/") for k in arrays
        ):
            raise FixtureError(f"{args.inputs}: no input/old_online/* arrays")
    else:
        exp = gin_utils.parse(args.gin_files, args.gin_bindings)
        learner = make_learner(AgentConfig(), exp.network, args.num_actions)
        # Jitted: bitwise the same parameters as an eager init, without op-by-op dispatch.
        online = flatten_tree(learner.init_params(jax.random.PRNGKey(args.seed)))
        noise = np.random.RandomState(args.seed + 1)
        arrays = {"input/rng": np.asarray(jax.random.PRNGKey(7))}
        for k, v in online.items():
            arrays["input/old_online/" + k] = v
            arrays["input/old_target/" + k] = (v + 0.005 * noise.standard_normal(v.shape)).astype(
                np.float32
            )
    out, _ = compute(arrays)
    arrays.update(out)
    meta = {
        "description": "bbf_jax reset (shrink 0.5 / perturb 0.5 on encoder, transition_model)",
        "call": "resets.reset_with_key(learner, state, input/rng, ResetConfig())",
        "seed": args.seed,
    }
    return save_fixture(args.out, KIND, arrays, meta)
