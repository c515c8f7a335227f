"""Fixture kind ``sum_tree``: the official ``DeterministicSumTree`` (spec §4.2).

For every tree in the fixture (``cap13``, ``cap200000``, ...) the recorded ``set`` calls
are replayed one by one (total after each call) and once as a single vectorised call;
nodes, leaves, total, ``highest_set`` and ``max_recorded_priority`` must match exactly.
The stored query fractions (given ones, JAX-drawn ones, and the per-stratum queries of
``stratified_sample``) are fed to bbf_jax's float32 descent and the sampled indices must
match exactly. Exact by construction: every node is updated by single float64 additions
in the order of the set calls, and the descent compares and subtracts float32 values one
operation at a time (no reduction a compiler could reorder). The JAX random streams
themselves are not reproduced (bbf_jax draws from
numpy), but the stored stratified queries are checked to lie in their strata.
"""

from __future__ import annotations

import re

import numpy as np

from bbf_jax.crosscheck.fixture_io import Fixture, FixtureError, Row, compare
from bbf_jax.tolerance import EXACT

KIND = "sum_tree"

_STRATIFIED = re.compile(r"^stratified_bs(\d+)_seed(\d+)$")


def matches(fixture: Fixture) -> bool:
    return any(k.endswith("/set_indices") for k in fixture.arrays) and any(
        k.endswith("/nodes") for k in fixture.arrays
    )


def _tree_names(fixture: Fixture) -> list[str]:
    trees = fixture.meta.get("trees")
    if isinstance(trees, dict) and trees:
        return list(trees)
    names = sorted({k.split("/")[0] for k in fixture.arrays if k.endswith("/set_indices")})
    if not names:
        raise FixtureError(f"{fixture.path.name}: no '<tree>/set_indices' arrays found")
    return names


def _capacity(fixture: Fixture, name: str) -> int:
    meta = fixture.meta.get("trees", {}).get(name, {})
    if "capacity" in meta:
        return int(meta["capacity"])
    return int(fixture.get(f"{name}/leaf_values").shape[0])


def verify(fixture: Fixture) -> list[Row]:
    from bbf_jax.replay.sum_tree import SumTree

    rows: list[Row] = []
    for name in _tree_names(fixture):
        arrays = fixture.subtree(name)
        meta = fixture.meta.get("trees", {}).get(name, {})
        capacity = _capacity(fixture, name)
        set_indices = fixture.get(f"{name}/set_indices").astype(np.int64)
        set_values = fixture.get(f"{name}/set_values").astype(np.float64)
        try:
            tree = SumTree(capacity)
            totals = []
            for i, v in zip(set_indices, set_values, strict=True):
                tree.set([i], [v])
                totals.append(tree.total)
            batched = SumTree(capacity)
            batched.set(set_indices, set_values)
        except (ValueError, IndexError, TypeError) as e:
            raise FixtureError(f"{fixture.path.name}: {name}: bad set calls ({e})") from None

        p = f"{name}/"
        rows.append(
            compare(p + "total_priority_after_each_set", np.array(totals),
                    fixture.get(p + "total_priority_after_each_set"), EXACT)
        )
        rows.append(compare(p + "nodes", tree.nodes, fixture.get(p + "nodes"), EXACT))
        rows.append(
            compare(p + "nodes (one vectorised set)", batched.nodes, fixture.get(p + "nodes"),
                    EXACT)
        )
        rows.append(
            compare(p + "total_priority", tree.total, fixture.get(p + "total_priority"), EXACT)
        )
        rows.append(
            compare(p + "leaf_values", tree.get(np.arange(capacity)),
                    fixture.get(p + "leaf_values"), EXACT)
        )
        if "highest_set" in meta:
            rows.append(compare(p + "highest_set", np.int64(tree.highest_set),
                                np.int64(meta["highest_set"]), EXACT))
        if "max_recorded_priority" in meta:
            rows.append(compare(p + "max_recorded_priority", tree.max_recorded_priority,
                                float(meta["max_recorded_priority"]), EXACT))

        queries = fixture.get(p + "sample_query_values").astype(np.float64)
        rows.append(compare(p + "sample_results", tree.sample(queries),
                            fixture.get(p + "sample_results"), EXACT))
        rng_queries = fixture.get(p + "sample_rng_query_values").astype(np.float32)
        rows.append(compare(p + "sample_rng_results", tree.sample(rng_queries),
                            fixture.get(p + "sample_rng_results"), EXACT))

        for key in sorted(arrays):
            m = _STRATIFIED.match(key)
            if not m:
                continue
            n = int(m.group(1))
            strat_q = fixture.get(p + key + "_queries").astype(np.float32)
            if strat_q.shape != (n,):
                raise FixtureError(
                    f"{fixture.path.name}: {p}{key}_queries has shape {strat_q.shape}, "
                    f"expected ({n},)"
                )
            rows.append(compare(p + key, tree.sample(strat_q), arrays[key], EXACT))
            i = np.arange(n, dtype=np.float32)
            outside = np.maximum(i / np.float32(n) - strat_q, 0) + np.maximum(
                strat_q - (i + 1) / np.float32(n), 0
            )
            rows.append(
                Row(p + key + "_queries in strata", float(outside.max()), 0.0,
                    bool(outside.max() == 0.0))
            )
    return rows
