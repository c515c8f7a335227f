"""bbf-report game sets (--games atari26|atari55) and the Video Pinball normalisation."""

import csv

import pytest
from helpers import write_eval

from bbf_jax.report.cli import main


def run_cli(args, capsys):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out.strip().splitlines(), err


def read_csv(path, key):
    with open(path) as f:
        return {tuple(r[k] for k in key): r for r in csv.DictReader(f)}


@pytest.mark.parametrize("name, runs_per_game, iqm, median, mean", [
    # Point estimates (no bootstrap) over 55 games, Video Pinball as in the files.
    ("official-rr2", "12", 0.592, 0.571, 1.388),
    ("official-rr8", "16", 0.667, 0.687, 1.485),
])
def test_official_sets_on_55_games(tmp_path, capsys, name, runs_per_game, iqm, median, mean):
    status, lines, _ = run_cli(["--compare", name, "--games", "atari55", "--out", tmp_path,
                                "--reps", 50], capsys)
    assert status == 0
    assert ("note: VideoPinball is normalised with random = 0 in every set, as in the "
            "official score files") in lines
    rows = read_csv(tmp_path / "aggregates.csv", ("set", "metric"))
    assert rows[name, "iqm"]["games"] == "55"
    assert rows[name, "iqm"]["runs_per_game"] == runs_per_game
    assert [round(float(rows[name, m]["value"]), 3) for m in ("iqm", "median", "mean")] == [
        iqm, median, mean]


def _video_pinball_runs(root):
    write_eval(root, "vp0", "VideoPinball", 0, [17667.9])
    write_eval(root, "vp1", "video_pinball", 1, [8833.95])
    write_eval(root, "pong0", "Pong", 0, [14.6])
    write_eval(root, "pong1", "Pong", 1, [-20.7])


def test_video_pinball_uses_the_official_random_score_only_against_official_sets(
        tmp_path, capsys):
    runs = tmp_path / "runs"
    _video_pinball_runs(runs)
    # Against an official set: random = 0, so HNS 1.0 and 0.5.
    status, lines, _ = run_cli([runs, "--compare", "official-rr2", "--games", "atari55",
                                "--out", tmp_path / "a", "--reps", 50], capsys)
    assert status == 0 and any(line.startswith("note: VideoPinball") for line in lines)
    per_game = read_csv(tmp_path / "a" / "per_game.csv", ("set", "game"))
    assert float(per_game["runs", "VideoPinball"]["mean_hns"]) == pytest.approx(0.75)
    assert float(per_game["runs", "Pong"]["mean_hns"]) == pytest.approx(0.5)
    # bbf_jax's runs alone: DQN Zoo's random score 16256.9.
    status, lines, _ = run_cli([runs, "--games", "atari55", "--out", tmp_path / "b",
                                "--reps", 50], capsys)
    assert status == 0 and not any(line.startswith("note: VideoPinball") for line in lines)
    per_game = read_csv(tmp_path / "b" / "per_game.csv", ("set", "game"))
    dqn_zoo = [(x - 16256.9) / (17667.9 - 16256.9) for x in (17667.9, 8833.95)]
    assert float(per_game["runs", "VideoPinball"]["mean_hns"]) == pytest.approx(
        sum(dqn_zoo) / 2)


def test_runs_outside_the_game_set(tmp_path, capsys):
    runs = tmp_path / "runs"
    _video_pinball_runs(runs)
    status, _, err = run_cli([runs, "--out", tmp_path / "a", "--reps", 50], capsys)
    assert status == 2
    assert err == ("error: runs: runs of VideoPinball, outside the game set atari26; "
                   "use --games atari55\n")
    # The default game set cuts the official sets to the 26 Atari 100k games.
    status, _, _ = run_cli(["--compare", "official-rr8", "--out", tmp_path / "b",
                            "--reps", 50], capsys)
    assert status == 0
    assert read_csv(tmp_path / "b" / "aggregates.csv", ("set", "metric"))[
        "official-rr8", "iqm"]["games"] == "26"


def test_unknown_game_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--compare", "official-rr2", "--games", "atari57", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'atari57'" in capsys.readouterr().err
