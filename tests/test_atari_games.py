"""The 55 games: names, ROMs, game sets and the random/human table against the official
score files."""

import csv
import importlib.resources

import ale_py
import pytest

from bbf_jax.atari_games import (
    ATARI_55_GAMES,
    ATARI_100K_GAMES,
    ATARI_SCORES,
    GAME_SETS,
    canonical_game_name,
    csv_game_name,
    human_normalized_score,
    rom_id,
)
from bbf_jax.envs import AtariEnv

F32_EPS = 2.0**-23


def _rows(fname):
    text = (importlib.resources.files("bbf_jax") / "data" / fname).read_text()
    rows = list(csv.reader(text.splitlines()))
    assert rows[0][1:] == ["seed", "game", "GameScoreAverage", "GameScoreNormalized"]
    return rows[1:]


def test_game_sets():
    assert len(ATARI_100K_GAMES) == 26 and len(ATARI_55_GAMES) == 55
    # The 26 keep their indices (checkpoints store a game's index in ATARI_55_GAMES).
    assert ATARI_55_GAMES[:26] == ATARI_100K_GAMES
    assert ATARI_100K_GAMES[0] == "Alien" and ATARI_100K_GAMES[-1] == "UpNDown"
    assert GAME_SETS == {"atari26": ATARI_100K_GAMES, "atari55": ATARI_55_GAMES}
    assert set(ATARI_SCORES) == set(ATARI_55_GAMES)


@pytest.mark.parametrize("fname", ["RR2_BBF.csv", "RR8_BBF.csv"])
def test_table_covers_the_official_files(fname):
    assert {canonical_game_name(r[2]) for r in _rows(fname)} == set(ATARI_55_GAMES)
    assert {r[2] for r in _rows(fname)} == {csv_game_name(g) for g in ATARI_55_GAMES}


@pytest.mark.parametrize("fname", ["RR2_BBF.csv", "RR8_BBF.csv"])
def test_normalised_scores_of_the_official_files_are_recomputed(fname):
    """Every row's GameScoreNormalized from its GameScoreAverage, with random = 0 for
    Video Pinball. The files hold float32 values: the bound is float32 rounding of the
    score and random score relative to (human - random), plus that of the result."""
    video_pinball = 0
    for row in _rows(fname):
        game, score, stored = canonical_game_name(row[2]), float(row[3]), float(row[4])
        hns = human_normalized_score(game, score, "official_csv")
        random_score, human_score = ATARI_SCORES[game]
        if game == "VideoPinball":
            random_score, video_pinball = 0.0, video_pinball + 1
            # DQN Zoo's random score (16256.9) does not give the file's value.
            assert human_normalized_score(game, score) != pytest.approx(stored, abs=1e-3)
        else:
            assert human_normalized_score(game, score) == hns
        tol = F32_EPS * ((abs(score) + abs(random_score)) / (human_score - random_score)
                         + abs(stored))
        assert abs(hns - stored) <= tol, (fname, row)
    assert video_pinball >= 14


def test_video_pinball_normalisations_by_hand():
    # DQN Zoo: (17667.9 - 16256.9) / (17667.9 - 16256.9) = 1; the official files: 17667.9 / 17667.9.
    assert human_normalized_score("VideoPinball", 17667.9) == 1.0
    assert human_normalized_score("video_pinball", 16256.9) == 0.0
    assert human_normalized_score("videopinball", 0.0, "official_csv") == 0.0
    assert human_normalized_score("VideoPinball", 8833.95, "official_csv") == 0.5
    assert human_normalized_score("Pong", -3.05, "official_csv") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown normalization 'rliable'"):
        human_normalized_score("Pong", 0.0, "rliable")


@pytest.mark.parametrize("name, canonical, rom", [
    ("montezuma_revenge", "MontezumaRevenge", "montezuma_revenge"),
    ("videopinball", "VideoPinball", "video_pinball"),
    ("WizardOfWor", "WizardOfWor", "wizard_of_wor"),
    ("riverraid", "Riverraid", "riverraid"),
    ("up_n_down", "UpNDown", "up_n_down"),
])
def test_name_forms(name, canonical, rom):
    assert canonical_game_name(name) == canonical and rom_id(name) == rom


def test_unknown_game():
    with pytest.raises(ValueError, match="unknown Atari game 'Surround'; valid names: Alien"):
        canonical_game_name("Surround")


def test_every_game_loads_in_ale_py():
    """Each of the 55 ROMs is shipped with ale-py and loads with a minimal action set."""
    assert {rom_id(g) for g in ATARI_55_GAMES} <= set(ale_py.roms.get_all_rom_ids())
    for game in ATARI_55_GAMES:
        assert 3 <= AtariEnv(game, seed=0).num_actions <= 18, game
