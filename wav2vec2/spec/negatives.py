"""Negative sampling for the contrastive pretraining loss, with an explicit ``numpy.random.Generator``.

Indices point into the features flattened to (batch * seq), the reference's convention, so a
backend gathers negatives with ``features.reshape(-1, dim)[indices]``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def sample_negative_indices(
    features_shape: Tuple[int, int],
    num_negatives: int,
    *,
    rng: np.random.Generator,
    mask_time_indices: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Flat indices of the negatives of every frame, int32 (batch, seq, num_negatives).

    The candidates of utterance b are its masked frames (all of its frames when
    ``mask_time_indices`` is None). Each candidate frame gets ``num_negatives`` draws, uniform and
    with replacement, among the other candidates of the same utterance: never itself.

    Rows the loss never reads hold valid indices, as in the reference: a frame that is not a
    candidate points at frame 0 of its utterance. A lone candidate (an utterance with exactly one
    masked frame) has nothing to contrast with, so its row points at the frame itself, a negative
    equal to the positive, which the contrastive loss already discards.
    """
    if len(features_shape) != 2 or min(features_shape) < 0:
        raise ValueError(f"features_shape must be (batch, seq) with non-negative sizes, got {tuple(features_shape)}")
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be non-negative, got {num_negatives}")
    batch_size, seq_len = features_shape
    if mask_time_indices is None:
        candidates_mask = np.ones(features_shape, dtype=bool)
    else:
        candidates_mask = np.asarray(mask_time_indices).astype(bool)
        if candidates_mask.shape != tuple(features_shape):
            raise ValueError(
                f"mask_time_indices must have shape {tuple(features_shape)} (batch, seq), got {candidates_mask.shape}"
            )

    negatives = np.zeros((batch_size, seq_len, num_negatives), dtype=np.int32)
    for b in range(batch_size):
        candidates = np.flatnonzero(candidates_mask[b])  # (num_candidates,) frame indices
        num_candidates = candidates.size
        if num_candidates == 1:
            negatives[b, candidates] = candidates[0]
        elif num_candidates > 1:
            # Draw ranks among the other num_candidates - 1 candidates, then skip over the
            # positive's own rank: uniform over the others. (num_candidates, num_negatives)
            own_rank = np.arange(num_candidates)[:, None]
            ranks = rng.integers(0, num_candidates - 1, size=(num_candidates, num_negatives))
            ranks[ranks >= own_rank] += 1
            negatives[b, candidates] = candidates[ranks]
        negatives[b] += b * seq_len  # into the flattened (batch * seq) axis
    return negatives
