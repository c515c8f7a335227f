"""The grid of a sweep: seeds, games and variants expanded into one run per combination.

A run is one ``bbf-train`` process (``python -m bbf_jax.train``) with the sweep's gin files,
its common bindings, the variant's bindings, ``EnvConfig.game`` and ``--seed``, writing to
``<base_dir>/<variant>/<game>/seed_<seed>/``: exactly the run a user would start by hand.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from bbf_jax.atari_games import ATARI_55_GAMES, GAME_SETS, canonical_game_name

DEFAULT_VARIANT = "default"
_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# Chosen by the grid (--games, --seeds), never by bindings.
_GRID_BINDING = re.compile(r"\s*(RunConfig\s*\.\s*seed|EnvConfig\s*\.\s*game)\s*=")


class SweepError(ValueError):
    """An argument, grid or sweep directory that cannot be used; the message names it."""


@dataclass(frozen=True)
class Variant:
    """A named set of gin bindings applied on top of the sweep's files and bindings."""

    name: str
    gin_bindings: tuple[str, ...]


@dataclass(frozen=True)
class SweepRun:
    """One (variant, game, seed) of the grid; ``index`` is its position in the grid."""

    index: int
    variant: Variant
    game: str
    seed: int

    @property
    def rel_dir(self) -> str:
        """Run directory relative to the sweep's base_dir: '<variant>/<game>/seed_<seed>'."""
        return f"{self.variant.name}/{self.game}/seed_{self.seed}"


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-9', '0,3,5' or '0-2,7' -> the seeds in the given order (inclusive ranges)."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise SweepError(f"--seeds {text!r}: expected seeds like 0-9, 0,3,5 or 0-2,7")
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        if hi < lo:
            raise SweepError(f"--seeds {text!r}: the range {lo}-{hi} is empty")
        if hi >= 2**32:
            raise SweepError(f"--seeds {text!r}: seeds must be in [0, 2**32)")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds {text!r}: a seed is given twice")
    return tuple(seeds)


def parse_games(items: list[str]) -> tuple[str, ...]:
    """Game sets ('atari26', 'atari55') and game names (any spelling bbf-train accepts),
    also comma-separated, -> canonical game names in the given order, each once."""
    games: list[str] = []
    for item in items:
        for name in filter(None, (s.strip() for s in item.split(","))):
            if name in GAME_SETS:
                games.extend(GAME_SETS[name])
                continue
            try:
                games.append(canonical_game_name(name))
            except ValueError:
                raise SweepError(
                    f"--games: unknown game or game set {name!r}; game sets: "
                    f"{', '.join(GAME_SETS)}; games: {', '.join(ATARI_55_GAMES)}") from None
    if not games:
        raise SweepError("--games: no game given")
    return tuple(dict.fromkeys(games))


def _check_bindings(bindings, where: str) -> None:
    for b in bindings:
        m = _GRID_BINDING.match(b)
        if m:
            raise SweepError(f"{where}: {b!r} binds {m.group(1).replace(' ', '')}, which the "
                             "sweep sets from --games and --seeds")


def parse_variant(text: str) -> Variant:
    """'NAME=BINDING; BINDING; ...' -> Variant (bindings separated by ';', may be empty)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not _VARIANT_NAME.fullmatch(name):
        raise SweepError(
            f"--variant {text!r}: expected NAME=BINDINGS with NAME of letters, digits and "
            "_.+- and bindings separated by ';', e.g. rr8=\"AgentConfig.replay_ratio = 256\"")
    if name.startswith("official-"):
        raise SweepError(f"--variant {name}: names starting with 'official-' denote the "
                         "official score sets in bbf-report")
    bindings = tuple(b.strip() for b in rest.split(";") if b.strip())
    _check_bindings(bindings, f"--variant {name}")
    return Variant(name, bindings)


def expand(games, seeds, variants, gin_bindings=()) -> list[SweepRun]:
    """Every (variant, game, seed), variant-major then game then seed; ``variants`` default
    to one variant named 'default' without extra bindings."""
    _check_bindings(gin_bindings, "--gin_bindings")
    variants = list(variants) or [Variant(DEFAULT_VARIANT, ())]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise SweepError(f"--variant: a variant name is given twice ({', '.join(names)})")
    combos = [(v, g, s) for v in variants for g in games for s in seeds]
    return [SweepRun(i, v, g, s) for i, (v, g, s) in enumerate(combos)]


def train_command(run: SweepRun, gin_files, gin_bindings, base_dir, python=None) -> list[str]:
    """The bbf-train command line of ``run`` (bindings: common, variant, then the game)."""
    return [python or sys.executable, "-m", "bbf_jax.train", "--gin_files", *gin_files,
            "--base_dir", str(base_dir / run.rel_dir), "--seed", str(run.seed), "--no_progress",
            "--gin_bindings", *gin_bindings, *run.variant.gin_bindings,
            f"EnvConfig.game = '{run.game}'"]


def validate(gin_files, gin_bindings, variants, game: str) -> None:
    """Parses every variant's configuration (with ``game``) before any run starts, so that a
    typo fails once with one line instead of in every run."""
    from bbf_jax import agents, gin_utils

    for v in variants:
        try:
            cfg = gin_utils.parse(gin_files, [*gin_bindings, *v.gin_bindings,
                                              f"EnvConfig.game = '{game}'"])
            agents.derive(cfg)
        except ValueError as e:
            raise SweepError(f"variant {v.name}: {e}") from None
