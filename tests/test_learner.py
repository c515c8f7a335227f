"""The learner (spec §5.3-§5.8, §10): grouped steps, compilation, optimizer, EMA target,
importance weights, batch layout and half precision, on a tiny network."""

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bbf_jax.agents.bbf.config import AgentConfig, NetworkConfig
from bbf_jax.agents.bbf.learner import (
    FrameBatch,
    HParams,
    TrainBatch,
    importance_weights,
    make_learner,
    to_train_batch,
)
from bbf_jax.optim import make_optimizer

pytestmark = pytest.mark.usefixtures("parity")

G, B, A = 2, 4, 6
AGENT = AgentConfig(batch_size=B, batches_to_group=G)
TINY = NetworkConfig(width_scale=0.25, hidden_dim=64, num_blocks=1)


def _batches(seed, n=3, gamma=0.99, g=G, jumps=AGENT.jumps) -> TrainBatch:
    """A random group ``(G, B, ...)`` with update horizon ``n`` and discount ``gamma``."""
    rng = np.random.default_rng(seed)
    t = jumps + 1
    return TrainBatch(
        state=rng.integers(0, 256, (g, B, t, 84, 84, 4), dtype=np.uint8),
        action=rng.integers(0, A, (g, B, t)).astype(np.int32),
        returns=rng.normal(0, 2, (g, B)).astype(np.float32),
        discount=np.full((g, B), gamma**n, np.float32),
        terminal=(rng.uniform(size=(g, B)) < 0.25).astype(np.float32),
        next_state=rng.integers(0, 256, (g, B, 84, 84, 4), dtype=np.uint8),
        same_trajectory=np.ones((g, B, t), np.float32),
        loss_weight=rng.uniform(0.5, 1.0, (g, B)).astype(np.float32),
    )


def _minibatch(batches, g):
    return jax.tree.map(lambda x: x[g], batches)


def _hparams(tau=0.005, lr=1e-4, enc_lr=1e-4):
    return HParams(jnp.float32(tau), jnp.float32(lr), jnp.float32(enc_lr))


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def f32():
    learner = make_learner(AGENT, TINY, A)
    state = learner.init(0)
    return learner, state, jax.jit(learner.train_step)


def test_jitted_init_equals_the_eager_official_initialisation(f32):
    """Learner.init_params is jitted; its values are those of the eager
    networks.init_params (the function checked against the official initial weights),
    bit for bit: integer PRNG bits and per-sampler programs either way."""
    from bbf_jax.networks import init_params

    learner, _, _ = f32
    key = jax.random.PRNGKey(3)
    eager = init_params(learner.network, key, use_spr=True, jumps=AGENT.jumps)
    _assert_trees_equal(learner.init_params(key), eager)


# --------------------------------------------------------------- grouped steps, compilation
def test_train_steps_equals_g_single_steps(f32):
    learner, state, step = f32
    batches, hp = _batches(0), _hparams()
    grouped, metrics = learner.jit_train_steps(state, batches, hp)
    # The documented key use: rng, train_rng = split(rng); train_rng is carried.
    rng, train_rng = jax.random.split(state.rng)
    single = state.replace(rng=train_rng)
    singles = []
    for g in range(G):
        single, m = step(single, _minibatch(batches, g), hp)
        singles.append(m)
    single = single.replace(rng=rng)
    np.testing.assert_array_equal(grouped.rng, single.rng)
    assert int(grouped.grad_step) == int(grouped.cycle_step) == G
    for x, y in zip(jax.tree.leaves(grouped), jax.tree.leaves(single), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    for name in ("TotalLoss", "DQNLoss", "TDError", "SPRLoss", "GradNorm", "PNorm"):
        assert metrics[name].shape == (G,)
        np.testing.assert_allclose(metrics[name], [m[name] for m in singles], rtol=1e-6)
    assert metrics["dqn_loss_per_sample"].shape == (G, B)
    # Different minibatches and keys give different steps.
    assert singles[0]["TotalLoss"] != singles[1]["TotalLoss"]


def test_no_recompilation_across_steps_hparams_and_schedules(f32):
    learner, state, _ = f32
    fn = learner.jit_train_steps
    state, _ = fn(state, _batches(1, n=10, gamma=0.97), _hparams())
    size = fn._cache_size()
    for i, (n, gamma) in enumerate(((9, 0.975), (5, 0.99), (3, 0.997))):
        hp = _hparams(tau=0.005 * (i + 2), lr=1e-4 / (i + 1), enc_lr=3e-4 * (i + 1))
        state, metrics = fn(state, _batches(2 + i, n=n, gamma=gamma), hp)
        assert np.all(np.isfinite(metrics["TotalLoss"]))
    assert fn._cache_size() == size == 1
    assert int(state.grad_step) == 4 * G


def test_loss_decreases_on_a_fixed_batch(f32):
    learner, state, _ = f32
    one = _minibatch(_batches(7), 0)
    fixed = jax.tree.map(lambda x: np.stack([x] * G), one)
    hp = _hparams(lr=1e-3, enc_lr=1e-3)
    losses = []
    for _ in range(10):  # 20 gradient steps
        state, metrics = learner.jit_train_steps(state, fixed, hp)
        losses.extend(np.asarray(metrics["TotalLoss"]).tolist())
    assert len(losses) == 20 and np.all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:2]), losses


