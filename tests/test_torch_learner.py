"""``bbf-crosscheck torch --gin_files``: the PyTorch reference against a fresh bbf_jax learner.

One training step on both sides (outputs, per-sample losses, gradients, one AdamW step,
EMA target) must agree within the bounds of the tolerance policy (``bbf_jax.tolerance``,
as applied by ``kinds.losses.output_tolerance``) on tiny networks.
"""

from __future__ import annotations

import re

import pytest

from bbf_jax import gin_utils
from bbf_jax.crosscheck import torch_reference as tr
from bbf_jax.crosscheck import torch_selfcheck as ts
from bbf_jax.crosscheck.cli import main

pytestmark = pytest.mark.usefixtures("parity")

TINY = "NetworkConfig.width_scale = 0.25\nNetworkConfig.hidden_dim = 64\n"
ARGS = ["--num_actions", "5", "--seed", "1", "--batch_size", "3"]
ROW = re.compile(r"^(.+?) +[-+.0-9eainf]+ +[-+.0-9eainf]+  (ok|FAIL)(  \(.*\))?$")
LEAVES = 42  # IMPALA with 2 blocks per stage, SPR on: 30 + 4 + 2 + 2 + 4


@pytest.fixture
def tiny_gin(tmp_path):
    path = tmp_path / "tiny.gin"
    path.write_text(TINY)
    return str(path)


def _table(out: str) -> dict[str, bool]:
    """``{array: ok}`` from the printed table (names may contain spaces)."""
    return {m[1]: m[2] == "ok" for line in out.splitlines() if (m := ROW.match(line))}


def test_gin_mode_agrees_with_bbf_jax(tiny_gin, capsys):
    assert main(["torch", "--gin_files", tiny_gin, *ARGS]) == 0
    out = capsys.readouterr().out
    assert ts.NOTE in out
    rows = _table(out)
    assert all(rows.values())
    for prefix in ("grads/", "new_online_params/", "new_target_params/"):
        assert sum(k.startswith(prefix) for k in rows) == LEAVES, prefix
    expected = (
        "TD Error", "intermediate/logits", "intermediate/next_qt_argmax", "per_sample/dqn_loss",
        "per_sample/spr_loss_per_jump", "per_sample/loss_weighted", "grad_global_norm",
        "intermediate/spr_predictions", "intermediate/spr_targets",
    )  # fmt: skip
    for name in expected:
        assert name in rows, name
    assert f"{len(rows)} passed, 0 failed" in out


def test_a_transposed_dense_kernel_fails(tiny_gin, capsys, monkeypatch):
    # A port that forgets to transpose the square (hidden, hidden) predictor kernel:
    # every shape still fits, only the numbers can tell.
    real = tr.params_to_state_dict

    def forgot_transpose(params, config):
        sd = real(params, config)
        sd["predictor.weight"] = sd["predictor.weight"].T.contiguous()
        return sd

    monkeypatch.setattr(tr, "params_to_state_dict", forgot_transpose)
    assert main(["torch", "--gin_files", tiny_gin, *ARGS]) == 1
    out = capsys.readouterr().out
    rows = _table(out)
    failed = {k for k, ok in rows.items() if not ok}
    assert {"intermediate/spr_predictions", "per_sample/spr_loss", "grads/predictor/kernel",
            "new_online_params/predictor/kernel"} <= failed  # fmt: skip
    # The Q path never touches the predictor.
    assert rows["intermediate/logits"] and rows["per_sample/dqn_loss"]
    assert f"{len(failed)} failed" in out


@pytest.mark.parametrize(
    "bindings",
    [
        # Noisy nets (noise drawn from the step's per-example keys), the dqn encoder, no
        # dueling, no renormalisation, target selection, separate learning rates.
        [
            "NetworkConfig.noisy = True", "NetworkConfig.encoder_type = 'dqn'",
            "NetworkConfig.dueling = False", "NetworkConfig.renormalize = False",
            "AgentConfig.double_dqn = False", "AgentConfig.jumps = 2",
            "AgentConfig.learning_rate = 3e-4", "AgentConfig.encoder_learning_rate = 1e-3",
            "AgentConfig.adam_eps = 1e-3", "AgentConfig.weight_decay = 0.05",
            "AgentConfig.target_update_tau = 0.01",
        ],
        # No SPR (no transition model or predictor), one block, another support.
        [
            "AgentConfig.spr_weight = 0.0", "NetworkConfig.num_blocks = 1",
            "NetworkConfig.num_atoms = 21", "NetworkConfig.vmax = 5.0",
        ],
    ],
    ids=["noisy_dqn_encoder", "no_spr"],
)  # fmt: skip
def test_other_configurations_agree(tiny_gin, bindings):
    tr.set_parity_numerics()
    exp = gin_utils.parse([tiny_gin], bindings)
    rows = ts.compare_with_bbf_jax(exp, num_actions=4, seed=2, batch_size=3)
    bad = [r for r in rows if not r.ok]
    assert not bad, bad[:3]
    names = {r.name for r in rows}
    if exp.network.noisy:
        assert "grads/projection/net/kernell" in names
    else:
        assert not any(n.startswith("grads/predictor") for n in names)
        assert "per_sample/spr_loss" in names


def test_unsupported_configurations_are_exit_2(tiny_gin, capsys):
    scalar = ["--gin_bindings", "NetworkConfig.num_atoms = 1"]
    assert main(["torch", "--gin_files", tiny_gin, *scalar, *ARGS]) == 2
    assert "C51 loss only" in capsys.readouterr().err
    assert main(["torch", "--gin_files", tiny_gin, "--gin_bindings", "NetworkConfig.nope = 1"]) == 2
    assert "bad gin configuration" in capsys.readouterr().err
