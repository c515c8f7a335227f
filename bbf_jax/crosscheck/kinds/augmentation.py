"""Kind ``augmentation``: DrQ pad-crop + intensity augmentation (spec §5.4; README §8).

For every ``<run>/`` prefix in the file (``partitionable_true``, ``partitionable_false``)
the augmentation is recomputed with ``PRNGKey(0)`` under the matching setting of
``jax_threefry_partitionable``: the output, ``process_inputs`` on the uint8 input and
the internal draws (crop offsets, normal draw, intensity factor).
"""

from __future__ import annotations

from bbf_jax import tolerance
from bbf_jax.crosscheck.fixture_io import Fixture, FixtureError, Row, compare

KIND = "augmentation"

_RUNS = {"partitionable_true": True, "partitionable_false": False}
_DRAWS = {
    "crop_offsets_h": "offsets_h",
    "crop_offsets_w": "offsets_w",
    "intensity_normal_r": "normal_r",
    "intensity_noise": "intensity",
}
SEED = 0
# Roundings behind a normal draw: XLA's erf_inv is a degree-8 polynomial (Horner: a
# multiply-add per coefficient, which a compiler may or may not fuse into an FMA) of
# log1p or sqrt, then a scaling by sqrt(2); the intensity 1 + 0.05 * clip(r) and the
# product with the frame add three more. Rounded up.
DRAW_OPS = 32


def draw_tolerance(expected) -> tolerance.Tolerance:
    """Bound for the float draws (normal, intensity) and the augmented frames.

    The crop offsets (integers from PRNG bits), the pad/crop (data movement) and
    ``x * float32(1/255)`` (one correctly rounded product) are exact by construction and
    compared exactly. The normal draws go through ``erf_inv``, elementwise but with
    multiply-adds a compiler may contract differently on another processor:
    :data:`DRAW_OPS` roundings of the magnitude. (Measured: identical on both CPUs
    tried, README "Tolerance policy".)
    """
    return tolerance.elementwise(expected, ops=DRAW_OPS)


def matches(fixture: Fixture) -> bool:
    return "input/x_uint8" in fixture.arrays and any(
        f"{run}/output" in fixture.arrays for run in _RUNS
    )


def verify(fixture: Fixture) -> list[Row]:
    import jax
    import jax.numpy as jnp

    from bbf_jax import augment

    x_uint8 = fixture.get("input/x_uint8")
    x_float = fixture.get("input/x_float")
    runs = [run for run in _RUNS if f"{run}/output" in fixture.arrays]
    if not runs:
        raise FixtureError(f"{fixture.path.name}: no '<run>/output' array for any of {list(_RUNS)}")
    rows = [compare("input/x_float", augment.process_inputs(x_uint8), x_float, tolerance.EXACT)]
    for run in runs:
        with jax.threefry_partitionable(_RUNS[run]):
            key = jax.random.PRNGKey(SEED)
            output = jax.jit(augment.drq_augment)(key, x_float)
            processed = jax.jit(
                lambda k, x: augment.process_inputs(x, jnp.float32, augment=True, key=k)
            )(key, x_uint8)
            n = x_float.reshape(-1, *x_float.shape[-3:]).shape[0]
            draws = augment.drq_draws(key, n)
        for name, value in ((f"{run}/output", output),
                            (f"{run}/output_process_inputs", processed)):
            expected = fixture.get(name)
            rows.append(compare(name, value, expected, draw_tolerance(expected)))
        for stored, field in _DRAWS.items():
            name = f"{run}/{stored}"
            expected = fixture.get(name)
            # Integer offsets are compared exactly by compare() whatever the bound.
            rows.append(compare(name, getattr(draws, field), expected, draw_tolerance(expected)))
    return rows
