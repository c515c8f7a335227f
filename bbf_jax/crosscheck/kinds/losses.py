"""Fixture kind ``losses``: one training step on the small network (official README §4).

Recomputes, for each case (``n3_g0.997``, ``n10_g0.97``, ``n3_g0.997_aug``), the
per-sample C51/SPR losses, the intermediates and the full gradient from the stored
parameters and batch, with ``rng = PRNGKey(42)`` fed straight into one official
``train_one_batch`` step; the AdamW-updated parameters from the stored gradients and the
EMA target from the stored updated parameters (:func:`step_from_reference`). Bounds:
:func:`output_tolerance`.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from bbf_jax import tolerance
from bbf_jax.crosscheck.fixture_io import (
    Fixture,
    FixtureError,
    Row,
    compare,
    flatten_tree,
    load_fixture,
    save_fixture,
    unflatten_tree,
)
from bbf_jax.crosscheck.reductions import Reductions, network_reductions

KIND = "losses"
CASES = {  # case -> (update horizon n, gamma, augmentation)
    "n3_g0.997": (3, 0.997, False),
    "n10_g0.97": (10, 0.97, False),
    "n3_g0.997_aug": (3, 0.997, True),
}
TRAIN_RNG_SEED = 42
_SCALARS = {
    "TotalLoss": "TotalLoss", "DQNLoss": "DQNLoss", "TD Error": "TDError", "SPRLoss": "SPRLoss"
}


def matches(fixture: Fixture) -> bool:
    return "input/raw_states" in fixture.arrays and "target_params/head/value/net/bias" in {
        k for k in fixture.arrays
    }


def infer_network(flat_params: dict) -> tuple:
    """NetworkConfig and num_actions from a flat parameter dict (official tree)."""
    from bbf_jax.agents.bbf.config import NetworkConfig

    try:
        noisy = "projection/net/kernell" in flat_params
        dueling = "head/value/net/kernel" in flat_params
        num_atoms = flat_params["head/value/net/kernel"].shape[1] if dueling else 51
        adv = flat_params["head/advantage/net/kernel"].shape[1]
        hidden = flat_params["projection/net/kernel"].shape[1]
        if "encoder/ResidualStage_0/Conv_0/kernel" in flat_params:
            width = flat_params["encoder/ResidualStage_0/Conv_0/kernel"].shape[-1] / 16
            convs = {k.split("/")[2] for k in flat_params
                     if k.startswith("encoder/ResidualStage_0/")}
            cfg = NetworkConfig(
                encoder_type="impala", width_scale=width, num_blocks=(len(convs) - 1) // 2,
                hidden_dim=hidden, dueling=dueling, noisy=noisy, num_atoms=num_atoms,
            )
        else:
            width = flat_params["encoder/Conv_0/kernel"].shape[-1] / 32
            cfg = NetworkConfig(
                encoder_type="dqn", width_scale=width, hidden_dim=hidden, dueling=dueling,
                noisy=noisy, num_atoms=num_atoms,
            )
    except KeyError as e:
        raise FixtureError(f"parameter tree lacks {e}; not a BBF network") from None
    return cfg, adv // num_atoms


def _learner(flat_params: dict, augmentation: bool, batch_size: int):
    from bbf_jax.agents.bbf.config import AgentConfig
    from bbf_jax.agents.bbf.learner import make_learner

    net_cfg, num_actions = infer_network(flat_params)
    agent = AgentConfig(batch_size=batch_size, batches_to_group=1, data_augmentation=augmentation)
    return make_learner(agent, net_cfg, num_actions)


def compute_case(fixture_arrays: dict, case: str) -> dict[str, np.ndarray]:
    """All outputs of one case, keyed as in the fixture (``<case>/...``)."""
    from bbf_jax.agents.bbf.learner import TrainBatch

    _, _, aug = CASES[case]
    get = fixture_arrays.__getitem__
    online = unflatten_tree({k[len("params/"):]: v for k, v in fixture_arrays.items()
                             if k.startswith("params/")})
    target = unflatten_tree({k[len("target_params/"):]: v for k, v in fixture_arrays.items()
                             if k.startswith("target_params/")})
    inp = f"{case}/input/" if f"{case}/input/returns" in fixture_arrays else "n3_g0.997/input/"
    raw_states = get("input/raw_states")
    learner = _learner(flatten_tree(online), aug, raw_states.shape[0])
    batch = TrainBatch(
        state=raw_states,
        action=get("input/actions").astype(np.int32),
        returns=get(inp + "returns")[:, 0],
        discount=get(inp + "discount")[:, 0],
        terminal=get(inp + "terminals")[:, 0].astype(np.float32),
        next_state=get("input/raw_next_states")[:, 0],
        same_trajectory=get(inp + "same_trajectory").astype(np.float32),
        loss_weight=get(inp + "loss_weights"),
    )
    # One jitted computation, as the official values come from a jitted train function;
    # n3 and n10 share the compiled function (same learner and shapes).
    outputs, trees = _jitted_case_outputs()(learner, online, target, batch)
    out = {f"{case}/{k}": np.asarray(v) for k, v in outputs.items()}
    for prefix, tree in trees.items():
        out.update({f"{case}/{prefix}/{k}": v for k, v in flatten_tree(tree).items()})
    for name in (*_SCALARS, "GradNorm"):
        out[f"{case}/official_aux/{name}"] = out[f"{case}/official_aux/{name}"].reshape(1)
    key = f"{case}/intermediate/next_qt_argmax"
    out[key] = out[key].astype(np.int32)
    return out


@functools.cache
def _jitted_case_outputs():
    import jax

    return jax.jit(_case_outputs, static_argnums=0)


def _case_outputs(learner, online, target, batch) -> tuple[dict, dict]:
    """Traceable body of :func:`compute_case`.

    Returns ``(arrays, trees)``: arrays keyed without the case prefix, and the
    parameter-shaped trees (``grads``, ``new_online_params``, ``new_target_params``).
    """
    import jax
    import jax.numpy as jnp

    from bbf_jax import augment
    from bbf_jax import losses as losses_lib

    aug = learner.agent.data_augmentation
    batch_size = batch.state.shape[0]
    state = learner.state_from_params(online, jax.random.PRNGKey(TRAIN_RNG_SEED),
                                      jax.random.PRNGKey(0))
    state = state.replace(target=target)
    out = {}

    # The same computation as Learner.train_step, unrolled to expose intermediates.
    rng, k_states, k_next = jax.random.split(state.rng, 3)
    dtype = learner.compute_dtype
    states = augment.process_inputs(batch.state, dtype, aug, k_states)
    next_states = augment.process_inputs(batch.next_state, dtype, aug, k_next)
    rng, _, _ = jax.random.split(rng, 3)
    keys = jax.random.split(rng, batch_size)
    apply = lambda p, x, *a, **k: learner.network.apply({"params": p}, x, *a, **k)  # noqa: E731
    next_online = apply(online, next_states)
    next_target = apply(target, next_states)
    td_target = learner.bootstrap_target(online, target, next_states, batch, keys)
    spr_targets = learner.network.apply(
        {"params": target}, states[:, 1:], method=type(learner.network).encode_project
    )
    terms = learner.per_sample_losses(online, states[:, 0], batch, td_target, spr_targets, keys)
    rolled = apply(online, states[:, 0], batch.action[:, :-1], True)
    _, per_jump = losses_lib.spr_loss(rolled.latent, spr_targets, batch.same_trajectory[:, 1:])
    new_state, metrics = learner.train_step(state, batch, learner.default_hparams())
    grads = jax.grad(
        lambda p: jnp.mean(
            learner.per_sample_losses(p, states[:, 0], batch, td_target, spr_targets, keys)[
                "loss_weighted"
            ]
        )
    )(online)

    for official, ours in _SCALARS.items():
        out["official_aux/" + official] = metrics[ours]
        out[official] = jnp.mean(terms[{"TotalLoss": "loss_weighted", "DQNLoss": "dqn_loss",
                                        "TD Error": "td_error", "SPRLoss": "spr_loss"}[official]])
    out["official_aux/GradNorm"] = metrics["GradNorm"]
    out["mean_loss"] = jnp.mean(terms["loss_weighted"])
    ps = "per_sample/"
    out[ps + "dqn_loss"] = terms["dqn_loss"]
    out[ps + "td_error"] = terms["td_error"]
    out[ps + "spr_loss_per_jump"] = per_jump
    out[ps + "spr_loss"] = terms["spr_loss"]
    out[ps + "loss_unweighted"] = terms["loss"]
    out[ps + "loss_weighted"] = terms["loss_weighted"]
    it = "intermediate/"
    out[it + "target_distribution"] = td_target
    out[it + "next_q_online"] = next_online.q_values
    out[it + "next_qt_argmax"] = jnp.argmax(next_online.q_values, axis=-1)
    out[it + "next_probabilities_target"] = next_target.probabilities
    logits = apply(online, states[:, 0]).logits
    out[it + "logits"] = logits
    out[it + "chosen_action_logits"] = jnp.take_along_axis(
        logits, batch.action[:, 0, None, None], axis=1
    )[:, 0]
    out[it + "spr_predictions"] = rolled.latent
    out[it + "spr_targets"] = spr_targets
    if aug:
        out[it + "states_processed"] = states
        out[it + "next_states_processed"] = next_states
    out["grad_global_norm"] = metrics["GradNorm"]
    trees = {
        "grads": grads,
        "new_online_params": new_state.online,
        "new_target_params": new_state.target,
    }
    return out, trees


def output_tolerance(
    name: str, expected, sums: Reductions, learning_rate: float
) -> tolerance.Tolerance:
    """The bound of array ``name`` (without the case prefix) of a losses case.

    Gradients and their global norm: :meth:`Reductions.gradient` /
    :meth:`Reductions.gradient_norm`. ``new_online_params``, recomputed from the stored
    gradients: ``p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`` is about ten
    roundings of an update of magnitude <= 1 (scaled by ``lr``) and two of ``p``.
    ``new_target_params``, from the stored new parameters: ``(1 - tau) t + tau p``, three
    roundings. Augmented frames: :func:`augmentation.draw_tolerance`. Everything else is
    a forward output (:meth:`Reductions.output`); integer arrays are compared exactly
    whatever the bound.
    """
    from bbf_jax.crosscheck.kinds import augmentation

    if name.startswith("grads/"):
        return sums.gradient(name[len("grads/"):], expected)
    if name in ("grad_global_norm", "official_aux/GradNorm"):
        return sums.gradient_norm(expected)
    if name.startswith("new_online_params/"):
        return tolerance.elementwise(expected, ops=2) + tolerance.Tolerance(
            12 * tolerance.EPS * learning_rate
        )
    if name.startswith("new_target_params/"):
        return tolerance.elementwise(expected, ops=3)
    if name.endswith("states_processed"):
        return augmentation.draw_tolerance(expected)
    return sums.output(expected)


def case_reductions(fixture_arrays: dict) -> Reductions:
    """The network's :class:`Reductions` for the batch of a losses file."""
    online = {k[len("params/"):]: v for k, v in fixture_arrays.items() if k.startswith("params/")}
    config, _ = infer_network(online)
    states = fixture_arrays["input/raw_states"]
    return network_reductions(config, states.shape[0], states.shape[1] - 1)


