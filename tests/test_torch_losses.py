"""The PyTorch reference losses, AdamW step and target update (spec §5.5-§5.8)."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from bbf_jax.agents.bbf.config import NetworkConfig
from bbf_jax.crosscheck import torch_losses as tl
from bbf_jax.crosscheck import torch_reference as tr
from bbf_jax.crosscheck.fixture_io import compare, flatten_tree, load_fixture, unflatten_tree

pytestmark = pytest.mark.usefixtures("parity")
tr.set_parity_numerics()

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _t(x):
    return torch.tensor(np.asarray(x, dtype=np.float32))


# --- C51 projection and target ------------------------------------------------------


def test_c51_projection_fixture():
    from bbf_jax.crosscheck.kinds.c51_projection import tolerances

    fx = load_fixture(FIXTURES / "c51_projection.npz")
    tols = tolerances(fx)
    z = torch.from_numpy(fx.get("input/target_support"))
    weights = torch.from_numpy(fx.get("input/weights"))
    projected = tl.project_distribution(torch.from_numpy(fx.get("supports")), weights, z)
    assert compare("projected", projected.numpy(), fx.get("projected"), tols["projected"]).ok
    target = tl.categorical_target(
        torch.from_numpy(fx.get("input/rewards")),
        torch.from_numpy(fx.get("input/cumulative_gamma")),
        torch.from_numpy(fx.get("input/terminals")),
        weights,
        z,
    )
    # R + g z is one fused multiply-add in XLA, two roundings here: the supports' bound
    # moves each coefficient by at most |d supports| / dz, on a row of mass sum_j w_j.
    dz = float(z[1] - z[0])
    mass = np.sum(np.abs(fx.get("input/weights")), axis=-1, keepdims=True)
    end_to_end = tols["projected"].atol + tols["supports"].atol / dz * mass
    assert compare("target", target.numpy(), fx.get("projected"), end_to_end).ok


def test_projection_hand_worked():
    z = _t([-1.0, 0.0, 1.0])
    # 0.25 -> 3/4 on atom 0, 1/4 on atom 1; -5 clips to -1; 1 stays on atom 1.
    out = tl.project_distribution(_t([[0.25, -5.0, 1.0]]), _t([[0.4, 0.5, 0.1]]), z)
    torch.testing.assert_close(out, _t([[0.5, 0.3, 0.2]]), rtol=0, atol=1e-7)
    # Terminal: all mass lands on the atoms around clip(R) = 0.5.
    target = tl.categorical_target(
        _t([0.5]), _t([0.9]), torch.tensor([True]), _t([[0.2, 0.3, 0.5]]), z
    )
    torch.testing.assert_close(target, _t([[0.0, 0.5, 0.5]]), rtol=0, atol=1e-7)


def test_double_dqn_selection():
    q = _t([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    probs = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    # Ties pick the first maximal action, as jnp.argmax.
    torch.testing.assert_close(tl.select_next_probabilities(q, probs), _t([[2, 3], [6, 7]]))


# --- losses -------------------------------------------------------------------------


def test_cross_entropy_hand_worked():
    logits = _t([[0.0, np.log(3.0)]])  # softmax = (1/4, 3/4)
    ce = tl.softmax_cross_entropy(_t([[0.5, 0.5]]), logits)
    torch.testing.assert_close(ce, _t([-(0.5 * np.log(0.25) + 0.5 * np.log(0.75))]))


def test_spr_loss_hand_worked():
    p = _t([[[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]])  # (B=1, K=3, D=2)
    z = _t([[[6.0, 8.0], [0.0, 5.0], [0.0, -1.0]]])
    # Per step: identical direction -> 0, orthogonal -> 2, opposite -> 4.
    full = tl.spr_loss(p, z, _t([[1, 1, 1]]))
    torch.testing.assert_close(full, _t([6.0 / 3]))
    # Masked steps count in the divisor K.
    torch.testing.assert_close(tl.spr_loss(p, z, _t([[1, 1, 0]])), _t([2.0 / 3]))


def test_weighted_total_loss():
    loss = tl.weighted_total_loss(_t([1.0, 2.0]), _t([0.5, 0.25]), _t([1.0, 0.5]), 5.0)
    torch.testing.assert_close(loss, torch.tensor(((1 + 2.5) * 1 + (2 + 1.25) * 0.5) / 2))


@pytest.fixture(scope="module")
def small():
    fx = load_fixture(FIXTURES / "network_small.npz")
    config = NetworkConfig(width_scale=1, hidden_dim=256)
    return fx, config, unflatten_tree(fx.subtree("params"))


def test_bbf_loss_assembles_the_official_terms(small):
    fx, config, params = small
    online = tr.network_from_params(params, config, 6)
    target = tr.network_from_params(params, config, 6)
    for p in target.parameters():  # a target that differs from the online network
        p.data.mul_(0.9)
    obs = torch.from_numpy(fx.get("input/obs_float"))
    actions = torch.from_numpy(fx.get("input/actions"))  # (4, 5): K = 4
    states = torch.stack([obs.roll(k, dims=0) for k in range(5)], dim=1)
    batch = tl.LossBatch(
        states=states,
        actions=actions,
        next_states=obs.flip(0),
        rewards=_t([0.0, 1.0, -2.0, 0.5]),
        discounts=_t([0.99, 0.97, 0.9, 0.997]),
        terminals=torch.tensor([False, True, False, False]),
        same_trajectory=_t([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]),
        weights=_t([1.0, 0.5, 0.25, 2.0]),
    )
    support = torch.from_numpy(fx.get("input/support"))
    loss, aux = tl.bbf_loss(online, target, batch, spr_weight=5.0, support=support)
    with torch.no_grad():
        a_star = online(batch.next_states, support=support).q_values.argmax(-1)
        p_next = target(batch.next_states, support=support).probabilities[torch.arange(4), a_star]
        c51 = tl.categorical_target(
            batch.rewards, batch.discounts, batch.terminals, p_next, support
        )
        logits = online(states[:, 0], support=support).logits[torch.arange(4), actions[:, 0]]
        ce = tl.softmax_cross_entropy(c51, logits)
        preds = online(states[:, 0], actions[:, :4], do_rollout=True).latent
        z = torch.stack([target.encode_project(states[:, k]) for k in range(1, 5)], dim=1)
        spr = tl.spr_loss(preds, z, batch.same_trajectory)
    torch.testing.assert_close(aux["ce"], ce, rtol=0, atol=1e-6)
    torch.testing.assert_close(aux["spr"], spr, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, (batch.weights * (ce + 5 * spr)).mean(), rtol=0, atol=1e-6)
    assert (aux["spr"] > 0).all() and (aux["ce"] > 0).all()
    # Only the online network gets gradients (targets are computed without them).
    loss.backward()
    assert all(p.grad is not None for p in online.parameters())
    assert all(p.grad is None for p in target.parameters())
    # spr_weight = 0: no rollout, no SPR term.
    loss0, aux0 = tl.bbf_loss(online, target, batch, spr_weight=0.0, support=support)
    assert aux0["spr_targets"] is None and not aux0["spr"].any()
    torch.testing.assert_close(loss0, (batch.weights * ce).mean(), rtol=0, atol=1e-6)


# --- optimizer and target update ------------------------------------------------------


def _official_optax_chain(lr_enc, lr_head):
    """BBF's create_scaling_optimizer('adam') pair, built from optax itself (spec §5.7)."""

    def adamw(lr):
        return optax.adamw(
            lr, b1=0.9, b2=0.999, eps=1.5e-4, eps_root=0.0, weight_decay=0.1,
            mask=lambda p: jax.tree.map(lambda x: x.ndim != 1, p),
        )  # fmt: skip

    groups = ("encoder", "transition_model")
    return optax.chain(
        optax.masked(adamw(lr_enc), lambda p: {k: k in groups for k in p}),
        optax.masked(adamw(lr_head), lambda p: {k: k not in groups for k in p}),
    )