# --------------------------------------------------------------------------- EMA target
def test_ema_target_after_one_step(f32):
    learner, state, step = f32
    noise = jax.tree.map(lambda x: 0.01 * jnp.ones_like(x), state.online)
    state = state.replace(target=jax.tree.map(jnp.add, state.online, noise))
    tau = 0.25
    new, _ = step(state, _minibatch(_batches(3), 0), _hparams(tau=tau))
    for old_t, new_o, new_t in zip(jax.tree.leaves(state.target), jax.tree.leaves(new.online),
                                   jax.tree.leaves(new.target), strict=True):
        tau32 = np.float32(tau)
        expected = tau32 * np.asarray(new_o) + (np.float32(1) - tau32) * np.asarray(old_t)
        np.testing.assert_array_equal(new_t, expected)
    # tau = 1 is a hard copy of the updated online parameters.
    new, _ = step(state, _minibatch(_batches(3), 0), _hparams(tau=1.0))
    _assert_trees_equal(new.target, new.online)


def test_learning_rates_come_from_hparams(f32):
    learner, state, step = f32
    batch = _minibatch(_batches(4), 0)
    frozen, _ = step(state, batch, _hparams(lr=0.0, enc_lr=0.0))
    _assert_trees_equal(frozen.online, state.online)
    head_only, _ = step(state, batch, _hparams(lr=1e-3, enc_lr=0.0))
    for k in ("encoder", "transition_model"):
        _assert_trees_equal(head_only.online[k], state.online[k])
    for k in ("projection", "predictor", "head"):
        leaves = zip(jax.tree.leaves(head_only.online[k]), jax.tree.leaves(state.online[k]),
                     strict=True)
        assert all(not np.array_equal(a, b) for a, b in leaves), k


# ---------------------------------------------------------------------------- optimizer
def _adam_reference(theta, grads, lr, wd, eps, count, m=None, v=None):
    """One float64 AdamW step: u = m^/(sqrt(v^) + eps) + wd theta (wd on ndim != 1)."""
    m = np.zeros_like(theta) if m is None else m
    v = np.zeros_like(theta) if v is None else v
    m = 0.9 * m + 0.1 * grads
    v = 0.999 * v + 0.001 * grads**2
    m_hat, v_hat = m / (1 - 0.9**count), v / (1 - 0.999**count)
    u = m_hat / (np.sqrt(v_hat) + eps) + (wd * theta if theta.ndim != 1 else 0.0)
    return theta - lr * u, m, v


