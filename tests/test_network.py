"""The BBF network (spec §3): official parameter tree and counts, heads, noisy layers,
half precision, per-example semantics, and the ``network`` cross-check CLI."""

import functools
import json
import pathlib
import re
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax.agents.bbf.config import NetworkConfig
from bbf_jax.crosscheck import cli
from bbf_jax.jit_once import jit_once
from bbf_jax.networks import init_params, make_network, param_count
from bbf_jax.networks.heads import NoisyDense

pytestmark = pytest.mark.usefixtures("parity")

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "network_small.npz"
TINY = NetworkConfig(width_scale=0.25, hidden_dim=64)
B, A, K = 4, 6, 5


def _tiny_inputs(seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.integers(0, 256, (B, 84, 84, 4)) / 255.0, dtype)
    actions = jnp.asarray(rng.integers(0, A, (B, K)), jnp.int32)
    return x, actions


def _shapes(cfg, num_actions, use_spr=True):
    net = make_network(cfg, num_actions)
    tree = jax.eval_shape(lambda k: init_params(net, k, use_spr=use_spr), jax.random.PRNGKey(0))
    return {k: tuple(v.shape) for k, v in flatten_tree_shapes(tree).items()}


def flatten_tree_shapes(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_tree_shapes(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _module_counts(shapes):
    counts = {}
    for path, shape in shapes.items():
        top = path.split("/")[0]
        counts[top] = counts.get(top, 0) + int(np.prod(shape))
    return counts


def _official_bbf_shapes(a):
    """The BBF.gin tree of spec §3.11 for ``a`` actions."""
    shapes = {}
    for stage, (c_in, c) in enumerate(((4, 64), (64, 128), (128, 128))):
        for j in range(5):
            kernel = (3, 3, c_in if j == 0 else c, c)
            shapes[f"encoder/ResidualStage_{stage}/Conv_{j}/kernel"] = kernel
            shapes[f"encoder/ResidualStage_{stage}/Conv_{j}/bias"] = (c,)
    tm = "transition_model/ScanConvTMCell_0"
    shapes[f"{tm}/Conv_0/kernel"] = (3, 3, 128 + a, 128)
    shapes[f"{tm}/Conv_0/bias"] = (128,)
    shapes[f"{tm}/Conv_1/kernel"] = (3, 3, 128, 128)
    shapes[f"{tm}/Conv_1/bias"] = (128,)
    shapes["projection/net/kernel"] = (15488, 2048)
    shapes["projection/net/bias"] = (2048,)
    shapes["predictor/kernel"] = (2048, 2048)
    shapes["predictor/bias"] = (2048,)
    shapes["head/advantage/net/kernel"] = (2048, 51 * a)
    shapes["head/advantage/net/bias"] = (51 * a,)
    shapes["head/value/net/kernel"] = (2048, 51)
    shapes["head/value/net/bias"] = (51,)
    return shapes


# ----------------------------------------------------------------- parameter tree and counts
@pytest.mark.parametrize("a, total", [(4, 38_292_287), (6, 38_503_589), (18, 39_771_401)])
def test_bbf_parameter_tree_matches_the_official_one(a, total):
    shapes = _shapes(NetworkConfig(), a)
    assert shapes == _official_bbf_shapes(a)
    assert len(shapes) == 42
    assert sum(int(np.prod(s)) for s in shapes.values()) == total == 37_869_683 + 105_651 * a
    assert _module_counts(shapes) == {
        "encoder": 1_552_192,
        "transition_model": 295_168 + 1_152 * a,
        "projection": 31_721_472,
        "predictor": 4_196_352,
        "head": 104_499 + 104_499 * a,
    }


def test_without_spr_there_is_no_transition_model_or_predictor():
    shapes = _shapes(NetworkConfig(), 6, use_spr=False)
    assert set(_module_counts(shapes)) == {"encoder", "projection", "head"}
    # Q path only: 33,378,163 + 104,499 A (spec §3.11).
    assert sum(int(np.prod(s)) for s in shapes.values()) == 33_378_163 + 104_499 * 6


@pytest.mark.parametrize("a", [4, 18])
def test_spr_gin_network_counts(a):
    cfg = NetworkConfig(encoder_type="dqn", width_scale=1, hidden_dim=512, noisy=True)
    shapes = _shapes(cfg, a)
    assert _module_counts(shapes) == {
        "encoder": 77_984,
        "transition_model": 73_856 + 576 * a,
        "projection": 7_930_880,
        "predictor": 262_656,
        "head": 52_326 + 52_326 * a,
    }
    assert sum(_module_counts(shapes).values()) == 8_397_702 + 52_902 * a
    assert shapes["encoder/Conv_0/kernel"] == (8, 8, 4, 32)


def test_dqn_encoder_output_is_11_by_11_by_64():
    net = make_network(NetworkConfig(encoder_type="dqn", width_scale=1, hidden_dim=32), A)
    x = jnp.zeros((2, 84, 84, 4))
    out = jax.eval_shape(
        lambda k: net.init_with_output({"params": k}, x, method=lambda m, x: m.encoder(x))[0],
        jax.random.PRNGKey(0),
    )
    assert out.shape == (2, 11, 11, 64)


def test_param_count_of_the_tiny_network(tiny):
    _, params = tiny
    assert param_count(params) == sum(_module_counts(_shapes(TINY, A)).values())
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def _init(net, key):
    """init_params as the learner compiles it (one program, jit_once: the same bits as
    the eager call, tests/test_learner.py), which compiles in a fraction of the time that
    hundreds of eager initializer ops take."""
    return jit_once(functools.partial(init_params, net, use_spr=True))(key)


# ------------------------------------------------------------------------- heads
@pytest.fixture(scope="module")
def tiny():
    net = make_network(TINY, A)
    return net, _init(net, jax.random.PRNGKey(0))


def _hand_head(params, representation, dueling, num_atoms):
    """float64 numpy reference of projection -> ReLU -> head (spec §3.6)."""
    p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
    hidden = np.maximum(representation @ p["projection"]["net"]["kernel"]
                        + p["projection"]["net"]["bias"], 0.0)
    adv = hidden @ p["head"]["advantage"]["net"]["kernel"] + p["head"]["advantage"]["net"]["bias"]
    adv = adv.reshape(len(hidden), -1, num_atoms)
    if not dueling:
        return adv
    value = hidden @ p["head"]["value"]["net"]["kernel"] + p["head"]["value"]["net"]["bias"]
    return value[:, None, :] + adv - adv.mean(axis=1, keepdims=True)


def test_dueling_c51_head_against_a_hand_reference(tiny):
    net, params = tiny
    x, _ = _tiny_inputs()
    out = jax.jit(lambda p, x: net.apply({"params": p}, x))(params, x)
    rep = np.asarray(out.representation, np.float64)
    logits = _hand_head(params, rep, dueling=True, num_atoms=51)
    np.testing.assert_allclose(out.logits, logits, atol=1e-5)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(out.probabilities, probs, atol=1e-6)
    np.testing.assert_allclose(out.q_values, probs @ np.linspace(-10, 10, 51), atol=1e-5)
    assert out.q_values.shape == (B, A) and out.latent.shape == (B, 11, 11, 8)
    assert out.representation.shape == (B, 11 * 11 * 8)


def test_scalar_q_non_dueling_head():
    cfg = NetworkConfig(width_scale=0.25, hidden_dim=64, num_atoms=1, dueling=False)
    net = make_network(cfg, A)
    params = _init(net, jax.random.PRNGKey(2))
    assert set(params["head"]) == {"advantage"}
    assert params["head"]["advantage"]["net"]["kernel"].shape == (64, A)
    x, actions = _tiny_inputs()

    def run(p, x, a):
        return net.apply({"params": p}, x), net.apply({"params": p}, x, a, do_rollout=True)

    out, rolled = jax.jit(run)(params, x, actions)
    assert out.q_values.shape == (B, A) and out.logits.shape == (B, A, 1)
    assert out.probabilities is None
    np.testing.assert_array_equal(out.q_values, out.logits[..., 0])
    logits = _hand_head(params, np.asarray(out.representation, np.float64), False, 1)
    np.testing.assert_allclose(out.logits, logits, atol=1e-5)
    assert rolled.latent.shape == (B, K, 64)


# --------------------------------------------------------------------- noisy layers
@pytest.fixture(scope="module")
def noisy():
    net = make_network(NetworkConfig(width_scale=0.25, hidden_dim=64, noisy=True), A)
    return net, _init(net, jax.random.PRNGKey(0))


def test_noisy_parameters_and_their_initialisation(noisy):
    _, params = noisy
    for layer, n_in in ((params["projection"]["net"], 11 * 11 * 8),
                        (params["head"]["advantage"]["net"], 64),
                        (params["head"]["value"]["net"], 64)):
        assert set(layer) == {"kernel", "kernell", "bias", "biass"}
        sigma = np.float32(0.5 / np.sqrt(n_in))
        np.testing.assert_allclose(layer["kernell"], sigma, rtol=1e-7)
        np.testing.assert_allclose(layer["biass"], sigma, rtol=1e-7)
        bound = 1 / np.sqrt(n_in)
        assert np.all(np.abs(layer["bias"]) <= bound) and np.std(layer["bias"]) > bound / 4
    # The SPR predictor is never noisy.
    assert set(params["predictor"]) == {"kernel", "bias"}


def test_noisy_dense_against_the_factorised_formula():
    layer = NoisyDense(3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5)), jnp.float32)
    params = layer.init(jax.random.PRNGKey(0), x)["params"]
    params = {**params, "kernell": params["kernell"] * 3.0, "biass": params["biass"] + 0.2}
    keys = jax.random.split(jax.random.PRNGKey(9), 2)
    y = layer.apply({"params": params}, x, keys)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    f = lambda v: np.sign(v) * np.sqrt(np.abs(v))  # noqa: E731
    for b in range(2):
        # Both factors from the same per-example key (official).
        fp = f(np.asarray(jax.random.normal(keys[b], (5, 1)), np.float64))
        fq = f(np.asarray(jax.random.normal(keys[b], (1, 3)), np.float64))
        w = p["kernel"] + p["kernell"] * (fp @ fq)
        expected = np.asarray(x[b], np.float64) @ w + p["bias"] + p["biass"] * fq[0]
        np.testing.assert_allclose(y[b], expected, atol=1e-5)
    no_noise = layer.apply({"params": params}, x)
    np.testing.assert_allclose(no_noise, np.asarray(x, np.float64) @ p["kernel"] + p["bias"],
                               atol=1e-5)


