"""``bbf-crosscheck torch btr``: the PyTorch reference of the BTR network and update
against bbf_jax at small sizes, and conversions (or ports) with one bug each that it must
fail."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from bbf_jax.agents.btr.network import SPECTRAL_STATS, init_btr_params
from bbf_jax.crosscheck import torch_btr
from bbf_jax.crosscheck import torch_btr_check as check
from bbf_jax.crosscheck.cli import main
from bbf_jax.crosscheck.fixture_io import flatten_tree

pytestmark = pytest.mark.usefixtures("parity")


def test_small_check_passes_through_the_cli(capsys):
    assert main(["torch", "btr", "--small", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "small sizes, 6 actions, seed 0, batch 4" in out
    assert " 0 failed" in out and "FAIL" not in out
    names = {line.split()[0] for line in out.splitlines() if line.endswith("ok")
             or "  ok  (" in line}
    # Both forwards, the 6 normalised convs' u and sigma, the step's pieces and metrics,
    # and the gradient of every parameter (36 leaves with one unit per stage).
    assert {"quantiles", "quantiles_noisy", "step/target_quantiles", "step/per_sample_loss",
            "train_step/TotalLoss", "train_step/MunchausenBonus", "train_step/GradNorm",
            "grads/stage0/unit0/conv1/kernel", "grads/tau_embedding/dense/kernel",
            "grads/head/advantage/hidden/kernel_sigma"} <= names
    assert sum(n.startswith("spectral/") for n in names) == 12
    assert sum(n.startswith("grads/") for n in names) == 36


# Conversions with one deliberate bug each, applied on top of the reference conversion.


def _tau_rows_in_flax_order(network, variables):
    """The tau embedding's output rows left in Flax's (h, w, c) feature order."""
    net = torch_btr.btr_torch_network(network, variables)
    kernel = np.asarray(variables["params"]["tau_embedding"]["dense"]["kernel"])
    with torch.no_grad():
        net.cos_embedding.weight.copy_(torch.tensor(kernel.T))
    return net


def _first_kernel_hw_swapped(network, variables):
    """The first conv's HWIO kernel transposed to O, I, W, H (kh and kw swapped)."""
    net = torch_btr.btr_torch_network(network, variables)
    kernel = np.asarray(variables["params"]["stage0"]["conv"]["kernel"])
    with torch.no_grad():
        net.conv[0].conv.weight.copy_(torch.tensor(kernel.transpose(3, 2, 1, 0)))
    return net


def _spectral_u_copied(network, variables):
    """Flax's stored u copied into ``_u`` (``_v = N(W^T u)``) without the power-iteration
    step Flax's forward takes: even 15 steps after initialisation, u has not converged
    to float32 precision, and the normalised kernels differ."""
    net = torch_btr.btr_torch_network(network, variables)
    stats = flatten_tree(variables["spectral_stats"])
    with torch.no_grad():
        for prefix, conv in torch_btr.spectral_modules(net).items():
            u = torch.tensor(stats[f"{prefix}/u"][0])
            w = conv.parametrizations.weight.original.flatten(1)
            conv.parametrizations.weight[0]._u.copy_(u)
            conv.parametrizations.weight[0]._v.copy_(torch.nn.functional.normalize(w.T @ u,
                                                                                   dim=0))
    return net


class _SigmaAsConstant(torch.nn.Module):
    """``W / sigma`` with ``sigma = u^T W v`` treated as a constant by autograd."""

    def __init__(self, u: torch.Tensor, v: torch.Tensor):
        super().__init__()
        self.register_buffer("_u", u.clone())
        self.register_buffer("_v", v.clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        sigma = torch.vdot(self._u, torch.mv(weight.flatten(1), self._v))
        return weight / sigma.detach()


def _sigma_without_gradient(network, variables):
    """A port whose spectral norm computes the same forward but drops the gradient that
    flows through ``sigma``: only the gradient rows can see it."""
    net = torch_btr.btr_torch_network(network, variables)
    for conv in torch_btr.spectral_modules(net).values():
        sn = conv.parametrizations.weight[0]
        u, v = sn._u, sn._v
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=False)
        parametrize.register_parametrization(conv, "weight", _SigmaAsConstant(u, v))
    return net


