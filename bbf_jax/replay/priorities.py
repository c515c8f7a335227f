"""Importance weights and priority updates of prioritized replay (spec §4.8)."""

from __future__ import annotations

import numpy as np

PRIORITY_MODES = ("official", "corrected")


def importance_weights(sampling_priority) -> np.ndarray:
    """(N,) float32 loss weights ``w_i = 1/sqrt(p_i + 1e-10)`` divided by ``max_j w_j``.

    PER with beta = 0.5 fixed; the max runs over the whole sampled group of N (all
    minibatches together), as in the official agent. float32 throughout.
    """
    p = np.asarray(sampling_priority, np.float32)
    w = np.float32(1.0) / np.sqrt(p + np.float32(1e-10))
    return w / w.max()


def priorities_to_set(indices, per_sample_loss, minibatch_mean_loss, mode: str = "official"):
    """Which leaves get which new priority after a train call (spec §4.8).

    Args:
      indices: (N,) raveled indices of the sampled group.
      per_sample_loss: (N,) C51 cross-entropy of every sample.
      minibatch_mean_loss: (G,) mean cross-entropy of each minibatch.
      mode: 'official' pairs ``indices`` with the G minibatch means positionally and
        stops at the shorter list, so only ``indices[:G]`` change (the official bug);
        'corrected' gives every index ``sqrt(its own loss + 1e-10)``.

    Returns:
      (indices, priorities): int64 and float32 arrays for ``update_priorities``; the
      priorities are ``sqrt(loss + 1e-10)`` computed in float32.
    """
    if mode not in PRIORITY_MODES:
        raise ValueError(f"priority_update must be one of {PRIORITY_MODES}, got {mode!r}")
    indices = np.asarray(indices).reshape(-1).astype(np.int64)
    if mode == "official":
        loss = np.asarray(minibatch_mean_loss, np.float32).reshape(-1)
        k = min(indices.size, loss.size)
        indices, loss = indices[:k], loss[:k]
    else:
        loss = np.asarray(per_sample_loss, np.float32).reshape(-1)
        if loss.shape != indices.shape:
            raise ValueError(
                f"per_sample_loss has {loss.size} values for {indices.size} indices"
            )
    return indices, np.sqrt(loss + np.float32(1e-10))


# Added to the priority signal before the exponent (BTR's ``PER.update_priorities``).
PER_EPSILON = 1e-6


def per_leaf_priorities(signal, priority_exponent: float) -> np.ndarray:
    """(N,) float32 sum-tree leaves ``(signal + 1e-6) ** alpha``.

    PER's proportional priority ``p_i^alpha`` (Schaul et al. 2016, eq. 1) with
    ``p_i = signal_i + 1e-6``, as BTR's ``PER.update_priorities`` (alpha = 0.2, BTR paper
    §3.2). New transitions enter with the largest leaf written so far
    (:class:`~bbf_jax.replay.SubsequenceReplay`), i.e. ``max(p)^alpha``, as theirs.
    """
    signal = np.asarray(signal, np.float32)
    return np.power(signal + np.float32(PER_EPSILON), np.float32(priority_exponent))


def per_importance_weights(sampling_priority, exponent: float) -> np.ndarray:
    """(B,) float32 PER importance weights ``(N P(i)) ** -exponent / max_j (...)``.

    With ``P(i) = leaf_i / total`` and N transitions stored (Schaul et al. 2016 §3.4:
    ``w_i = (N P(i))^-beta``, divided by the batch maximum so that they only scale updates
    down, as BTR's ``PER.sample`` does), N and the total cancel:
    ``w_i = (leaf_i / min_j leaf_j) ** -exponent``. ``exponent`` is beta, or for BTR's
    'code' importance weights its alpha in beta's place. Leaves must be > 0.
    """
    p = np.asarray(sampling_priority, np.float32)
    return np.power(p / p.min(), np.float32(-exponent)).astype(np.float32)
