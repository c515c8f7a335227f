"""The PyTorch reference network against the official network_small fixture."""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bbf_jax import tolerance
from bbf_jax.agents.bbf.config import NetworkConfig
from bbf_jax.crosscheck import torch_reference as tr
from bbf_jax.crosscheck.fixture_io import compare, flatten_tree, load_fixture, unflatten_tree
from bbf_jax.crosscheck.reductions import network_reductions

pytestmark = pytest.mark.usefixtures("parity")
tr.set_parity_numerics()

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "network_small.npz"
SMALL = NetworkConfig(width_scale=1, hidden_dim=256)
# Network outputs: the rounding-noise bound of bbf_jax.tolerance for this network.
SUMS = network_reductions(SMALL, batch_size=4, jumps=5)


@pytest.fixture(scope="module")
def fx():
    return load_fixture(FIXTURE)


@pytest.fixture(scope="module")
def net(fx):
    return tr.network_from_params(fx.subtree("params"), SMALL, num_actions=6)


@pytest.fixture(scope="module")
def inputs(fx):
    return torch.from_numpy(fx.get("input/obs_float")), torch.from_numpy(fx.get("input/actions"))


def _close(got: torch.Tensor, want: np.ndarray, tol: tolerance.Tolerance | None = None):
    """Within ``tol``, by default the output bound of the small network."""
    row = compare("output", got.detach().numpy(), want, SUMS.output(want) if tol is None else tol)
    assert row.ok, row


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-3, -1)


@torch.no_grad()
def test_outputs_match_fixture(net, fx, inputs):
    x, actions = inputs
    support = torch.from_numpy(fx.get("input/support"))
    out = net(x, support=support)
    roll = net(x, actions, do_rollout=True, support=support)
    for name in ("q_values", "logits", "probabilities", "representation"):
        _close(getattr(out, name), fx.get(f"out/{name}"))
        _close(getattr(roll, name), fx.get(f"out_rollout/{name}"))
    _close(_nhwc(out.latent), fx.get("out/latent"))
    _close(roll.latent, fx.get("out_rollout/latent"))
    # eval mode only switches noise off; noisy=False here.
    _close(out.q_values, fx.get("out_eval/q_values"))
    _close(out.logits, fx.get("out_eval/logits"))
    _close(net.encode_project(x), fx.get("encode_project"))


@torch.no_grad()
def test_intermediates_match_fixture(net, fx, inputs):
    x, actions = inputs
    raw = net.encoder(x.permute(0, 3, 1, 2))
    _close(_nhwc(raw), fx.get("intermediate/encoder_raw"))
    latent = tr.renormalize(raw)
    _close(_nhwc(latent), fx.get("intermediate/encoded_renormalized"))
    _close(net.projection(latent.flatten(1), None), fx.get("intermediate/projection_pre_relu"))
    latents = net.transition_model(latent, actions)
    _close(_nhwc(latents), fx.get("intermediate/transition_latents"))
    _close(_nhwc(latents[:, -1]), fx.get("intermediate/transition_final_carry"))
    projected = net.projection(latents.flatten(2), None)
    _close(projected, fx.get("intermediate/spr_projected"))
    _close(net.predictor(projected), fx.get("intermediate/spr_predictions"))


