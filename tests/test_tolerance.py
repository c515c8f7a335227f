"""The tolerance policy (bbf_jax.tolerance): its bounds hold for reordered float32
computations and still reject small wrong changes; the ``parity`` fixture pins the
numerics inside jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax import tolerance
from bbf_jax.crosscheck.fixture_io import compare

pytestmark = pytest.mark.usefixtures("parity")


@pytest.fixture(scope="module")
def lowered_in_module_fixture():
    # A module-scoped fixture compiles under the module's parity numerics too.
    f = jax.jit(lambda a, b: a @ b)
    return f.lower(jnp.ones((2, 2)), jnp.ones((2, 2))).as_text()


def test_parity_numerics_reach_jit(lowered_in_module_fixture):
    assert "precision = [HIGHEST, HIGHEST]" in lowered_in_module_fixture
    text = jax.jit(lambda a, b: a @ b).lower(jnp.ones((2, 2)), jnp.ones((2, 2))).as_text()
    assert "precision = [HIGHEST, HIGHEST]" in text
    assert jnp.ones(3).devices() == {jax.devices("cpu")[0]}
    assert jnp.ones(3).dtype == jnp.float32 and not jax.config.jax_enable_x64


def _orders(x: np.ndarray) -> list[np.float32]:
    """float32 sums of ``x`` in several orders: sequential, reversed, pairwise, sorted,
    and with every product fused (float64 accumulation rounded once)."""
    def sequential(v):
        acc = np.float32(0)
        for t in v:
            acc = np.float32(acc + t)
        return acc

    return [sequential(x), sequential(x[::-1]), np.sum(x, dtype=np.float32),
            sequential(np.sort(x)), np.float32(np.sum(x, dtype=np.float64))]


def test_summation_bound_covers_every_order_and_rejects_a_dropped_term():
    rng = np.random.default_rng(0)
    for k in (3, 51, 1000):
        x = rng.normal(size=k).astype(np.float32) * np.float32(rng.uniform(0.1, 10))
        bound = tolerance.summation(k, float(np.sum(np.abs(x, dtype=np.float64)))).atol
        sums = _orders(x)
        worst = max(abs(float(a) - float(b)) for a in sums for b in sums)
        assert worst <= bound
        if k <= 51:  # a short sum: an off-by-one (one term short) is far outside it
            short = np.sum(x[1:], dtype=np.float32)
            assert abs(float(short) - float(sums[0])) > 10 * bound


def test_network_output_bound_covers_a_reordered_matmul_and_rejects_1e_4():
    rng = np.random.default_rng(1)
    k = 3872  # the projection's fan-in in network_small
    a = rng.normal(size=(16, k)).astype(np.float32)
    w = (rng.normal(size=(k, 64)) / math.sqrt(k)).astype(np.float32)
    exact = (a.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)
    blocked = sum(a[:, i:i + 256] @ w[i:i + 256] for i in range(0, k, 256))
    tol = tolerance.network_output(exact, k, depth=1)
    assert compare("matmul", a @ w, exact, tol).ok
    assert compare("blocked", blocked, exact, tol).ok
    wrong = exact.copy()
    i = np.unravel_index(np.argmax(np.abs(exact)), exact.shape)
    wrong[i] *= np.float32(1 + 1e-4)
    assert not compare("1e-4 relative", wrong, exact, tolerance.network_output(exact, k, 28)).ok


def test_gradient_bound_allows_one_kink_and_rejects_a_transposed_kernel():
    # A conv kernel's gradient: the sum over B * H * W positions of the outer product of
    # the output gradient (8 channels) and the input patch (3 x 3 x 4).
    rng = np.random.default_rng(2)
    positions = 8 * 21 * 21
    patches = rng.normal(size=(positions, 3, 3, 4)).astype(np.float32)
    deltas = rng.normal(size=(positions, 8)).astype(np.float32)
    grad = np.einsum("phwi,pc->hwic", patches, deltas).astype(np.float32)
    tol = tolerance.gradient(grad, length=8 * 84 * 84, depth=40, positions=positions)
    # One ReLU that rounding switched off (position 17, channel 3) drops its term.
    kinked = grad.copy()
    kinked[..., 3] -= patches[17] * deltas[17, 3]
    assert compare("kink", kinked, grad, tol).ok
    transposed = np.swapaxes(grad, 0, 1).copy()
    row = compare("transposed", transposed, grad, tol)
    assert not row.ok and row.rel_err > 0.5
    # Scaled by 5 %: the relative-norm criterion fails even where entries are small.
    assert not compare("scaled", grad * np.float32(1.05), grad, tol).ok


def test_exact_is_exact_and_integers_ignore_any_bound():
    x = np.array([1.0, 2.0, 3.0], np.float32)
    assert compare("same", x.copy(), x, tolerance.EXACT).ok
    assert not compare("one ulp", np.nextafter(x, np.float32(4)), x, tolerance.EXACT).ok
    idx = np.arange(5)
    assert not compare("index + 1", idx + 1, idx, tolerance.Tolerance(10.0)).ok


def test_elementwise_is_ulps_of_the_magnitude():
    x = np.array([-3.0, 0.5], np.float32)
    assert tolerance.elementwise(x, ops=2).atol == 2 * 2.0**-23 * 3.0
    assert tolerance.magnitude(np.array([np.inf, -2.0])) == 2.0
    assert tolerance.relative_error_norm(np.zeros(2), np.zeros(2)) == 0.0


def test_array_bounds_report_the_element_closest_to_its_bound():
    expected = np.array([[1.0, 1.0], [100.0, 100.0]], np.float32)
    actual = expected + np.array([[2e-6, 0.0], [5e-6, 0.0]], np.float32)
    per_row = tolerance.summation(2, np.array([[2.0], [200.0]]))
    row = compare("rows", actual, expected, per_row)
    # The first row's small error breaks its small bound; the larger error of the
    # second row is within its own.
    assert not row.ok and row.tol == pytest.approx(2 * 2.0**-23 * 2.0)
