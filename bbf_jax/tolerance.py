"""How far two float32 evaluations of the same computation may differ: the tolerance policy.

Every parity comparison (``bbf-crosscheck verify``, ``bbf-crosscheck torch`` and the tests)
takes its bound from here. Two rules:

* **Exact** (bound 0) only where the result is exact by construction: integers, booleans,
  uint8 frames, indices, PRNG bits, pure data movement (gathers, pads, crops) and a single
  correctly rounded IEEE operation on identical inputs (``x * float32(1/255)``,
  ``0.5 * a + 0.5 * b``).
* **Float results** get a bound derived from the computation: its magnitude and the length
  and depth of the reductions behind it. Never the error one machine happened to show.

Why float results differ at all: XLA's CPU code (and PyTorch's oneDNN kernels) choose the
order of a reduction's additions and whether to fuse ``a * b + c`` into one FMA from the
processor's vector features, so two CPUs (or two libraries) round differently.

Derivation, with ``EPS = 2**-23 ~ 1.19e-7`` (float32 spacing at 1) and unit roundoff
``u = EPS / 2``:

* :func:`elementwise`: a result of ``ops`` elementwise operations, each correctly rounded
  (error <= u relative) on either side; reordering or fusing changes each rounding by at
  most one ulp of the magnitude, so the two sides differ by <= ``ops * EPS * max|expected|``.
* :func:`summation`: a sum of ``terms`` products, in any order with or without FMA, lies
  within ``gamma_terms * sum|x_i|`` of the exact sum (Higham, *Accuracy and Stability of
  Numerical Algorithms*, 2002, eq. 3.5; ``gamma_n = n u / (1 - n u)``); two evaluations
  therefore differ by at most ``2 gamma_terms * scale = terms * EPS * scale`` (first order),
  ``scale`` bounding ``sum|x_i|``. Rigorous, so it suits short reductions.
* :func:`network_output`: the worst case of ``depth`` stacked reductions of ``length`` terms
  grows like ``depth * length * u`` and is useless. Rounding errors of different orders
  behave like independent zero-mean noise instead: one dot product of ``length``
  random-sign terms is off by ~ ``sqrt(length) u`` relative to its value, and the noise of
  ``depth`` layers adds in quadrature, giving ``sqrt(depth * length) * u * max|expected|``
  (the standard deviation of that noise model; real blocked/vectorised sums do better).
* :func:`gradient`: the backward pass has the same noise with ``length`` = the longest sum
  over batch and positions (a conv kernel's gradient sums over B * H * W), plus *kinks*:
  where a ReLU input or a min/max candidate lies within rounding of its switch point, the
  two sides may take different branches. That moves the kernel-gradient entries fed by
  the unit by one of the ``positions`` random-sign terms they sum, about
  ``1 / sqrt(positions)`` of their magnitude. With millions of conv activations some
  flip when two machines (or device counts) round differently. Deep gradients therefore
  pass a relative-norm criterion ``||a - e|| / ||e|| <= r``, with
  ``r = sqrt(depth * length) * u + 1 / sqrt(positions)``, and an elementwise bound of the
  noise plus :data:`KINK_PEAK` such terms, scaled by ``max|e|``. Dense
  layers, with few units near a switch, get the noise term alone. This is looser than an
  output bound: it still fails a transposed kernel, a wrong sign or a missing loss term,
  but a 1e-4 relative change of a conv gradient is indistinguishable from a kink.

Stages downstream of gradients (the AdamW step, the EMA target) are checked on the
reference's own gradients / parameters, where they are short elementwise computations
again (:func:`elementwise`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

EPS = float(np.finfo(np.float32).eps)  # 2**-23
UNIT_ROUNDOFF = EPS / 2


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """A bound on ``|actual - expected|``: elementwise ``atol`` (a float, or an array
    broadcastable to the compared shape), and optionally
    ``||actual - expected||_2 / ||expected||_2 <= rel_norm``."""

    atol: float | np.ndarray
    rel_norm: float | None = None

    def __add__(self, other: Tolerance) -> Tolerance:
        if self.rel_norm is None and other.rel_norm is None:
            rel = None
        else:
            rel = (self.rel_norm or 0.0) + (other.rel_norm or 0.0)
        return Tolerance(self.atol + other.atol, rel)


EXACT = Tolerance(0.0)


def magnitude(expected) -> float:
    """``max |expected|`` over the finite entries (0.0 for an empty or all-inf array)."""
    a = np.asarray(expected, np.float64)
    finite = a[np.isfinite(a)]
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def elementwise(expected, ops: int, eps: float = EPS) -> Tolerance:
    """``ops`` correctly rounded elementwise operations: ``ops * eps * max|expected|``.

    ``eps`` is the machine epsilon of the compared dtype (float32 unless given).
    """
    return Tolerance(ops * eps * magnitude(expected))


def summation(terms: int, scale) -> Tolerance:
    """A sum of ``terms`` products whose absolute values add up to at most ``scale`` (a
    float, or an array broadcastable to the result): ``terms * EPS * scale`` (twice
    Higham's ``gamma_terms``; any order, FMA or not)."""
    return Tolerance(terms * EPS * np.asarray(scale, np.float64))


def noise(length: int, depth: int) -> float:
    """Relative rounding noise ``sqrt(depth * length) * u`` of ``depth`` stacked
    reductions of ``length`` terms (module docstring)."""
    return math.sqrt(depth * length) * UNIT_ROUNDOFF


def network_output(expected, length: int, depth: int) -> Tolerance:
    """A forward output of ``depth`` stacked layers whose longest reduction has ``length``
    terms: ``noise(length, depth) * max|expected|``."""
    return Tolerance(noise(length, depth) * magnitude(expected))


# A kink's entries are products of an input activation and an output gradient; with
# both factors out at 2-3 standard deviations such a product is up to ~3x the typical
# term max|e| / sqrt(positions) of a sum of random-sign terms. Rounded up.
KINK_PEAK = 4.0


def gradient_relative(length: int, depth: int, positions: int) -> float:
    """``r = noise(length, depth) + 1 / sqrt(positions)``: rounding noise plus kinks.

    One kink moves the gradient's norm by about ``1 / sqrt(positions * channels)`` of it,
    so ``1 / sqrt(positions)`` covers several."""
    return noise(length, depth) + 1.0 / math.sqrt(positions)


def gradient(expected, length: int, depth: int, positions: int) -> Tolerance:
    """A gradient through ``depth`` layers whose longest reduction has ``length`` terms,
    of a kernel summed over ``positions`` batch positions: relative norm ``r``
    (:func:`gradient_relative`) and elementwise
    ``(noise + KINK_PEAK / sqrt(positions)) * max|e|``."""
    peak = noise(length, depth) + KINK_PEAK / math.sqrt(positions)
    rel_norm = gradient_relative(length, depth, positions)
    return Tolerance(peak * magnitude(expected), rel_norm=rel_norm)


def relative_error_norm(actual, expected) -> float:
    """``||actual - expected||_2 / ||expected||_2`` in float64 (0 when both are 0)."""
    a = np.asarray(actual, np.float64).ravel()
    e = np.asarray(expected, np.float64).ravel()
    num = float(np.linalg.norm(a - e))
    den = float(np.linalg.norm(e))
    if num == 0.0:
        return 0.0
    return num / den if den > 0 else math.inf