def test_adamw_two_groups_against_a_hand_computed_step():
    rng = np.random.default_rng(0)
    shapes = {
        "encoder": {"Conv_0": {"kernel": (3, 3, 2, 2), "bias": (2,)}},
        "transition_model": {"kernel": (3, 2)},
        "projection": {"net": {"kernel": (4, 3), "bias": (3,), "kernell": (4, 3)}},
        "head": {"bias": (5,)},
    }
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                          is_leaf=lambda s: isinstance(s, tuple))
    # Gradients of the order of eps, so that where eps enters the update matters.
    grads1, grads2 = (
        jax.tree.map(lambda p: jnp.asarray(3e-4 * rng.normal(size=p.shape), jnp.float32), params)
        for _ in range(2)
    )
    agent = AgentConfig()
    lr, enc_lr = 1e-2, 3e-2  # different, to see which group a leaf belongs to
    opt = make_optimizer(agent, lr, enc_lr)
    state = opt.init(params)
    upd, state = opt.update(grads1, state, params)
    p1 = optax.apply_updates(params, upd)
    # Separate step counts: restart the encoder group only, then step again.
    state = (opt.init(p1)[0], state[1])
    upd, state = opt.update(grads2, state, p1)
    p2 = optax.apply_updates(p1, upd)
    enc_state, head_state = state[0].inner_state[0], state[1].inner_state[0]
    assert int(enc_state.count) == 1 and int(head_state.count) == 2

    for path, _ in jax.tree_util.tree_leaves_with_path(params):
        top = path[0].key
        is_enc = top in ("encoder", "transition_model")
        get = lambda t: np.asarray(_at(t, path), np.float64)  # noqa: E731, B023
        rate = enc_lr if is_enc else lr
        ref1, m, v = _adam_reference(get(params), get(grads1), rate, 0.1, 1.5e-4, 1)
        # Compare the updates themselves (about 1e-3), not the parameters (about 1).
        np.testing.assert_allclose(_at(p1, path) - get(params), ref1 - get(params),
                                   rtol=1e-4, atol=3e-7)
        if is_enc:
            ref2, _, _ = _adam_reference(ref1, get(grads2), rate, 0.1, 1.5e-4, 1)
        else:
            ref2, _, _ = _adam_reference(ref1, get(grads2), rate, 0.1, 1.5e-4, 2, m, v)
        np.testing.assert_allclose(_at(p2, path) - _at(p1, path), ref2 - ref1,
                                   rtol=1e-4, atol=3e-7)
        # Each group holds moments only for its own leaves.
        own, other = (enc_state, head_state) if is_enc else (head_state, enc_state)
        assert isinstance(_at(own.mu, path), jax.Array)
        assert isinstance(other.mu[top], optax.MaskedNode)


def _at(tree, path):
    for p in path:
        tree = tree[p.key]
    return tree


# -------------------------------------------------------------------- weights and layout
def test_importance_weights_hand_values():
    w = importance_weights(np.array([1.0, 4.0, 0.25, 16.0]))
    # 1/sqrt(p) = 1, 0.5, 2, 0.25; divided by the max 2.
    np.testing.assert_allclose(w, [0.5, 0.25, 1.0, 0.125], rtol=1e-6)
    assert w.dtype == np.float32
    # A zero priority gets the 1e-10 floor, not a division by zero.
    w = importance_weights(np.array([0.0, 1.0]))
    np.testing.assert_allclose(w, [1.0, 1e-5], rtol=1e-4)


Sample = collections.namedtuple(
    "Sample",
    "frames stack_mask action returns discount terminal same_trajectory sampling_priority",
)


def test_to_train_batch_layout_and_group_normalisation():
    n, t, s = G * B, 3, 2
    rows = np.arange(n)
    sample = Sample(
        frames=np.broadcast_to(rows[:, None, None, None], (n, t + 2 * s - 1, 2, 2)).astype(
            np.uint8),
        stack_mask=np.ones((n, t + 1, s), bool),
        action=np.broadcast_to(rows[:, None], (n, t)).astype(np.int64),
        returns=rows.astype(np.float64),
        discount=np.full(n, 0.9),
        terminal=(rows % 2).astype(bool),
        same_trajectory=np.ones((n, t), np.uint8),
        # All of minibatch 0 has high priority: its weights are < 1 after group normalisation.
        sampling_priority=np.array([4.0] * B + [1.0] * B, np.float32),
    )
    batch = to_train_batch(sample, G, B)
    assert isinstance(batch, FrameBatch)
    assert batch.frames.shape == (G, B, t + 2 * s - 1, 2, 2)
    assert batch.stack_mask.shape == (G, B, t + 1, s)
    assert batch.state.shape == (G, B, t, 2, 2, s) and batch.next_state.shape == (G, B, 2, 2, s)
    for g in range(G):
        np.testing.assert_array_equal(batch.returns[g], rows[g * B:(g + 1) * B])
        np.testing.assert_array_equal(batch.state[g, :, 0, 0, 0, 0], rows[g * B:(g + 1) * B])
        np.testing.assert_array_equal(batch.action[g, :, 0], rows[g * B:(g + 1) * B])
    assert batch.action.dtype == np.int32 and batch.returns.dtype == np.float32
    assert batch.terminal.dtype == np.float32 and batch.same_trajectory.dtype == np.float32
    np.testing.assert_allclose(batch.loss_weight[0], 0.5, rtol=1e-6)
    np.testing.assert_allclose(batch.loss_weight[1], 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="expected G\\*B"):
        to_train_batch(sample, G, B + 1)


