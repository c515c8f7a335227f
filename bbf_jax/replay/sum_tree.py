"""Deterministic sum tree over replay priorities (spec §4.2).

The tree matches the official ``DeterministicSumTree`` number for number:

* node values are float64 and ``set`` propagates ``value - old_leaf`` deltas from the
  leaf to the root in call order, so every node is bit-identical to the official tree;
* sampling descends a float32 copy of the nodes ("go left iff query < left sum, else
  subtract the left sum and go right"), because the official descent is a jitted JAX
  kernel with x64 disabled; the leaf found is clipped to ``highest_set``.

Everything is vectorised over the queries / set calls; the float32 copy of the nodes is
kept up to date incrementally so that sampling never converts the whole tree.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Binary sum tree with ``capacity`` leaves (leaf i = transition index i).

    Attributes:
      capacity: number of leaves.
      depth: ``ceil(log2(capacity))`` levels below the root.
      low_idx: node index of leaf 0 (``2**depth - 1``).
      nodes: float64 array of ``2**(depth+1) - 1`` node sums (root at 0).
      highest_set: largest leaf index ever set (sampled indices are clipped to it).
      max_recorded_priority: running max of every value ever set (initially 1.0).
    """

    def __init__(self, capacity: int):
        if not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ValueError(f"SumTree capacity must be a positive int, got {capacity!r}")
        self.capacity = int(capacity)
        self.depth = int(np.ceil(np.log2(self.capacity)))
        self.low_idx = 2**self.depth - 1
        self.nodes = np.zeros(2 ** (self.depth + 1) - 1, np.float64)
        # float32 image of `nodes`, what the official float32 descent compares against.
        self._nodes32 = np.zeros(self.nodes.shape, np.float32)
        self.highest_set = 0
        self.max_recorded_priority = 1.0

    @property
    def total(self) -> float:
        """Sum of all leaves (the root), float64."""
        return float(self.nodes[0])

    def get(self, indices) -> np.ndarray:
        """Leaf values (float64) of ``indices`` (any integer array shape)."""
        indices = self._check_indices(indices)
        return self.nodes[indices + self.low_idx]

    def set(self, indices, values) -> None:
        """Sets leaves ``indices`` to ``values`` as sequential official ``set`` calls.

        Args:
          indices: (k,) integer leaf indices in ``[0, capacity)``; repeats allowed (the
            later call wins, with the official float64 rounding of the deltas).
          values: (k,) non-negative finite priorities.
        """
        indices = np.asarray(indices).ravel()
        values = np.asarray(values, np.float64).ravel()
        if values.shape != indices.shape:
            raise ValueError(
                f"SumTree.set: {indices.size} indices but {values.size} values"
            )
        if indices.size == 0:
            return
        indices = self._check_indices(indices)
        if not (np.isfinite(values).all() and (values >= 0).all()):
            raise ValueError(f"Sum tree values must be finite and >= 0, got {values}")
        nodes = indices + self.low_idx
        if indices.size == 1 or np.unique(indices).size == indices.size:
            deltas = values - self.nodes[nodes]
        else:
            # A repeated leaf's delta depends on the value the earlier call left there.
            deltas = np.empty_like(values)
            current: dict[int, float] = {}
            for k, (node, value) in enumerate(zip(nodes.tolist(), values.tolist(), strict=True)):
                old = current.get(node, self.nodes[node])
                deltas[k] = value - old
                current[node] = old + deltas[k]
        # Path of every call, level by level (leaf first): (depth + 1, k).
        # (The ancestor l levels up of node x is ((x + 1) >> l) - 1.)
        paths = ((nodes + 1) >> np.arange(self.depth + 1)[:, None]) - 1
        # np.add.at accumulates in index order: at every node the deltas arrive in the
        # order of the set calls, as with sequential official calls.
        np.add.at(self.nodes, paths.ravel(), np.broadcast_to(deltas, paths.shape).ravel())
        self._nodes32[paths] = self.nodes[paths]
        self.highest_set = max(self.highest_set, int(indices.max()))
        self.max_recorded_priority = max(self.max_recorded_priority, float(values.max()))

    def sample(self, query_values) -> np.ndarray:
        """Leaf indices for fractions of the total mass, by the official float32 descent.

        Args:
          query_values: (k,) fractions in [0, 1). float32 queries are scaled in float32
            (``query * float32(total)``, the official path for JAX-drawn queries);
            float64 queries are scaled in float64 and then rounded to float32 (the
            official path for a Python-float ``query_value``).

        Returns:
          (k,) int64 leaf indices, clipped to ``highest_set``.
        """
        q = np.asarray(query_values)
        if q.dtype == np.float32:
            target = q * np.float32(self.nodes[0])
        else:
            target = (q.astype(np.float64) * self.nodes[0]).astype(np.float32)
        return self.descend(target)

    def descend(self, targets) -> np.ndarray:
        """Official float32 descent of absolute mass values ``targets`` ((k,) float32)."""
        q = np.array(targets, np.float32, copy=True).ravel()
        idx = np.zeros(q.shape, np.int64)
        for _ in range(self.depth):
            left = 2 * idx + 1
            left_sum = self._nodes32[left]
            go_right = q >= left_sum
            q = np.where(go_right, q - left_sum, q)
            idx = left + go_right
        return np.minimum(idx - self.low_idx, self.highest_set)

    def stratified_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n indices, one per stratum: ``u_i ~ U[i/n, (i+1)/n)`` (float32), then descend.

        The official code draws ``u_i`` with ``jax.random.uniform(fold_in(key, i), ...)``;
        here the draws come from the numpy Generator ``rng`` (same distribution and
        float32 arithmetic, different random stream).

        Raises:
          ValueError: if the tree is empty (total priority 0).
        """
        if self.nodes[0] <= 0.0:
            raise ValueError("Cannot sample from an empty sum tree (total priority is 0)")
        return self.sample(self.stratified_queries(n, rng))

    @staticmethod
    def stratified_queries(n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) float32 stratified fractions ``lo_i + (hi_i - lo_i) * U`` (JAX's formula)."""
        i = np.arange(n, dtype=np.float32)
        lo = i / np.float32(n)
        hi = (i + 1) / np.float32(n)
        u = rng.random(n, dtype=np.float32)
        return np.maximum(lo, u * (hi - lo) + lo)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Complete state as flat arrays (nodes shared, not copied)."""
        return {
            "nodes": self.nodes,
            "highest_set": np.asarray(self.highest_set, np.int64),
            "max_recorded_priority": np.asarray(self.max_recorded_priority, np.float64),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        nodes = np.asarray(state["nodes"])
        if nodes.shape != self.nodes.shape or nodes.dtype != np.float64:
            raise ValueError(
                f"sum tree state has nodes {nodes.dtype}{list(nodes.shape)}, this tree "
                f"(capacity {self.capacity}) needs float64{list(self.nodes.shape)}"
            )
        np.copyto(self.nodes, nodes)
        self._nodes32[:] = self.nodes
        self.highest_set = int(state["highest_set"])
        self.max_recorded_priority = float(state["max_recorded_priority"])

    def _check_indices(self, indices) -> np.ndarray:
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"sum tree indices must be integers, got dtype {indices.dtype}")
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            raise IndexError(
                f"sum tree index out of range [0, {self.capacity}): "
                f"min {indices.min()}, max {indices.max()}"
            )
        return indices
