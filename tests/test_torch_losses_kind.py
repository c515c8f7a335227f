"""``bbf-crosscheck torch`` on a ``losses`` file written by bbf_jax's exporter.

The file is made by the exporter's own code path (``kinds.losses.make_inputs`` and
``compute_case``) on a tiny network, with the plain ``n3_g0.997`` case and the
augmented ``n3_g0.997_aug`` case (the two the torch check treats differently).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig
from bbf_jax.agents.bbf.learner import make_learner
from bbf_jax.crosscheck import torch_cli
from bbf_jax.crosscheck.cli import main
from bbf_jax.crosscheck.fixture_io import save_fixture
from bbf_jax.crosscheck.kinds import losses as losses_kind

pytestmark = pytest.mark.usefixtures("parity")

CASES = ("n3_g0.997", "n3_g0.997_aug")
ROW = re.compile(r"^(.+?) +[-+.0-9eainf]+ +[-+.0-9eainf]+  (ok|FAIL)(  \(.*\))?$")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    agent = AgentConfig(batch_size=8, batches_to_group=1, data_augmentation=False)
    learner = make_learner(agent, NetworkConfig(width_scale=0.25, hidden_dim=64, num_blocks=1), 6)
    arrays = losses_kind.make_inputs(6, 0, learner)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("n10_g0.97/")}
    for case in CASES:
        arrays.update(losses_kind.compute_case(arrays, case))
    path = tmp_path_factory.mktemp("losses") / "losses.npz"
    save_fixture(path, losses_kind.KIND, arrays, {"description": "tiny bbf_jax losses file"})
    return path, arrays


def _rows(out: str) -> dict[str, str]:
    """``{array: 'ok' | 'FAIL'}`` from the printed table (names may contain spaces)."""
    return {m[1]: m[2] for line in out.splitlines() if (m := ROW.match(line))}


def test_exported_losses_file_verifies_through_torch(exported, capsys):
    path, arrays = exported
    assert main(["torch", str(path)]) == 0
    out = capsys.readouterr().out
    assert "kind losses, PyTorch reference" in out
    assert torch_cli.AUG_NOTE in out
    rows = _rows(out)
    stored = [k for k in arrays if k.startswith(CASES) and "/input/" not in k]
    assert len(rows) == len(stored) and set(rows.values()) == {"ok"}
    assert f"{len(stored)} passed, 0 failed" in out
    for case in CASES:  # one residual block per IMPALA stage: 30 parameter arrays
        assert sum(k.startswith(f"{case}/grads/") for k in rows) == 30
        assert sum(k.startswith(f"{case}/new_online_params/") for k in rows) == 30
        assert f"{case}/new_target_params/head/value/net/bias" in rows


def test_wrong_values_and_unaugmented_inputs_fail(exported, tmp_path, capsys):
    _, arrays = exported
    arrays = dict(arrays)
    arrays["n3_g0.997/new_online_params/predictor/bias"] = (
        arrays["n3_g0.997/new_online_params/predictor/bias"] + np.float32(1e-3)
    )
    kernel = "n3_g0.997/grads/encoder/ResidualStage_1/Conv_1/kernel"
    arrays[kernel] = np.swapaxes(arrays[kernel], 0, 1).copy()
    # The augmented case must run on the stored augmented states: swapping in the
    # plain scaled frames changes every loss.
    arrays["n3_g0.997_aug/intermediate/states_processed"] = (
        arrays["input/raw_states"].astype(np.float32) / 255
    )
    np.savez(tmp_path / "losses.npz", **arrays)
    # Official files carry no "kind": the kind is recognised from the arrays.
    meta = {"description": "", "arrays": {k: {"shape": list(v.shape)} for k, v in arrays.items()}}
    (tmp_path / "losses.json").write_text(json.dumps(meta))
    assert main(["torch", str(tmp_path / "losses.npz")]) == 1
    rows = _rows(capsys.readouterr().out)
    failed = {k for k, v in rows.items() if v == "FAIL"}
    assert "n3_g0.997_aug/per_sample/spr_loss" in failed
    # The AdamW step is recomputed from the stored gradients and the EMA target from the
    # stored new parameters, so each wrong value also shows one stage further (and
    # nowhere else in the case).
    assert {k for k in failed if k.startswith("n3_g0.997/")} == {
        "n3_g0.997/new_online_params/predictor/bias",
        "n3_g0.997/new_target_params/predictor/bias",
        kernel,
        "n3_g0.997/new_online_params/encoder/ResidualStage_1/Conv_1/kernel",
    }
