"""C51 support, projection and TD targets (spec §5.5) against hand-worked cases,
an independent float64 reference and the official fixture."""

import pathlib

import jax
import numpy as np
import pytest

from bbf_jax import distributional as D

pytestmark = pytest.mark.usefixtures("parity")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
Z5 = np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32)  # 5 atoms, spacing 1
P5 = np.array([0.1, 0.2, 0.3, 0.25, 0.15], np.float32)


def _target(reward, discount, terminal, probs=P5):
    out = D.categorical_target(
        np.array([reward], np.float32),
        np.array([discount], np.float32),
        np.array([terminal]),
        probs[None],
        Z5,
    )
    return np.asarray(out)[0]


def _reference_projection(supports, weights, z):
    """Float64 C51 projection by the lower/upper-atom split of Bellemare et al. (2017), Alg. 1."""
    supports = np.asarray(supports, np.float64)
    weights = np.asarray(weights, np.float64)
    z = np.asarray(z, np.float64)
    dz = (z[-1] - z[0]) / (len(z) - 1)
    out = np.zeros(supports.shape[:-1] + (len(z),))
    for idx in np.ndindex(supports.shape[:-1]):
        for tz, p in zip(supports[idx], weights[idx], strict=True):
            b = (np.clip(tz, z[0], z[-1]) - z[0]) / dz
            lo, hi = int(np.floor(b)), int(np.ceil(b))
            if lo == hi:
                out[idx + (lo,)] += p
            else:
                out[idx + (lo,)] += p * (hi - b)
                out[idx + (hi,)] += p * (b - lo)
    return out


def test_make_support():
    z = D.make_support(5, 2.0)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(z), Z5)
    fixture = np.load(FIXTURES / "c51_projection.npz")
    np.testing.assert_array_equal(
        np.asarray(D.make_support(51, 10)), fixture["input/target_support"]
    )


@pytest.mark.parametrize("num_atoms,vmax", [(1, 10.0), (51, 0.0), (51, -1.0)])
def test_make_support_rejects(num_atoms, vmax):
    with pytest.raises(ValueError, match="make_support"):
        D.make_support(num_atoms, vmax)


def test_terminal_puts_all_mass_around_the_reward():
    # d = 1: every shifted atom is R = 0.5, halfway between z = 0 and z = 1.
    np.testing.assert_allclose(_target(0.5, 0.9, True), [0, 0, 0.5, 0.5, 0], atol=1e-7)


def test_reward_exactly_on_an_atom():
    np.testing.assert_allclose(_target(1.0, 0.0, False), [0, 0, 0, 1, 0], atol=1e-7)
    # gamma 1: atoms shift by one; the top atom lands beyond v_max and is clipped onto it.
    np.testing.assert_allclose(_target(1.0, 1.0, False), [0, 0.1, 0.2, 0.3, 0.4], atol=1e-7)


def test_half_atom_contraction():
    # gamma 0.5, R 0: Tz = [-1, -0.5, 0, 0.5, 1]; the half-way atoms split evenly.
    np.testing.assert_allclose(_target(0.0, 0.5, False), [0, 0.2, 0.525, 0.275, 0], atol=1e-7)


@pytest.mark.parametrize("reward,expected", [(5.0, [0, 0, 0, 0, 1]), (-5.0, [1, 0, 0, 0, 0])])
def test_support_beyond_vmax_or_vmin_is_clipped(reward, expected):
    np.testing.assert_allclose(_target(reward, 1.0, False), expected, atol=1e-7)


