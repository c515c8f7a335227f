"""The cache directory and JAX's persistent compilation cache of ``bbf-train``."""

import os
import subprocess
import sys

from bbf_jax import caches


def test_compilation_cache_location_and_switches(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv(caches.COMPILATION_CACHE_ENV, raising=False)
    monkeypatch.setenv("BBF_JAX_CACHE_DIR", str(tmp_path))
    # On by default, under bbf_jax's cache directory.
    assert caches.compilation_cache_dir() == tmp_path / "jax-cache"
    monkeypatch.setenv(caches.COMPILATION_CACHE_ENV, str(tmp_path / "elsewhere"))
    assert caches.compilation_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv(caches.COMPILATION_CACHE_ENV, "off")
    assert caches.compilation_cache_dir() is None
    # JAX's own setting is used as it is.
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert caches.compilation_cache_dir() == tmp_path / "jax"
    monkeypatch.delenv(caches.COMPILATION_CACHE_ENV)
    assert caches.compilation_cache_dir() == tmp_path / "jax"


def test_enabled_cache_stores_compiled_programs(tmp_path):
    """A fresh process (the cache is set up once per process) with the default setting
    writes the program it compiles into ``<cache dir>/jax-cache``."""
    code = (
        "import jax, jax.numpy as jnp\n"
        "from bbf_jax import caches\n"
        "path = caches.enable_compilation_cache()\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()\n"
        "print(path)\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", caches.COMPILATION_CACHE_ENV)}
    env.update(BBF_JAX_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / "jax-cache")
    assert any((tmp_path / "jax-cache").iterdir())