def test_frame_batch_stacks_on_the_device_and_trains_like_stacked_states(f32):
    """The replay's lean batch (frames once, censoring as a mask) gives the stacks of the
    host reference and, stacked inside the jitted step, the same update bit for bit."""
    from bbf_jax.replay import sampling

    learner, state, step = f32
    rng = np.random.default_rng(11)
    t, s = AGENT.jumps + 1, 4
    frames = rng.integers(0, 256, (B, t + 2 * s - 1, 84, 84), dtype=np.uint8)
    mask = np.ones((B, t + 1, s), bool)
    mask[0, :2, :3] = False  # a life lost before the start: its frames are censored
    mask[1, t, :1] = False  # a bootstrap state reaching into an earlier episode
    stacked = _minibatch(_batches(5), 0)
    lean = FrameBatch(frames, mask, *(getattr(stacked, k) for k in FrameBatch._fields[2:]))
    states, next_states = sampling.stack_frames(frames, mask)
    for k, j, i in np.ndindex(B, t, s):
        want = frames[k, j + i] if mask[k, j, i] else 0
        np.testing.assert_array_equal(states[k, j, ..., i], want)
    for k, i in np.ndindex(B, s):
        want = frames[k, t + s - 1 + i] if mask[k, t, i] else 0
        np.testing.assert_array_equal(next_states[k, ..., i], want)
    on_device = jax.jit(lambda b: (b.state, b.next_state))(lean)
    np.testing.assert_array_equal(on_device[0], states)
    np.testing.assert_array_equal(on_device[1], next_states)
    want_state, want_metrics = step(
        state, stacked._replace(state=states, next_state=next_states), _hparams())
    got_state, got_metrics = step(state, lean, _hparams())
    _assert_trees_equal(got_state, want_state)
    _assert_trees_equal(got_metrics, want_metrics)


# ------------------------------------------------------------------------ non-finite steps
def test_non_finite_step_is_reported_and_skipped_on_request(f32):
    """A NaN return makes the TD target, the losses and the gradients NaN: the step
    reports it in NonFinite; with skip_nonfinite it leaves params and optimizer state as
    they were (the target still takes its EMA step towards the unchanged online net)."""
    learner, state, step = f32
    batch = _minibatch(_batches(7), 0)
    good_state, metrics = step(state, batch, _hparams())
    assert int(metrics["NonFinite"]) == 0
    bad = batch._replace(returns=batch.returns.copy())
    bad.returns[1] = np.nan
    new, metrics = step(state, bad, _hparams())  # on_nonfinite = 'stop': the step is taken
    checked = ("TotalLoss", "DQNLoss", "TDError", "SPRLoss", "GradNorm")
    # SPR does not see the return: its loss stays finite.
    assert int(metrics["NonFinite"]) == sum(1 << i for i, k in enumerate(checked)
                                           if k != "SPRLoss")
    assert np.isfinite(float(metrics["SPRLoss"])) and np.isnan(float(metrics["TotalLoss"]))
    assert not np.all(np.isfinite(new.online["head"]["value"]["net"]["bias"]))
    skipping = make_learner(AGENT, TINY, A, skip_nonfinite=True)
    skip_step = jax.jit(skipping.train_step)
    new, metrics = skip_step(state, bad, _hparams())
    assert int(metrics["NonFinite"]) != 0
    _assert_trees_equal(new.online, state.online)
    _assert_trees_equal(new.opt_state, state.opt_state)
    assert int(new.grad_step) == 1
    # A finite step is the same with and without skip_nonfinite.
    same, metrics = skip_step(state, batch, _hparams())
    assert int(metrics["NonFinite"]) == 0
    _assert_trees_equal(same.online, good_state.online)


# ------------------------------------------------------------------------ half precision
# Half-precision steps compile slowly on CPU: a shorter SPR horizon and no augmentation
# keep the same code path at a smaller graph.
HALF_AGENT = AgentConfig(batch_size=B, batches_to_group=G, jumps=1, data_augmentation=False)

