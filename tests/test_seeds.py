"""bbf_jax.seeds: every purpose of a run gets its own seed or key, reproducibly."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bbf_jax.envs import env_seeds
from bbf_jax.envs.atari import ale_seed, sticky_seed
from bbf_jax.seeds import RunSeeds, learner_keys

NUM_EVAL_ENVS = 4
ROUNDS = (0, 1, 121, 100_001)  # agent steps at which evaluations run


def _key(k) -> tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(k, np.uint32))


def _first_words(seq: np.random.SeedSequence) -> tuple[int, ...]:
    """What a Generator seeded from ``seq`` starts from (its first state words)."""
    return tuple(int(x) for x in seq.generate_state(4))


def derivation(seed: int) -> dict[str, object]:
    """Every value a run consumes for seeding, by purpose, as the runner uses them."""
    seeds = RunSeeds(seed)
    train, init, act = learner_keys(seed)
    out = {
        "key/learner_train": _key(train),
        "key/network_init": _key(init),
        "key/acting": _key(act),
        "ale/train_env": ale_seed(seeds.train_env),
        "numpy/train_env_sticky": _first_words(sticky_seed(seeds.train_env)),
        "numpy/train_noops": _first_words(seeds.train_noops),
        "numpy/replay": _first_words(np.random.SeedSequence(seeds.replay)),
        "numpy/diagnostics": _first_words(seeds.diagnostics),
    }
    for r in ROUNDS:
        ev = seeds.evaluation(r)
        out[f"key/eval{r}_policy"] = _key(ev.policy_key)
        out[f"numpy/eval{r}_noops"] = _first_words(ev.noop_seed)
        for i, s in enumerate(env_seeds(ev.env_seed, NUM_EVAL_ENVS)):
            out[f"ale/eval{r}_env{i}"] = ale_seed(s)
            out[f"numpy/eval{r}_env{i}_sticky"] = _first_words(sticky_seed(s))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1])
def test_no_two_purposes_share_a_seed(seed):
    values = derivation(seed)
    # Keys, emulator seeds and Generator states are compared within their kind and
    # across kinds (an ALE seed equal to a key word would also be a shared seed).
    seen: dict[object, str] = {}
    for name, value in values.items():
        for word in value if isinstance(value, tuple) else (value,):
            assert word not in seen, f"{name} shares {word} with {seen[word]}"
            seen[word] = name


def test_same_seed_same_derivation_other_seed_other_values():
    assert derivation(3) == derivation(3)
    a, b = derivation(3), derivation(4)
    assert all(a[k] != b[k] for k in a)


def test_network_init_key_is_the_official_split():
    """The official agent's first split of PRNGKey(seed) (spec §11) gives the learner's
    training stream and the init key, which the official network fixture verifies."""
    root = jax.random.PRNGKey(7)
    train, init, act = learner_keys(7)
    official = jax.random.split(root)
    assert _key(train) == _key(official[0]) and _key(init) == _key(official[1])
    assert _key(act) not in (_key(train), _key(init))


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5])
def test_bad_seed_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"the run seed must be an integer in \[0, 2\*\*32\)"):
        RunSeeds(bad)
