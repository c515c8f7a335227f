"""Where bbf_jax keeps its caches, and JAX's persistent compilation cache.

``cache_dir()``: ``$BBF_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/bbf_jax``, else
``~/.cache/bbf_jax``. It holds the random-policy baselines (``bbf_jax.random_baseline``)
and, in ``jax-cache/``, the compiled XLA programs of :func:`enable_compilation_cache`.

``bbf-train`` turns JAX's persistent compilation cache on, so that a run that compiles the
same programs as an earlier one (another seed or game of a sweep, a resumed run) loads
them from disk instead of compiling them again. ``$BBF_JAX_COMPILATION_CACHE`` moves it
(a directory) or turns it off (``off``); ``$JAX_COMPILATION_CACHE_DIR``, JAX's own
setting, is used as it is whenever it is set.
"""

from __future__ import annotations

import os
import pathlib

COMPILATION_CACHE_ENV = "BBF_JAX_COMPILATION_CACHE"


def cache_dir() -> pathlib.Path:
    """bbf_jax's cache directory (see the module docstring)."""
    if os.environ.get("BBF_JAX_CACHE_DIR"):
        return pathlib.Path(os.environ["BBF_JAX_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
    return base / "bbf_jax"


def compilation_cache_dir() -> pathlib.Path | None:
    """The persistent compilation cache's directory; None when it is off."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    setting = os.environ.get(COMPILATION_CACHE_ENV, "")
    if setting == "off":
        return None
    return pathlib.Path(setting) if setting else cache_dir() / "jax-cache"


def enable_compilation_cache() -> pathlib.Path | None:
    """Points JAX's persistent compilation cache at :func:`compilation_cache_dir`.

    Call it before the first compilation. Programs that compile in under
    ``jax_persistent_cache_min_compile_time_secs`` (JAX's default: 1 s) are not stored.
    Returns the directory, or None when the cache is off.
    """
    import jax

    path = compilation_cache_dir()
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", str(path))
    return path
