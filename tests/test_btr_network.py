"""The BTR network (paper App. E.1, authors' ``networks.py``) and its building blocks:
PyTorch-semantics pooling, the IQN tau embedding, factorised noisy layers, spectral
normalisation, the dueling head, and the parameter count at the paper's sizes."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bbf_jax.agents.btr.network import (
    SPECTRAL_STATS,
    BTRNetwork,
    init_btr_params,
    param_count,
)
from bbf_jax.networks.iqn import TauEmbedding, cosine_embedding
from bbf_jax.networks.noisy import FactorizedNoisyDense
from bbf_jax.networks.pooling import adaptive_max_pool, adaptive_windows, max_pool2d

pytestmark = pytest.mark.usefixtures("parity")

EPS32 = float(np.finfo(np.float32).eps)
TINY = dict(width_scale=0.25, hidden=16)  # channels (4, 8, 8), 8 * 36 = 288 features
A = 5


def _to_torch_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _from_torch_nchw(t: torch.Tensor) -> np.ndarray:
    return t.numpy().transpose(0, 2, 3, 1)


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------- pooling


@pytest.mark.parametrize(
    "in_hw, out_hw",
    [((11, 11), (6, 6)), ((7, 7), (3, 3)), ((6, 6), (6, 6)), ((5, 5), (2, 2)),
     ((11, 7), (6, 3)), ((3, 4), (5, 6))],
)
def test_adaptive_max_pool_equals_torch(in_hw, out_hw):
    x = np.random.default_rng(0).standard_normal((2, *in_hw, 3)).astype(np.float32)
    ours = np.asarray(adaptive_max_pool(jnp.asarray(x), out_hw))
    ref = _from_torch_nchw(torch.nn.functional.adaptive_max_pool2d(_to_torch_nchw(x), out_hw))
    np.testing.assert_array_equal(ours, ref)  # a max of the same floats is exact


def test_adaptive_windows_11_to_6_overlap():
    # [floor(11 i / 6), ceil(11 (i + 1) / 6)): sizes 2 or 3, overlapping.
    assert adaptive_windows(11, 6) == [(0, 2), (1, 4), (3, 6), (5, 8), (7, 10), (9, 11)]


@pytest.mark.parametrize("n", [84, 42, 21])
def test_max_pool2d_equals_torch(n):
    x = np.random.default_rng(n).standard_normal((2, n, n, 3)).astype(np.float32)
    ours = np.asarray(max_pool2d(jnp.asarray(x), kernel_size=3, stride=2, padding=1))
    ref = _from_torch_nchw(torch.nn.functional.max_pool2d(_to_torch_nchw(x), 3, 2, 1))
    assert ours.shape == (2, (n - 1) // 2 + 1, (n - 1) // 2 + 1, 3)  # 84->42->21->11
    np.testing.assert_array_equal(ours, ref)


# ------------------------------------------------------------------------ tau embedding


def test_cosine_embedding_values():
    taus = jnp.asarray([[0.0, 0.25, 0.5], [0.75, 0.1, 0.999]], jnp.float32)
    emb = np.asarray(cosine_embedding(taus, 64))
    assert emb.shape == (2, 3, 64) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[..., 0], 1.0)  # cos(0)
    # i = 1: cos(pi tau) by hand: 1, sqrt(2)/2, 0, -sqrt(2)/2, cos(0.1 pi), cos(0.999 pi).
    hand = [[1.0, math.sqrt(0.5), 0.0], [-math.sqrt(0.5), math.cos(0.1 * math.pi),
                                          math.cos(0.999 * math.pi)]]
    # float32 rounding of the argument pi * tau (< 1 ulp of pi) plus that of cos (1 ulp).
    atol_1 = float(np.spacing(np.float32(np.pi))) + EPS32
    np.testing.assert_allclose(emb[..., 1], hand, rtol=0, atol=atol_1)
    # All i: the argument pi * i * tau (< pi * 63) carries up to ~2 ulps of itself.
    full = np.cos(np.pi * np.arange(64) * np.asarray(taus, np.float64)[..., None])
    atol = 2 * float(np.spacing(np.float32(np.pi * 63))) + EPS32
    np.testing.assert_allclose(emb, full, rtol=0, atol=atol)


def test_tau_embedding_module_shape():
    module = TauEmbedding(features=10, num_cosines=64)
    taus = jax.random.uniform(jax.random.PRNGKey(0), (3, 4))
    variables = module.init(jax.random.PRNGKey(1), taus)
    out = module.apply(variables, taus)
    assert out.shape == (3, 4, 10) and out.dtype == jnp.float32
    assert variables["params"]["dense"]["kernel"].shape == (64, 10)
    assert bool(jnp.all(out >= 0))  # ReLU


# -------------------------------------------------------------------------- noisy layer


def test_noisy_init_follows_fortunato():
    n_in, n_out, sigma0 = 40, 7, 0.5
    layer = FactorizedNoisyDense(n_out, sigma0)
    p = layer.init(jax.random.PRNGKey(0), jnp.zeros((1, n_in)))["params"]
    bound = 1 / math.sqrt(n_in)
    for name in ("kernel_mu", "bias_mu"):
        assert float(jnp.max(jnp.abs(p[name]))) <= bound
    for name in ("kernel_sigma", "bias_sigma"):
        np.testing.assert_allclose(p[name], sigma0 / math.sqrt(n_in), rtol=EPS32)
    assert p["kernel_mu"].shape == p["kernel_sigma"].shape == (n_in, n_out)


def test_noisy_noise_statistics():
    """Perturbation ``d_j = sum_i x_i s_ij f(p_i) f(q_j) + b_j f(q_j)``.

    ``f(p), f(q)`` are independent with mean 0 and ``E f^2 = E|N(0,1)| = sqrt(2/pi)``, so
    ``E d_j = 0`` and ``Var d_j = (2/pi) sum_i x_i^2 s_ij^2 + sqrt(2/pi) b_j^2``. Sample mean
    and variance over K keys are checked to 5 standard errors (the variance's from the
    sample fourth moment): a fixed-key test, so a pass is reproducible.
    """
    n_in, n_out, num_keys = 16, 4, 20_000
    layer = FactorizedNoisyDense(n_out, 0.5)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, n_in))
    params = layer.init(jax.random.PRNGKey(0), x)["params"]
    # Distinct sigmas per entry, so a transposed kernel_sigma would show.
    k_s, k_b = jax.random.split(jax.random.PRNGKey(2))
    params = dict(params)
    params["kernel_sigma"] = jax.random.uniform(k_s, (n_in, n_out), minval=0.05, maxval=0.5)
    params["bias_sigma"] = jax.random.uniform(k_b, (n_out,), minval=0.05, maxval=0.5)
    variables = {"params": params}

    mean_out = layer.apply(variables, x)
    expected_mean = jnp.matmul(x, params["kernel_mu"]) + params["bias_mu"]
    np.testing.assert_array_equal(mean_out, expected_mean)  # noise_key=None: no noise

    keys = jax.random.split(jax.random.PRNGKey(3), num_keys)
    noisy = jax.jit(jax.vmap(lambda k: layer.apply(variables, x, k)[0]))(keys)
    d = np.asarray(noisy - mean_out[0], np.float64)  # (K, out)

    xs = np.asarray(x[0], np.float64)
    s = np.asarray(params["kernel_sigma"], np.float64)
    b = np.asarray(params["bias_sigma"], np.float64)
    var = (2 / np.pi) * (xs**2) @ (s**2) + np.sqrt(2 / np.pi) * b**2

    mean_hat = d.mean(0)
    np.testing.assert_array_less(np.abs(mean_hat), 5 * np.sqrt(var / num_keys))
    centred = d - mean_hat
    var_hat = (centred**2).mean(0)
    m4_hat = (centred**4).mean(0)
    se_var = np.sqrt((m4_hat - var_hat**2) / num_keys)
    np.testing.assert_array_less(np.abs(var_hat - var), 5 * se_var)


def test_noisy_noise_is_shared_across_rows():
    layer = FactorizedNoisyDense(6)
    row = jax.random.normal(jax.random.PRNGKey(0), (8,))
    x = jnp.stack([row, row, 2 * row])  # (3, 8)
    variables = layer.init(jax.random.PRNGKey(1), x)
    y = layer.apply(variables, x, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(y[0], y[1])  # one weight sample for the batch
    y3 = layer.apply(variables, x[None], jax.random.PRNGKey(2))  # (1, 3, 8) rows
    np.testing.assert_allclose(y3[0], y, rtol=4 * 8 * EPS32, atol=4 * 8 * EPS32)
    other = layer.apply(variables, x, jax.random.PRNGKey(3))
    assert not np.allclose(y, other)


# ------------------------------------------------------------------- spectral norm


def _sn_kernels(variables):
    """(path, kernel as the (9 * in, out) float64 matrix, u, sigma) per normalised conv."""
    params = _flat(variables["params"])
    stats = _flat(variables[SPECTRAL_STATS])
    out = []
    for path, u in stats.items():
        if not path.endswith("/kernel/u"):
            continue
        # '<stage>/<unit>/convJ_sn/convJ/kernel/u' -> params '<stage>/<unit>/convJ/kernel'
        stage, unit, _, conv, _, _ = path.split("/")
        kernel = np.asarray(params[f"{stage}/{unit}/{conv}/kernel"], np.float64)
        kernel = kernel.reshape(-1, kernel.shape[-1])  # (3, 3, in, out) -> (9 * in, out)
        sigma = float(stats[path[: -len("/u")] + "/sigma"])
        out.append((path, kernel, np.asarray(u, np.float64)[0], sigma))
    return out


def _power_step(w: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, float]:
    """One step of Flax's power iteration in float64: ``v = W u / |W u|``,
    ``u' = W^T v / |W^T v|``, ``sigma = v^T W u'``; ``W`` is ``(9 * in, out)``."""
    v = w @ u
    v /= np.linalg.norm(v)
    u_new = w.T @ v
    u_new /= np.linalg.norm(u_new)
    return u_new, float(v @ w @ u_new)


@pytest.fixture(scope="module")
def tiny(parity):
    """One tiny network (1 residual unit per stage: 6 normalised convs) and its variables,
    shared by the tests below to compile its initialisation once. Parameters do not
    depend on the input's spatial size (no LayerNorm), so 12x12 inputs serve the
    spectral-norm tests (the power iteration ignores the input) and 84x84 the others.
    One initial power-iteration step and an 'rbg' key (one XLA op per random draw instead
    of an unrolled threefry) halve the initialisation's compile time; the values of the
    parameters do not matter here and the tests measure convergence from wherever ``u``
    starts."""
    net = BTRNetwork(num_actions=A, num_blocks=1, **TINY)
    init = functools.partial(init_btr_params, net, input_shape=(12, 12, 4), init_power_iterations=1)
    return net, jax.jit(init)(jax.random.key(0, impl="rbg"))


@pytest.fixture(scope="module")
def sn_setup(tiny):
    net, variables = tiny
    x = jnp.zeros((1, 12, 12, 4), jnp.uint8)
    taus = jnp.full((1, 1), 0.5, jnp.float32)

    @jax.jit
    def train_step(variables):
        _, updates = net.apply(variables, x, taus, update_stats=True, mutable=[SPECTRAL_STATS])
        return {**variables, **updates}

    return net, variables, x, taus, train_step


def test_spectral_norm_only_on_residual_convs():
    net = BTRNetwork(num_actions=18)
    shapes = jax.eval_shape(lambda k: init_btr_params(net, k), jax.random.PRNGKey(0))
    us = sorted(p for p in _flat(shapes[SPECTRAL_STATS]) if p.endswith("/u"))
    expected = sorted(
        f"stage{s}/unit{b}/conv{j}_sn/conv{j}/kernel/u"
        for s in range(3) for b in range(2) for j in range(2)
    )
    assert us == expected  # 12 = 3 stages x 2 units x 2 convs; not stage{s}/conv
    plain = BTRNetwork(num_actions=18, spectral_norm=False)
    plain_shapes = jax.eval_shape(lambda k: init_btr_params(plain, k), jax.random.PRNGKey(0))
    assert set(plain_shapes) == {"params"}
    assert jax.tree.map(jnp.shape, plain_shapes["params"]) == jax.tree.map(
        jnp.shape, shapes["params"]
    )


def test_spectral_norm_one_power_iteration_per_training_call(sn_setup):
    net, variables, x, taus, train_step = sn_setup
    before = _sn_kernels(variables)
    after = {path: (u, sigma) for path, _, u, sigma in _sn_kernels(train_step(variables))}
    assert len(before) == 6  # 3 stages x 1 unit x 2 convs
    for path, w, u0, _ in before:
        u1, sigma1 = _power_step(w, u0)
        # float32 matrix-vector products of length <= 9 * in, then normalisation.
        tol = 10 * (w.shape[0] + w.shape[1]) * EPS32
        np.testing.assert_allclose(after[path][0], u1, rtol=0, atol=tol, err_msg=path)
        np.testing.assert_allclose(after[path][1], sigma1, rtol=tol, err_msg=path)
    # Evaluation (update_stats=False) needs nothing mutable and is deterministic.
    apply = jax.jit(net.apply)
    np.testing.assert_array_equal(apply(variables, x, taus), apply(variables, x, taus))


def test_spectral_norm_converges_to_top_singular_value(sn_setup):
    _, variables, _, _, train_step = sn_setup
    start = _sn_kernels(variables)
    # Random 3x3 kernels have small spectral gaps (here s2/s1 up to ~0.96, error ~
    # (s2/s1)^(2 k)), so enough steps for float32 rounding to dominate the error.
    steps = 200
    for _ in range(steps):
        variables = train_step(variables)
    end = {path: sigma for path, _, _, sigma in _sn_kernels(variables)}
    for path, w, u, _ in start:
        s = np.linalg.svd(w, compute_uv=False)
        # PyTorch flattens (out, in, kh, kw) to (out, in * 9): same singular values.
        w_4d = w.reshape(3, 3, -1, w.shape[1])  # back to Flax's (kh, kw, in, out)
        w_torch = w_4d.transpose(3, 2, 0, 1).reshape(w.shape[1], -1)
        np.testing.assert_allclose(np.linalg.svd(w_torch, compute_uv=False), s, rtol=1e-12)
        # The exact (float64) power iteration from the same start bounds the estimate's
        # convergence error; float32 adds rounding (sigma is a Rayleigh quotient, so
        # rounding errors in u enter it only to second order).
        sigma_exact = 0.0
        for _ in range(steps):
            u, sigma_exact = _power_step(w, u)
        tol = (s[0] - sigma_exact) / s[0] + 10 * sum(w.shape) * EPS32
        np.testing.assert_allclose(end[path], s[0], rtol=tol, err_msg=path)
        # The normalised kernel W / sigma has largest singular value s1 / sigma = 1.
        top = np.linalg.svd(w / end[path], compute_uv=False)[0]
        np.testing.assert_allclose(top, 1.0, rtol=tol / (1 - tol), err_msg=path)


# ------------------------------------------------------------------------- the network


def test_param_count_at_paper_sizes():
    """A = 18 (full Atari action set), width 2, 6x6 pool, 512 hidden, 64 cosines.

    Trunk (conv 3x3, weight + bias):
      stage 0: 4->32 first conv 1,184 + 4 convs 32->32 of 9,248 = 38,176
      stage 1: 32->64 first conv 18,496 + 4 convs 64->64 of 36,928 = 166,208
      stage 2: 64->64 first conv 36,928 + 4 x 36,928 = 184,640        -> 389,024
    Tau embedding Dense(64 -> 2304): 64 * 2304 + 2304 = 149,760
    Noisy layers, mu part (weight + bias): 2 x (2304 * 512 + 512) = 2,360,320;
      value out 512 + 1 = 513; advantage out 512 * 18 + 18 = 9,234    -> 2,370,067
    Linear layers (mu only): 149,760 + 2,370,067 = 2,519,827 ("2.52M", Fig. E7)
    Total, mu only: 389,024 + 2,519,827 = 2,908,851 ("2.91M", Fig. E7)
    Total trainable, with the noisy sigmas (another 2,370,067): 5,278,918
    """
    net = BTRNetwork(num_actions=18)
    shapes = jax.eval_shape(lambda k: init_btr_params(net, k), jax.random.PRNGKey(0))
    assert param_count(shapes) == 5_278_918
    assert param_count(shapes["params"]) == 5_278_918
    assert param_count(shapes, noise_scales=False) == 2_908_851
    trunk = {k: v for k, v in shapes["params"].items() if k.startswith("stage")}
    assert param_count(trunk) == 389_024
    assert param_count(shapes, noise_scales=False) - param_count(trunk) == 2_519_827
    assert net.feature_dim == 2304


@pytest.fixture(scope="module")
def tiny_net(tiny):
    net, variables = tiny
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (2, 84, 84, 4)), jnp.uint8)
    taus = jax.random.uniform(jax.random.PRNGKey(1), (2, 3))

    @jax.jit
    def apply(variables, noise_key=None):
        """``(q, value stream, advantage stream)``, the streams captured from the head."""
        q, state = net.apply(variables, x, taus, noise_key, capture_intermediates=True,
                             mutable=["intermediates"])
        head = state["intermediates"]["head"]
        return q, head["value"]["__call__"][0], head["advantage"]["__call__"][0]

    return net, variables, apply


def test_output_shape_and_dueling_structure(tiny_net):
    _, variables, apply = tiny_net
    q, v, adv = apply(variables)
    assert q.shape == (2, 3, A) and q.dtype == jnp.float32
    assert v.shape == (2, 3, 1) and adv.shape == (2, 3, A)
    # Q = V + A - mean_a A, per example and tau; so mean_a Q = V.
    scale = float(jnp.max(jnp.abs(v)) + jnp.max(jnp.abs(adv)))
    tol = 4 * A * EPS32 * scale
    np.testing.assert_allclose(q, v + adv - adv.mean(-1, keepdims=True), rtol=0, atol=tol)
    np.testing.assert_allclose(q.mean(-1), v[..., 0], rtol=0, atol=tol)


def test_noise_key_changes_output_deterministically(tiny_net):
    _, variables, apply = tiny_net
    clean = apply(variables)[0]
    noisy = apply(variables, jax.random.PRNGKey(7))[0]
    np.testing.assert_array_equal(noisy, apply(variables, jax.random.PRNGKey(7))[0])
    assert not np.allclose(noisy, clean)
    assert not np.allclose(noisy, apply(variables, jax.random.PRNGKey(8))[0])


def test_layer_norm_variant_placement():
    net = BTRNetwork(num_actions=A, layer_norm=True, **TINY)
    shapes = jax.eval_shape(lambda k: init_btr_params(net, k), jax.random.PRNGKey(0))
    flat = {k: v.shape for k, v in _flat(shapes["params"]).items() if "/norm/" in k}
    c0, c1, c2 = net.channels
    assert flat == {  # after each stage's first conv, before its max-pool: over (H, W, C)
        "stage0/norm/scale": (84, 84, c0), "stage0/norm/bias": (84, 84, c0),
        "stage1/norm/scale": (42, 42, c1), "stage1/norm/bias": (42, 42, c1),
        "stage2/norm/scale": (21, 21, c2), "stage2/norm/bias": (21, 21, c2),
        # after each stream's hidden noisy layer, before its ReLU
        "head/value/norm/scale": (16,), "head/value/norm/bias": (16,),
        "head/advantage/norm/scale": (16,), "head/advantage/norm/bias": (16,),
    }