def step_from_reference(fixture_arrays: dict, case: str) -> dict[str, np.ndarray]:
    """``<case>/new_online_params/*`` (one AdamW step of ``params/*`` with the stored
    ``<case>/grads/*``) and ``<case>/new_target_params/*`` (the EMA of ``target_params/*``
    towards the stored ``<case>/new_online_params/*``), computed by bbf_jax."""
    def tree(prefix):
        return unflatten_tree({k[len(prefix):]: v for k, v in fixture_arrays.items()
                               if k.startswith(prefix)})

    online = tree("params/")
    learner = _learner(flatten_tree(online), False, fixture_arrays["input/raw_states"].shape[0])
    new_online, new_target = _jitted_reference_step()(
        learner, online, tree("target_params/"), tree(f"{case}/grads/"),
        tree(f"{case}/new_online_params/"),
    )
    out = {f"{case}/new_online_params/{k}": v for k, v in flatten_tree(new_online).items()}
    out.update({f"{case}/new_target_params/{k}": v for k, v in flatten_tree(new_target).items()})
    return out


@functools.cache
def _jitted_reference_step():
    import jax

    return jax.jit(_reference_step, static_argnums=0)


def _reference_step(learner, online, target, grads, new_online):
    import optax

    from bbf_jax.optim import make_optimizer

    hparams = learner.default_hparams()
    optimizer = make_optimizer(learner.agent, hparams.learning_rate,
                               hparams.encoder_learning_rate)
    updates, _ = optimizer.update(grads, optimizer.init(online), online)
    stepped = optax.apply_updates(online, updates)
    return stepped, optax.incremental_update(new_online, target, hparams.target_update_tau)


