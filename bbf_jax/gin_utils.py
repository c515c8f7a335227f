"""Parsing gin files and bindings into an :class:`~bbf_jax.config.ExperimentConfig`."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import gin

from bbf_jax import config as config_lib


class ConfigError(ValueError):
    """A gin file or binding that cannot be used (message names the problem)."""


def parse(gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()) -> config_lib.ExperimentConfig:
    """Clears gin, parses ``gin_files`` then ``gin_bindings``, and builds the configs.

    Raises:
      ConfigError: a missing file, an unknown configurable or parameter (typo), a
        malformed binding, or a value the configs reject.
    """
    for f in gin_files:
        if not pathlib.Path(f).is_file():
            raise ConfigError(f"gin file not found: {f}")
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(
            list(gin_files), list(gin_bindings), skip_unknown=False, finalize_config=False
        )
        return config_lib.make_experiment_config()
    except (ValueError, TypeError, SyntaxError, KeyError) as e:
        msg = str(e).strip().splitlines()
        raise ConfigError(f"bad gin configuration: {' '.join(m.strip() for m in msg if m.strip())}") from None


def operative_config() -> str:
    """The gin bindings in force (public gin API), for saving next to a run."""
    return gin.config_str()
