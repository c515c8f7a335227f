"""``bbf-crosscheck torch`` on the shared fixtures."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from bbf_jax.crosscheck.cli import main

pytestmark = pytest.mark.usefixtures("parity")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def test_shared_fixtures_verify_through_torch(capsys):
    files = [str(FIXTURES / "network_small.npz"), str(FIXTURES / "c51_projection.npz")]
    assert main(["torch", *files]) == 0
    out = capsys.readouterr().out
    assert "20 passed, 0 failed" in out and "3 passed, 0 failed" in out
    assert "intermediate/transition_latents" in out


def test_a_changed_output_fails(tmp_path, capsys):
    with np.load(FIXTURES / "network_small.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["out/q_values"] = arrays["out/q_values"] + np.float32(1e-3)
    np.savez(tmp_path / "network_small.npz", **arrays)
    meta = json.loads((FIXTURES / "network_small.json").read_text())
    (tmp_path / "network_small.json").write_text(json.dumps(meta))
    assert main(["torch", str(tmp_path / "network_small.npz")]) == 1
    assert "out/q_values" in [
        line.split()[0] for line in capsys.readouterr().out.splitlines() if "FAIL" in line
    ]


def test_unusable_input_is_exit_2(capsys):
    assert main(["torch", str(FIXTURES / "sum_tree.npz")]) == 2
    assert "supports network, losses and c51_projection" in capsys.readouterr().err
    assert main(["torch", "--gin_files", "x.gin"]) == 2
    assert "gin file not found: x.gin" in capsys.readouterr().err
    assert main(["torch"]) == 2
    assert "needs fixture files or --gin_files" in capsys.readouterr().err
    assert main(["torch", str(FIXTURES / "c51_projection.npz"), "--gin_files", "x.gin"]) == 2
    assert "not both" in capsys.readouterr().err
