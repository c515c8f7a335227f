"""BTR's loss math: IQN quantile Huber loss, Munchausen target, PER terms.

Hand-worked cases first (the arithmetic is in the comments), then jit-vs-eager and the
comparison with the PyTorch reference written the way the authors' code computes it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bbf_jax import munchausen, quantile
from bbf_jax.crosscheck import torch_btr_losses as tb
from bbf_jax.replay.priorities import per_importance_weights, per_leaf_priorities

pytestmark = pytest.mark.usefixtures("parity")

EPS = float(np.finfo(np.float32).eps)  # 2**-23, float32 spacing at 1
LN2 = math.log(2.0)


def _f32(x):
    return jnp.asarray(np.asarray(x, np.float32))


# --- quantile fractions -------------------------------------------------------------


def test_sample_taus_shape_range_and_determinism():
    key = jax.random.PRNGKey(3)
    taus = quantile.sample_taus(key, 64, 8)
    assert taus.shape == (64, 8) and taus.dtype == jnp.float32
    assert float(taus.min()) >= 0.0 and float(taus.max()) < 1.0
    # Same key, same fractions; a jitted call draws the same bits.
    jitted = jax.jit(quantile.sample_taus, static_argnums=(1, 2))(key, 64, 8)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(taus))
    # Every sample gets its own fractions (the authors' torch.rand(batch, n_tau)).
    assert len(np.unique(np.asarray(taus))) == taus.size


# --- quantile Huber loss (IQN eq. 3), hand-worked ------------------------------------
#
# rho_ij = |tau_i - 1{d_ij < 0}| * L(d_ij) / kappa, d_ij = target_j - predicted_i,
# L(d) = d^2/2 if |d| <= kappa else kappa (|d| - kappa/2); loss = mean_j sum_i rho_ij.
# All values below are dyadic, so every step is exact in float32.


def test_quantile_huber_loss_hand_worked():
    predicted = _f32([[0.0, 1.0], [-2.0, 0.5]])
    taus = _f32([[0.25, 0.75], [0.5, 0.125]])
    target = _f32([[0.5, -2.0], [1.5, 0.5]])
    # Sample 0:
    #   i=0 (Z=0, tau=1/4): j=0 d=+0.5 small: 0.125 * |1/4 - 0| = 0.03125
    #                       j=1 d=-2   large: 1.5   * |1/4 - 1| = 1.125
    #   i=1 (Z=1, tau=3/4): j=0 d=-0.5 small: 0.125 * |3/4 - 1| = 0.03125
    #                       j=1 d=-3   large: 2.5   * |3/4 - 1| = 0.625
    #   sum_i: j=0 0.0625, j=1 1.75; mean_j = 0.90625
    # Sample 1:
    #   i=0 (Z=-2, tau=1/2): j=0 d=3.5 large: 3.0 * 1/2 = 1.5; j=1 d=2.5: 2.0 * 1/2 = 1.0
    #   i=1 (Z=0.5, tau=1/8): j=0 d=1 (= kappa, both branches 0.5): 0.5 * 1/8 = 0.0625
    #                         j=1 d=0 (not < 0): 0 * 1/8 = 0
    #   sum_i: j=0 1.5625, j=1 1.0; mean_j = 1.28125
    loss = quantile.quantile_huber_loss(predicted, target, taus)
    assert loss.shape == (2,) and loss.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(loss), np.float32([0.90625, 1.28125]))
    # Priority signal mean_j sum_i |d_ij|: sample 0 (0.5+0.5, 2+3) -> 3.0;
    # sample 1 (3.5+1, 2.5+0) -> 3.5.
    np.testing.assert_array_equal(
        np.asarray(quantile.priority_signal(predicted, target)), np.float32([3.0, 3.5]))


def test_quantile_huber_loss_sums_predicted_and_averages_target():
    # Every d = +0.5 and tau = 1/2: rho = 0.125 * 0.5 = 0.0625 for each of the 2 x 4
    # pairs. Sum over the 2 predicted, mean over the 4 targets: 0.125 (the transposed
    # reduction would give 0.25).
    loss = quantile.quantile_huber_loss(_f32([[0.0, 0.0]]), _f32([[0.5] * 4]),
                                        _f32([[0.5, 0.5]]))
    np.testing.assert_array_equal(np.asarray(loss), np.float32([0.125]))


def test_quantile_huber_loss_kappa_divides():
    # kappa = 2, tau = 1/2: d = 3 (large): 2 (3 - 1) / 2 = 2 -> 1.0;
    # d = 1 (small): 0.5 / 2 = 0.25 -> 0.125; mean over the 2 targets: 0.5625.
    loss = quantile.quantile_huber_loss(_f32([[0.0]]), _f32([[3.0, 1.0]]), _f32([[0.5]]),
                                        kappa=2.0)
    np.testing.assert_array_equal(np.asarray(loss), np.float32([0.5625]))


def test_quantile_huber_loss_gradient_flows_to_predictions_only():
    predicted = _f32([[0.0, 1.0]])
    target = _f32([[0.5, -2.0]])
    taus = _f32([[0.25, 0.75]])
    g_pred, g_target = jax.grad(
        lambda p, t: quantile.quantile_huber_loss(p, t, taus).sum(), argnums=(0, 1)
    )(predicted, target)
    # d rho / d Z_i = -|tau_i - 1{d<0}| L'(d) / kappa, averaged over the 2 targets:
    # i=0: -(1/4 * 0.5 + 3/4 * (-1)) / 2 = 0.3125; i=1: -(1/4 * (-0.5) + 1/4 * (-1)) / 2
    # = 0.1875. The target is a constant (stop_gradient).
    np.testing.assert_array_equal(np.asarray(g_pred), np.float32([[0.3125, 0.1875]]))
    np.testing.assert_array_equal(np.asarray(g_target), np.zeros((1, 2), np.float32))


# --- PER terms -----------------------------------------------------------------------


def test_importance_weights_by_hand():
    # Leaves 1, 2, 4, 8 of a tree of total 16 holding N = 4 transitions:
    # N P = 4 * (1, 2, 4, 8) / 16 = (1/4, 1/2, 1, 2). Exponent 1: (4, 2, 1, 1/2), divided
    # by the max: (1, 1/2, 1/4, 1/8), exact.
    p = np.float32([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_array_equal(per_importance_weights(p, 1.0),
                                  np.float32([1.0, 0.5, 0.25, 0.125]))
    # beta = 0.5 ('paper' default 0.45 aside) and alpha = 0.25 ('code'): (p_i / p_min)^-e,
    # i.e. 2^(-k e) for p_i = 2^k; pow within a few ulps: 8 ulps of values <= 1.
    for e in (0.5, 0.25):
        w = per_importance_weights(p, e)
        assert w.dtype == np.float32 and w.max() == 1.0
        np.testing.assert_allclose(w, 2.0 ** (-np.arange(4) * e), rtol=0, atol=8 * EPS)


def test_leaf_priorities():
    # (signal + 1e-6) ** alpha; pow within a few ulps: 8 ulps of the result.
    leaves = per_leaf_priorities(np.float32([0.0, 3.0, 1.0]), 0.2)
    expected = (np.float64([0.0, 3.0, 1.0]) + 1e-6) ** 0.2
    np.testing.assert_allclose(leaves, expected, rtol=8 * EPS, atol=0)
    assert leaves.dtype == np.float32


# --- Munchausen target, hand-worked ------------------------------------------------


def test_scaled_log_policy_low_temperature_is_finite():
    # tau = 0.03 and gaps of 10-100: exp((q - max)/tau) underflows to exactly 0 for the
    # others, logsumexp = log(1) = 0, so tau log pi = q - max exactly: 0 for the greedy
    # action, -gap for the others (log pi = -gap / tau, about -333 and -3333).
    q = _f32([[0.0, -10.0, -100.0], [100.0, 90.0, 0.0], [1000.0, 900.0, 950.0]])
    out = np.asarray(munchausen.scaled_log_policy(q, 0.03))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, np.float32([[0, -10, -100], [0, -10, -100],
                                                   [0, -100, -50]]))
    pi = np.asarray(munchausen.softmax_policy(q, 0.03))
    np.testing.assert_array_equal(pi, np.float32([[1, 0, 0]] * 3))
    # A gap of 0.5 at Q ~ 1000: exp(-0.5/0.03) = 5.8e-8 survives. tau log pi =
    # -0.03 log(1 + e^-16.7) and -0.5 - the same; float64 reference; the subtraction
    # q - max is exact, the rest are a few roundings of values <= 0.5.
    q = _f32([[1000.0, 999.5]])
    out = np.asarray(munchausen.scaled_log_policy(q, 0.03))
    lse = math.log1p(math.exp(-0.5 / 0.03))
    np.testing.assert_allclose(out, [[-0.03 * lse, -0.5 - 0.03 * lse]], rtol=0, atol=4 * EPS)


def test_munchausen_target_hand_worked():
    # 2 actions, tau = 1/2, alpha = 0.9, l0 = -1, gamma^n (1 - d) = 1/2, R = 1, a_t = 1.
    # L = tau ln 3 makes softmax((L, 0) / tau) = softmax((ln 3, 0)) = (3/4, 1/4).
    big_l = 0.5 * math.log(3.0)
    # Next state, 2 target quantiles per action: Z(., a0) = (L - 1, L + 1),
    # Z(., a1) = (-2, 2): q = (L, 0), pi = (3/4, 1/4).
    next_q = _f32([[[big_l - 1.0, -2.0], [big_l + 1.0, 2.0]]])  # (B, N', A)
    # Soft value sum_a pi (q - tau log pi) = tau logsumexp(q / tau) = 0.5 ln 4 = ln 2, so
    # soft_j = ln 2 + sum_a pi_a (Z_j(a) - q_a) = ln 2 + (3/4 (-1) + 1/4 (-2)) = ln 2 - 1.25
    # for j = 0 and ln 2 + 1.25 for j = 1.
    # Current state, 1 quantile: q = (0, -L), pi = (3/4, 1/4): tau log pi(a1) =
    # 0.5 ln(1/4) = -ln 2 > l0, unclipped: bonus = -0.9 ln 2.
    bonus_q = _f32([[[0.0, -big_l]]])  # (B, N''=1, A)
    target = munchausen.munchausen_targets(
        next_q, bonus_q, jnp.array([1]), _f32([1.0]), _f32([0.5]),
        alpha=0.9, entropy_tau=0.5, clip_min=-1.0)
    # T Z_j = 1 - 0.9 ln 2 + 0.5 (ln 2 -+ 1.25) = (0.375, 1.625) - 0.4 ln 2.
    expected = np.array([[0.375 - 0.4 * LN2, 1.625 - 0.4 * LN2]])
    # About 16 float32 operations (mean, max, exp, log, sums, products) on values of
    # magnitude <= 2, each within half an ulp, plus the rounding of L: 16 * 2 * EPS / 2.
    tol = 16 * 2 * EPS / 2
    assert target.shape == (1, 2) and target.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(target), expected, rtol=0, atol=tol)
    np.testing.assert_allclose(
        np.asarray(munchausen.munchausen_bonus(bonus_q, jnp.array([1]), 0.9, 0.5, -1.0)),
        [-0.9 * LN2], rtol=0, atol=tol)
    np.testing.assert_allclose(np.asarray(munchausen.soft_next_quantiles(next_q, 0.5)),
                               [[LN2 - 1.25, LN2 + 1.25]], rtol=0, atol=tol)


def test_munchausen_bonus_clips_at_l0():
    # q = (0, -10) at tau = 0.03: tau log pi = (0, -10) exactly (see the low-temperature
    # test). The non-greedy action: clip(-10, -1, 0) = -1, bonus alpha * l0 = -0.9
    # exactly; the greedy one: 0. With R = 0 and a terminal (discount 0) the target is
    # exactly the bonus for every target quantile.
    bonus_q = _f32([[[0.0, -10.0]], [[0.0, -10.0]]])
    next_q = _f32(np.full((2, 3, 2), 5.0))
    actions = jnp.array([1, 0])
    bonus = np.asarray(munchausen.munchausen_bonus(bonus_q, actions))
    np.testing.assert_array_equal(bonus, np.float32([0.9 * -1.0, 0.0]))
    target = munchausen.munchausen_targets(next_q, bonus_q, actions, _f32([0.0, 0.0]),
                                           _f32([0.0, 0.0]))
    np.testing.assert_array_equal(np.asarray(target),
                                  np.float32([[-0.9] * 3, [0.0] * 3]))


def test_terminal_drops_the_bootstrap():
    # Discount 0: T Z_j = R + bonus whatever the next-state quantiles are.
    rng = np.random.default_rng(0)
    bonus_q = _f32(rng.normal(size=(3, 4, 5)))
    actions = jnp.array([0, 2, 4])
    returns = _f32([1.0, -0.5, 0.25])
    zeros = _f32([0.0, 0.0, 0.0])
    bonus = munchausen.munchausen_bonus(bonus_q, actions)
    for scale in (1.0, 1e6):
        next_q = _f32(scale * rng.normal(size=(3, 6, 5)))
        target = munchausen.munchausen_targets(next_q, bonus_q, actions, returns, zeros)
        np.testing.assert_array_equal(
            np.asarray(target), np.broadcast_to(np.asarray(returns + bonus)[:, None], (3, 6)))


def test_bonus_and_bootstrap_read_their_own_arguments():
    # The bonus is read from bonus_quantiles (the caller's network at s_t) and the
    # bootstrap from next_quantiles; swapping the two arrays changes the target, and
    # each part equals its sub-function on its own argument.
    rng = np.random.default_rng(1)
    a_q = _f32(rng.normal(size=(4, 8, 3)))
    b_q = _f32(rng.normal(size=(4, 8, 3)) + np.array([0.0, 2.0, -2.0]))
    actions = jnp.array([0, 1, 2, 1])
    returns = _f32(rng.normal(size=4))
    disc = _f32([0.5, 0.25, 1.0, 0.0])
    target = munchausen.munchausen_targets(a_q, b_q, actions, returns, disc)
    expected = (returns + munchausen.munchausen_bonus(b_q, actions))[:, None] + disc[:, None] * (
        munchausen.soft_next_quantiles(a_q))
    np.testing.assert_array_equal(np.asarray(target), np.asarray(expected))
    swapped = munchausen.munchausen_targets(b_q, a_q, actions, returns, disc)
    assert np.abs(np.asarray(swapped) - np.asarray(target)).max() > 0.1
    # A greedy replayed action under bonus_quantiles gets no bonus: the target is the
    # Soft-DQN target of next_quantiles alone.
    greedy = jnp.argmax(jnp.mean(b_q, axis=1), axis=1)
    soft_only = munchausen.munchausen_targets(a_q, b_q, greedy, returns, disc)
    np.testing.assert_array_equal(
        np.asarray(soft_only),
        np.asarray(returns[:, None] + disc[:, None] * munchausen.soft_next_quantiles(a_q)))


# --- tolerances of two evaluations of the same computation ----------------------------


def _loss_bound(expected, n, n_prime):
    # Elements rho_ij are nonnegative, so sum |terms| = the loss itself: reordering the
    # sum over N and the mean over N' moves it by at most (N + N') ulps of its value,
    # plus a few elementwise roundings (4) if a side fuses them differently.
    return (n + n_prime + 4) * EPS * np.abs(expected)


def _dyadic(rng, shape, scale=4.0):
    # Multiples of 2^-8 in [-scale, scale]: means over 8 quantiles are exact in float32 in
    # any summation order, so both sides see the same q.
    return (np.round(rng.uniform(-scale, scale, size=shape) * 256) / 256).astype(np.float32)


def _munchausen_bound(next_q, bonus_q, returns, entropy_tau, alpha):
    # Per sample. q is exact (dyadic inputs). The exponent: the authors' softmax(q/tau)
    # rounds q/tau and its max-shift, this module rounds (q - max)/tau: each within an
    # ulp of Q/tau (Q = max|q|), so delta_e <= 2 EPS Q / tau, which moves pi by <= 2
    # delta_e relative. exp, the A-term sums and divisions add (2A + 8) ulps. The soft
    # term sums pi_a |Z - tau log pi_a| <= Zmax + A tau / e (pi |log pi| <= 1/e); the
    # final R + bonus + discount * soft adds (A + 8) ulps of the magnitudes involved.
    n_actions = next_q.shape[-1]
    q_max = np.maximum(np.abs(next_q.mean(1)).max(-1), np.abs(bonus_q.mean(1)).max(-1))
    delta_e = 2 * EPS * q_max / entropy_tau
    z_max = np.abs(next_q).max(axis=(1, 2))
    soft = z_max + n_actions * entropy_tau / math.e
    magnitude = np.abs(returns) + alpha + soft + q_max
    return ((2 * delta_e + (2 * n_actions + 8) * EPS) * soft
            + (n_actions + 8) * EPS * magnitude)[:, None]


# --- jit of each function equals the eager call ---------------------------------------


def test_jit_matches_eager():
    rng = np.random.default_rng(2)
    b, n, n_prime, a = 16, 8, 8, 6
    predicted = _f32(rng.normal(size=(b, n)))
    target = _f32(rng.normal(size=(b, n_prime)) * 2)
    taus = quantile.sample_taus(jax.random.PRNGKey(0), b, n)
    eager = quantile.quantile_huber_loss(predicted, target, taus)
    jitted = jax.jit(quantile.quantile_huber_loss)(predicted, target, taus)
    bound = _loss_bound(np.asarray(eager), n, n_prime)
    assert np.all(np.abs(np.asarray(jitted) - np.asarray(eager)) <= bound)
    eager = quantile.priority_signal(predicted, target)
    jitted = jax.jit(quantile.priority_signal)(predicted, target)
    assert np.all(np.abs(np.asarray(jitted) - np.asarray(eager)) <= _loss_bound(eager, n, n_prime))


    next_q, bonus_q = _dyadic(rng, (b, n_prime, a)), _dyadic(rng, (b, n, a))
    actions = jnp.asarray(rng.integers(0, a, size=b))
    returns = _f32(rng.normal(size=b))
    disc = _f32(0.997**3 * (rng.random(b) > 0.2))
    eager = munchausen.munchausen_targets(next_q, bonus_q, actions, returns, disc)
    jitted = jax.jit(munchausen.munchausen_targets)(next_q, bonus_q, actions, returns, disc,
                                                    0.9, 0.03, -1.0)
    bound = _munchausen_bound(next_q, bonus_q, np.asarray(returns), 0.03, 0.9)
    assert np.all(np.abs(np.asarray(jitted) - np.asarray(eager)) <= bound)


# --- the PyTorch reference (the authors' tensor ops) ----------------------------------


def _t(x):
    return torch.from_numpy(np.asarray(x, np.float32).copy())


def test_torch_reference_quantile_loss_matches():
    rng = np.random.default_rng(4)
    b, n, n_prime = 64, 8, 8
    predicted = rng.normal(size=(b, n)).astype(np.float32)
    target = (2 * rng.normal(size=(b, n_prime))).astype(np.float32)
    taus = rng.random((b, n)).astype(np.float32)
    ours = np.asarray(quantile.quantile_huber_loss(_f32(predicted), _f32(target), _f32(taus)))
    ref = tb.quantile_huber_loss(_t(predicted), _t(target), _t(taus)).numpy()
    assert np.all(np.abs(ours - ref) <= _loss_bound(ref, n, n_prime))
    ours = np.asarray(quantile.priority_signal(_f32(predicted), _f32(target)))
    ref = tb.priority_signal(_t(predicted), _t(target)).numpy()
    assert np.all(np.abs(ours - ref) <= _loss_bound(ref, n, n_prime))
    # Leaves (signal + 1e-6) ** 0.2: one addition and a pow on both sides, 8 ulps.
    np.testing.assert_allclose(per_leaf_priorities(ref, 0.2),
                               tb.leaf_priorities(_t(ref), 0.2).numpy(), rtol=8 * EPS, atol=0)


@pytest.mark.parametrize("bonus_network", ["target", "online"])
@pytest.mark.parametrize("entropy_tau", [0.03, 1.0])
def test_torch_reference_munchausen_matches(bonus_network, entropy_tau):
    rng = np.random.default_rng(5)
    b, n_prime, n, a = 64, 8, 8, 6
    next_q = _dyadic(rng, (b, n_prime, a))
    online_q = _dyadic(rng, (b, n, a))
    target_q = _dyadic(rng, (b, n, a))
    actions = rng.integers(0, a, size=b)
    returns = rng.normal(size=b).astype(np.float32)
    dones = rng.random(b) < 0.25
    gamma_n = 0.997**3
    ref = tb.munchausen_targets(
        _t(next_q), _t(online_q), _t(target_q), torch.from_numpy(actions), _t(returns),
        torch.from_numpy(dones), gamma_n, alpha=0.9, entropy_tau=entropy_tau, lo=-1.0,
        bonus_network=bonus_network).numpy()
    # The caller picks the bonus network by what it passes as bonus_quantiles.
    bonus_q = target_q if bonus_network == "target" else online_q
    disc = np.float32(gamma_n) * (1.0 - dones.astype(np.float32))
    ours = np.asarray(munchausen.munchausen_targets(
        _f32(next_q), _f32(bonus_q), jnp.asarray(actions), _f32(returns), _f32(disc),
        alpha=0.9, entropy_tau=entropy_tau, clip_min=-1.0))
    bound = _munchausen_bound(next_q, bonus_q, returns, entropy_tau, 0.9)
    assert np.all(np.abs(ours - ref) <= bound), np.abs(ours - ref).max()
    # The other network's quantiles give a different target: the switch matters.
    other_q = online_q if bonus_network == "target" else target_q
    other = np.asarray(munchausen.munchausen_targets(
        _f32(next_q), _f32(other_q), jnp.asarray(actions), _f32(returns), _f32(disc),
        alpha=0.9, entropy_tau=entropy_tau, clip_min=-1.0))
    assert np.abs(other - ref).max() > 100 * bound.max()


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_torch_reference_importance_weights_match(mode):
    rng = np.random.default_rng(6)
    leaves = ((rng.exponential(size=256) + 1e-6) ** 0.2).astype(np.float32)
    total, stored = float(leaves.sum()) * 3000.0, 800_000
    exponent = {"paper": 0.45, "code": 0.2}[mode]  # per_beta, or alpha in its place
    ours = per_importance_weights(leaves, exponent)
    ref = tb.importance_weights(_t(leaves), total, stored, 0.2, 0.45, mode=mode).numpy()
    # Division, product, pow (exp(e log x): error grows with |e log(N P)|) and the
    # normalising division, on weights <= 1.
    n_p = stored * leaves.astype(np.float64) / total
    bound = (6 + 2 * np.abs(exponent * np.log(n_p)).max()) * EPS
    np.testing.assert_allclose(ours, ref, rtol=0, atol=bound)
    assert ours.max() == 1.0
