"""The sweep manifest, ``<base_dir>/sweep.json``: the grid a sweep directory holds.

Written by the first ``bbf-sweep`` into a directory; read by ``--status``, ``--array_task``,
re-runs and ``bbf-report``. Keys: ``gin_files`` (absolute paths), ``gin_bindings``,
``variants`` (``[{"name", "gin_bindings"}]``), ``games``, ``seeds`` (together: the grid) and
``runs`` (``[{"index", "variant", "game", "seed", "dir"}]``, ``dir`` relative to base_dir).
Starting a different grid in the same directory is an error.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

from bbf_jax.sweep.grid import SweepError, SweepRun, Variant, expand

MANIFEST = "sweep.json"
_GRID_KEYS = ("gin_files", "gin_bindings", "variants", "games", "seeds")


@dataclass(frozen=True)
class Sweep:
    """A sweep directory's grid and runs."""

    base_dir: pathlib.Path
    gin_files: tuple[str, ...]
    gin_bindings: tuple[str, ...]
    variants: tuple[Variant, ...]
    games: tuple[str, ...]
    seeds: tuple[int, ...]

    @property
    def runs(self) -> list[SweepRun]:
        return expand(self.games, self.seeds, self.variants, self.gin_bindings)

    def to_json(self) -> dict:
        return {
            "gin_files": list(self.gin_files),
            "gin_bindings": list(self.gin_bindings),
            "variants": [{"name": v.name, "gin_bindings": list(v.gin_bindings)}
                         for v in self.variants],
            "games": list(self.games),
            "seeds": list(self.seeds),
            "runs": [{"index": r.index, "variant": r.variant.name, "game": r.game,
                      "seed": r.seed, "dir": r.rel_dir} for r in self.runs],
        }


def is_sweep_dir(path) -> bool:
    return (pathlib.Path(path) / MANIFEST).is_file()


def load(base_dir) -> Sweep:
    """The sweep of ``base_dir``; SweepError when it holds no (readable) manifest."""
    base_dir = pathlib.Path(base_dir)
    path = base_dir / MANIFEST
    if not path.is_file():
        raise SweepError(f"{base_dir} is not a sweep directory (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
        return Sweep(
            base_dir=base_dir,
            gin_files=tuple(data["gin_files"]),
            gin_bindings=tuple(data["gin_bindings"]),
            variants=tuple(Variant(v["name"], tuple(v["gin_bindings"]))
                           for v in data["variants"]),
            games=tuple(data["games"]),
            seeds=tuple(int(s) for s in data["seeds"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SweepError(f"{path}: unreadable sweep manifest: {e}") from None


def create_or_check(sweep: Sweep) -> bool:
    """Writes the manifest of a new sweep directory, or checks that the directory's manifest
    holds the same grid. Returns True when it was written.

    Raises:
      SweepError: the directory holds another grid (naming the keys that differ).
    """
    path = sweep.base_dir / MANIFEST
    if path.is_file():
        old = load(sweep.base_dir).to_json()
        new = sweep.to_json()
        differ = [k for k in _GRID_KEYS if old[k] != new[k]]
        if differ:
            raise SweepError(
                f"{sweep.base_dir} holds another sweep ({', '.join(differ)} differ from "
                f"its {MANIFEST}); use another --base_dir, or the same grid to resume it")
        return False
    sweep.base_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sweep.to_json(), indent=1) + "\n")
    return True
