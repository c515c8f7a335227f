"""Kind ``c51_projection``: the C51 target projection (spec §5.5; fixture README §3).

Recomputes ``gamma_with_terminal`` and the shifted ``supports`` from the stored inputs,
and the ``projected`` distribution from the stored ``supports`` (each stage from the
reference's own inputs, so that each gets the bound of its own arithmetic), with
:mod:`bbf_jax.distributional`.
"""

from __future__ import annotations

import numpy as np

from bbf_jax import tolerance
from bbf_jax.crosscheck.fixture_io import Fixture, Row, compare

KIND = "c51_projection"

_INPUTS = (
    "input/rewards",
    "input/cumulative_gamma",
    "input/terminals",
    "input/weights",
    "input/target_support",
)
_OUTPUTS = ("gamma_with_terminal", "supports", "projected")


def matches(fixture: Fixture) -> bool:
    return all(k in fixture.arrays for k in _INPUTS + ("projected",))


def tolerances(fixture: Fixture) -> dict[str, tolerance.Tolerance]:
    """The bound of each output.

    ``gamma_with_terminal = gamma * (1 - terminal)`` multiplies by 0 or 1: exact.
    ``supports = r + gamma * z``: two roundings, or one where the compiler fuses them.
    ``projected_i = sum_j clip(1 - |s_j - z_i| / dz, 0, 1) * w_j``: per term a
    subtraction, a division (or XLA's multiply by ``1/dz``), ``1 - q`` and a product, then
    a sum of K terms whose absolute values add up to at most the row's mass ``sum_j w_j``
    (a bound per row: the fixture mixes normalised and unnormalised rows).
    """
    weights = fixture.get("input/weights").astype(np.float64)
    num_atoms = weights.shape[-1]
    mass = np.sum(np.abs(weights), axis=-1, keepdims=True)
    return {
        "gamma_with_terminal": tolerance.EXACT,
        "supports": tolerance.elementwise(fixture.get("supports"), ops=2),
        "projected": tolerance.summation(num_atoms + 4, mass),
    }


def verify(fixture: Fixture) -> list[Row]:
    from bbf_jax import distributional

    rewards, discounts, terminals, weights, support = (fixture.get(k) for k in _INPUTS)
    gamma_with_terminal, supports = distributional.shifted_support(
        rewards, discounts, terminals, support
    )
    projected = distributional.project_distribution(fixture.get("supports"), weights, support)
    actual = {
        "gamma_with_terminal": gamma_with_terminal,
        "supports": supports,
        "projected": projected,
    }
    tols = tolerances(fixture)
    return [compare(name, actual[name], fixture.get(name), tols[name]) for name in _OUTPUTS]