def test_float16_non_finite_step_is_skipped_and_halves_the_scale(f32):
    learner32, state32, _ = f32
    learner = make_learner(HALF_AGENT, dataclasses.replace(TINY, compute_dtype="float16"), A)
    state = learner.state_from_params(state32.online, state32.rng, state32.act_rng)
    assert state.loss_scale is not None and float(state.loss_scale.scale) == 65536.0
    step = jax.jit(learner.train_step)
    batch = _minibatch(_batches(5, jumps=1), 0)
    # A scale this large makes the scaled loss (> 2) overflow float32: grads are not finite.
    huge = np.float32(np.finfo(np.float32).max)
    bad = state.replace(loss_scale=state.loss_scale.replace(scale=jnp.float32(huge)))
    new, metrics = step(bad, batch, _hparams())
    _assert_trees_equal(new.online, bad.online)
    _assert_trees_equal(new.opt_state, bad.opt_state)
    assert float(metrics["LossScale"]) == float(huge) / 2
    assert int(metrics["NonFinite"]) == 0  # the loss scale's business: losses are finite
    assert float(new.loss_scale.scale) == float(huge) / 2
    assert int(new.grad_step) == 1
    # With finite gradients (scale 1 here; the default 65,536 overflows the float16
    # backward of this batch and backs off) the step is taken.
    small = state.replace(loss_scale=state.loss_scale.replace(scale=jnp.float32(1.0)))
    good, metrics = step(small, batch, _hparams())
    assert np.isfinite(float(metrics["TotalLoss"]))
    assert float(good.loss_scale.scale) == 1.0 and int(good.loss_scale.fin_steps) == 1
    assert not np.array_equal(good.online["head"]["value"]["net"]["bias"],
                              small.online["head"]["value"]["net"]["bias"])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(good.online))


def test_bfloat16_step_matches_float32(f32):
    """One bfloat16 step against the float32 step from the same state and batch.

    Bounds follow from bfloat16's unit roundoff u = 2^-8 and the half-precision depth
    of the graph (the network test's worst-case model): the encoder's 3 * (1 + 2 * 2)
    convs, renormalize's two roundings and the 4 roundings of the SPR step, each adding
    at most u relative; the losses are float32 functions of those latents; gradients
    cross the half-precision layers twice (forward and backward).
    """
    _, state32, _ = f32
    learner32 = make_learner(HALF_AGENT, TINY, A)
    learner = make_learner(HALF_AGENT, dataclasses.replace(TINY, compute_dtype="bfloat16"), A)
    state = learner.state_from_params(state32.online, state32.rng, state32.act_rng)
    assert state.loss_scale is None
    batch, hp = _minibatch(_batches(6, jumps=1), 0), _hparams()
    new, metrics = jax.jit(learner.train_step)(state, batch, hp)
    ref, ref_metrics = jax.jit(learner32.train_step)(state, batch, hp)
    for tree in (new.online, new.target, new.opt_state):
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(tree)
                   if jnp.issubdtype(x.dtype, jnp.floating))
    depth = 3 * (1 + 2 * TINY.num_blocks) + 2 + 4 * HALF_AGENT.jumps
    bound = depth * 2.0**-8
    for name in ("TotalLoss", "DQNLoss", "SPRLoss"):
        np.testing.assert_allclose(metrics[name], ref_metrics[name], rtol=bound, err_msg=name)
    np.testing.assert_allclose(metrics["dqn_loss_per_sample"], ref_metrics["dqn_loss_per_sample"],
                               rtol=bound)
    np.testing.assert_allclose(metrics["GradNorm"], ref_metrics["GradNorm"], rtol=2 * bound)

    def update(s):
        return np.concatenate([np.ravel(np.asarray(x) - np.asarray(y)) for x, y in
                               zip(jax.tree.leaves(s.online), jax.tree.leaves(state.online),
                                   strict=True)])

    # The same AdamW step up to the gradient error: same size, same direction.
    u, u32 = update(new), update(ref)
    assert np.linalg.norm(u) == pytest.approx(np.linalg.norm(u32), rel=2 * bound)
    assert u @ u32 / (np.linalg.norm(u) * np.linalg.norm(u32)) >= 1 - 2 * bound
    # The target's EMA step is the same function of the new online parameters.
    tau = float(hp.target_update_tau)
    for t, o, t0 in zip(jax.tree.leaves(new.target), jax.tree.leaves(new.online),
                        jax.tree.leaves(state.target), strict=True):
        np.testing.assert_allclose(t, (1 - tau) * np.asarray(t0) + tau * np.asarray(o),
                                   rtol=1e-6, atol=1e-7)
