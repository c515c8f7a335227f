"""Sum tree (spec §4.2): official float64 set / float32 descent semantics, sampling
frequencies, the official ``sum_tree`` fixture and its ``bbf-crosscheck`` verification."""

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bbf_jax.crosscheck.fixture_io import load_fixture
from bbf_jax.crosscheck.kinds import sum_tree as sum_tree_kind
from bbf_jax.replay import SumTree

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "sum_tree.npz"


def _sequential_reference(capacity, indices, values):
    """Official ``set`` one call at a time: float64 deltas propagated leaf -> root."""
    depth = int(np.ceil(np.log2(capacity)))
    low = 2**depth - 1
    nodes = np.zeros(2 ** (depth + 1) - 1)
    for i, v in zip(indices, values, strict=True):
        node = int(i) + low
        delta = float(v) - nodes[node]
        for _ in range(depth):
            nodes[node] += delta
            node = (node - 1) // 2
        nodes[node] += delta
    return nodes


def _descend_reference(nodes, depth, low, highest_set, target):
    """Official descent, one query, plain Python on float32 values."""
    q = np.float32(target)
    idx = 0
    for _ in range(depth):
        left = 2 * idx + 1
        left_sum = np.float32(nodes[left])
        if q < left_sum:
            idx = left
        else:
            q = np.float32(q - left_sum)
            idx = left + 1
    return min(idx - low, highest_set)


def test_hand_worked_tree():
    tree = SumTree(5)  # depth 3, leaves at nodes 7..11
    assert (tree.depth, tree.low_idx, tree.nodes.size) == (3, 7, 15)
    tree.set([0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 0.0])
    assert tree.total == 10.0
    np.testing.assert_array_equal(tree.nodes[:3], [10.0, 10.0, 0.0])
    np.testing.assert_array_equal(tree.nodes[3:5], [3.0, 7.0])
    # Cumulative mass [0,1) -> 0, [1,3) -> 1, [3,6) -> 2, [6,10) -> 3; leaf 4 has no mass.
    q = np.array([0.0, 0.099, 0.1, 0.29, 0.3, 0.59, 0.6, 0.99], np.float64)
    np.testing.assert_array_equal(tree.sample(q), [0, 0, 1, 1, 2, 2, 3, 3])
    # A query at the very top falls off the right edge and is clipped to highest_set.
    assert tree.sample(np.array([1.0]))[0] == 4
    tree.set([4], [0.5])
    assert tree.max_recorded_priority == 4.0 and tree.highest_set == 4
    np.testing.assert_array_equal(tree.get(np.array([4, 0])), [0.5, 1.0])


def test_highest_set_clips_and_max_priority_starts_at_one():
    tree = SumTree(8)
    assert tree.max_recorded_priority == 1.0
    tree.set([0, 1], [0.25, 0.5])
    assert tree.max_recorded_priority == 1.0 and tree.highest_set == 1
    # All mass below leaf 2: a top query walks right into empty leaves, then clipped.
    assert tree.sample(np.array([1.0], np.float32))[0] == 1


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 70),
    data=st.data(),
)
def test_vectorised_set_and_descent_match_sequential_reference(capacity, data):
    k = data.draw(st.integers(1, 40))
    indices = data.draw(st.lists(st.integers(0, capacity - 1), min_size=k, max_size=k))
    values = data.draw(
        st.lists(st.floats(0, 5, allow_nan=False).map(lambda x: round(x, 3)),
                 min_size=k, max_size=k)
    )
    tree = SumTree(capacity)
    split = data.draw(st.integers(0, k))
    tree.set(indices[:split], values[:split])
    tree.set(indices[split:], values[split:])
    expected = _sequential_reference(capacity, indices, values)
    np.testing.assert_array_equal(tree.nodes, expected)  # bit-exact, repeats included
    assert tree.highest_set == max(indices)
    assert tree.max_recorded_priority == max([1.0, *values])
    if tree.total > 0:
        q = np.array(data.draw(st.lists(st.floats(0, 1, exclude_max=True, width=32),
                                        min_size=1, max_size=20)), np.float32)
        targets = q * np.float32(tree.total)
        want = [_descend_reference(expected, tree.depth, tree.low_idx, tree.highest_set, x)
                for x in targets]
        np.testing.assert_array_equal(tree.sample(q), want)