def test_noise_changes_outputs_only_with_noise_keys(noisy, tiny):
    net, params = noisy
    net_plain, p_plain = tiny
    x, _ = _tiny_inputs()
    k1 = jax.random.split(jax.random.PRNGKey(3), B)
    k2 = jax.random.split(jax.random.PRNGKey(4), B)

    def run(p, pp, x, k1, k2):
        q = lambda n, p, k: n.apply({"params": p}, x, noise_keys=k).q_values  # noqa: E731
        return (q(net, p, None), q(net, p, None), q(net, p, k1), q(net, p, k1), q(net, p, k2),
                q(net_plain, pp, None), q(net_plain, pp, k1))

    q0, q0_again, q1, q1_again, q2, plain, plain_keys = jax.jit(run)(params, p_plain, x, k1, k2)
    np.testing.assert_array_equal(q0, q0_again)
    np.testing.assert_array_equal(q1, q1_again)
    assert np.all(np.abs(np.asarray(q1) - np.asarray(q0)).max(axis=1) > 1e-4)
    assert np.all(np.abs(np.asarray(q2) - np.asarray(q1)).max(axis=1) > 1e-4)
    # Without noisy layers the keys are ignored.
    np.testing.assert_array_equal(plain, plain_keys)


# ---------------------------------------------------------------------- half precision
# Unit roundoff of each compute dtype (half the distance from 1 to the next value).
UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11}