@torch.no_grad()
def test_nchw_input_and_per_example_semantics(net, inputs):
    x, actions = inputs
    full = net(x, actions, do_rollout=True)
    nchw = net(x.permute(0, 3, 1, 2), actions, do_rollout=True, layout="NCHW")
    for a, b in zip(full, nchw, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # renormalize, the dueling mean and the softmax are per example: one example alone
    # gives its own row of the batched result.
    one = net(x[2:3], actions[2:3], do_rollout=True)
    for a, b in zip(full, one, strict=True):
        torch.testing.assert_close(a[2:3], b, rtol=0, atol=2e-6)


def test_param_conversion_round_trip_is_exact(fx):
    flat = fx.subtree("params")
    sd = tr.params_to_state_dict(flat, SMALL)
    back = flatten_tree(tr.state_dict_to_params(sd, SMALL))
    assert back.keys() == flat.keys()
    for k, v in flat.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    # Nested input (and a Flax variables dict with a 'params' level) give the same dict.
    nested = tr.params_to_state_dict({"params": unflatten_tree(flat)}, SMALL)
    assert nested.keys() == sd.keys()
    assert all(torch.equal(nested[k], sd[k]) for k in sd)
    # and back from torch: state_dict -> params -> state_dict.
    again = tr.params_to_state_dict(tr.state_dict_to_params(sd, SMALL), SMALL)
    assert all(torch.equal(again[k], sd[k]) for k in sd)


def test_conversion_layouts(fx):
    flat = fx.subtree("params")
    sd = tr.params_to_state_dict(flat, SMALL)
    kernel = flat["encoder/ResidualStage_1/Conv_0/kernel"]  # HWIO (3, 3, 16, 32)
    weight = sd["encoder.stages.1.convs.0.weight"].numpy()  # OIHW (32, 16, 3, 3)
    assert weight.shape == (32, 16, 3, 3)
    assert weight[5, 7, 0, 2] == kernel[0, 2, 7, 5]
    assert np.array_equal(sd["predictor.weight"].numpy(), flat["predictor/kernel"].T)
    # Projection rows: Flax (h, w, c) row-major, torch columns (c, h, w).
    proj_k, proj_w = flat["projection/net/kernel"], sd["projection.net.weight"].numpy()
    h, w, c, o = 3, 7, 19, 11
    assert proj_w[o, (c * 11 + h) * 11 + w] == proj_k[(h * 11 + w) * 32 + c, o]


@pytest.mark.parametrize(
    "config",
    [
        NetworkConfig(
            encoder_type="dqn", width_scale=0.5, hidden_dim=32, noisy=True, dueling=False
        ),
        NetworkConfig(width_scale=0.5, num_blocks=1, hidden_dim=16, num_atoms=1),
    ],
    ids=["dqn-noisy-plain", "impala-scalar"],
)
@pytest.mark.parametrize("with_spr", [True, False])
def test_round_trip_other_configs(config, with_spr):
    g = torch.Generator().manual_seed(0)
    net = tr.BBFTorchNetwork(config, num_actions=3, with_spr=with_spr)
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=g)
    sd = net.state_dict()
    params = tr.state_dict_to_params(sd, config)
    assert ("transition_model" in params) == with_spr == ("predictor" in params)
    back = tr.params_to_state_dict(params, config)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    if config.noisy:
        assert params["projection"]["net"]["kernell"].shape == (11 * 11 * 32, 32)


def test_noisy_layer_matches_materialised_weights():
    rng = np.random.default_rng(0)
    layer = tr.NoisyLinear(7, 5)
    for p in layer.parameters():
        p.data = torch.from_numpy(rng.standard_normal(p.shape).astype(np.float32))
    x = rng.standard_normal((3, 7)).astype(np.float32)
    p_ = rng.standard_normal((3, 7)).astype(np.float32)
    q_ = rng.standard_normal((3, 5)).astype(np.float32)

    def f(v):
        return np.sign(v) * np.sqrt(np.abs(v))

    w_mu, w_sig = (
        layer.weight.detach().numpy().T.astype(np.float64),
        layer.weight_sigma.detach().numpy().T.astype(np.float64),
    )
    b_mu, b_sig = layer.bias.detach().numpy(), layer.bias_sigma.detach().numpy()
    want = np.stack(
        [
            x[i] @ (w_mu + w_sig * np.outer(f(p_[i]), f(q_[i]))) + b_mu + b_sig * f(q_[i])
            for i in range(3)
        ]
    )
    got = layer(torch.from_numpy(x), torch.from_numpy(p_), torch.from_numpy(q_))
    _close(got, want, tolerance.network_output(want, x.shape[-1], depth=1))
    # No noise (eval mode) is the plain affine map.
    plain = x @ w_mu + b_mu
    _close(layer(torch.from_numpy(x)), plain, tolerance.network_output(plain, x.shape[-1], 1))


