"""``bbf-crosscheck torch --gin_files`` at the size of the official losses fixture.

Width scale 1, hidden 256 (the official "small" network, 1.27 M parameters), batch 2
to stay fast: outputs, per-sample losses, gradients, one AdamW step and the EMA
target of the torch reference agree with bbf_jax within the bounds of the tolerance
policy (``bbf_jax.tolerance``).
"""

from __future__ import annotations

import pytest

from bbf_jax.crosscheck.cli import main

pytestmark = pytest.mark.usefixtures("parity")


def test_small_network_agrees_with_bbf_jax(tmp_path, capsys):
    gin = tmp_path / "small.gin"
    gin.write_text("NetworkConfig.width_scale = 1\nNetworkConfig.hidden_dim = 256\n")
    args = ["--num_actions", "6", "--seed", "3", "--batch_size", "2"]
    assert main(["torch", "--gin_files", str(gin), *args]) == 0
    out = capsys.readouterr().out
    assert "145 passed, 0 failed" in out
    # The projection kernel is (11 * 11 * 32, 256): its row order is the layout-sensitive one.
    assert "grads/projection/net/kernel" in out and "FAIL" not in out