def test_mass_is_conserved_and_matches_reference():
    rng = np.random.default_rng(0)
    b, k = 64, 51
    z = np.asarray(D.make_support(k, 10.0))
    rewards = rng.uniform(-13, 13, b).astype(np.float32)
    discounts = rng.choice([0.0, 0.5, 0.97, 0.997**10, 1.0], b).astype(np.float32)
    terminals = rng.random(b) < 0.2
    logits = rng.normal(size=(b, k))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    out = np.asarray(D.categorical_target(rewards, discounts, terminals, probs, z))
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=2e-6)
    assert (out >= 0).all()
    _, supports = D.shifted_support(rewards, discounts, terminals, z)
    # float32 |Tz - z_i| near |z| = 10 is off by up to an ulp (1e-6), i.e. 2.4e-6 after / dz.
    np.testing.assert_allclose(out, _reference_projection(supports, probs, z), atol=1e-5)
    # Unnormalised weights: the total mass is carried over.
    weights = rng.uniform(0, 1, (b, k)).astype(np.float32)
    out = np.asarray(D.project_distribution(supports, weights, z))
    np.testing.assert_allclose(out.sum(-1), weights.sum(-1), rtol=2e-6)


def test_leading_dimensions_are_batched():
    rng = np.random.default_rng(1)
    supports = rng.uniform(-3, 3, (2, 3, 5)).astype(np.float32)
    weights = rng.uniform(0, 1, (2, 3, 5)).astype(np.float32)
    out = np.asarray(D.project_distribution(supports, weights, Z5))
    assert out.shape == (2, 3, 5)
    for i, j in np.ndindex(2, 3):
        single = np.asarray(D.project_distribution(supports[i, j], weights[i, j], Z5))
        np.testing.assert_allclose(out[i, j], single, atol=1e-6)
    np.testing.assert_allclose(out, _reference_projection(supports, weights, Z5), atol=1e-6)


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="same shape"):
        D.project_distribution(np.zeros((2, 5)), np.zeros((2, 4)), Z5)
    with pytest.raises(ValueError, match="target_support"):
        D.project_distribution(np.zeros(5), np.zeros(5), np.zeros((5, 1)))


def test_fixture_within_the_tolerance_policy():
    # Bounds of bbf_jax.tolerance (kinds.c51_projection.tolerances): gamma_with_terminal
    # exact, supports two roundings, the projection a sum of K products per row.
    from bbf_jax.crosscheck.fixture_io import compare, load_fixture
    from bbf_jax.crosscheck.kinds.c51_projection import tolerances

    f = load_fixture(FIXTURES / "c51_projection.npz")
    tols = tolerances(f)
    args = (f.get("input/rewards"), f.get("input/cumulative_gamma"), f.get("input/terminals"))
    support, weights = f.get("input/target_support"), f.get("input/weights")
    gamma_with_terminal, supports = D.shifted_support(*args, support)
    actual = {
        "gamma_with_terminal": gamma_with_terminal,
        "supports": supports,
        "projected": D.project_distribution(f.get("supports"), weights, support),
    }
    for name, value in actual.items():
        row = compare(name, value, f.get(name), tols[name])
        assert row.ok, row
    assert tols["gamma_with_terminal"].atol == 0.0
    # End to end, and inlined into a larger jitted computation (as in the learner), the
    # projection of bbf_jax's own supports: the supports' bound moves each coefficient
    # by at most |d supports| / dz, on a row of mass sum_j w_j.
    dz = float(support[1] - support[0])
    end_to_end = tols["projected"].atol + (
        tols["supports"].atol / dz * np.sum(np.abs(weights), axis=-1, keepdims=True)
    )
    for out in (
        D.categorical_target(*args, weights, support),
        jax.jit(lambda *a: D.categorical_target(*a) + 0.0)(*args, weights, support),
    ):
        assert compare("projected", out, f.get("projected"), end_to_end).ok


def test_scalar_target():
    out = D.scalar_target(
        np.array([1.0, 2.0, -1.0], np.float32),
        np.array([0.9, 0.5, 0.25], np.float32),
        np.array([False, True, False]),
        np.array([10.0, 10.0, 4.0], np.float32),
    )
    np.testing.assert_allclose(np.asarray(out), [10.0, 2.0, 0.0], atol=1e-6)