def test_float32_descent_differs_from_float64_as_official():
    # Two leaves whose boundary is not representable in float32: 0.1 + 0.2 in float64.
    tree = SumTree(2)
    tree.set([0, 1], [0.1, 0.2])
    boundary = np.float32(0.1)  # float32(0.1) > 0.1, so float32 descent goes left here
    assert float(boundary) > 0.1
    assert tree.descend(np.array([boundary]))[0] == 1
    assert tree.descend(np.array([np.nextafter(boundary, np.float32(0))]))[0] == 0


def test_stratified_queries_lie_in_their_strata():
    rng = np.random.default_rng(0)
    for n in (1, 7, 64):
        q = SumTree.stratified_queries(n, rng)
        assert q.dtype == np.float32
        i = np.arange(n, dtype=np.float32)
        assert np.all(q >= i / np.float32(n)) and np.all(q <= (i + 1) / np.float32(n))


def test_stratified_sample_frequencies_follow_priorities():
    rng = np.random.default_rng(1)
    priorities = np.array([0.5, 1.0, 2.0, 0.0, 4.0, 1.5, 3.0, 0.25, 1.0, 2.75])
    tree = SumTree(priorities.size)
    tree.set(np.arange(priorities.size), priorities)
    draws = np.concatenate([tree.stratified_sample(64, rng) for _ in range(1500)])
    counts = np.bincount(draws, minlength=priorities.size)
    assert counts[3] == 0  # zero priority is never sampled
    keep = priorities > 0
    expected = draws.size * priorities[keep] / priorities.sum()
    chi2 = np.sum((counts[keep] - expected) ** 2 / expected)
    # Stratification only lowers the variance; the plain-multinomial bound still holds.
    assert chi2 < stats.chi2.ppf(0.999, keep.sum() - 1)


def test_empty_tree_and_bad_input_errors():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="empty sum tree"):
        tree.stratified_sample(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=">= 0"):
        tree.set([0], [-1.0])
    with pytest.raises(ValueError, match="finite"):
        tree.set([0], [np.nan])
    with pytest.raises(IndexError, match="out of range"):
        tree.set([4], [1.0])
    with pytest.raises(TypeError, match="integers"):
        tree.get(np.array([0.5]))
    with pytest.raises(ValueError, match="2 indices but 1 values"):
        tree.set([0, 1], [1.0])
    with pytest.raises(ValueError, match="positive int"):
        SumTree(0)


def test_state_dict_round_trip_and_mismatch():
    tree = SumTree(10)
    tree.set([1, 3, 9], [0.5, 2.5, 1.0])
    state = {k: np.array(v) for k, v in tree.state_dict().items()}
    other = SumTree(10)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.nodes, tree.nodes)
    assert (other.highest_set, other.max_recorded_priority) == (9, 2.5)
    q = np.linspace(0, 0.99, 17).astype(np.float32)
    np.testing.assert_array_equal(other.sample(q), tree.sample(q))
    with pytest.raises(ValueError, match="capacity 20"):
        SumTree(20).load_state_dict(state)


def test_fixture_kind_verifies_every_array():
    rows = sum_tree_kind.verify(load_fixture(FIXTURE))
    assert len(rows) >= 20
    bad = [r for r in rows if not r.ok]
    assert not bad, bad


def _run_cli(*files):
    return subprocess.run(
        [sys.executable, "-m", "bbf_jax.crosscheck", "verify", *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )


def test_cli_passes_on_fixture_and_rejects_corrupted_copies(tmp_path):
    ok = _run_cli(FIXTURE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "(kind sum_tree)" in ok.stdout and " 0 failed" in ok.stdout

    # A truncated archive cannot be read: one clear line, exit status 2.
    broken = tmp_path / "sum_tree.npz"
    broken.write_bytes(FIXTURE.read_bytes()[:5000])
    shutil.copy(FIXTURE.with_suffix(".json"), broken.with_suffix(".json"))
    res = _run_cli(broken)
    assert res.returncode == 2
    assert "not a readable npz file" in res.stderr and "Traceback" not in res.stderr

    # Changed numbers are read fine but fail the comparison: exit status 1.
    arrays = dict(np.load(FIXTURE))
    arrays["cap13/sample_results"] = arrays["cap13/sample_results"] + 1
    wrong = tmp_path / "wrong" / "sum_tree.npz"
    wrong.parent.mkdir()
    np.savez_compressed(wrong, **arrays)
    shutil.copy(FIXTURE.with_suffix(".json"), wrong.with_suffix(".json"))
    res = _run_cli(wrong)
    assert res.returncode == 1
    assert "cap13/sample_results" in res.stdout and "FAIL" in res.stdout
