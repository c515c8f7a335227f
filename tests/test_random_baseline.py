"""The random-policy baseline: the evaluation protocol with uniform actions, and its cache."""

import json

import numpy as np

from bbf_jax import random_baseline
from bbf_jax.config import EnvConfig

# Short episodes keep the emulator work small; the cap is part of the protocol.
PROTOCOL = EnvConfig(game="Breakout", max_steps_per_episode=40)


def test_protocol_and_determinism():
    returns = random_baseline.play_random("Breakout", PROTOCOL, 3, seed=5)
    assert len(returns) == 3 and all(r >= 0 for r in returns)
    assert random_baseline.play_random("Breakout", PROTOCOL, 3, seed=5) == returns


def test_cache_is_keyed_by_game_protocol_episodes_and_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("BBF_JAX_CACHE_DIR", str(tmp_path))
    assert random_baseline.cache_dir() == tmp_path
    first = random_baseline.random_returns("breakout", PROTOCOL, 2, seed=1)
    assert first == random_baseline.play_random("Breakout", PROTOCOL, 2, seed=1)
    (path,) = tmp_path.glob("random_Breakout_*.json")
    stored = json.loads(path.read_text())
    assert stored["key"] == random_baseline.cache_key("Breakout", PROTOCOL, 2, 1)
    # A cached file is read, not recomputed: a doctored value comes back.
    stored["returns"] = [123.0, 456.0]
    path.write_text(json.dumps(stored))
    assert random_baseline.random_returns("Breakout", PROTOCOL, 2, seed=1) == [123.0, 456.0]
    # Another protocol, episode count or seed is another entry.
    other = EnvConfig(game="Breakout", max_steps_per_episode=41)
    random_baseline.random_returns("Breakout", other, 2, seed=1)
    random_baseline.random_returns("Breakout", PROTOCOL, 1, seed=1)
    random_baseline.random_returns("Breakout", PROTOCOL, 2, seed=2)
    assert len(list(tmp_path.glob("random_Breakout_*.json"))) == 4
    # An unreadable file is recomputed and rewritten.
    path.write_text("{")
    assert random_baseline.random_returns("Breakout", PROTOCOL, 2, seed=1) == first
    assert json.loads(path.read_text())["returns"] == first


def test_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("BBF_JAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert random_baseline.cache_dir() == tmp_path / "bbf_jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert random_baseline.cache_dir().parts[-2:] == (".cache", "bbf_jax")


def test_uniform_actions_reach_every_action(monkeypatch):
    seen = []
    real = random_baseline.evaluate

    def spy(game, config, n, select_actions, rng, seed, progress=False):
        def record(states):
            actions = select_actions(states)
            seen.extend(actions.tolist())
            return actions
        return real(game, config, n, record, rng, seed, progress)

    monkeypatch.setattr(random_baseline, "evaluate", spy)
    random_baseline.play_random("Breakout", PROTOCOL, 2, seed=0)
    counts = np.bincount(seen, minlength=4)
    assert len(counts) == 4 and counts.min() > 0  # Breakout's 4 minimal actions
