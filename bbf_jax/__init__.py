"""bbf_jax: BBF (Bigger, Better, Faster; Schwarzer et al., ICML 2023) in JAX/Flax, and
its neighbours on the same runner (``bbf_jax.agents``: BBF, BTR).

Importing the package has no side effects; the public entry points live in the
submodules (``bbf_jax.agents``, ``bbf_jax.networks``, ``bbf_jax.replay``,
``bbf_jax.envs``, ``bbf_jax.train``, ``bbf_jax.crosscheck``, ``bbf_jax.report``).
"""

__version__ = "0.1.0"
