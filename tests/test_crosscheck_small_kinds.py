"""The ``c51_projection``, ``schedules`` and ``augmentation`` cross-check kinds and the
``verify`` CLI on the official fixtures and on corrupted copies."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import edited_fixture_copy

from bbf_jax.crosscheck import cli
from bbf_jax.crosscheck.fixture_io import load_fixture
from bbf_jax.crosscheck.kinds import augmentation, c51_projection, schedules

pytestmark = pytest.mark.usefixtures("parity")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
FILES = {
    "c51_projection": FIXTURES / "c51_projection.npz",
    "schedules": FIXTURES / "schedules.json",
    "augmentation": FIXTURES / "augmentation.npz",
}


def test_cli_verifies_the_three_fixtures():
    result = subprocess.run(
        [sys.executable, "-m", "bbf_jax.crosscheck", "verify", *map(str, FILES.values())],
        capture_output=True,
        text=True,
        env={"JAX_PLATFORMS": "cpu", "PATH": ""},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in FILES:
        assert f"(kind {kind})" in result.stdout
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize("kind", [c51_projection, schedules, augmentation])
def test_kinds_recognise_only_their_fixture(kind):
    for name, path in FILES.items():
        assert kind.matches(load_fixture(path)) == (name == kind.KIND)


EXACT_ROWS = {  # rows exact by construction: integers, indices, a 0/1 mask, x * (1/255)
    "c51_projection": {"gamma_with_terminal"},
    "schedules": {"update_horizon_n", "update_horizon_n_change_points/step",
                  "update_horizon_n_change_points/n", "n_gamma_table_every_500_steps/n",
                  "reset_schedule/reset_steps", "reset_schedule/final_next_reset",
                  "reset_schedule/cumulative_resets"},
    "augmentation": {"input/x_float"} | {f"partitionable_{m}/crop_offsets_{a}"
                                          for m in ("true", "false") for a in "hw"},
}


@pytest.mark.parametrize("kind", [c51_projection, schedules, augmentation])
def test_every_row_is_within_its_bound_and_exact_rows_have_none(kind):
    rows = kind.verify(load_fixture(FILES[kind.KIND]))
    assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
    exact = {r.name for r in rows if r.tol == 0.0}
    assert exact == EXACT_ROWS[kind.KIND]
    # The float bounds are a few float32 ulps of the values, no more (the projection:
    # K + 4 = 55 roundings of a row's mass <= 26.2; a normal draw: 32 of |r| <= 4.6).
    assert max(r.tol for r in rows) <= 2e-4


def _copy_npz(src, dst_dir, edit):
    """Copies ``src`` (npz + json) into ``dst_dir`` under the same name, applying ``edit``."""
    return edited_fixture_copy(src, dst_dir / src.name, edit)


def _run(capsys, path):
    status = cli.main(["verify", str(path)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_corrupted_projection_fails(tmp_path, capsys):
    def edit(a):
        a["projected"] = a["projected"].copy()
        a["projected"][3, 20] += 1e-4

    status, out, _ = _run(capsys, _copy_npz(FILES["c51_projection"], tmp_path, edit))
    assert status == 1
    assert any(line.startswith("projected") and "FAIL" in line for line in out.splitlines())
    assert "1 failed" in out


def test_corrupted_augmentation_fails(tmp_path, capsys):
    def edit(a):
        a["partitionable_false/crop_offsets_w"] = (a["partitionable_false/crop_offsets_w"] + 1) % 8

    status, out, _ = _run(capsys, _copy_npz(FILES["augmentation"], tmp_path, edit))
    assert status == 1
    failed = [line.split()[0] for line in out.splitlines() if "FAIL" in line]
    assert failed == ["partitionable_false/crop_offsets_w"]


def test_intensity_off_by_1e_4_relative_fails(tmp_path, capsys):
    def edit(a):
        noise = a["partitionable_true/intensity_noise"].copy()
        noise[2] *= np.float32(1 + 1e-4)
        a["partitionable_true/intensity_noise"] = noise

    status, out, _ = _run(capsys, _copy_npz(FILES["augmentation"], tmp_path, edit))
    assert status == 1
    failed = [line.split()[0] for line in out.splitlines() if "FAIL" in line]
    assert failed == ["partitionable_true/intensity_noise"]


def test_corrupted_schedules_fail(tmp_path, capsys):
    meta = json.loads(FILES["schedules"].read_text())
    meta["epsilon_train"]["2500"] = 0.75
    meta["reset_schedule"]["reset_events(training_steps at reset)"][2]["training_step"] = 60_000
    path = tmp_path / "schedules.json"
    path.write_text(json.dumps(meta))
    status, out, _ = _run(capsys, path)
    assert status == 1
    failed = [line.split()[0] for line in out.splitlines() if "FAIL" in line]
    assert failed == ["epsilon_train", "reset_schedule/reset_steps"]


def test_unusable_files_give_a_clear_error(tmp_path, capsys):
    meta = json.loads(FILES["schedules"].read_text())
    del meta["config"]["cycle_steps"]
    path = tmp_path / "schedules.json"
    path.write_text(json.dumps(meta))
    status, _, err = _run(capsys, path)
    assert status == 2
    assert "missing JSON field 'config/cycle_steps'" in err

    truncated = tmp_path / "c51_projection.npz"
    truncated.write_bytes(FILES["c51_projection"].read_bytes()[:1000])
    shutil.copy(FILES["c51_projection"].with_suffix(".json"), truncated.with_suffix(".json"))
    status, _, err = _run(capsys, truncated)
    assert status == 2
    assert "not a readable npz file" in err

    def drop(a):
        del a["input/weights"]

    (tmp_path / "sub").mkdir()
    status, _, err = _run(capsys, _copy_npz(FILES["c51_projection"], tmp_path / "sub", drop))
    assert status == 2
    assert "input/weights" in err
