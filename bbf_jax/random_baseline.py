"""A uniformly random policy evaluated with a run's own evaluation protocol, cached.

A short run cannot be compared with published scores, but it can be compared with what
a random policy scores under exactly the same protocol: the same ``EnvConfig`` (frame
skip, no-ops, life-loss terminals, episode cap), the same number of episodes, one
episode per fresh env (``bbf_jax.envs.evaluate``), and epsilon-greedy with epsilon = 1,
i.e. every action drawn uniformly from the game's minimal action set.

Seeding: a run compares itself with the baseline of seed :data:`BASELINE_SEED`, the same
for every seed of a sweep, so one baseline per game and protocol serves them all. The
baseline's streams derive from ``numpy.random.SeedSequence([seed, STREAM])``, whose
entropy differs from every seed a run uses (``bbf_jax.seeds``), so it shares no random
stream with any run.

Cache: one JSON file per (game, protocol, episodes, seed) in ``bbf_jax.caches.cache_dir()``:
``$BBF_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/bbf_jax``, else ``~/.cache/bbf_jax``.
The file name holds a hash of the key and the file repeats the key; a file whose key
differs, or that cannot be read, is recomputed and rewritten. Writing is best effort: an
unwritable cache only costs the recomputation next time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np

from bbf_jax.atari_games import canonical_game_name
from bbf_jax.caches import cache_dir
from bbf_jax.config import EnvConfig
from bbf_jax.envs import AtariEnv, evaluate

# Second entropy word of the baseline's SeedSequence ("rand" in ASCII); far above any
# process index or agent step that the run pairs with its seed.
STREAM = 0x72616E64
BASELINE_SEED = 0  # the baseline every run is compared with
FORMAT = 1  # bumped when the way the baseline is computed changes


def cache_key(game: str, config: EnvConfig, num_episodes: int, seed: int) -> dict:
    """Everything the baseline's returns depend on, as a JSON-able dict."""
    protocol = dataclasses.asdict(config)
    protocol.pop("game")
    return {"format": FORMAT, "game": canonical_game_name(game), "protocol": protocol,
            "episodes": num_episodes, "seed": seed}


def _cache_path(key: dict) -> pathlib.Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"random_{key['game']}_{digest}.json"


def play_random(game: str, config: EnvConfig, num_episodes: int, seed: int,
                progress: bool = False) -> list[float]:
    """Returns of ``num_episodes`` uniformly random episodes under the evaluation protocol."""
    noop_seq, action_seq, env_seq = np.random.SeedSequence([seed, STREAM]).spawn(3)
    num_actions = AtariEnv(game, config).num_actions
    actions = np.random.default_rng(action_seq)
    result = evaluate(
        game, config, num_episodes,
        lambda states: actions.integers(0, num_actions, size=states.shape[0]),
        np.random.default_rng(noop_seq), seed=int(env_seq.generate_state(1)[0]),
        progress=progress,
    )
    return [float(r) for r in result.returns]


def random_returns(game: str, config: EnvConfig, num_episodes: int, seed: int,
                   progress: bool = False) -> list[float]:
    """``play_random``'s returns, from the cache when present (then stored there)."""
    key = cache_key(game, config, num_episodes, seed)
    path = _cache_path(key)
    try:
        cached = json.loads(path.read_text())
        if cached["key"] == key:
            return [float(r) for r in cached["returns"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    returns = play_random(game, config, num_episodes, seed, progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "returns": returns}))
        tmp.replace(path)
    except OSError:
        pass
    return returns