def verify(fixture: Fixture) -> list[Row]:
    if not fixture.subtree("params") or not fixture.subtree("target_params"):
        raise FixtureError(f"{fixture.path.name}: needs params/* and target_params/*")
    rows: list[Row] = []
    cases = [c for c in CASES if any(k.startswith(c + "/") for k in fixture.arrays)]
    if not cases:
        raise FixtureError(f"{fixture.path.name}: none of the cases {list(CASES)} is present")
    from bbf_jax.agents.bbf.config import AgentConfig
    from bbf_jax.agents.bbf.learner import importance_weights

    for case in cases:
        inp = f"{case}/input/"
        if inp + "sampling_priorities" in fixture.arrays:
            # 1 / sqrt(p + 1e-10) / max: four roundings (the reference's compiler may fuse
            # or rewrite 1 / sqrt).
            stored_weights = fixture.arrays[inp + "loss_weights"]
            rows.append(compare(inp + "loss_weights (from sampling_priorities)",
                                importance_weights(fixture.arrays[inp + "sampling_priorities"]),
                                stored_weights, tolerance.elementwise(stored_weights, ops=4)))
        if inp + "discount" in fixture.arrays:
            n, gamma, _ = CASES[case]
            stored_discount = fixture.arrays[inp + "discount"]
            # A float64 power rounded to float32: one float32 rounding.
            rows.append(compare(inp + "discount (= float32(gamma^n))",
                                np.full_like(stored_discount, np.float32(gamma**n)),
                                stored_discount, tolerance.elementwise(stored_discount, ops=1)))
        try:
            outputs = compute_case(fixture.arrays, case)
            outputs.update(step_from_reference(fixture.arrays, case))
        except KeyError as e:
            raise FixtureError(f"{fixture.path.name}: missing array {e}") from None
        sums = case_reductions(fixture.arrays)
        learning_rate = max(AgentConfig().learning_rate, AgentConfig().encoder_learning_rate)
        stored = {k: v for k, v in fixture.arrays.items()
                  if k.startswith(case + "/") and not k.startswith(case + "/input/")}
        for key in sorted(stored):
            if key not in outputs:
                rows.append(Row(key, float("inf"), 0.0, False, "not computed by bbf_jax"))
                continue
            expected = stored[key]
            tol = output_tolerance(key[len(case) + 1:], expected, sums, learning_rate)
            rows.append(compare(key, outputs[key], expected, tol))
    return rows


