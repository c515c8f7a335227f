"""Epsilon-greedy action selection (spec §8) with the official key use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax.agents.bbf.acting import select_actions
from bbf_jax.agents.bbf.config import NetworkConfig
from bbf_jax.networks import init_params, make_network

N, A = 5, 6
NET = make_network(NetworkConfig(width_scale=0.25, hidden_dim=64, num_blocks=1), A)


@pytest.fixture(scope="module")
def setup():
    params = init_params(NET, jax.random.PRNGKey(0), use_spr=False)
    other = init_params(NET, jax.random.PRNGKey(1), use_spr=False)
    states = np.random.default_rng(0).integers(0, 256, (N, 84, 84, 4), dtype=np.uint8)
    act = jax.jit(lambda p, s, k, e: select_actions(NET, p, s, k, e))
    q = jax.jit(lambda p, s: NET.apply({"params": p}, s / 255.0).q_values)
    return params, other, states, act, q


def _documented_keys(key):
    key, _ = jax.random.split(key)
    return jax.random.split(key, 4)  # new key, k_u, k_net, k_rand


def test_epsilon_zero_is_greedy(setup):
    params, _, states, act, q = setup
    key = jax.random.PRNGKey(3)
    new_key, actions = act(params, states, key, jnp.float32(0.0))
    assert actions.shape == (N,) and actions.dtype == jnp.int32
    np.testing.assert_array_equal(actions, np.argmax(np.asarray(q(params, states)), axis=-1))
    np.testing.assert_array_equal(new_key, _documented_keys(key)[0])


def test_ties_go_to_the_first_action(setup):
    params, _, states, act, q = setup
    # A zero advantage stream gives equal logits, hence equal Q, for every action.
    head = jax.tree.map(jnp.zeros_like, params["head"]["advantage"])
    tied = {**params, "head": {**params["head"], "advantage": head}}
    assert np.all(np.ptp(np.asarray(q(tied, states)), axis=-1) == 0)
    _, actions = act(tied, states, jax.random.PRNGKey(0), jnp.float32(0.0))
    np.testing.assert_array_equal(actions, np.zeros(N))


def test_epsilon_one_gives_the_documented_random_actions(setup):
    params, _, states, act, _ = setup
    key = jax.random.PRNGKey(11)
    new_key, actions = act(params, states, key, jnp.float32(1.0))
    _, _, _, k_rand = _documented_keys(key)
    np.testing.assert_array_equal(actions, jax.random.randint(k_rand, (N,), 0, A))
    assert new_key.shape == (2,)


def test_intermediate_epsilon_mixes_by_u_le_epsilon(setup):
    params, _, states, act, q = setup
    key = jax.random.PRNGKey(5)
    eps = 0.5
    _, actions = act(params, states, key, jnp.float32(eps))
    _, k_u, _, k_rand = _documented_keys(key)
    u = np.asarray(jax.random.uniform(k_u, (N,)))
    greedy = np.argmax(np.asarray(q(params, states)), axis=-1)
    random = np.asarray(jax.random.randint(k_rand, (N,), 0, A))
    np.testing.assert_array_equal(actions, np.where(u <= eps, random, greedy))


def test_the_given_parameters_are_used(setup):
    params, other, states, act, q = setup
    greedy_a = np.argmax(np.asarray(q(params, states)), axis=-1)
    greedy_b = np.argmax(np.asarray(q(other, states)), axis=-1)
    assert not np.array_equal(greedy_a, greedy_b)  # the two networks disagree somewhere
    key = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(act(other, states, key, jnp.float32(0.0))[1], greedy_b)
    np.testing.assert_array_equal(act(params, states, key, jnp.float32(0.0))[1], greedy_a)


def test_noisy_network_uses_per_env_keys_from_k_net():
    net = make_network(NetworkConfig(width_scale=0.25, hidden_dim=64, num_blocks=1, noisy=True), A)
    params = init_params(net, jax.random.PRNGKey(0), use_spr=False)
    states = np.random.default_rng(1).integers(0, 256, (N, 84, 84, 4), dtype=np.uint8)
    key = jax.random.PRNGKey(2)
    _, actions = jax.jit(lambda k: select_actions(net, params, states, k, 0.0))(key)
    _, _, k_net, _ = _documented_keys(key)
    q = net.apply({"params": params}, states / 255.0, noise_keys=jax.random.split(k_net, N))
    np.testing.assert_array_equal(actions, np.argmax(np.asarray(q.q_values), axis=-1))
