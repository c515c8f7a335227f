"""Parsing gin files and bindings into the selected agent's ``ExperimentConfig``."""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import Sequence

import gin

from bbf_jax import agents

_SEARCH_PATHS: set[str] = set()


class ConfigError(ValueError):
    """A gin file or binding that cannot be used (message names the problem)."""


def parse(
    gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()
):
    """Clears gin, parses ``gin_files`` then ``gin_bindings``, and builds the configs.

    Raises:
      ConfigError: a missing file, an unknown configurable or parameter (typo), a
        malformed binding, or a value the configs reject.
    """
    for f in gin_files:
        if not pathlib.Path(f).is_file():
            raise ConfigError(f"gin file not found: {f}")
    agents.register_all()
    gin.clear_config()
    for f in gin_files:  # `include 'X.gin'` resolves next to the including file
        directory = str(pathlib.Path(f).resolve().parent)
        if directory not in _SEARCH_PATHS:
            gin.add_config_file_search_path(directory)
            _SEARCH_PATHS.add(directory)
    try:
        with _quiet_search_misses():
            gin.parse_config_files_and_bindings(
                list(gin_files), list(gin_bindings), skip_unknown=False, finalize_config=False
            )
        return agents.make_experiment_config()
    except (ValueError, TypeError, SyntaxError, KeyError, OSError) as e:
        # gin appends "In call to configurable ..." lines; the message names the binding.
        msg = [m.strip() for m in str(e).strip().splitlines()]
        text = " ".join(m for m in msg if m and not m.startswith("In call to configurable"))
        raise ConfigError(f"bad gin configuration: {text}") from None


class _DropSearchMisses(logging.Filter):
    def filter(self, record):
        return not record.getMessage().startswith("Path not found:")


@contextlib.contextmanager
def _quiet_search_misses():
    """gin logs an error for every search path an include is not in; those are noise."""
    f = _DropSearchMisses()
    logging.getLogger().addFilter(f)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(f)


def operative_config() -> str:
    """The gin bindings in force (public gin API), for saving next to a run."""
    return gin.config_str()