def make_inputs(num_actions: int, seed: int, learner) -> dict[str, np.ndarray]:
    """Deterministic losses inputs for a bbf_jax-generated file (documented in its JSON)."""
    import jax

    from bbf_jax.agents.bbf.learner import importance_weights

    # Jitted: bitwise the same parameters as an eager init, without op-by-op dispatch.
    params = flatten_tree(learner.init_params(jax.random.PRNGKey(seed)))
    noise = np.random.RandomState(2)
    arrays = {f"params/{k}": v for k, v in params.items()}
    for k, v in params.items():
        perturbed = v + 0.005 * noise.standard_normal(v.shape)
        arrays[f"target_params/{k}"] = perturbed.astype(np.float32)
    rs = np.random.RandomState(seed)
    b, t = 8, learner.agent.jumps + 1
    arrays["input/raw_states"] = rs.randint(0, 256, (b, t, 84, 84, 4)).astype(np.uint8)
    arrays["input/raw_next_states"] = rs.randint(0, 256, (b, t, 84, 84, 4)).astype(np.uint8)
    arrays["input/actions"] = rs.randint(0, num_actions, (b, t)).astype(np.int32)
    arrays["input/support"] = np.linspace(-10, 10, 51).astype(np.float32)
    prios = rs.uniform(0.5, 2.0, (b,)).astype(np.float32)
    terminals = rs.uniform(size=(b, t)) < 0.2
    same = np.cumprod(1 - terminals, axis=1).astype(np.uint8)
    same[0] = 1  # the official row-0 quirk of the replay mask
    for case, (n, gamma, _) in CASES.items():
        if case.endswith("_aug"):
            continue
        c = f"{case}/input/"
        arrays[c + "returns"] = rs.normal(0, 1, (b, t)).astype(np.float32)
        arrays[c + "terminals"] = terminals
        arrays[c + "same_trajectory"] = same
        arrays[c + "discount"] = np.full((b, t), np.float32(gamma**n))
        arrays[c + "sampling_priorities"] = prios
        arrays[c + "loss_weights"] = importance_weights(prios)
    return arrays


