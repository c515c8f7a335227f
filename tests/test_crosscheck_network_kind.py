"""The ``network`` kind rejects small wrong changes of the official ``network_small`` file:
a transposed conv kernel and 1e-4 relative on one Q-value."""

import pathlib

import numpy as np
import pytest
from helpers import edited_fixture_copy

from bbf_jax.crosscheck import cli

pytestmark = pytest.mark.usefixtures("parity")

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "network_small.npz"


def _edited_copy(dst_dir: pathlib.Path, edit) -> pathlib.Path:
    dst_dir.mkdir()
    return edited_fixture_copy(FIXTURE, dst_dir / FIXTURE.name, edit)


def _failed(out: str, path: pathlib.Path) -> set[str]:
    table = out.split(f"== {path}")[1].split("\n== ")[0]
    return {line.split()[0] for line in table.splitlines() if "FAIL" in line}


def test_small_wrong_changes_fail(tmp_path, capsys):
    kernel = "params/encoder/ResidualStage_1/Conv_2/kernel"

    def transpose(a):
        a[kernel] = np.swapaxes(a[kernel], 0, 1).copy()

    def nudge(a):
        q = a["out/q_values"].copy()
        i = np.unravel_index(np.argmax(np.abs(q)), q.shape)
        q[i] *= np.float32(1 + 1e-4)
        a["out/q_values"] = q

    transposed = _edited_copy(tmp_path / "transposed", transpose)
    nudged = _edited_copy(tmp_path / "nudged", nudge)
    assert cli.main(["verify", str(transposed), str(nudged)]) == 1
    out = capsys.readouterr().out
    # The transposed kernel is no longer the init of PRNGKey(0), and it changes every
    # output computed after that layer (the encoder and everything it feeds).
    failed = _failed(out, transposed)
    assert "init" in failed and {"out/q_values", "out/logits", "encode_project",
                                 "intermediate/encoder_raw"} <= failed
    assert _failed(out, nudged) == {"out/q_values"}
