"""Shared test set-up: CPU when no GPU is present, a persistent JAX compilation cache, and
the ``parity`` numerics of the parity tests.

The cache lives in pytest's cache directory (a temporary directory when the cache
plugin is disabled) and is exported as ``JAX_COMPILATION_CACHE_DIR`` so that CLI
subprocesses started by the tests reuse it too. Both are set before any test module
imports JAX.

Parity tests pin their numerics with the module-scoped ``parity`` fixture
(``pytestmark = pytest.mark.usefixtures("parity")``): CPU backend (also on a machine with a
GPU; GPU tests say so explicitly), float32 and the highest matmul precision, for every
test of the module and every module-scoped fixture that asks for ``parity``. The
settings are JAX context managers, which jit reads at trace time and keys its cache on.
"""

import contextlib
import os
import pathlib
import tempfile

import pytest


def _has_gpu() -> bool:
    return pathlib.Path("/dev/nvidia0").exists() or pathlib.Path("/dev/nvidiactl").exists()


def pytest_configure(config):
    if not _has_gpu():
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache_dir = cache.mkdir("jax-compilation-cache")
    else:
        cache_dir = pathlib.Path(tempfile.gettempdir()) / "bbf_jax-jax-compilation-cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_dir))
    # Random-policy baselines (end-of-run verdicts) are cached; tests, some of which play
    # scripted envs, never read or write the user's cache.
    if "BBF_JAX_TEST_CACHE_DIR" not in os.environ:  # one directory for the workers too
        os.environ["BBF_JAX_TEST_CACHE_DIR"] = tempfile.mkdtemp(prefix="bbf_jax-test-cache-")
    os.environ["BBF_JAX_CACHE_DIR"] = os.environ["BBF_JAX_TEST_CACHE_DIR"]

    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    # Tiny test networks compile in well under the default 1 s threshold on fast machines.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(autouse=True)
def _fresh_gin_config():
    """Gin bindings are process-global: a config parsed in one test (e.g. through a CLI
    called in-process) must not change the dataclass defaults another test builds."""
    import gin

    gin.clear_config()
    yield
    gin.clear_config()


@contextlib.contextmanager
def parity_numerics():
    """CPU, float32 (no x64), ``jax_default_matmul_precision='highest'``."""
    import jax

    with (
        jax.default_device(jax.devices("cpu")[0]),
        jax.default_matmul_precision("highest"),
        jax.enable_x64(False),
    ):
        yield


@pytest.fixture(scope="module")
def parity():
    """The numerics of the parity tests for a whole module (see the module docstring)."""
    with parity_numerics():
        yield


# Longest files first (longest-processing-time scheduling): with ``--dist loadfile``
# (pyproject.toml) each file runs on one worker, which takes the next file in this order
# when it is free, so its module fixtures run once and the short files fill in at the end.
# Ranked by each file's summed test time in a full ``pytest -n 2 --durations=0`` run
# (files of 4 s and more; the rest follow in collection order).
_SLOW_FILES_FIRST = (
    "test_train_cli.py",
    "test_btr_agent.py",
    "test_learner.py",
    "test_network.py",
    "test_parallel.py",
    "test_brc_learns.py",
    "test_device_check.py",
    "test_btr_train.py",
    "test_seed_group.py",
    "test_sac_learner.py",
    "test_brc_learner.py",
    "test_runner_wiring.py",
    "test_torch_learner.py",
    "test_brc_network.py",
    "test_faults.py",
    "test_crosscheck_network_losses.py",
    "test_ppo_learner.py",
    "test_brc_train.py",
    "test_ppo_train.py",
    "test_sweep.py",
    "test_btr_network.py",
    "test_sac_train.py",
    "test_acting.py",
    "test_torch_btr.py",
    "test_torch_learner_small.py",
    "test_crosscheck_small_kinds.py",
    "test_btr_losses.py",
    "test_crosscheck_network_kind.py",
    "test_augment.py",
    "test_resets.py",
    "test_atari_games.py",
    "test_policy_math.py",
    "test_torch_losses.py",
    "test_diagnostics.py",
    "test_report_cli.py",
    "test_sticky_actions.py",
    "test_envs.py",
    "test_random_baseline.py",
    "test_torch_losses_kind.py",
    "test_sum_tree.py",
    "test_torch_network.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
