"""Reading, writing and comparing fixture files (``X.npz`` + ``X.json`` companion).

Format (shared with the official fixtures): ``X.npz`` written by
``np.savez_compressed`` with flat string keys (``params/encoder/...``); ``X.json``
with at least ``description``, ``versions`` and ``arrays`` (every array's shape and
dtype in storage order). Files written by bbf_jax also carry ``"kind"``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import platform
import zipfile
from collections.abc import Iterable, Mapping

import numpy as np

from bbf_jax.tolerance import Tolerance, relative_error_norm


class FixtureError(Exception):
    """A fixture file that cannot be read or interpreted (message names the problem)."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One compared array: ``ok`` iff ``max_abs_err <= tol`` (and shapes match), and
    ``rel_err <= rel_tol`` where a relative-norm bound applies."""

    name: str
    max_abs_err: float
    tol: float
    ok: bool
    note: str = ""
    rel_err: float | None = None
    rel_tol: float | None = None


@dataclasses.dataclass
class Fixture:
    path: pathlib.Path
    arrays: dict[str, np.ndarray]
    meta: dict

    def get(self, key: str) -> np.ndarray:
        try:
            return self.arrays[key]
        except KeyError:
            raise FixtureError(f"{self.path.name}: missing array {key!r}") from None

    def subtree(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays under ``prefix/`` as a flat dict keyed by the remaining path."""
        p = prefix.rstrip("/") + "/"
        return {k[len(p):]: v for k, v in self.arrays.items() if k.startswith(p)}