def _half_precision_bound(dtype, depth, scale):
    """Worst-case error of ``depth`` chained half-precision layers on values of size
    ``scale``: each layer rounds its inputs and output once (relative ``u`` each, with
    float32 accumulation in between), and the layers of a freshly initialised network
    (Xavier init, ReLU, renormalize) carry an error forward without amplifying it."""
    return depth * UNIT_ROUNDOFF[dtype] * scale


def _f32_head(net32, params, representation, logits=False):
    """Q-values (or logits) of projection, ReLU and head (float32 layers) on a given
    flat representation."""
    out = net32.apply({"params": params}, representation.astype(jnp.float32),
                      method=lambda m, r: m.head(nn.relu(m.projection(r))))
    return out if logits else jnp.sum(net32.support() * jax.nn.softmax(out, axis=-1), axis=-1)


def _f32_predictor(net32, params, latents):
    """Flatten, projection and predictor (float32 layers) on given transition latents."""
    flat = latents.astype(jnp.float32).reshape(latents.shape[:2] + (-1,))
    return net32.apply({"params": params}, flat,
                       method=lambda m, f: m.predictor(m.projection(f)))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_compute(dtype, tiny):
    cfg = NetworkConfig(width_scale=0.25, hidden_dim=64, compute_dtype=dtype)
    net = make_network(cfg, A)
    shapes = jax.eval_shape(lambda k: init_params(net, k, use_spr=True), jax.random.PRNGKey(0))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(shapes))
    # The same tree as the float32 network, so its parameters serve here.
    net32, params = tiny
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    x, actions = _tiny_inputs(dtype=jnp.dtype(dtype))

    def rollout(m, x, a):
        # Transition latents and SPR predictions of one trace (no rounding differences).
        latent = m.encode(x)
        return m.transition_model(latent, a)[1], m.rollout(latent, a)

    def run(net, p, x, a):
        v = {"params": p}
        return (
            net.apply(v, x, method=lambda m, x: m.encoder(x)),
            *net.apply(v, x, a, method=rollout),
            net.apply(v, x),
        )

    encoded, latents, predictions, out = jax.jit(functools.partial(run, net))(
        params, x, actions)
    # The reference sees the same (already rounded) input in float32.
    ref = jax.jit(functools.partial(run, net32))(params, x.astype(jnp.float32), actions)
    enc_ref, latents_ref, _, out_ref = ref
    # The full call's rollout is the same computation.
    rolled = jax.jit(lambda p, x, a: net.apply({"params": p}, x, a, do_rollout=True))(
        params, x, actions)
    assert encoded.dtype == jnp.dtype(dtype) and latents.dtype == jnp.dtype(dtype)
    assert out.latent.dtype == jnp.dtype(dtype) and out.representation.dtype == jnp.dtype(dtype)
    for y in (out.q_values, out.logits, out.probabilities, rolled.latent):
        assert y.dtype == jnp.float32

    def max_err(a, b):
        return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))

    # Half-precision layers: 3 stages x (1 + 2 blocks) convs in the encoder, then 2 convs
    # per transition step; renormalize maps every latent into [0, 1] (scale 1) with a
    # subtraction and a division (two more roundings).
    enc_depth = 3 * (1 + 2 * TINY.num_blocks)
    assert max_err(encoded, enc_ref) <= _half_precision_bound(
        dtype, enc_depth, float(jnp.max(jnp.abs(enc_ref))))
    assert max_err(out.representation, out_ref.representation) <= _half_precision_bound(
        dtype, enc_depth + 2, 1.0)
    assert max_err(latents, latents_ref) <= _half_precision_bound(
        dtype, enc_depth + 2 + 4 * K, 1.0)
    # Projection, predictor and head are float32: given the half-precision latents they
    # agree with the float32 layers up to one rounding of those latents (XLA may keep
    # excess precision inside a graph instead of rounding to the half dtype).
    head = functools.partial(_f32_head, net32, params)
    _assert_within_one_rounding(out.q_values, head, out.representation, dtype)
    _assert_within_one_rounding(out.logits, lambda r: head(r, logits=True),
                                out.representation, dtype)
    _assert_within_one_rounding(predictions, functools.partial(_f32_predictor, net32, params),
                                latents, dtype)
    assert max_err(rolled.latent, predictions) <= _half_precision_bound(
        dtype, enc_depth + 2 + 4 * K, float(jnp.max(jnp.abs(predictions))))


