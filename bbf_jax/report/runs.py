"""Final scores of training runs: one ``Run`` per run, read from eval.json or the official CSVs.

eval.json (written by the runner to ``base_dir/eval.json``, one per run) is a JSON object with

* ``game`` (str, any spelling ``canonical_game_name`` accepts), ``seed`` (int),
  ``agent_steps`` (int), ``eval_episodes`` (int), ``returns`` (list of numbers, one per
  evaluation episode, length ``eval_episodes``), ``mean_return`` (number, the mean of
  ``returns``): required;
* ``human_normalized_score`` (number): optional, checked against the value recomputed from
  ``mean_return`` when present;
* ``grad_steps``, ``config``, ``bbf_jax_version``: optional, ``bbf_jax_version`` is reported.

The official score files (``bbf_jax/data/RR{2,8}_BBF.csv``, header
``,seed,game,GameScoreAverage,GameScoreNormalized``) hold one row per run on 55 games;
HNS is recomputed from ``GameScoreAverage`` with the files' own table (DQN Zoo, except
random = 0 for Video Pinball: normalisation ``'official_csv'``), which matches the stored
column to float32 rounding.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import json
import math
import pathlib
from dataclasses import dataclass

from bbf_jax.atari_games import canonical_game_name
from bbf_jax.atari_games import human_normalized_score as _hns

OFFICIAL_SETS = {"official-rr2": "RR2_BBF.csv", "official-rr8": "RR8_BBF.csv"}

_REQUIRED = {
    "game": str,
    "seed": int,
    "agent_steps": int,
    "eval_episodes": int,
    "returns": list,
    "mean_return": (int, float),
}


class ReportInputError(ValueError):
    """An input file or argument that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class Run:
    """The final evaluation of one training run.

    Attributes:
      game: canonical game name ('ChopperCommand').
      seed: training seed.
      raw_score: mean undiscounted return over the evaluation episodes.
      hns: human-normalised score of ``raw_score``.
      source: where it was read from (file path, or 'RR2_BBF.csv:<line>').
      agent_steps: training length in agent steps (100k for the official CSVs).
      version: bbf_jax version that wrote it, when recorded.
    """

    game: str
    seed: int
    raw_score: float
    hns: float
    source: str
    agent_steps: int
    version: str | None = None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_eval_json(path: str | pathlib.Path) -> Run:
    """Read and validate one eval.json; raises ReportInputError naming the file and problem."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportInputError(f"{path}: cannot read eval.json: {e}") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: eval.json must hold a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ReportInputError(f"{path}: eval.json lacks required key(s) {', '.join(missing)}")
    for key, kind in _REQUIRED.items():
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise ReportInputError(f"{path}: {key!r} has the wrong type: {data[key]!r}")
    returns = data["returns"]
    if not returns or not all(_is_number(r) for r in returns):
        raise ReportInputError(f"{path}: 'returns' must be a non-empty list of finite numbers")
    if data["eval_episodes"] != len(returns):
        raise ReportInputError(
            f"{path}: eval_episodes={data['eval_episodes']} but {len(returns)} returns")
    mean_return = float(data["mean_return"])
    if not math.isclose(mean_return, math.fsum(returns) / len(returns), rel_tol=1e-5,
                        abs_tol=1e-6):
        raise ReportInputError(
            f"{path}: mean_return={mean_return} is not the mean of 'returns'")
    try:
        game = canonical_game_name(data["game"])
    except ValueError as e:
        raise ReportInputError(f"{path}: {e}") from None
    hns = _hns(game, mean_return)
    stored = data.get("human_normalized_score")
    if stored is not None and not (_is_number(stored) and math.isclose(
            stored, hns, rel_tol=1e-5, abs_tol=1e-6)):
        raise ReportInputError(
            f"{path}: human_normalized_score={stored!r} but {hns!r} is recomputed for "
            f"{game} from mean_return={mean_return}")
    version = data.get("bbf_jax_version")
    return Run(game=game, seed=data["seed"], raw_score=mean_return, hns=hns, source=str(path),
               agent_steps=data["agent_steps"], version=None if version is None else str(version))


def find_eval_jsons(paths) -> list[pathlib.Path]:
    """eval.json files named by ``paths``: a file is taken as is, a directory is searched
    recursively for files named eval.json. Sorted, each file once."""
    found: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            hits = sorted(p.rglob("eval.json"))
            if not hits:
                raise ReportInputError(f"{p}: no eval.json found under this directory")
            found.extend(hits)
        else:
            raise ReportInputError(f"{p}: no such file or directory")
    return sorted({f.resolve(): f for f in found}.values())


def check_unique(runs: list[Run]) -> list[Run]:
    """Reject two runs of the same (game, seed): one run must not be counted twice."""
    seen: dict[tuple[str, int], str] = {}
    for r in runs:
        other = seen.setdefault((r.game, r.seed), r.source)
        if other != r.source:
            raise ReportInputError(
                f"two results for {r.game} seed {r.seed}: {other} and {r.source}")
    return runs


def collect_runs(paths) -> list[Run]:
    """All runs found under ``paths`` (files or directories), validated and unique."""
    return check_unique([load_eval_json(f) for f in find_eval_jsons(paths)])


def renormalized(runs, normalization: str) -> list[Run]:
    """``runs`` with HNS recomputed from their raw scores with ``normalization``
    (``atari_games.NORMALIZATIONS``)."""
    return [dataclasses.replace(r, hns=_hns(r.game, r.raw_score, normalization)) for r in runs]


def load_official(name: str) -> list[Run]:
    """The official runs of 'official-rr2' or 'official-rr8' (55 games), normalised as the
    files are (``'official_csv'``: Video Pinball with random = 0)."""
    if name not in OFFICIAL_SETS:
        raise ReportInputError(f"unknown official set {name!r}; choose from {list(OFFICIAL_SETS)}")
    fname = OFFICIAL_SETS[name]
    text = (importlib.resources.files("bbf_jax") / "data" / fname).read_text()
    rows = csv.reader(text.splitlines())
    header = next(rows)
    if header[1:] != ["seed", "game", "GameScoreAverage", "GameScoreNormalized"]:
        raise ReportInputError(f"{fname}: unexpected header {header}")
    runs = []
    for line, row in enumerate(rows, start=2):
        game, raw = canonical_game_name(row[2]), float(row[3])
        runs.append(Run(game=game, seed=int(row[1]), raw_score=raw,
                        hns=_hns(game, raw, "official_csv"), source=f"{fname}:{line}",
                        agent_steps=100_000))
    return check_unique(runs)
