"""``bbf-crosscheck export`` -> ``verify`` round trips of the ``losses`` and
``shrink_perturb`` kinds on a tiny network, and detection of a perturbed output."""

import json

import jax
import numpy as np
import pytest

from bbf_jax.crosscheck import cli

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def tiny_gin(tmp_path):
    path = tmp_path / "tiny.gin"
    path.write_text("NetworkConfig.width_scale = 0.25\nNetworkConfig.hidden_dim = 64\n")
    return str(path)


def _perturbed_copy(src, dst, key, delta=1e-3):
    with np.load(src) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[key] = (arrays[key] + delta).astype(arrays[key].dtype)
    np.savez_compressed(dst, **arrays)
    dst.with_suffix(".json").write_text(src.with_suffix(".json").read_text())


@pytest.mark.parametrize(
    "kind, perturbed_key",
    [
        ("losses", "n3_g0.997/per_sample/dqn_loss"),
        ("shrink_perturb", "output/new_online/encoder/ResidualStage_0/Conv_0/bias"),
    ],
)
def test_export_verify_round_trip(tmp_path, tiny_gin, capsys, kind, perturbed_key):
    out = tmp_path / f"{kind}_tiny.npz"
    argv = ["export", "--kind", kind, "--gin_files", tiny_gin, "--num_actions", "6",
            "--seed", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    assert json.loads(out.with_suffix(".json").read_text())["kind"] == kind
    capsys.readouterr()
    assert cli.main(["verify", str(out)]) == 0
    report = capsys.readouterr().out
    assert f"(kind {kind})" in report and " 0 failed" in report and "FAIL" not in report

    bad = tmp_path / f"{kind}_bad.npz"
    _perturbed_copy(out, bad, perturbed_key)
    assert cli.main(["verify", str(bad)]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if "FAIL" in line]
    assert len(failed) == 1 and failed[0].startswith(perturbed_key), failed