def test_adamw_matches_optax_over_several_steps(small):
    _, config, params = small
    net = tr.network_from_params(params, config, 6)
    settings = tl.AdamWSettings(learning_rate=1e-4, encoder_learning_rate=3e-4)
    opt_t = tl.OfficialAdamW(net, settings)
    opt_j = _official_optax_chain(3e-4, 1e-4)
    jparams = jax.tree.map(jnp.asarray, params)
    state = opt_j.init(jparams)

    @jax.jit
    def update(grads, state, p):
        updates, state = opt_j.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    rng = np.random.default_rng(0)
    for _ in range(3):
        grads = jax.tree.map(
            lambda x: (1e-2 * rng.standard_normal(x.shape)).astype(np.float32), params
        )
        jparams, state = update(grads, state, jparams)
        grads_sd = tr.params_to_state_dict(grads, config)
        for name, p in net.named_parameters():
            p.grad = grads_sd[name]
        opt_t.step()
    got = flatten_tree(tr.state_dict_to_params(net.state_dict(), config))
    want = flatten_tree(jax.tree.map(np.asarray, jparams))
    start = flatten_tree(params)
    moved = max(np.abs(want[k] - start[k]).max() for k in want)
    assert moved > 1e-4  # three steps of lr 1e-4 / 3e-4
    err = max(np.abs(got[k] - want[k]).max() for k in want)
    # torch.optim.AdamW (decay before the step, float64 bias corrections) is 4.5e-8 off.
    assert err <= 2e-8, err
    assert opt_t.count == {"encoder": 3, "head": 3}


