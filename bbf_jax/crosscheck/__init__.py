"""Cross-checking bbf_jax against the official code and against other ports.

``bbf-crosscheck verify FILE...`` recomputes every output stored in a fixture file
(format: ``tests/fixtures/README`` and the official fixture README) with bbf_jax and
prints one row per array. ``bbf-crosscheck export`` writes such files from bbf_jax
itself, so other implementations can check themselves against it.
"""

from bbf_jax.crosscheck.fixture_io import Fixture, FixtureError, Row, load_fixture, save_fixture

__all__ = ["Fixture", "FixtureError", "Row", "load_fixture", "save_fixture"]
