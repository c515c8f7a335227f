"""Per-sample losses (spec §5.6) on tiny hand-worked arrays."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax import losses

LN2 = math.log(2.0)


def test_c51_cross_entropy_hand_values():
    # log_softmax(log p) = log p when p sums to one.
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]))
    target = jnp.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    ce = losses.c51_cross_entropy(logits, target)
    # Row 0: -log 0.5; row 1: -(0.5 log 0.5 + 0.5 log 0.25) = 1.5 log 2.
    np.testing.assert_allclose(ce, [LN2, 1.5 * LN2], rtol=1e-6)
    assert ce.shape == (2,) and ce.dtype == jnp.float32


def test_c51_cross_entropy_is_shift_invariant_in_logits():
    target = jnp.array([[0.2, 0.3, 0.5]])
    logits = jnp.array([[1.0, -2.0, 0.5]])
    np.testing.assert_allclose(
        losses.c51_cross_entropy(logits + 7.0, target),
        losses.c51_cross_entropy(logits, target),
        rtol=1e-6,
    )


def test_td_error_is_kl_with_zero_log_zero():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]))
    target = jnp.array([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25]])
    ce = losses.c51_cross_entropy(logits, target)
    kl = losses.c51_td_error(ce, target)
    # KL = 0.5 log(0.5/0.5) + 0.5 log(0.5/0.25) + 0 = 0.5 log 2; identical rows give 0.
    assert np.all(np.isfinite(kl))
    np.testing.assert_allclose(kl, [0.5 * LN2, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    "target, prediction, expected",
    [(0.5, 0.0, 0.125), (1.0, 0.0, 0.5), (0.0, 2.0, 1.5), (-3.0, 0.0, 2.5), (4.0, 4.0, 0.0)],
)
def test_huber_hand_values(target, prediction, expected):
    # 0.5 x^2 for |x| <= 1, else 0.5 + (|x| - 1).
    out = losses.huber(jnp.array([target]), jnp.array([prediction]))
    np.testing.assert_allclose(out, [expected], rtol=1e-7)


def test_spr_loss_normalises_masks_and_divides_by_k():
    # p = (3, 4) -> (0.6, 0.8); z = (4, 3) -> (0.8, 0.6); ||p^ - z^||^2 = 0.08.
    p = jnp.array([[[3.0, 4.0], [30.0, 40.0]], [[1.0, 0.0], [0.0, 2.0]]])
    z = jnp.array([[[4.0, 3.0], [8.0, 6.0]], [[0.0, 5.0], [0.0, 1.0]]])
    mask = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    spr, per_jump = losses.spr_loss(p, z, mask)
    np.testing.assert_allclose(per_jump, [[0.08, 0.08], [2.0, 0.0]], atol=1e-6)
    # Row 0: one step masked, still divided by K = 2; row 1: (2 + 0) / 2.
    np.testing.assert_allclose(spr, [0.04, 1.0], atol=1e-6)
    assert spr.shape == (2,) and per_jump.shape == (2, 2)


def test_spr_loss_has_no_epsilon():
    # A zero vector is divided by a zero norm (official: no epsilon), even when masked.
    p = jnp.array([[[0.0, 0.0]]])
    z = jnp.array([[[1.0, 0.0]]])
    spr, per_jump = losses.spr_loss(p, z, jnp.zeros((1, 1)))
    assert np.isnan(per_jump).all() and np.isnan(spr).all()
    # Tiny but non-zero vectors are normalised exactly (an epsilon would shrink them).
    spr, _ = losses.spr_loss(jnp.array([[[1e-15, 0.0]]]), jnp.array([[[0.0, 1e-15]]]),
                             jnp.ones((1, 1)))
    np.testing.assert_allclose(spr, [2.0], rtol=1e-6)
