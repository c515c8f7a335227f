"""The 26 Atari 100k games: names and the random/human reference scores.

Scores from DQN Zoo (``dqn_zoo/atari_data.py``), the same table as rliable and
Dopamine's ``atari_100k/normalization_utils.py``; human-normalised score is
``(score - random) / (human - random)``.
"""

from __future__ import annotations

import re

# Canonical (CamelCase) name -> (random score, human score).
ATARI_100K_SCORES: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "DemonAttack": (152.1, 1971.0),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Hero": (1027.0, 30826.4),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MsPacman": (307.3, 6951.6),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "RoadRunner": (11.5, 7845.0),
    "Seaquest": (68.4, 42054.7),
    "UpNDown": (533.4, 11693.2),
}

ATARI_100K_GAMES: tuple[str, ...] = tuple(ATARI_100K_SCORES)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {_key(g): g for g in ATARI_100K_GAMES}


def canonical_game_name(name: str) -> str:
    """'ChopperCommand', 'chopper_command' or 'choppercommand' -> 'ChopperCommand'.

    Raises:
      ValueError: for a name that is not one of the 26 Atari 100k games, listing them.
    """
    game = _BY_KEY.get(_key(name))
    if game is None:
        raise ValueError(
            f"unknown Atari 100k game {name!r}; valid names: {', '.join(ATARI_100K_GAMES)}"
        )
    return game


def csv_game_name(name: str) -> str:
    """Lower case without separators, as in the official score CSVs ('upndown')."""
    return _key(canonical_game_name(name))


def rom_id(name: str) -> str:
    """ale-py ROM id (snake_case): 'MsPacman' -> 'ms_pacman', 'UpNDown' -> 'up_n_down'."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", canonical_game_name(name)).lower()


def human_normalized_score(game: str, score: float) -> float:
    random_score, human_score = ATARI_100K_SCORES[canonical_game_name(game)]
    return (score - random_score) / (human_score - random_score)