def export(args) -> pathlib.Path:
    """``bbf-crosscheck export --kind losses``: bbf_jax's outputs in the official format.

    With ``--inputs`` pointing at a losses file (official or not) its inputs are
    reused; otherwise inputs are generated from ``--seed`` with the network of the
    gin config.
    """
    from bbf_jax import gin_utils

    if args.inputs:
        src = load_fixture(args.inputs)
        arrays = {k: v for k, v in src.arrays.items()
                  if k.startswith(("params/", "target_params/", "input/")) or "/input/" in k}
        if "input/raw_states" not in arrays:
            raise FixtureError(f"{args.inputs}: not a losses fixture (no input/raw_states)")
        generated = False
    else:
        exp = gin_utils.parse(args.gin_files, args.gin_bindings)
        learner = _learner_from_config(exp, args.num_actions)
        arrays = make_inputs(args.num_actions, args.seed, learner)
        generated = True
    for case in CASES:
        arrays.update(compute_case(arrays, case))
    meta = {
        "description": "one bbf_jax training step per case on the official losses format",
        "train_call": f"Learner.train_step with rng = PRNGKey({TRAIN_RNG_SEED}), step 0, "
        "tau 0.005, fresh optimizer state, batch_size = rows of input/raw_states",
        "cases": {c: {"update_horizon": n, "gamma": g, "data_augmentation": a}
                  for c, (n, g, a) in CASES.items()},
        "inputs": ("generated: params = init(PRNGKey(seed)); target = params + 0.005 N(0,1) "
                   "(RandomState(2)); states/actions/returns from RandomState(seed)")
        if generated else f"copied from {pathlib.Path(args.inputs).name}",
        "seed": args.seed,
    }
    return save_fixture(args.out, KIND, arrays, meta)


def _learner_from_config(exp, num_actions):
    from bbf_jax.agents.bbf.config import AgentConfig
    from bbf_jax.agents.bbf.learner import make_learner

    agent = AgentConfig(batch_size=8, batches_to_group=1, jumps=exp.agent.jumps,
                        data_augmentation=False)
    return make_learner(agent, exp.network, num_actions)
