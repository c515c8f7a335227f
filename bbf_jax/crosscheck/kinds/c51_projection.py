"""Kind ``c51_projection``: the C51 target projection (spec §5.5; fixture README §3).

Recomputes ``gamma_with_terminal``, the shifted ``supports`` and the ``projected``
distribution from the stored inputs with :mod:`bbf_jax.distributional`.
"""

from __future__ import annotations

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

# Bitwise: the batched jitted projection performs the official per-sample float32
# operations in the same order (measured error 0 against the official fixture).
TOL = 0.0


def matches(fixture: Fixture) -> bool:
    return all(k in fixture.arrays for k in _INPUTS + ("projected",))


def verify(fixture: Fixture) -> list[Row]:
    from bbf_jax import distributional

    rewards, discounts, terminals, weights, support = (fixture.get(k) for k in _INPUTS)
    gamma_with_terminal, supports = distributional.shifted_support(
        rewards, discounts, terminals, support
    )
    projected = distributional.project_distribution(supports, weights, support)
    actual = {
        "gamma_with_terminal": gamma_with_terminal,
        "supports": supports,
        "projected": projected,
    }
    return [compare(name, actual[name], fixture.get(name), TOL) for name in _OUTPUTS]