def test_one_key_noise_is_a_prefix_stream():
    # The official layer draws p ~ N(key, (n_in, 1)) and q ~ N(key, (1, out)) from one
    # key; the torch network slices both from one per-example stream N(key, (N,)).
    key = jax.random.PRNGKey(7)
    stream = np.asarray(jax.random.normal(key, (300,)))
    assert np.array_equal(np.asarray(jax.random.normal(key, (300, 1)))[:, 0], stream)
    assert np.array_equal(np.asarray(jax.random.normal(key, (1, 51)))[0], stream[:51])


def test_noisy_network_noise_changes_outputs_and_none_is_eval():
    config = NetworkConfig(encoder_type="dqn", width_scale=0.5, hidden_dim=32, noisy=True)
    torch.manual_seed(0)
    net = tr.BBFTorchNetwork(config, num_actions=3, with_spr=False)
    x = torch.rand(2, 84, 84, 4)
    with torch.no_grad():
        clean = net(x).logits
        noisy = net(x, noise=torch.randn(2, 11 * 11 * 32)).logits
        plain_projection = F.linear(
            net.encode(x.permute(0, 3, 1, 2)).flatten(1),
            net.projection.net.weight,
            net.projection.net.bias,
        )
        torch.testing.assert_close(net.encode_project(x), plain_projection, rtol=0, atol=0)
    assert (clean - noisy).abs().max() > 1e-3
    with pytest.raises(ValueError, match="a layer needs 3872"):
        net(x, noise=torch.randn(2, 100))


def test_initial_parameters_follow_the_official_distributions():
    config = NetworkConfig(encoder_type="dqn", width_scale=0.5, hidden_dim=32, noisy=True)
    net = tr.BBFTorchNetwork(config, num_actions=3)
    conv = net.encoder.convs[0]  # (16, 4, 8, 8): fans 4*64 and 16*64
    assert conv.weight.abs().max() <= (6 / (4 * 64 + 16 * 64)) ** 0.5
    assert conv.weight.std() > 0.5 * (2 / (4 * 64 + 16 * 64)) ** 0.5
    assert not conv.bias.any() and not net.predictor.bias.any()
    noisy = net.projection.net  # n_in = 11 * 11 * 32
    bound = 1 / (11 * 11 * 32) ** 0.5
    assert torch.equal(noisy.weight_sigma, torch.full_like(noisy.weight_sigma, 0.5 * bound))
    assert torch.equal(noisy.bias_sigma, torch.full_like(noisy.bias_sigma, 0.5 * bound))
    assert noisy.bias.abs().max() <= bound and noisy.bias.abs().max() > 0.5 * bound


def test_scalar_head_has_no_probabilities():
    config = NetworkConfig(width_scale=0.25, num_blocks=1, hidden_dim=8, num_atoms=1)
    net = tr.BBFTorchNetwork(config, num_actions=4, with_spr=False)
    with torch.no_grad():
        out = net(torch.rand(3, 84, 84, 4))
    assert out.probabilities is None and out.logits.shape == (3, 4, 1)
    torch.testing.assert_close(out.q_values, out.logits[..., 0], rtol=0, atol=0)


# --- XLA 'SAME' padding -------------------------------------------------------------


def test_same_pads():
    assert [tr.same_pads(n, 3, 2) for n in (84, 42, 21)] == [(0, 1), (0, 1), (1, 1)]
    assert [tr.same_pads(n, k, s) for n, k, s in ((84, 8, 4), (21, 4, 2), (11, 3, 1))] == [
        (2, 2),
        (1, 2),
        (1, 1),
    ]


