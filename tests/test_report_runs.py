"""eval.json collection, the official score files, and the rectangular runs x games matrix."""

import csv
import importlib.resources
import json

import numpy as np
import pytest

from bbf_jax.atari_games import ATARI_55_GAMES, ATARI_100K_GAMES, human_normalized_score
from bbf_jax.report.runs import (
    ReportInputError,
    collect_runs,
    find_eval_jsons,
    load_eval_json,
    load_official,
)
from bbf_jax.report.scoreset import ScoreSet


def eval_record(game="Pong", seed=0, returns=(1.0, 2.0, 6.0), **overrides):
    """A well-formed eval.json payload, as the runner writes it (overrides replace keys)."""
    mean_return = sum(returns) / len(returns) if returns else 0.0
    record = {
        "game": game, "seed": seed, "agent_steps": 100_000, "grad_steps": 200_000,
        "eval_episodes": len(returns), "returns": list(returns), "mean_return": mean_return,
        "config": {"replay_ratio": 64}, "bbf_jax_version": "0.1.0",
    }
    record.update(overrides)
    if "human_normalized_score" not in record:
        record["human_normalized_score"] = human_normalized_score(game, mean_return)
    return record


def write_run(root, name, record):
    d = root / name
    d.mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps(record))
    return d / "eval.json"


def test_load_eval_json(tmp_path):
    path = write_run(tmp_path, "run", eval_record("up_n_down", 3, returns=(533.4, 11693.2)))
    run = load_eval_json(path)
    assert (run.game, run.seed, run.agent_steps, run.version) == ("UpNDown", 3, 100_000, "0.1.0")
    assert run.raw_score == pytest.approx(6113.3)
    assert run.hns == pytest.approx(0.5, abs=1e-12)
    assert run.source == str(path)


def test_collect_runs_searches_directories_recursively(tmp_path):
    write_run(tmp_path, "sweep/pong/s0", eval_record("Pong", 0))
    write_run(tmp_path, "sweep/pong/s1", eval_record("Pong", 1))
    write_run(tmp_path, "sweep/breakout/s0", eval_record("Breakout", 0))
    loose = write_run(tmp_path, "other", eval_record("Breakout", 5))
    # The same file named twice (directory and file) is read once.
    runs = collect_runs([tmp_path / "sweep", loose, tmp_path / "other"])
    assert sorted((r.game, r.seed) for r in runs) == [
        ("Breakout", 0), ("Breakout", 5), ("Pong", 0), ("Pong", 1)]
    assert len(find_eval_jsons([tmp_path])) == 4


@pytest.mark.parametrize("payload, message", [
    ("{not json", "cannot read eval.json"),
    ("[1, 2]", "must hold a JSON object"),
    (json.dumps({k: v for k, v in eval_record().items() if k != "returns"}),
     "lacks required key.*returns"),
    (json.dumps(eval_record(seed="0")), "'seed' has the wrong type"),
    (json.dumps(eval_record(seed=True)), "'seed' has the wrong type"),
    (json.dumps(eval_record(game="Surround", human_normalized_score=1.0)),
     "unknown Atari game 'Surround'"),
    (json.dumps(eval_record(returns=())), "non-empty list"),
    (json.dumps(eval_record() | {"returns": [1.0, "x"]}), "non-empty list"),
    (json.dumps(eval_record(eval_episodes=100)), "eval_episodes=100 but 3 returns"),
    (json.dumps(eval_record(mean_return=4.0)), "mean_return=4.0 is not the mean"),
    (json.dumps(eval_record(human_normalized_score=0.9)), "human_normalized_score=0.9"),
])
def test_malformed_eval_json_names_file_and_problem(tmp_path, payload, message):
    path = tmp_path / "eval.json"
    path.write_text(payload)
    with pytest.raises(ReportInputError, match=message) as err:
        collect_runs([tmp_path])
    assert str(path) in str(err.value)


def test_optional_keys_may_be_absent(tmp_path):
    record = eval_record()
    for key in ("human_normalized_score", "grad_steps", "config", "bbf_jax_version"):
        del record[key]
    run = load_eval_json(write_run(tmp_path, "r", record))
    assert run.version is None and run.hns == pytest.approx(human_normalized_score("Pong", 3.0))