def test_adamw_weight_decay_mask_and_groups():
    config = NetworkConfig(encoder_type="dqn", width_scale=0.25, hidden_dim=4, noisy=True)
    net = tr.BBFTorchNetwork(config, num_actions=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    tl.OfficialAdamW(net, tl.AdamWSettings(learning_rate=1e-2, encoder_learning_rate=1e-3)).step()
    for name, p in net.named_parameters():
        path = tr.flax_path(name, config)
        if p.dim() == 1:  # biases (and noisy biass): no decay, zero gradient -> unchanged
            assert torch.equal(p, before[name]), name
        else:  # kernels, noisy kernell included: theta <- theta - lr * wd * theta
            lr = 1e-3 if path.split("/")[0] in ("encoder", "transition_model") else 1e-2
            torch.testing.assert_close(p, before[name] * (1 - lr * 0.1), rtol=1e-6, atol=0)


def test_adamw_needs_gradients():
    net = tr.BBFTorchNetwork(NetworkConfig(width_scale=0.25, hidden_dim=4), num_actions=2)
    with pytest.raises(ValueError, match="has no gradient"):
        tl.OfficialAdamW(net).step()


def test_ema_update_matches_official_formula():
    config = NetworkConfig(width_scale=0.25, num_blocks=1, hidden_dim=8)
    torch.manual_seed(0)
    online, target = tr.BBFTorchNetwork(config, 3), tr.BBFTorchNetwork(config, 3)
    old = {k: v.numpy().copy() for k, v in target.state_dict().items()}
    new = {k: v.numpy().copy() for k, v in online.state_dict().items()}
    tl.ema_update(target, online, 0.005)
    tau = jnp.float32(0.005)
    for k, v in target.state_dict().items():
        want = np.asarray(jax.jit(lambda o, n: o * (1 - tau) + n * tau)(old[k], new[k]))
        # XLA fuses a product into the sum (one rounding less): the results differ by
        # at most a rounding of the inputs' magnitude.
        scale = np.spacing(np.maximum(np.abs(old[k]), np.abs(new[k])))
        assert (np.abs(v.numpy() - want) <= scale).all(), k
    tl.ema_update(target, online, 1.0)  # tau = 1 is a hard copy
    assert all(torch.equal(target.state_dict()[k], v) for k, v in online.state_dict().items())
