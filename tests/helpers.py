"""Small helpers shared by several test modules."""

from __future__ import annotations

import csv
import json
import pathlib
import shutil

import numpy as np


def edited_fixture_copy(src: pathlib.Path, dst: pathlib.Path, edit) -> pathlib.Path:
    """Copies the fixture ``src`` (``.npz`` + ``.json``) to ``dst`` (an ``.npz`` path),
    applying ``edit(arrays)`` (in place, on a ``{key: array}`` dict) to its arrays."""
    with np.load(src) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    np.savez_compressed(dst, **arrays)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def write_eval(root: pathlib.Path, name: str, game: str, seed: int, returns) -> pathlib.Path:
    """A run directory ``root/name`` holding a minimal eval.json at the official budget."""
    d = root / name
    d.mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps({
        "game": game, "seed": seed, "agent_steps": 100_000, "eval_episodes": len(returns),
        "returns": returns, "mean_return": sum(returns) / len(returns)}))
    return d


def csv_rows(path) -> list[dict]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with open(path) as f:
        return list(csv.DictReader(f))
