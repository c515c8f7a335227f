"""Max-pooling with PyTorch's window semantics, on NHWC arrays.

Networks ported from PyTorch code pool with ``torch.nn.MaxPool2d`` (symmetric -inf
padding) and ``torch.nn.AdaptiveMaxPool2d`` (variable, possibly overlapping windows).
Neither equals Flax's ``'SAME'`` max-pool nor a uniform-stride pool, so both are
written out here. Max of the same float32 values is exact, so these ops agree with
PyTorch bit for bit.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def max_pool2d(x: jnp.ndarray, kernel_size: int, stride: int, padding: int) -> jnp.ndarray:
    """``torch.nn.MaxPool2d(kernel_size, stride, padding)`` (``ceil_mode=False``) on NHWC.

    Pads ``padding`` cells of -inf on every side, so the output side is
    ``floor((n + 2 * padding - kernel_size) / stride) + 1`` (IMPALA's 3/2/1 pool:
    84 -> 42 -> 21 -> 11). Flax's ``'SAME'`` padding would put the single pad cell of an
    even side at the end only, shifting every window by one cell.

    Args:
      x: ``(B, H, W, C)``, any float dtype.
    Returns:
      ``(B, H', W', C)``, dtype of ``x``.
    """
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (kernel_size, kernel_size), strides=(stride, stride), padding=pad)


def adaptive_windows(n: int, m: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` windows of ``torch.nn.AdaptiveMaxPool2d`` along one axis.

    Window ``i`` of ``m`` over an axis of size ``n`` covers
    ``[floor(i * n / m), ceil((i + 1) * n / m))`` (PyTorch's ``start_index`` and
    ``end_index``). For 11 -> 6 the windows have sizes 2 or 3 and overlap.
    """
    if n < 1 or m < 1:
        raise ValueError(f"adaptive_windows: sizes must be >= 1, got n={n}, m={m}")
    return [((i * n) // m, -((-(i + 1) * n) // m)) for i in range(m)]


def _window_indices(n: int, m: int) -> np.ndarray:
    """``(m, k)`` int32 indices, row ``i`` listing window ``i`` padded to the widest
    window ``k`` by repeating its last index (a repeat does not change a max)."""
    windows = adaptive_windows(n, m)
    k = max(end - start for start, end in windows)
    rows = [[min(start + j, end - 1) for j in range(k)] for start, end in windows]
    return np.asarray(rows, dtype=np.int32)


def _adaptive_max_axis(x: jnp.ndarray, m: int, axis: int) -> jnp.ndarray:
    """Adaptive max-pool of ``x`` along ``axis`` (non-negative) to size ``m``."""
    idx = _window_indices(x.shape[axis], m)
    gathered = jnp.take(x, idx, axis=axis, mode="clip")  # axis -> (m, k); all in range
    return jnp.max(gathered, axis=axis + 1)


def adaptive_max_pool(x: jnp.ndarray, output_size: int | tuple[int, int]) -> jnp.ndarray:
    """``torch.nn.AdaptiveMaxPool2d(output_size)`` on an NHWC array.

    A max over a rectangle is a max over rows of maxima over columns, so the pool runs
    as two 1-D passes (H, then W), each a static gather of the padded windows of
    :func:`adaptive_windows` and a max.

    Args:
      x: ``(B, H, W, C)``, any float dtype.
      output_size: ``m`` or ``(m_h, m_w)``.
    Returns:
      ``(B, m_h, m_w, C)``, dtype of ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"adaptive_max_pool: expected NHWC, got shape {x.shape}")
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    x = _adaptive_max_axis(x, out_h, axis=1)
    return _adaptive_max_axis(x, out_w, axis=2)
