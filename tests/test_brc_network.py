"""The multi-task value networks: parameter counts of the design, BroNet's forward pass
checked by hand (numpy, both block forms), task embeddings, and Independent DQN's
per-task isolation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax.agents.brc.config import BRCNetworkConfig
from bbf_jax.agents.brc.network import make_network
from bbf_jax.networks import param_count

pytestmark = pytest.mark.usefixtures("parity")


def _init(cfg, num_outputs, batch=3, seed=0):
    net = make_network(cfg, 4, num_outputs)
    rng = np.random.default_rng(seed)
    states = jnp.asarray(rng.normal(size=(batch, 8)), jnp.float32)
    tasks = jnp.asarray(rng.integers(0, 3, batch), jnp.int32)
    return net, net.init(jax.random.PRNGKey(seed), states, tasks), states, tasks


@pytest.mark.parametrize("cfg, outputs, expected", [
    (BRCNetworkConfig(), 51, 459_820),  # the design's BroNet
    (BRCNetworkConfig(block="paper"), 51, 461_356),
    (BRCNetworkConfig(kind="shared_mlp", embed_dim=8), 1, 37_788),
    (BRCNetworkConfig(kind="independent_mlp"), 1, 107_148),
])
def test_parameter_counts(cfg, outputs, expected):
    _, params, _, _ = _init(cfg, outputs)
    assert param_count(params) == expected


def test_bronet_design_count_by_hand():
    # 3x32 embedding; 40 -> 256; 3 blocks of LN(256) + 2 Dense(256, 256); LN; 256 -> 4*51.
    blocks = 3 * (2 * 256 + 2 * (256 * 256 + 256))
    assert 3 * 32 + (40 * 256 + 256) + blocks + 2 * 256 + (256 * 204 + 204) == 459_820
    # 3x8 embedding; 16 -> 256 -> 128 -> 4.
    assert 3 * 8 + (16 * 256 + 256) + (256 * 128 + 128) + (128 * 4 + 4) == 37_788
    assert 3 * ((8 * 256 + 256) + (256 * 128 + 128) + (128 * 4 + 4)) == 107_148


def _ln(x, scale, bias):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * scale + bias


def _dense(p, x):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _numpy_bronet(params, states, tasks, block, num_blocks, unit_norm):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    e = p["TaskEmbedding_0"]["Embed_0"]["embedding"][np.asarray(tasks)]
    if unit_norm:
        e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    h = np.concatenate([np.asarray(states, np.float64), e], -1)
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    ln = lambda i, x: _ln(x, p[f"LayerNorm_{i}"]["scale"], p[f"LayerNorm_{i}"]["bias"])  # noqa: E731
    d = lambda i, x: _dense(p[f"Dense_{i}"], x)  # noqa: E731
    if block == "paper":
        h = relu(ln(0, d(0, h)))
        for b in range(num_blocks):
            r = relu(ln(1 + 2 * b, d(1 + 2 * b, h)))
            h = h + ln(2 + 2 * b, d(2 + 2 * b, r))
        out = d(1 + 2 * num_blocks, h)
    else:
        h = relu(d(0, h))
        for b in range(num_blocks):
            h = h + d(2 + 2 * b, relu(d(1 + 2 * b, ln(b, h))))
        out = d(1 + 2 * num_blocks, ln(num_blocks, h))
    return out.reshape(len(states), 4, -1)


@pytest.mark.parametrize("block", ["design", "paper"])
@pytest.mark.parametrize("unit_norm", [False, True])
def test_bronet_forward_by_hand(block, unit_norm):
    cfg = BRCNetworkConfig(width=6, num_blocks=2, embed_dim=3, block=block,
                           unit_norm_embedding=unit_norm)
    net, params, states, tasks = _init(cfg, 5, batch=4)
    # Non-trivial LayerNorm affine parameters, so that they are checked too.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.1 * (1 + np.arange(x.size).reshape(x.shape) % 3)
        if "LayerNorm" in jax.tree_util.keystr(path) else x, params)
    got = np.asarray(net.apply(params, states, tasks))
    want = _numpy_bronet(params, states, tasks, block, 2, unit_norm)
    assert got.shape == (4, 4, 5)
    # float32 through ~10 layers of width <= 11: a few ulps per op.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_embedding_init_and_unit_norm():
    cfg = BRCNetworkConfig(width=8, num_blocks=1, embed_dim=32)
    _, params, _, _ = _init(cfg, 3)
    table = np.asarray(params["params"]["TaskEmbedding_0"]["Embed_0"]["embedding"])
    assert table.shape == (3, 32)
    # N(0, 1/32): 96 draws, so the sample variance is within a few standard errors of 1/32.
    assert abs(table.var() - 1 / 32) < 4 * (1 / 32) * np.sqrt(2 / 96)
    net = make_network(BRCNetworkConfig(width=8, num_blocks=1, unit_norm_embedding=True), 4, 3)
    from bbf_jax.agents.brc.network import TaskEmbedding

    emb = TaskEmbedding(3, 32, True)
    e = emb.apply(emb.init(jax.random.PRNGKey(1), jnp.arange(3)), jnp.arange(3))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=-1), 1.0, rtol=1e-6)
    assert net is not None


def test_independent_mlps_isolate_tasks():
    cfg = BRCNetworkConfig(kind="independent_mlp", mlp_hidden=(5,))
    net, params, states, _ = _init(cfg, 1, batch=4)
    tasks = jnp.asarray([0, 0, 2, 2], jnp.int32)
    out = np.asarray(net.apply(params, states, tasks))
    members = params["params"]["members"]
    for i, t in enumerate(np.asarray(tasks)):
        p = jax.tree.map(lambda x, t=t: np.asarray(x[t], np.float64), members)
        h = np.maximum(_dense(p["Dense_0"], np.asarray(states[i], np.float64)), 0)
        np.testing.assert_allclose(out[i, :, 0], _dense(p["Dense_1"], h), rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: net.apply(p, states, tasks).sum())(params)
    g = grads["params"]["members"]["Dense_0"]["kernel"]
    assert np.all(np.asarray(g[1]) == 0)  # no sample of task 1
    assert np.any(np.asarray(g[0]) != 0) and np.any(np.asarray(g[2]) != 0)


def test_shared_mlp_uses_the_task():
    cfg = BRCNetworkConfig(kind="shared_mlp", embed_dim=8, mlp_hidden=(16,))
    net, params, states, _ = _init(cfg, 1)
    same = jnp.repeat(states[:1], 3, axis=0)
    out = np.asarray(net.apply(params, same, jnp.arange(3)))
    assert not np.allclose(out[0], out[1]) and not np.allclose(out[1], out[2])