def test_duplicate_run_and_missing_paths_are_errors(tmp_path):
    write_run(tmp_path, "a", eval_record("Pong", 1))
    write_run(tmp_path, "b", eval_record("pong", 1))
    with pytest.raises(ReportInputError, match="two results for Pong seed 1"):
        collect_runs([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match="no eval.json found"):
        collect_runs([tmp_path / "empty"])
    with pytest.raises(ReportInputError, match="no such file"):
        collect_runs([tmp_path / "absent"])


@pytest.mark.parametrize("name, rows, per_game_26, per_game_29", [
    ("official-rr2", 767, {14}, {12, 13, 14}), ("official-rr8", 2082, {52, 56, 60}, {16, 18, 20})])
def test_official_sets(name, rows, per_game_26, per_game_29):
    runs = load_official(name)
    assert len(runs) == rows
    s = ScoreSet(name, tuple(runs))
    assert s.games == ATARI_55_GAMES
    assert {len(s.by_game(g)) for g in ATARI_100K_GAMES} == per_game_26
    assert {len(s.by_game(g)) for g in ATARI_55_GAMES[26:]} == per_game_29
    assert s.only(ATARI_100K_GAMES).games == ATARI_100K_GAMES
    # The recomputed HNS matches the file's own GameScoreNormalized (float32 rounding;
    # tests/test_atari_games.py derives a per-row bound), Video Pinball included.
    fname = name.replace("official-rr", "RR") + "_BBF.csv"
    text = (importlib.resources.files("bbf_jax") / "data" / fname).read_text()
    stored = {line: float(row[4])
              for line, row in enumerate(csv.reader(text.splitlines()), start=1) if line > 1}
    for r in runs:
        assert r.hns == pytest.approx(stored[int(r.source.split(":")[1])], abs=2e-6)


def test_official_per_game_means_match_published_table():
    rr8 = ScoreSet("rr8", tuple(load_official("official-rr8")))
    by_game = {s.game: s for s in rr8.summary()}
    assert (by_game["Alien"].runs, round(by_game["Alien"].mean_raw, 1)) == (56, 1174.1)
    assert round(by_game["Breakout"].mean_hns, 3) == 12.336


def test_unknown_official_set():
    with pytest.raises(ReportInputError, match="unknown official set 'official-rr4'"):
        load_official("official-rr4")


def test_rectangular_matrix_keeps_lowest_seeds(tmp_path):
    # Pong seeds 5, 1, 3 and Breakout seeds 4, 2: 2 runs per game, Pong seed 5 left out.
    for game, seed, ret in [("Pong", 5, 9.0), ("Pong", 1, 1.0), ("Pong", 3, 3.0),
                            ("Breakout", 4, 4.0), ("Breakout", 2, 2.0)]:
        write_run(tmp_path, f"{game}{seed}", eval_record(game, seed, returns=(ret,)))
    s = ScoreSet("runs", tuple(collect_runs([tmp_path])))
    assert s.games == ("Breakout", "Pong")  # canonical order
    h = human_normalized_score
    expected = np.array([[h("Breakout", 2.0), h("Pong", 1.0)],
                         [h("Breakout", 4.0), h("Pong", 3.0)]])
    np.testing.assert_array_equal(s.matrix(), expected)
    np.testing.assert_array_equal(s.matrix(("Pong",)), [[h("Pong", 1.0)], [h("Pong", 3.0)],
                                                         [h("Pong", 9.0)]])
    note = s.rectangular_note()
    assert "2 run(s) per game x 2 game(s)" in note and "(Pong 1)" in note
    assert "nothing dropped" in s.rectangular_note(("Breakout",))
    pong = {x.game: x for x in s.summary()}["Pong"]
    assert (pong.runs, pong.mean_raw) == (3, pytest.approx(13.0 / 3))
    with pytest.raises(ReportInputError, match="no runs of Alien"):
        s.matrix(("Alien", "Pong"))
    with pytest.raises(ReportInputError, match="holds no runs"):
        ScoreSet("empty", ())
