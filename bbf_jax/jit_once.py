"""``jit_once``: ``jax.jit`` for the programs a run executes only a few times.

Initialising the network and the shrink-and-perturb reset draw every parameter array from
``jax.random``, and on CPU LLVM's optimisation of those many small threefry and
inverse-erf kernels dominates their compilation. Measured on a 2-core Intel Xeon
(``benchmarks/compile_once.py``, ``benchmarks/results/compile_once.csv``): the test
networks' initialisation (width 0.25) compiles in 11.2 s of CPU with XLA's defaults and
in 1.4 s without LLVM optimisation, their reset in 13.9 s against 2.9 s. The programs
then run slower, which is nothing for programs that run a handful of times per run: the
full BBF network's initialisation runs in 4.1 s instead of 0.9 s and compiles in 2.2 s
instead of 6.0 s, so even there it is even. A cold start (every CI run, the quick start)
saves tens of seconds per network configuration.
The values are the same bits: the tests pin the jitted initialisation to the eager one,
and the reset to the official fixture. Other backends keep XLA's defaults.
"""

from __future__ import annotations

import functools

import jax

# XLA CPU debug options; no effect on what is computed, only on how much LLVM optimises it.
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                        "xla_llvm_disable_expensive_passes": True}


def compiler_options() -> dict | None:
    """The options :func:`jit_once` compiles with on the default backend."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def jit_once(fn, **jit_kwargs):
    """``jax.jit(fn, **jit_kwargs)`` with :func:`compiler_options` (see the module
    docstring). Called inside another jitted function (on tracers) it is a plain nested
    ``jax.jit``, inlined and compiled as part of the caller (JAX takes compiler options
    on top-level calls only)."""
    top_level = jax.jit(fn, compiler_options=compiler_options(), **jit_kwargs)
    nested = jax.jit(fn, **jit_kwargs)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs)))
        return (nested if traced else top_level)(*args, **kwargs)

    call._cache_size = top_level._cache_size  # compilations, as on a jitted function
    return call
