"""SpecAugment span masks, drawn in NumPy with an explicit ``numpy.random.Generator``.

A mask is a union of spans of ``mask_length`` consecutive frames. Per call one rounding offset
``u ~ U[0, 1)`` is drawn (shared by the batch, as the reference does); utterance b then gets

    n_b = int(mask_prob * valid_len_b / mask_length + u), raised to ``min_masks``,
    lowered to ``seq // mask_length`` (no more spans than would fit the axis side by side) and to
    the number of valid span starts (the starts are drawn without replacement).

Span starts are drawn uniformly among the starts whose whole span lies on valid frames, so spans
may overlap each other but never touch padding. Unlike the reference, an utterance too short for
one span (even an empty one) simply gets no spans, and padding is never masked.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np


def _valid_starts(valid: np.ndarray, mask_length: int) -> np.ndarray:
    """Positions t where frames t .. t + mask_length - 1 are all valid. valid: (seq,) bool."""
    if valid.size < mask_length:
        return np.zeros(0, dtype=np.int64)
    # Count of valid frames in each window, from a running sum: (seq - mask_length + 1,)
    running = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
    window_counts = running[mask_length:] - running[:-mask_length]
    return np.flatnonzero(window_counts == mask_length)


def _check_arguments(shape, mask_prob, mask_length, min_masks, attention_mask) -> Optional[np.ndarray]:
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"shape must be (batch, seq) with non-negative sizes, got {tuple(shape)}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    if mask_length < 1:
        raise ValueError(f"mask_length must be at least 1, got {mask_length}")
    if min_masks < 0:
        raise ValueError(f"min_masks must be non-negative, got {min_masks}")
    if attention_mask is None:
        return None
    attention_mask = np.asarray(attention_mask)
    if attention_mask.shape != tuple(shape):
        raise ValueError(f"attention_mask must have shape {tuple(shape)} (batch, seq), got {attention_mask.shape}")
    return attention_mask.astype(bool)


def span_starts(
    shape: Tuple[int, int],
    mask_prob: float,
    mask_length: int,
    *,
    rng: np.random.Generator,
    min_masks: int = 0,
    attention_mask=None,
) -> List[np.ndarray]:
    """Start frames of the masked spans, one sorted int64 array per utterance.

    shape: (batch, seq); attention_mask: frame-level (batch, seq), nonzero on valid frames.
    """
    attention_mask = _check_arguments(shape, mask_prob, mask_length, min_masks, attention_mask)
    batch_size, seq_len = shape
    valid = np.ones(shape, dtype=bool) if attention_mask is None else attention_mask

    rounding = rng.random()  # probabilistic rounding of the expected span count
    starts = []
    for row in valid:
        candidates = _valid_starts(row, mask_length)
        num_spans = int(mask_prob * row.sum() / mask_length + rounding)
        num_spans = max(num_spans, min_masks)
        num_spans = min(num_spans, seq_len // mask_length, candidates.size)
        chosen = rng.choice(candidates, size=num_spans, replace=False) if num_spans else candidates[:0]
        starts.append(np.sort(chosen))
    return starts


def spans_to_mask(starts: List[np.ndarray], shape: Tuple[int, int], mask_length: int) -> np.ndarray:
    """Boolean mask (batch, seq) that is True on every frame of every span."""
    mask = np.zeros(shape, dtype=bool)
    offsets = np.arange(mask_length)
    for row, row_starts in zip(mask, starts):
        # (num_spans, mask_length) frame indices; overlapping spans just set frames twice
        row[(np.asarray(row_starts)[:, None] + offsets).ravel()] = True
    return mask


def compute_span_mask(
    shape: Tuple[int, int],
    mask_prob: float,
    mask_length: int,
    *,
    rng: np.random.Generator,
    min_masks: int = 0,
    attention_mask=None,
) -> np.ndarray:
    """SpecAugment span mask, bool (batch, seq). See the module docstring for the span count."""
    starts = span_starts(
        shape, mask_prob, mask_length, rng=rng, min_masks=min_masks, attention_mask=attention_mask
    )
    return spans_to_mask(starts, shape, mask_length)


def seeded_generator(seed) -> np.random.Generator:
    """The Generator a backend draws SpecAugment masks with when the caller passes none, seeded per
    call from non-negative integers (any shape) that the framework's own random state produced: torch's
    generator, the model's Keras SeedGenerator, the Flax dropout key. Seeding a framework as one
    seeds its dropout then reproduces its SpecAugment masks too."""
    return np.random.default_rng(np.asarray(seed).astype(np.uint64).ravel())


def spec_augment_masks(
    config, batch_size: int, num_frames: int, *, rng: np.random.Generator, frame_attention_mask=None
) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The SpecAugment masks a backend applies in training mode.

    Returns (mask_time_indices (batch, num_frames) or None, mask_feature_indices (batch, hidden_size)
    or None). The feature mask is drawn over the hidden axis of each utterance and applies to all of
    its frames; it ignores padding, since every frame has all hidden channels. A mask is None when
    ``apply_spec_augment`` is off or its probability is 0.
    """
    if not config.apply_spec_augment:
        return None, None
    time_mask = None
    if config.mask_time_prob > 0:
        time_mask = compute_span_mask(
            (batch_size, num_frames),
            config.mask_time_prob,
            config.mask_time_length,
            rng=rng,
            min_masks=config.mask_time_min_masks,
            attention_mask=frame_attention_mask,
        )
    feature_mask = None
    if config.mask_feature_prob > 0:
        feature_mask = compute_span_mask(
            (batch_size, config.hidden_size),
            config.mask_feature_prob,
            config.mask_feature_length,
            rng=rng,
            min_masks=config.mask_feature_min_masks,
        )
    return time_mask, feature_mask


def pretraining_mask(
    config,
    batch_size: int,
    num_frames: int,
    *,
    rng: np.random.Generator,
    frame_attention_mask=None,
    min_masks: int = 0,
) -> np.ndarray:
    """``mask_time_indices`` for Wav2Vec2ForPreTraining, bool (batch, num_frames).

    Uses ``config.mask_time_prob`` and ``config.mask_time_length`` whatever ``apply_spec_augment``
    says, since the contrastive task needs masked frames. ``min_masks`` defaults to 0 like the
    reference pretraining data collator (it passes no ``min_masks``); the reference TF model
    hard-codes 2, which ``min_masks=2`` reproduces.
    """
    return compute_span_mask(
        (batch_size, num_frames),
        config.mask_time_prob,
        config.mask_time_length,
        rng=rng,
        min_masks=min_masks,
        attention_mask=frame_attention_mask,
    )
