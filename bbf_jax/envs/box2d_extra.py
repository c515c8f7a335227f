"""The Box2D check of gymnasium's Box2D envs (LunarLander, CarRacing)."""

from __future__ import annotations


def require_box2d(env_name: str) -> None:
    """Raises ImportError naming the missing module and the extra to install, when Box2D
    or pygame (gymnasium's box2d package imports it) is missing."""
    try:
        import Box2D  # noqa: F401
        import pygame  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{env_name} needs Box2D ({e.name} is missing): "
                          "pip install -e \".[box2d]\"") from None
