"""Atari games: names, game sets and the random/human reference scores.

``ATARI_100K_GAMES`` are the 26 games of the Atari 100k benchmark (game set ``atari26``);
``ATARI_55_GAMES`` adds the 29 other games of the official BBF score files
(``RR2_BBF.csv``, ``RR8_BBF.csv``: the 57 Atari games of DQN Zoo without Defender and
Surround), game set ``atari55``.

Scores from DQN Zoo (``google-deepmind/dqn_zoo``, ``dqn_zoo/atari_data.py``), the same
table as rliable and Dopamine's ``atari_100k/normalization_utils.py``; human-normalised
score is ``(score - random) / (human - random)``. The official score files normalise
Video Pinball with random = 0 instead of 16,256.9 (normalisation ``'official_csv'``);
bbf_jax's own scores always use DQN Zoo's value, and ``bbf-report`` uses the official
files' value only to compare with those files.
"""

from __future__ import annotations

import re

# Canonical (CamelCase, as in '<Game>NoFrameskip-v4') name -> (random score, human score).
_ATARI_100K_SCORES: dict[str, tuple[float, float]] = {
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
_OTHER_SCORES: dict[str, tuple[float, float]] = {
    "Asteroids": (719.1, 47388.7),
    "Atlantis": (12850.0, 29028.1),
    "BeamRider": (363.9, 16926.5),
    "Berzerk": (123.7, 2630.4),
    "Bowling": (23.1, 160.7),
    "Centipede": (2090.9, 12017.0),
    "DoubleDunk": (-18.6, -16.4),
    "Enduro": (0.0, 860.5),
    "FishingDerby": (-91.7, -38.7),
    "Gravitar": (173.0, 3351.4),
    "IceHockey": (-11.2, 0.9),
    "MontezumaRevenge": (0.0, 4753.3),
    "NameThisGame": (2292.3, 8049.0),
    "Phoenix": (761.4, 7242.6),
    "Pitfall": (-229.4, 6463.7),
    "Riverraid": (1338.5, 17118.0),
    "Robotank": (2.2, 11.9),
    "Skiing": (-17098.1, -4336.9),
    "Solaris": (1236.3, 12326.7),
    "SpaceInvaders": (148.0, 1668.7),
    "StarGunner": (664.0, 10250.0),
    "Tennis": (-23.8, -8.3),
    "TimePilot": (3568.0, 5229.2),
    "Tutankham": (11.4, 167.6),
    "Venture": (0.0, 1187.5),
    "VideoPinball": (16256.9, 17667.9),
    "WizardOfWor": (563.5, 4756.5),
    "YarsRevenge": (3092.9, 54576.9),
    "Zaxxon": (32.5, 9173.3),
}
ATARI_SCORES: dict[str, tuple[float, float]] = {**_ATARI_100K_SCORES, **_OTHER_SCORES}

ATARI_100K_GAMES: tuple[str, ...] = tuple(_ATARI_100K_SCORES)
# The 26 first, then the 29 others: checkpoints store a game's index in this tuple.
ATARI_55_GAMES: tuple[str, ...] = tuple(ATARI_SCORES)
GAME_SETS: dict[str, tuple[str, ...]] = {"atari26": ATARI_100K_GAMES, "atari55": ATARI_55_GAMES}

# Random scores of the official score files where they differ from DQN Zoo.
_OFFICIAL_CSV_RANDOM = {"VideoPinball": 0.0}
NORMALIZATIONS = ("dqn_zoo", "official_csv")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {_key(g): g for g in ATARI_55_GAMES}


def canonical_game_name(name: str) -> str:
    """'ChopperCommand', 'chopper_command' or 'choppercommand' -> 'ChopperCommand'.

    Raises:
      ValueError: for a name that is not one of the 55 games, listing them.
    """
    game = _BY_KEY.get(_key(name))
    if game is None:
        raise ValueError(
            f"unknown Atari game {name!r}; valid names: {', '.join(ATARI_55_GAMES)}"
        )
    return game


def csv_game_name(name: str) -> str:
    """Lower case without separators, as in the official score CSVs ('upndown')."""
    return _key(canonical_game_name(name))


def rom_id(name: str) -> str:
    """ale-py ROM id (snake_case): 'MsPacman' -> 'ms_pacman', 'UpNDown' -> 'up_n_down'."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", canonical_game_name(name)).lower()


def human_normalized_score(game: str, score: float, normalization: str = "dqn_zoo") -> float:
    """``(score - random) / (human - random)`` with the DQN Zoo table.

    ``normalization='official_csv'`` uses the official score files' random scores
    (Video Pinball: 0 instead of 16,256.9; every other game as DQN Zoo).

    Raises:
      ValueError: for an unknown game or normalisation.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"unknown normalization {normalization!r}; choose from {list(NORMALIZATIONS)}")
    game = canonical_game_name(game)
    random_score, human_score = ATARI_SCORES[game]
    if normalization == "official_csv":
        random_score = _OFFICIAL_CSV_RANDOM.get(game, random_score)
    return (score - random_score) / (human_score - random_score)
