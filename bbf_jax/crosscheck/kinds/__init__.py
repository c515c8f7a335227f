"""Fixture kinds understood by ``bbf-crosscheck verify``.

Each kind module defines ``KIND`` (its name), ``matches(fixture) -> bool`` (does the
file look like this kind) and ``verify(fixture) -> list[Row]`` (recompute every
stored output with bbf_jax). Kind modules import heavy dependencies lazily.
"""

from __future__ import annotations

import importlib

# Module names under bbf_jax.crosscheck.kinds, in detection order.
KIND_MODULES = (
    "network",
    "c51_projection",
    "schedules",
    "augmentation",
    "losses",
    "shrink_perturb",
    "sum_tree",
)


def available_kinds():
    mods = []
    for name in KIND_MODULES:
        try:
            mods.append(importlib.import_module(f"bbf_jax.crosscheck.kinds.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"bbf_jax.crosscheck.kinds.{name}":
                raise
    return mods


def detect_kind(fixture):
    """The kind module for a fixture: its JSON ``kind``, else its file name, else shape."""
    from bbf_jax.crosscheck.fixture_io import FixtureError

    mods = available_kinds()
    declared = fixture.meta.get("kind")
    if declared:
        for mod in mods:
            if mod.KIND == declared:
                return mod
        raise FixtureError(
            f"{fixture.path.name}: unknown fixture kind {declared!r} "
            f"(known: {', '.join(m.KIND for m in mods)})"
        )
    stem = fixture.path.stem
    for mod in mods:
        if stem.startswith(mod.KIND):
            return mod
    for mod in mods:
        if mod.matches(fixture):
            return mod
    raise FixtureError(
        f"{fixture.path.name}: cannot tell which fixture kind this is "
        f"(known: {', '.join(m.KIND for m in mods)})"
    )
