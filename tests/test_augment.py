"""DrQ augmentation and input scaling (spec §3.2, §5.4) against a NumPy pad-and-slice
reference and the official ``augmentation.npz`` fixture (both threefry modes)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbf_jax import augment as A
from bbf_jax.crosscheck.fixture_io import compare
from bbf_jax.crosscheck.kinds.augmentation import draw_tolerance

pytestmark = pytest.mark.usefixtures("parity")

FIXTURE = np.load(pathlib.Path(__file__).parent / "fixtures" / "augmentation.npz")
MODES = [("partitionable_true", True), ("partitionable_false", False)]


def _reference(x, draws, pad=4):
    """Edge-pad, slice at the drawn offsets and scale, image by image, in NumPy."""
    h, w, c = x.shape[-3:]
    flat = np.asarray(x).reshape(-1, h, w, c)
    out = np.empty_like(flat)
    for i, image in enumerate(flat):
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        oh, ow = int(draws.offsets_h[i]), int(draws.offsets_w[i])
        out[i] = padded[oh : oh + h, ow : ow + w] * np.float32(draws.intensity[i])
    return out.reshape(x.shape)


def _assert_draw_close(actual, expected):
    # Offsets exactly; float draws and frames within the erf_inv/FMA bound of the policy.
    row = compare("draw", np.asarray(actual), expected, draw_tolerance(expected))
    assert row.ok, row


@pytest.mark.parametrize("run,partitionable", MODES)
def test_fixture(run, partitionable):
    x = FIXTURE["input/x_float"]
    with jax.threefry_partitionable(partitionable):
        key = jax.random.PRNGKey(0)
        eager = np.asarray(A.drq_augment(key, x))
        jitted = np.asarray(jax.jit(A.drq_augment)(key, x))
        process = jax.jit(lambda k, u: A.process_inputs(u, jnp.float32, True, k))
        processed = np.asarray(process(key, FIXTURE["input/x_uint8"]))
        draws = A.drq_draws(key, 6)
    _assert_draw_close(eager, FIXTURE[f"{run}/output"])
    _assert_draw_close(jitted, FIXTURE[f"{run}/output"])
    _assert_draw_close(processed, FIXTURE[f"{run}/output_process_inputs"])
    np.testing.assert_array_equal(np.asarray(draws.offsets_h), FIXTURE[f"{run}/crop_offsets_h"])
    np.testing.assert_array_equal(np.asarray(draws.offsets_w), FIXTURE[f"{run}/crop_offsets_w"])
    _assert_draw_close(draws.normal_r, FIXTURE[f"{run}/intensity_normal_r"])
    _assert_draw_close(draws.intensity, FIXTURE[f"{run}/intensity_noise"])


def test_process_inputs_scales_without_augmentation():
    x = FIXTURE["input/x_uint8"]
    out = A.process_inputs(x)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), FIXTURE["input/x_float"])
    assert A.process_inputs(x[0, 0], jnp.bfloat16).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="needs a PRNG key"):
        A.process_inputs(x, augment=True)


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 12, 10, 4), dtype=np.float32)
    key = jax.random.PRNGKey(7)
    out = np.asarray(A.drq_augment(key, x))
    np.testing.assert_array_equal(out, _reference(x, A.drq_draws(key, 6)))


def test_offsets_cover_exactly_0_to_7():
    draws = A.drq_draws(jax.random.PRNGKey(1), 1024)
    for offsets in (np.asarray(draws.offsets_h), np.asarray(draws.offsets_w)):
        assert set(offsets.tolist()) == set(range(8))
    intensity = np.asarray(draws.intensity)
    assert intensity.min() >= 0.9 and intensity.max() <= 1.1
    np.testing.assert_allclose(
        intensity, 1 + 0.05 * np.clip(np.asarray(draws.normal_r), -2, 2), rtol=1e-6
    )


def test_shift_shared_by_frames_and_drawn_per_image():
    rng = np.random.default_rng(2)
    image = rng.random((16, 16, 1), dtype=np.float32)
    # 8 copies (2 x 4 leading dims) of one image whose 4 stacked frames are identical.
    x = np.broadcast_to(np.repeat(image, 4, axis=-1), (2, 4, 16, 16, 4))
    out = np.asarray(A.drq_augment(jax.random.PRNGKey(3), x)).reshape(8, 16, 16, 4)
    for frame in range(1, 4):
        np.testing.assert_array_equal(out[..., frame], out[..., 0])
    # Normalise away the intensity factor and compare the shifts across images.
    draws = A.drq_draws(jax.random.PRNGKey(3), 8)
    shifts = {(int(h), int(w)) for h, w in zip(draws.offsets_h, draws.offsets_w, strict=True)}
    assert len(shifts) > 1
    unscaled = out[..., 0] / np.asarray(draws.intensity)[:, None, None]
    distinct = {unscaled[i].round(5).tobytes() for i in range(8)}
    assert len(distinct) == len(shifts)


def test_deterministic_for_a_key_and_not_clipped():
    x = np.ones((4, 84, 84, 4), np.float32)
    a = np.asarray(A.drq_augment(jax.random.PRNGKey(5), x))
    b = np.asarray(A.drq_augment(jax.random.PRNGKey(5), x))
    c = np.asarray(A.drq_augment(jax.random.PRNGKey(6), x))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Constant images: every pixel is the intensity factor, above 1 for r > 0.
    factors = np.asarray(A.drq_draws(jax.random.PRNGKey(5), 4).intensity)
    np.testing.assert_array_equal(a, np.broadcast_to(factors[:, None, None, None], a.shape))


def test_single_image_and_bad_shapes():
    x = FIXTURE["input/x_float"][0, 0]
    assert A.drq_augment(jax.random.PRNGKey(0), x).shape == (84, 84, 4)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, C\)"):
        A.drq_augment(jax.random.PRNGKey(0), np.zeros((84, 84), np.float32))
    with pytest.raises(ValueError, match="pad"):
        A.drq_augment(jax.random.PRNGKey(0), x, pad=0)
