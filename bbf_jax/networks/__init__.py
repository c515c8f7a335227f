"""The BBF network: encoders, transition model, heads (``official_bbf_spec.md`` §3)."""

from bbf_jax.networks.bbf_network import (
    BBFNetwork,
    NetworkOutput,
    init_params,
    make_network,
    param_count,
)
from bbf_jax.networks.encoders import renormalize

__all__ = [
    "BBFNetwork",
    "NetworkOutput",
    "init_params",
    "make_network",
    "param_count",
    "renormalize",
]
