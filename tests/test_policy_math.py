"""Continuous-control policy math: the box-mapped Beta against scipy.stats.beta (with the
affine map's Jacobian), its entropy and mode; the Gaussian; GAE against a slow
reference loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bbf_jax.gae import gae
from bbf_jax.policy_distributions import BoxBeta, BoxGaussian

pytestmark = pytest.mark.usefixtures("parity")

LOW = np.array([-1.0, 0.0, 0.0], np.float32)  # CarRacing: steer, gas, brake
HIGH = np.array([1.0, 1.0, 1.0], np.float32)


def _beta(seed=0, batch=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, batch, 3)).astype(np.float32) * 2
    return BoxBeta.from_logits(logits[0], logits[1], LOW, HIGH)


def test_beta_parameters_exceed_one():
    d = _beta()
    assert np.all(np.asarray(d.alpha) > 1) and np.all(np.asarray(d.beta) > 1)


def test_beta_log_prob_against_scipy_with_the_jacobian():
    d = _beta()
    rng = np.random.default_rng(1)
    actions = LOW + (HIGH - LOW) * rng.uniform(0.02, 0.98, (5, 3))
    a, b = np.asarray(d.alpha, np.float64), np.asarray(d.beta, np.float64)
    # scipy's loc/scale form is exactly the affine map with its Jacobian 1 / (high - low).
    want = scipy.stats.beta.logpdf(actions, a, b, loc=LOW, scale=HIGH - LOW).sum(-1)
    also = (scipy.stats.beta.logpdf((actions - LOW) / (HIGH - LOW), a, b)
            - np.log(HIGH - LOW)).sum(-1)
    np.testing.assert_allclose(want, also, rtol=1e-12)
    # float32 lgamma/log of 3 terms: relative error ~1e-6 of values of size ~1-10.
    np.testing.assert_allclose(np.asarray(d.log_prob(jnp.asarray(actions, jnp.float32))),
                               want, rtol=2e-5, atol=2e-5)


def test_beta_entropy_and_mode_against_scipy():
    d = _beta(seed=2)
    a, b = np.asarray(d.alpha, np.float64), np.asarray(d.beta, np.float64)
    want = scipy.stats.beta.entropy(a, b, loc=LOW, scale=HIGH - LOW).sum(-1)
    np.testing.assert_allclose(np.asarray(d.entropy()), want, rtol=2e-5, atol=2e-5)
    mode = LOW + (HIGH - LOW) * (a - 1) / (a + b - 2)
    np.testing.assert_allclose(np.asarray(d.mode()), mode, rtol=1e-5, atol=1e-6)
    # The mode maximises the density along each dimension.
    grid = np.linspace(0.001, 0.999, 2001)
    for i in range(3):
        dens = scipy.stats.beta.pdf(grid, a[0, i], b[0, i])
        np.testing.assert_allclose(LOW[i] + (HIGH[i] - LOW[i]) * grid[dens.argmax()],
                                   mode[0, i], atol=(HIGH[i] - LOW[i]) * 1e-3)


def test_beta_samples_lie_in_the_box_and_follow_the_distribution():
    d = BoxBeta.from_logits(jnp.full((20_000, 3), 0.5), jnp.full((20_000, 3), -0.5), LOW, HIGH)
    x = np.asarray(d.sample(jax.random.PRNGKey(0)))
    assert np.all(x >= LOW) and np.all(x <= HIGH)
    a, b = float(d.alpha[0, 0]), float(d.beta[0, 0])
    mean = LOW + (HIGH - LOW) * a / (a + b)
    sd = (HIGH - LOW) * np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    # Sample means of 20,000 draws: within 5 standard errors.
    np.testing.assert_allclose(x.mean(0), mean, atol=5 * sd.max() / np.sqrt(20_000))
    assert np.all(np.isfinite(np.asarray(d.log_prob(jnp.asarray(x)))))
    assert np.isfinite(float(d.log_prob(jnp.asarray(HIGH)[None])[0]))  # boundary


def test_gaussian_against_scipy():
    rng = np.random.default_rng(3)
    mean = rng.normal(size=(4, 3)).astype(np.float32)
    log_std = np.array([-0.5, 0.0, 0.3], np.float32)
    d = BoxGaussian(jnp.asarray(mean), jnp.asarray(log_std))
    actions = rng.normal(size=(4, 3)).astype(np.float32)
    want = scipy.stats.norm.logpdf(actions, mean, np.exp(log_std)).sum(-1)
    np.testing.assert_allclose(np.asarray(d.log_prob(jnp.asarray(actions))), want, rtol=1e-5)
    ent = scipy.stats.norm.entropy(np.zeros(3), np.exp(log_std)).sum()
    np.testing.assert_allclose(np.asarray(d.entropy()), np.full(4, ent), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(d.mode()), mean)


def _gae_slow(rewards, values, terminals, last_values, gamma, lam):
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            next_v = last_values[n] if t == T - 1 else values[t + 1, n]
            nd = 1.0 - terminals[t, n]
            delta = rewards[t, n] + gamma * nd * next_v - values[t, n]
            running = delta + gamma * lam * nd * running
            adv[t, n] = running
    return adv, adv + values


def test_gae_against_a_slow_loop():
    rng = np.random.default_rng(4)
    T, N = 37, 5
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    values = rng.normal(size=(T, N)).astype(np.float32)
    terminals = rng.random((T, N)) < 0.1
    last = rng.normal(size=N).astype(np.float32)
    adv, ret = gae(rewards, values, terminals, last, 0.99, 0.95)
    want_adv, want_ret = _gae_slow(rewards.astype(np.float64), values.astype(np.float64),
                                   terminals, last.astype(np.float64), 0.99, 0.95)
    # float32 recursion over <= 37 steps: ~37 roundings of values of size ~10.
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want_ret, rtol=1e-5, atol=1e-5)


def test_gae_by_hand():
    # T = 2, one env, no terminal: delta_1 = 1 + 0.5*4 - 2 = 1; delta_0 = 0 + 0.5*2 - 1 = 0;
    # A_1 = 1; A_0 = 0 + 0.5*0.5*1 = 0.25.
    adv, ret = gae(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]]), np.zeros((2, 1)),
                   np.array([4.0]), 0.5, 0.5)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [0.25, 1.0])
    np.testing.assert_allclose(np.asarray(ret)[:, 0], [1.25, 3.0])
    # A terminal at t = 0 cuts the bootstrap and the trace: A_0 = delta_0 = 0 - 1.
    adv, _ = gae(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]]), np.array([[1.0], [0.0]]),
                 np.array([4.0]), 0.5, 0.5)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [-1.0, 1.0])