def _assert_within_one_rounding(y, fn, z, dtype):
    """``y`` equals the float32 function ``fn`` of the half-precision ``z`` (values in
    [0, 1]) up to one rounding of ``z``: first order, ``u * sum |dy/dz|`` per output,
    plus float32 rounding. ``fn`` treats examples (rows) independently."""
    z = jnp.asarray(z, jnp.float32)
    expected = fn(z)
    jac = jax.vmap(jax.jacrev(lambda zi: fn(zi[None])[0]))(z)  # per-example Jacobians
    jac = np.abs(np.asarray(jac, np.float64)).reshape(expected.size, -1)
    tol = UNIT_ROUNDOFF[dtype] * jac.sum(axis=1).reshape(expected.shape)
    tol += 1e-5 * np.abs(np.asarray(expected)) + 1e-6
    err = np.abs(np.asarray(y, np.float64) - np.asarray(expected, np.float64))
    assert np.all(err <= tol), float(np.max(err - tol))


# ------------------------------------------------------------------ per-example semantics
def test_batched_equals_per_example(tiny):
    net, params = tiny
    x, actions = _tiny_inputs(seed=3)
    # Very different scales per example: renormalize and softmax must not mix examples.
    x = x * jnp.array([1.0, 0.1, 0.5, 0.01])[:, None, None, None]

    def call(p, x, a):
        return net.apply({"params": p}, x, a, do_rollout=True)

    batched = jax.jit(call)(params, x, actions)
    single = jax.jit(jax.vmap(lambda xi, ai: call(params, xi[None], ai[None])))(x, actions)
    for field in ("q_values", "logits", "probabilities", "latent", "representation"):
        np.testing.assert_allclose(
            getattr(single, field)[:, 0], getattr(batched, field), atol=1e-6, err_msg=field
        )