@pytest.mark.parametrize("size", [84, 42, 21])
def test_max_pool_same_matches_flax_and_naive_padding_does_not(size):
    x = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    want = np.asarray(nn.max_pool(jnp.asarray(x), (3, 3), strides=(2, 2), padding="SAME"))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    got = tr.max_pool_same(xt).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(got, want)
    naive = torch.nn.MaxPool2d(3, 2, padding=1)(xt).permute(0, 2, 3, 1).numpy()
    assert naive.shape == want.shape
    # Only the 21 -> 11 pool has symmetric (1, 1) pads; elsewhere the windows shift.
    assert np.array_equal(naive, want) == (size == 21)


def _impala_with_pool(net, x, pool):
    for stage in net.encoder.stages:
        x = pool(stage.convs[0](x))
        for b in range(stage.num_blocks):
            h = x
            x = stage.convs[2 * b + 2](F.relu(stage.convs[2 * b + 1](F.relu(x)))) + h
    return F.relu(x)


@torch.no_grad()
def test_naive_max_pool_breaks_the_fixture(net, fx, inputs):
    x = inputs[0].permute(0, 3, 1, 2)
    want = fx.get("intermediate/encoder_raw")
    _close(_nhwc(_impala_with_pool(net, x, tr.max_pool_same)), want)
    naive = _impala_with_pool(net, x, torch.nn.MaxPool2d(3, 2, padding=1))
    assert np.abs(_nhwc(naive).numpy() - want).max() > 1e-2


@pytest.mark.parametrize("size,kernel,stride", [(84, 8, 4), (21, 4, 2), (11, 3, 1)])
def test_same_conv_matches_xla(size, kernel, stride):
    rng = np.random.default_rng(kernel)
    x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
    k = (rng.standard_normal((kernel, kernel, 3, 5)) / (kernel * 3**0.5)).astype(np.float32)
    want = jax.lax.conv_general_dilated(
        jnp.asarray(x),
        jnp.asarray(k),
        (stride, stride),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    conv = tr.SameConv2d(3, 5, kernel, stride)
    conv.weight.data = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
    conv.bias.data.zero_()
    with torch.no_grad():
        got = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    want = np.asarray(want)
    _close(got, want, tolerance.network_output(want, kernel * kernel * 3, depth=1))


# --- bad input ----------------------------------------------------------------------


def test_bad_inputs_name_the_problem(fx, net, inputs):
    x = inputs[0]
    with pytest.raises(ValueError, match="layout must be"):
        net(x, layout="HWC")
    with pytest.raises(ValueError, match=r"shape \(84, 84, 4\)"):
        net(x.permute(0, 3, 1, 2))  # NCHW data passed as NHWC
    with pytest.raises(ValueError, match="needs actions"):
        net(x, do_rollout=True)
    flat = dict(fx.subtree("params"))
    del flat["head/value/net/bias"]
    with pytest.raises(ValueError, match="missing.*head/value/net/bias"):
        tr.params_to_state_dict(flat, SMALL)
    with pytest.raises(ValueError, match="unexpected.*head/value"):
        tr.params_to_state_dict(fx.subtree("params"), NetworkConfig(width_scale=1, dueling=False))
    with pytest.raises(ValueError, match="num_actions=4"):
        tr.network_from_params(fx.subtree("params"), SMALL, num_actions=4)
    with pytest.raises(ValueError, match="float32 only"):
        tr.BBFTorchNetwork(NetworkConfig(compute_dtype="bfloat16"), 6)


def test_flax_flatten_index_hand_worked():
    # C=2, H=1, W=2: torch order (c,h,w) = (0,0,0) (0,0,1) (1,0,0) (1,0,1) sits at Flax
    # (h,w,c) positions 0, 2, 1, 3.
    assert tr.flax_flatten_index(2, 1, 2).tolist() == [0, 2, 1, 3]
    latent = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    flax_flat = latent.permute(0, 2, 3, 1).flatten(1)
    assert torch.equal(flax_flat[:, tr.flax_flatten_index(2, 3, 4)], latent.flatten(1))