def load_fixture(path: str | pathlib.Path) -> Fixture:
    """Loads ``X.npz`` (or ``X.json`` alone for JSON-only kinds) and its companion."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FixtureError(f"{path}: no such file")
    json_path = path.with_suffix(".json")
    meta: dict = {}
    if json_path.exists():
        try:
            meta = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FixtureError(f"{json_path.name}: not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise FixtureError(f"{json_path.name}: top level must be a JSON object")
    arrays: dict[str, np.ndarray] = {}
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise FixtureError(f"{path.name}: not a readable npz file ({e})") from None
        declared = meta.get("arrays")
        if isinstance(declared, dict):
            for key, spec in declared.items():
                if key not in arrays:
                    raise FixtureError(f"{path.name}: array {key!r} listed in the JSON is missing")
                if list(arrays[key].shape) != list(spec.get("shape", arrays[key].shape)):
                    raise FixtureError(
                        f"{path.name}: array {key!r} has shape {list(arrays[key].shape)}, "
                        f"the JSON says {spec.get('shape')}"
                    )
    elif path.suffix != ".json":
        raise FixtureError(f"{path.name}: expected a .npz (or .json) fixture file")
    return Fixture(path=path, arrays=arrays, meta=meta)


def library_versions() -> dict:
    import flax
    import jax
    import jaxlib
    import optax

    from bbf_jax import __version__

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "bbf_jax": __version__,
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def save_fixture(
    path: str | pathlib.Path, kind: str, arrays: Mapping[str, np.ndarray], meta: Mapping
) -> pathlib.Path:
    """Writes ``path`` (.npz, compressed) and its JSON companion in the shared format."""
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        raise FixtureError(f"{path}: output must end in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez_compressed(path, **arrays)
    companion = {"kind": kind, "description": "", **dict(meta)}
    companion["versions"] = library_versions()
    companion["arrays"] = {
        k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in arrays.items()
    }
    path.with_suffix(".json").write_text(json.dumps(companion, indent=1, default=_jsonable))
    return path


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def compare(name: str, actual, expected, tol: Tolerance | float) -> Row:
    """Compares ``actual`` with ``expected`` under a :class:`~bbf_jax.tolerance.Tolerance`
    (a float or array means an elementwise bound). Integer and boolean arrays are always compared
    exactly; non-finite entries must sit at the same places with the same values. The
    row's error and bound are those of the element closest to (or furthest past) its
    bound, which for a scalar bound is the largest error."""
    if not isinstance(tol, Tolerance):
        tol = Tolerance(tol)
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return Row(name, float("inf"), tol.atol, False, f"shape {actual.shape} != {expected.shape}")
    if expected.size == 0:
        return Row(name, 0.0, tol.atol, True)
    if expected.dtype.kind in "biu" and actual.dtype.kind in "biu":
        err = float(np.max(np.abs(actual.astype(np.int64) - expected.astype(np.int64))))
        return Row(name, err, 0.0, err == 0.0)
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    same_nonfinite = np.array_equal(np.isfinite(a), np.isfinite(e)) and np.array_equal(
        a[~np.isfinite(a)], e[~np.isfinite(e)]
    )
    finite = np.isfinite(e)
    # The row reports the element that comes closest to (or goes furthest past) its bound.
    diff = np.abs(a[finite] - e[finite])
    bound = np.broadcast_to(np.asarray(tol.atol, np.float64), e.shape)[finite]
    worst = int(np.argmax(diff - bound)) if diff.size else None
    err, atol = (float(diff[worst]), float(bound[worst])) if diff.size else (0.0, 0.0)
    ok = bool(same_nonfinite and np.all(diff <= bound))
    if tol.rel_norm is None:
        return Row(name, err, atol, ok)
    both = finite & np.isfinite(a)
    rel = relative_error_norm(a[both], e[both])
    return Row(name, err, atol, ok and rel <= tol.rel_norm, rel_err=rel, rel_tol=tol.rel_norm)


def compare_trees(
    prefix: str, actual: Mapping, expected: Mapping, tol: Tolerance | float
) -> list[Row]:
    """Rows for two flat ``{path: array}`` dicts; a missing or extra key is a failed row."""
    atol = tol.atol if isinstance(tol, Tolerance) else float(tol)
    rows = []
    for key in sorted(set(actual) | set(expected)):
        name = f"{prefix}{key}"
        if key not in actual:
            rows.append(Row(name, float("inf"), atol, False, "missing in bbf_jax output"))
        elif key not in expected:
            rows.append(Row(name, float("inf"), atol, False, "not in the fixture"))
        else:
            rows.append(compare(name, actual[key], expected[key], tol))
    return rows


def flatten_tree(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict -> flat ``{'a/b/c': array}`` (Flax key paths joined by '/')."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_tree(value, path + "/"))
        else:
            out[path] = np.asarray(value)
    return out


def unflatten_tree(flat: Mapping[str, np.ndarray]) -> dict:
    """Flat ``{'a/b/c': array}`` -> nested dict."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        parts = key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def format_rows(rows: Iterable[Row]) -> str:
    rows = list(rows)
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"{'array':<{width}}  {'max_abs_err':>12}  {'tol':>9}  ok"]
    for r in rows:
        notes = [r.note] if r.note else []
        if r.rel_tol is not None:
            notes.append(f"relative norm {r.rel_err:.2e} <= {r.rel_tol:.1e}")
        note = f"  ({'; '.join(notes)})" if notes else ""
        lines.append(
            f"{r.name:<{width}}  {r.max_abs_err:>12.3e}  {r.tol:>9.1e}  "
            f"{'ok' if r.ok else 'FAIL'}{note}"
        )
    return "\n".join(lines)


def verify_files(files, check) -> int:
    """Runs ``check(fixture) -> (label, rows)`` on each file and prints its table.

    Returns the exit status: 0 when every row is ok, 1 on any mismatch, 2 when a file
    cannot be used (one ``error:`` line on stderr, no traceback).
    """
    import sys

    status = 0
    for f in files:
        try:
            label, rows = check(load_fixture(f))
        except FixtureError as e:
            print(f"error: {e}", file=sys.stderr)
            status = max(status, 2)
            continue
        if not rows:
            print(f"error: {f}: nothing to compare", file=sys.stderr)
            status = max(status, 2)
            continue
        print(f"== {f} ({label})")
        print(format_rows(rows))
        bad = [r for r in rows if not r.ok]
        print(f"{len(rows) - len(bad)} passed, {len(bad)} failed")
        if bad:
            status = max(status, 1)
    return status