# ---------------------------------------------------------------------- cross-check CLI
_ROW = re.compile(r"^(\S.*?)\s+([0-9.e+-]+|inf)\s+([0-9.e+-]+)\s+(ok|FAIL)(\s+\(.*\))?$")


def test_network_small_fixture_verifies_through_the_cli(capsys):
    status = cli.main(["verify", str(FIXTURE)])
    stdout = capsys.readouterr().out
    assert status == 0, stdout
    rows = [m.groups() for m in map(_ROW.match, stdout.splitlines()) if m]
    init_rows = [r for r in rows if r[0].startswith("init params/")]
    out_rows = [r for r in rows if not r[0].startswith("init params/")]
    assert len(init_rows) == 42 and len(out_rows) >= 20
    # Initialisation from PRNGKey(0) is compared exactly; outputs within the bounds of
    # the tolerance policy.
    assert all(float(r[2]) == 0.0 and r[3] == "ok" for r in init_rows)
    assert all(r[3] == "ok" for r in out_rows), out_rows


def _gin(tmp_path, width, hidden):
    path = tmp_path / f"net_w{width}_h{hidden}.gin"
    path.write_text(f"NetworkConfig.width_scale = {width}\nNetworkConfig.hidden_dim = {hidden}\n")
    return str(path)


def _export(tmp_path, gin, out):
    argv = ["export", "--gin_files", gin, "--num_actions", "6", "--seed", "0",
            "--inputs", str(FIXTURE), "--out", str(out)]
    return cli.main(argv)


def test_export_then_verify_round_trip_tiny(tmp_path, capsys):
    out = tmp_path / "network_tiny.npz"
    assert _export(tmp_path, _gin(tmp_path, 0.25, 64), out) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["kind"] == "network" and meta["network_config"]["hidden_dim"] == 64
    capsys.readouterr()
    assert cli.main(["verify", str(out)]) == 0
    assert "FAIL" not in capsys.readouterr().out


def test_export_width_1_reproduces_the_fixture_bitwise(tmp_path):
    out = tmp_path / "network_mine.npz"
    assert _export(tmp_path, _gin(tmp_path, 1, 256), out) == 0
    with np.load(out) as mine, np.load(FIXTURE) as official:
        param_keys = [k for k in official.files if k.startswith("params/")]
        assert sorted(k for k in mine.files if k.startswith("params/")) == sorted(param_keys)
        for k in param_keys:
            np.testing.assert_array_equal(mine[k], official[k], err_msg=k)
        for k in ("out/q_values", "out/logits", "out_rollout/latent", "encode_project"):
            np.testing.assert_allclose(mine[k], official[k], atol=1e-5, err_msg=k)


def test_broken_files_exit_2_with_one_line_each(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    # Truncated npz.
    trunc = bad / "network_trunc.npz"
    trunc.write_bytes(FIXTURE.read_bytes()[:100_000])
    shutil.copy(FIXTURE.with_suffix(".json"), trunc.with_suffix(".json"))
    # An array listed in the JSON is missing.
    missing = bad / "network_missing.npz"
    with np.load(FIXTURE) as data:
        np.savez_compressed(missing, **{k: data[k] for k in data.files if k != "out/logits"})
    shutil.copy(FIXTURE.with_suffix(".json"), missing.with_suffix(".json"))
    # Invalid JSON companion.
    badjson = bad / "network_badjson.npz"
    shutil.copy(FIXTURE, badjson)
    badjson.with_suffix(".json").write_text('{"description": "x", ')
    result = subprocess.run(
        [sys.executable, "-m", "bbf_jax.crosscheck", "verify", str(trunc), str(missing),
         str(badjson)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), lines
    assert "network_trunc.npz" in lines[0] and "npz" in lines[0]
    assert "network_missing.npz" in lines[1] and "'out/logits'" in lines[1]
    assert "network_badjson.json" in lines[2] and "JSON" in lines[2]
