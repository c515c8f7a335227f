"""Subsequence replay memory (spec §4): storage, sum tree, sampling, prefetching."""

from bbf_jax.replay.buffer import ReplaySample, SubsequenceReplay
from bbf_jax.replay.prefetch import BatchPipeline
from bbf_jax.replay.priorities import importance_weights, priorities_to_set
from bbf_jax.replay.storage import CircularStorage
from bbf_jax.replay.sum_tree import SumTree

__all__ = [
    "BatchPipeline",
    "CircularStorage",
    "ReplaySample",
    "SubsequenceReplay",
    "SumTree",
    "importance_weights",
    "priorities_to_set",
]
