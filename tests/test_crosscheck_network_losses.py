"""``bbf-crosscheck export`` -> ``verify`` round trips of the ``losses`` and
``shrink_perturb`` kinds on a tiny network, and detection of small wrong changes."""

import json

import numpy as np
import pytest
from helpers import edited_fixture_copy

from bbf_jax.crosscheck import cli

pytestmark = pytest.mark.usefixtures("parity")


@pytest.fixture(scope="module")
def tiny_gin(tmp_path_factory):
    path = tmp_path_factory.mktemp("gin") / "tiny.gin"
    path.write_text("NetworkConfig.width_scale = 0.25\nNetworkConfig.hidden_dim = 64\n"
                    "NetworkConfig.num_blocks = 1\n")
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_gin):
    """``{kind: path}`` of files written by ``bbf-crosscheck export`` (made on first use)."""
    out_dir = tmp_path_factory.mktemp("exported")
    files = {}

    def get(kind):
        if kind not in files:
            out = out_dir / f"{kind}_tiny.npz"
            argv = ["export", "--kind", kind, "--gin_files", tiny_gin, "--num_actions", "6",
                    "--seed", "0", "--out", str(out)]
            assert cli.main(argv) == 0
            files[kind] = out
        return files[kind]

    return get


def _failed_rows(capsys, path):
    assert cli.main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    return {line.split("  ")[0] for line in out.splitlines() if "FAIL" in line}


@pytest.mark.parametrize(
    "kind, perturbed_key",
    [
        ("losses", "n3_g0.997/per_sample/dqn_loss"),
        ("shrink_perturb", "output/new_online/encoder/ResidualStage_0/Conv_0/bias"),
    ],
)
def test_export_verify_round_trip(tmp_path, exported, capsys, kind, perturbed_key):
    out = exported(kind)
    assert json.loads(out.with_suffix(".json").read_text())["kind"] == kind
    capsys.readouterr()
    assert cli.main(["verify", str(out)]) == 0
    report = capsys.readouterr().out
    assert f"(kind {kind})" in report and " 0 failed" in report and "FAIL" not in report

    def add(arrays):
        arrays[perturbed_key] = (arrays[perturbed_key] + 1e-3).astype(arrays[perturbed_key].dtype)

    bad = tmp_path / f"{kind}_bad.npz"
    edited_fixture_copy(out, bad, add)
    assert _failed_rows(capsys, bad) == {perturbed_key}


def test_small_wrong_losses_values_fail(tmp_path, exported, capsys):
    """A transposed gradient kernel, 1e-4 relative on one loss, an update without weight
    decay: each fails its row, and nothing else does (the new parameters are recomputed
    from the stored gradients, so the transposed gradient shows there too)."""
    case = "n3_g0.997/"
    kernel = "encoder/ResidualStage_1/Conv_1/kernel"
    decayed = "head/advantage/net/kernel"

    def edit(a):
        a[case + "grads/" + kernel] = np.swapaxes(a[case + "grads/" + kernel], 0, 1).copy()
        loss = a[case + "per_sample/dqn_loss"].copy()
        loss[np.argmax(np.abs(loss))] *= np.float32(1 + 1e-4)
        a[case + "per_sample/dqn_loss"] = loss
        # AdamW without its decoupled weight decay: lr * wd * p less movement.
        new = case + "new_online_params/" + decayed
        a[new] = (a[new] + np.float32(1e-4 * 0.1) * a["params/" + decayed]).astype(np.float32)

    bad = tmp_path / "losses_bad.npz"
    edited_fixture_copy(exported("losses"), bad, edit)
    assert _failed_rows(capsys, bad) == {
        case + "grads/" + kernel,
        case + "new_online_params/" + kernel,
        case + "per_sample/dqn_loss",
        case + "new_online_params/" + decayed,
    }
