"""bbf-report end to end: the official aggregates, written files and plots, errors, curves."""

import csv
import json
import re
import subprocess
import sys

import pytest
from helpers import write_eval

from bbf_jax.report.cli import main
from bbf_jax.report.curves import random_baseline, read_evals, read_log, running_mean
from bbf_jax.report.runs import load_official

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAST_LINE = re.compile(r"^iqm: (\d+\.\d{3}) \[(\d+\.\d{3}), (\d+\.\d{3})\]$")




def run_cli(args, capsys):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out.strip().splitlines(), err


def aggregates(path):
    with open(path) as f:
        return {(r["set"], r["metric"]): r for r in csv.DictReader(f)}


def check_files(out):
    for name in ("report.md", "per_game.csv", "aggregates.csv"):
        assert (out / name).stat().st_size > 0
    for name in ("aggregates.png", "performance_profile.png", "per_game.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


@pytest.mark.parametrize("name, point, ci, median, mean", [
    # docs/anchors.md section 2 (5000 resamples); the CI moves with the bootstrap seed/reps.
    ("official-rr2", 0.940, (0.876, 1.013), 0.755, 2.175),
    ("official-rr8", 1.033, (0.999, 1.068), 0.879, 2.236),
])
def test_official_set_alone_reproduces_published_aggregates(
        tmp_path, capsys, name, point, ci, median, mean):
    status, lines, _ = run_cli(["--compare", name, "--out", tmp_path, "--reps", 2000], capsys)
    assert status == 0
    m = LAST_LINE.match(lines[-1])
    assert m, lines[-1]
    assert float(m[1]) == point
    assert float(m[2]) == pytest.approx(ci[0], abs=0.006)
    assert float(m[3]) == pytest.approx(ci[1], abs=0.006)
    rows = aggregates(tmp_path / "aggregates.csv")
    assert round(float(rows[name, "median"]["value"]), 3) == median
    assert round(float(rows[name, "mean"]["value"]), 3) == mean
    assert rows[name, "iqm"]["runs_per_game"] == ("14" if name == "official-rr2" else "52")
    check_files(tmp_path)
    report = (tmp_path / "report.md").read_text()
    if name == "official-rr8":
        assert "keeps its 52 lowest-numbered seeds and 156 run(s) are left out" in report
    else:
        assert "nothing dropped" in report


def test_runs_against_official_with_uneven_run_counts(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_eval(runs, "pong/0", "Pong", 0, [15.0, 17.0])
    write_eval(runs, "pong/1", "Pong", 1, [21.0])
    write_eval(runs, "pong/2", "Pong", 2, [-21.0])
    write_eval(runs, "breakout/0", "Breakout", 0, [400.0])
    write_eval(runs, "breakout/1", "Breakout", 1, [2.0])
    out = tmp_path / "rep"
    status, lines, _ = run_cli([runs, "--compare", "official-rr2", "--out", out,
                                "--reps", 500], capsys)
    assert status == 0
    assert any(line.startswith("P(runs > official-rr2): ") for line in lines)
    assert LAST_LINE.match(lines[-1])
    check_files(out)
    rows = aggregates(out / "aggregates.csv")
    assert rows["runs", "iqm"]["runs_per_game"] == "2" and rows["runs", "iqm"]["games"] == "2"
    # P(runs > RR2) by brute force over pairs; the aggregates keep seeds 0 and 1 per game.
    ours = {"Pong": [16.0, 21.0], "Breakout": [400.0, 2.0]}
    per_game_p = []
    for game, scores in ours.items():
        theirs = [r.raw_score for r in load_official("official-rr2") if r.game == game]
        pairs = [(a > b) + 0.5 * (a == b) for a in scores for b in theirs]
        per_game_p.append(sum(pairs) / len(pairs))
    poi = float(rows["runs > official-rr2", "probability_of_improvement"]["value"])
    assert poi == pytest.approx(sum(per_game_p) / 2, abs=1e-12)
    report = (out / "report.md").read_text()
    assert "Games analysed (2): Breakout, Pong." in report
    assert "keeps its 2 lowest-numbered seeds and 1 run(s) are left out" in report
    with open(out / "per_game.csv") as f:
        per_game = {(r["set"], r["game"]): r for r in csv.DictReader(f)}
    assert per_game["runs", "Pong"]["runs"] == "3"  # the per-game table uses all runs
    assert float(per_game["runs", "Pong"]["mean_raw"]) == pytest.approx(16.0 / 3)
    assert per_game["official-rr2", "Breakout"]["runs"] == "14"


def test_compare_with_run_directories(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed in range(3):
        write_eval(a, f"{seed}", "Boxing", seed, [30.0 + seed])
        write_eval(b, f"{seed}", "Boxing", seed, [10.0 + seed])
    write_eval(b, "krull", "Krull", 0, [5000.0])  # only in the comparison set
    status, lines, _ = run_cli([a, "--compare", b, "--out", tmp_path / "rep", "--reps", 200],
                               capsys)
    assert status == 0
    assert "P(runs > compare): 1.000 [1.000, 1.000]" in lines
    assert "Left out because not every set covers them: Krull." in (
        tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    ([], "nothing to report"),
    (["--compare", "official-rr2", "official-rr8"], "one official set alone"),
    (["--compare", "official-rr3"], "unknown official set"),
])
def test_bad_arguments(tmp_path, capsys, args, message):
    status, _, err = run_cli([*args, "--out", tmp_path], capsys)
    assert status == 2 and message in err


def test_malformed_and_unknown_game_fail_clearly(tmp_path, capsys):
    write_eval(tmp_path, "bad", "Surround", 0, [1.0])
    status, _, err = run_cli([tmp_path, "--out", tmp_path / "rep"], capsys)
    assert status == 2
    assert err.startswith("error: ") and "unknown Atari game 'Surround'" in err
    (tmp_path / "bad" / "eval.json").write_text('{"game": "Pong"')
    status, _, err = run_cli([tmp_path, "--out", tmp_path / "rep"], capsys)
    assert status == 2 and "cannot read eval.json" in err


def test_module_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bbf_jax.report", "--compare", "official-rr2", "--reps", "100",
         "--out", str(tmp_path)], capture_output=True, text=True, check=True)
    assert LAST_LINE.match(proc.stdout.strip().splitlines()[-1])