@pytest.mark.parametrize("convert, must_fail", [
    (_tau_rows_in_flax_order, {"quantiles", "step/per_sample_loss",
                               "grads/tau_embedding/dense/kernel"}),
    (_first_kernel_hw_swapped, {"quantiles", "quantiles_noisy",
                                "grads/stage0/conv/kernel"}),
    (_spectral_u_copied, {"quantiles", "quantiles_noisy", "spectral/stage0/unit0/conv0/u"}),
    (_sigma_without_gradient, {"grads/stage0/unit0/conv0/kernel",
                               "grads/stage0/unit0/conv1/kernel"}),
])
def test_a_broken_conversion_fails(convert, must_fail, capsys):
    rows = check.compare_btr(seed=0, small=True, convert=convert)
    failed = {r.name for r in rows if not r.ok}
    assert must_fail <= failed
    assert check.report(rows, "== broken conversion") == 1
    assert "FAIL" in capsys.readouterr().out


def test_initial_variables_follow_init_btr_params():
    """The numpy-drawn variables of the check: ``init_btr_params``'s tree and shapes,
    parameters within their ``U(+-1/sqrt(fan_in))`` bounds, and each ``sigma`` an
    estimate of its kernel's top singular value ``s1``: ``v^T W u`` of unit vectors is
    at most ``s1`` (up to float32 rounding), and 15 power-iteration steps bring it close
    (random 3x3 kernels have small spectral gaps, ``s2 / s1`` up to ~0.99, so not
    closer than a few percent)."""
    network = check.make_btr_learner(True, 6, 4).network
    variables = check.initial_variables(network, np.random.default_rng(0))
    shapes = jax.eval_shape(lambda k: init_btr_params(network, k), jax.random.PRNGKey(0))
    assert jax.tree.structure(variables) == jax.tree.structure(shapes)
    assert [np.shape(x) for x in jax.tree.leaves(variables)] == [
        x.shape for x in jax.tree.leaves(shapes)]
    params = flatten_tree(variables["params"])
    first = params["stage0/conv/kernel"]
    assert np.abs(first).max() <= 1 / np.sqrt(9 * 4) and first.dtype == np.float32
    np.testing.assert_array_equal(params["head/value/hidden/kernel_sigma"],
                                  np.float32(0.5 / np.sqrt(network.feature_dim)))
    stats = flatten_tree(variables[SPECTRAL_STATS])
    for path, sigma in stats.items():
        if path.endswith("/sigma"):
            stage, unit, _, conv, _, _ = path.split("/")
            kernel = params[f"{stage}/{unit}/{conv}/kernel"].astype(np.float64)
            top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
            assert 0.9 * top <= sigma <= top * (1 + 1e-5), path


@pytest.mark.parametrize("kind, shape", [
    ("conv", (3, 3, 4, 8)), ("dense", (32, 6)), ("rows", (8, 288)), ("cols", (288, 32)),
    ("feature_vector", (288,)), ("vector", (32,)),
])
def test_layout_changes_are_exact_permutations(kind, shape):
    sizes = torch_btr.BTRSizes.of(check.make_btr_learner(True, 6, 4).network)
    order = torch_btr.feature_order(sizes)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    moved = torch_btr.to_torch_layout(x, kind, order)
    assert sorted(moved.ravel()) == sorted(x.ravel())
    np.testing.assert_array_equal(torch_btr.from_torch_layout(moved, kind, order), x)


def test_unusable_arguments_are_exit_2(capsys):
    assert main(["torch", "btr", "x.npz"]) == 2
    assert "takes no fixture files" in capsys.readouterr().err
    assert main(["torch", "--small", "x.npz"]) == 2
    assert "--small applies to" in capsys.readouterr().err
    assert main(["torch", "btr", "--small", "--num_actions", "1"]) == 2
    assert "--num_actions >= 2" in capsys.readouterr().err
