"""``bbf-crosscheck torch``: check the PyTorch reference against fixtures or bbf_jax.

``torch FILE...`` recomputes fixture outputs with the PyTorch reference. Supported
kinds: ``network`` (every ``out*/``, ``encode_project`` and ``intermediate/`` array),
``losses`` (one training step per case, official README §4) and ``c51_projection``.
``torch --gin_files F ...`` compares with a freshly initialised bbf_jax learner
(:mod:`bbf_jax.crosscheck.torch_selfcheck`); ``torch btr [--small]`` does the same for
the BTR network and update (:mod:`bbf_jax.crosscheck.torch_btr_check`). All print the
same table as ``verify``, with the bounds of :mod:`bbf_jax.tolerance` (the same
functions as ``verify``).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from bbf_jax.crosscheck import torch_losses as tl
from bbf_jax.crosscheck import torch_reference as tr
from bbf_jax.crosscheck import torch_train
from bbf_jax.crosscheck.fixture_io import (
    Fixture,
    FixtureError,
    Row,
    compare,
    verify_files,
)
from bbf_jax.crosscheck.reductions import network_reductions

LOSSES_SETTINGS = torch_train.StepSettings()  # the official call: spr 5, double DQN, tau 0.005
AUG_NOTE = (
    "pre-augmented input: torch cannot reproduce JAX's augmentation RNG, so the stored "
    "augmented states are fed to the torch step"
)


def _kind(fixture: Fixture) -> str:
    from bbf_jax.crosscheck.kinds import losses as losses_kind

    declared = fixture.meta.get("kind")
    stem = fixture.path.stem
    if declared == "losses" or losses_kind.matches(fixture):
        return "losses"
    if declared == "network" or stem.startswith("network") or "out/logits" in fixture.arrays:
        return "network"
    if declared == "c51_projection" or stem.startswith("c51_projection"):
        return "c51_projection"
    raise FixtureError(
        f"{fixture.path.name}: the torch check supports network, losses and c51_projection "
        "fixtures"
    )


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.movedim(-3, -1).numpy()


@torch.no_grad()
def network_outputs(fixture: Fixture) -> dict[str, np.ndarray]:
    """Every output array of a network fixture, computed by the torch reference."""
    from bbf_jax.crosscheck.kinds.network import config_from_meta

    support = fixture.get("input/support")
    config, num_actions = config_from_meta(fixture.meta, support)
    params = fixture.subtree("params")
    if not params:
        raise FixtureError(f"{fixture.path.name}: no params/* arrays")
    try:
        net = tr.network_from_params(params, config, num_actions)
    except ValueError as e:
        raise FixtureError(f"{fixture.path.name}: {e}") from None
    x = torch.from_numpy(fixture.get("input/obs_float"))
    actions = torch.from_numpy(fixture.get("input/actions"))
    z = torch.from_numpy(support)
    res: dict[str, np.ndarray] = {}
    out = net(x, support=z)
    rolled = net(x, actions, do_rollout=True, support=z)
    for prefix, o in (("out", out), ("out_rollout", rolled)):
        for field in ("q_values", "logits", "probabilities", "representation"):
            res[f"{prefix}/{field}"] = getattr(o, field).numpy()
    res["out/latent"] = _nhwc(out.latent)
    res["out_rollout/latent"] = rolled.latent.numpy()
    res["out_eval/q_values"] = res["out/q_values"]  # eval mode only disables noise
    res["out_eval/logits"] = res["out/logits"]
    res["encode_project"] = net.encode_project(x).numpy()
    raw = net.encoder(x.permute(0, 3, 1, 2))
    latent = tr.renormalize(raw) if config.renormalize else raw
    res["intermediate/encoder_raw"] = _nhwc(raw)
    res["intermediate/encoded_renormalized"] = _nhwc(latent)
    res["intermediate/projection_pre_relu"] = net.projection(latent.flatten(1), None).numpy()
    latents = net.transition_model(latent, actions)
    res["intermediate/transition_latents"] = _nhwc(latents)
    res["intermediate/transition_final_carry"] = _nhwc(latents[:, -1])
    res["intermediate/spr_projected"] = net.projection(latents.flatten(2), None).numpy()
    res["intermediate/spr_predictions"] = res["out_rollout/latent"]
    return res


def verify_network(fixture: Fixture) -> list[Row]:
    from bbf_jax.crosscheck.kinds.network import config_from_meta

    config, _ = config_from_meta(fixture.meta, fixture.get("input/support"))
    sums = network_reductions(config, fixture.get("input/obs_float").shape[0],
                              fixture.get("input/actions").shape[1])
    rows = []
    for name, value in network_outputs(fixture).items():
        if name in fixture.arrays:
            expected = fixture.arrays[name]
            rows.append(compare(name, value, expected, sums.output(expected)))
    return rows


def verify_c51(fixture: Fixture) -> list[Row]:
    """The shifted support from the stored inputs, the projection from the stored
    supports, with the bounds of :func:`kinds.c51_projection.tolerances`."""
    from bbf_jax.crosscheck.kinds.c51_projection import tolerances

    def t(key):
        return torch.from_numpy(fixture.get(key))

    z = t("input/target_support")
    gamma = t("input/cumulative_gamma") * (1.0 - t("input/terminals").to(torch.float32))
    supports = t("input/rewards")[:, None] + gamma[:, None] * z
    projected = tl.project_distribution(t("supports"), t("input/weights"), z)
    tols = tolerances(fixture)
    actual = {"gamma_with_terminal": gamma, "supports": supports, "projected": projected}
    return [compare(name, value.numpy(), fixture.get(name), tols[name])
            for name, value in actual.items()]


def losses_case_inputs(fixture: Fixture, case: str) -> torch_train.StepInputs:
    """The inputs of one ``losses`` case as the official ``train`` slices them.

    ``returns[:, 0]``, ``terminals[:, 0]``, ``discount[:, 0]``, ``raw_next_states[:, 0]``,
    ``same_trajectory[:, 1:]``; the ``_aug`` case reuses the ``n3_g0.997`` inputs and takes
    its network inputs from ``intermediate/states_processed`` and
    ``intermediate/next_states_processed`` (see :data:`AUG_NOTE`).
    """
    inp = f"{case}/input/" if f"{case}/input/returns" in fixture.arrays else "n3_g0.997/input/"
    if case.endswith("_aug"):
        states = fixture.get(f"{case}/intermediate/states_processed")
        next_states = fixture.get(f"{case}/intermediate/next_states_processed")
    else:
        states = torch_train.process_inputs(fixture.get("input/raw_states"))
        next_states = torch_train.process_inputs(fixture.get("input/raw_next_states")[:, 0])
    return torch_train.StepInputs(
        online=fixture.subtree("params"),
        target=fixture.subtree("target_params"),
        states=states,
        next_states=next_states,
        actions=fixture.get("input/actions"),
        returns=fixture.get(inp + "returns")[:, 0],
        discounts=fixture.get(inp + "discount")[:, 0],
        terminals=fixture.get(inp + "terminals")[:, 0],
        same_trajectory=fixture.get(inp + "same_trajectory")[:, 1:],
        loss_weights=fixture.get(inp + "loss_weights"),
        support=fixture.get("input/support"),
    )


def verify_losses(fixture: Fixture) -> list[Row]:
    """Rows for every stored output of every case, recomputed by the torch step."""
    from bbf_jax.crosscheck.kinds import losses as losses_kind

    params = fixture.subtree("params")
    if not params or not fixture.subtree("target_params"):
        raise FixtureError(f"{fixture.path.name}: needs params/* and target_params/*")
    config, num_actions = losses_kind.infer_network(params)
    sums = losses_kind.case_reductions(fixture.arrays)
    adamw = LOSSES_SETTINGS.adamw
    learning_rate = max(adamw.learning_rate, adamw.encoder_learning_rate)
    cases = [c for c in losses_kind.CASES if any(k.startswith(c + "/") for k in fixture.arrays)]
    if not cases:
        raise FixtureError(
            f"{fixture.path.name}: none of the cases {list(losses_kind.CASES)} is present"
        )
    rows: list[Row] = []
    for case in cases:
        inputs = losses_case_inputs(fixture, case)
        prefix = case + "/"
        try:
            outputs = torch_train.train_step_outputs(inputs, config, num_actions, LOSSES_SETTINGS)
            outputs.update(torch_train.step_from_reference(
                inputs.online, inputs.target, fixture.subtree(prefix + "grads"),
                fixture.subtree(prefix + "new_online_params"), config, num_actions,
                LOSSES_SETTINGS,
            ))  # fmt: skip
        except (ValueError, KeyError) as e:
            raise FixtureError(f"{fixture.path.name}: {e}") from None
        for key in sorted(k for k in fixture.arrays if k.startswith(prefix)):
            name = key[len(prefix):]
            if name.startswith("input/"):
                continue
            if name in ("intermediate/states_processed", "intermediate/next_states_processed"):
                rows.append(Row(key, 0.0, 0.0, True, AUG_NOTE))
                continue
            expected = fixture.arrays[key]
            if name not in outputs:
                rows.append(Row(key, float("inf"), 0.0, False, "not computed by torch"))
                continue
            tol = losses_kind.output_tolerance(name, expected, sums, learning_rate)
            rows.append(compare(key, outputs[name], expected, tol))
    return rows


_VERIFY = {"network": verify_network, "losses": verify_losses, "c51_projection": verify_c51}


def run(args) -> int:
    """Entry point of ``bbf-crosscheck torch``; exit status 0 / 1 / 2 as ``verify``."""
    if args.files[:1] == ["btr"]:
        if len(args.files) > 1 or args.gin_files:
            print("error: torch btr takes no fixture files or --gin_files", file=sys.stderr)
            return 2
        tr.set_parity_numerics()
        from bbf_jax.crosscheck import torch_btr_check

        return torch_btr_check.run(args)
    if args.small:
        print("error: --small applies to 'bbf-crosscheck torch btr' only", file=sys.stderr)
        return 2
    if args.gin_files and args.files:
        print("error: give fixture files or --gin_files, not both", file=sys.stderr)
        return 2
    tr.set_parity_numerics()
    if args.gin_files:
        from bbf_jax.crosscheck import torch_selfcheck

        return torch_selfcheck.run(args)
    if not args.files:
        print("error: bbf-crosscheck torch needs fixture files or --gin_files", file=sys.stderr)
        return 2
    def check(fixture):
        kind = _kind(fixture)
        return f"kind {kind}, PyTorch reference", _VERIFY[kind](fixture)

    return verify_files(args.files, check)