# ---- learning curves ----


def test_read_log_csv_and_jsonl_tolerate_gaps(tmp_path):
    (tmp_path / "train_log.csv").write_text(
        "agent_step,TotalLoss,SPRLoss,phase\n100,1.5,,train\n200,1.25,0.5,train\n")
    cols = read_log(tmp_path / "train_log.csv")
    assert sorted(cols) == ["SPRLoss", "TotalLoss", "agent_step"]  # 'phase' is not numeric
    assert cols["SPRLoss"][0] != cols["SPRLoss"][0] and cols["SPRLoss"][1] == 0.5
    (tmp_path / "episodes.jsonl").write_text(
        '{"agent_step": 10, "episode_return": 2}\n\n{"agent_step": 30, "episode_return": 4}\n')
    assert read_log(tmp_path / "episodes.jsonl")["episode_return"].tolist() == [2.0, 4.0]
    (tmp_path / "bad.jsonl").write_text('{"agent_step": 1}\n[1]\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: each line must be a JSON object"):
        read_log(tmp_path / "bad.jsonl")


def test_running_mean():
    assert running_mean([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]


def test_curves(tmp_path, capsys):
    full = tmp_path / "runs" / "pong_0"
    full.mkdir(parents=True)
    (full / "episodes.csv").write_text("agent_step,episode_return,episode_length\n" + "".join(
        f"{100 * i},{i % 7 - 3},{200 + i}\n" for i in range(1, 40)))
    (full / "train_log.csv").write_text("agent_step,TotalLoss,DQNLoss,SPRLoss,TDError,GradNorm\n"
                                        + "".join(f"{50 * i},{1 / i},{0.5 / i},,{i},{2.0}\n"
                                                  for i in range(1, 30)))
    partial = tmp_path / "runs" / "boxing_0"
    partial.mkdir()
    (partial / "episodes.csv").write_text("agent_step,episode_length\n10,5\n")
    (partial / "train_log.jsonl").write_text('{"agent_step": 1, "TotalLoss": 0.3}\n')
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "curves"
    status, lines, _ = run_cli(["--curves", tmp_path / "runs", empty, "--out", out], capsys)
    assert status == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["curves_runs_boxing_0.png", "curves_runs_pong_0.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) and p.stat().st_size > 5000 for p in pngs)
    notes = [line for line in lines if line.startswith("note: ")]
    assert any("boxing_0/episodes.csv: no numeric column(s) episode_return" in n for n in notes)
    assert any(f"{empty}: no episodes.csv" in n for n in notes)
    assert any(f"{empty}: no train_log.csv" in n for n in notes)
    status, _, err = run_cli(["--curves", empty, "--out", out], capsys)
    assert status == 2 and "no learning curve could be plotted" in err
    status, _, err = run_cli(["--curves", tmp_path / "absent", "--out", out], capsys)
    assert status == 2 and "not a directory" in err


def test_curves_read_evaluations_and_the_random_baseline(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "evals.jsonl").write_text(
        '{"game": "Boxing", "agent_steps": 500, "returns": [1, 3]}\n'
        '{"agent_steps": 1000}\n'
        '{"game": "Boxing", "agent_steps": 250, "returns": [0]}\n')
    final = {"game": "Boxing", "agent_steps": 2001, "returns": [4, 6],
             "verdict": {"random_policy": {"mean_return": -0.5}}}
    (run / "eval.json").write_text(json.dumps(final))
    notes = []
    evals = read_evals(run, notes)
    assert [(e["agent_steps"], e["returns"]) for e in evals] == [
        (250.0, [0.0]), (500.0, [1.0, 3.0]), (2001.0, [4.0, 6.0])]
    assert len(notes) == 1 and "evals.jsonl:2: unreadable evaluation" in notes[0]
    assert random_baseline(evals) == (-0.5, "random policy (same protocol)")
    # Without a random policy in the verdict (official budget, or an older eval.json):
    # the DQN Zoo random score of the game.
    del final["verdict"]
    (run / "eval.json").write_text(json.dumps(final))
    assert random_baseline(read_evals(run, [])) == (0.1, "random (DQN Zoo)")
    assert random_baseline([]) is None
