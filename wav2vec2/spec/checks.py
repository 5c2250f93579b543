"""The input and label checks every backend runs, with one error text each.

Backends pass what they know without tensor math: shapes (a dimension may be None inside a traced
graph), whether a dtype is floating point or integer, and, where the values are concrete (eager
PyTorch and TensorFlow, Flax outside a trace), small NumPy summaries such as per-row sample counts.
A check whose values are unknown (None) is skipped, never guessed. Every failure is a ValueError.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .lengths import min_input_length

Shape = Sequence[Optional[int]]


def _shape(shape: Shape) -> tuple:
    return tuple(None if d is None else int(d) for d in shape)


def waveform_shape(config, shape: Shape, is_floating: bool, dtype_name: str) -> tuple:
    """Checks the waveform batch; returns its shape as (batch, samples) ((samples,) becomes (1, samples))."""
    shape = _shape(shape)
    if not is_floating:
        raise ValueError(f"input_values must be floating point audio, got dtype {dtype_name}")
    if len(shape) == 1:
        shape = (1,) + shape
    if len(shape) != 2:
        raise ValueError(f"input_values must have shape (batch, samples) or (samples,), got {shape}")
    batch, samples = shape
    if batch == 0:
        raise ValueError("input_values is an empty batch (batch size 0); pass at least one waveform")
    shortest = min_input_length(config, add_adapter=False)
    if samples is not None and samples < shortest:
        raise ValueError(
            f"input_values has {samples} samples; the conv feature encoder needs at least {shortest}"
        )
    return shape


def attention_mask_shape(mask_shape: Shape, input_shape: Shape) -> tuple:
    """Checks that the sample-level mask has the waveform's (batch, samples) shape; returns it 2-d."""
    mask_shape, input_shape = _shape(mask_shape), _shape(input_shape)
    if len(mask_shape) == 1 and input_shape[0] == 1:
        mask_shape = (1,) + mask_shape
    same = len(mask_shape) == 2 and all(a is None or b is None or a == b for a, b in zip(mask_shape, input_shape))
    if not same:
        raise ValueError(
            f"attention_mask must have the shape of input_values {input_shape} (batch, samples), got {mask_shape}"
        )
    return mask_shape


def samples_for_loss(sample_counts) -> None:
    """With labels, every utterance needs a valid sample: an all-zero mask row has nothing to score.

    ``sample_counts``: the attention mask summed over samples, (batch,) NumPy ints, or None (unknown).
    """
    if sample_counts is None:
        return
    empty = [i for i, count in enumerate(list(sample_counts)) if int(count) <= 0]
    if empty:
        raise ValueError(
            f"attention_mask is all zeros in batch row(s) {empty[:10]}: an utterance with no valid "
            f"sample has no loss; drop it from the batch or fix its mask"
        )


def ctc_blank(config) -> None:
    """The CTC blank is config.pad_token_id; it must be a vocabulary id (a config changed after it
    was checked may break this)."""
    pad = config.pad_token_id
    if pad is None or not 0 <= pad < config.vocab_size:
        raise ValueError(
            f"config.pad_token_id={pad} is the CTC blank and must lie in [0, vocab_size={config.vocab_size})"
        )


def ctc_labels(config, shape: Shape, is_integer: bool, batch, max_label=None) -> None:
    """Token ids (batch, target_length), padded with negative values; ``max_label`` when concrete."""
    shape = _shape(shape)
    if len(shape) != 2 or (batch is not None and shape[0] is not None and shape[0] != batch) or not is_integer:
        raise ValueError(
            f"labels must be integer token ids of shape (batch={batch}, target_length), padded with -100, "
            f"got shape {shape}{'' if is_integer else ' of a non-integer dtype'}"
        )
    ctc_blank(config)
    if max_label is not None and int(max_label) >= config.vocab_size:
        raise ValueError(f"labels hold id {int(max_label)}, but vocab_size is {config.vocab_size}")


def class_labels(shape: Shape, is_integer: bool, batch, what: str = "class ids") -> None:
    """One integer label per utterance, (batch,)."""
    shape = _shape(shape)
    if len(shape) != 1 or (batch is not None and shape[0] is not None and shape[0] != batch) or not is_integer:
        raise ValueError(
            f"labels must be integer {what} of shape (batch={batch},), got shape {shape}"
            f"{'' if is_integer else ' of a non-integer dtype'}"
        )


def frame_labels(shape: Shape, expected: Shape) -> None:
    """Per-frame scores (batch, frames, num_labels), the shape of the logits (their argmax is the target)."""
    shape, expected = _shape(shape), _shape(expected)
    same = len(shape) == 3 and all(a is None or b is None or a == b for a, b in zip(shape, expected))
    if not same:
        raise ValueError(f"labels must have shape {expected} (batch, frames, num_labels), got {shape}")


def frame_input(name: str, shape: Shape, expected: Shape) -> None:
    """A per-frame input (mask_time_indices, sampled_negative_indices, gumbel_noise) of an exact shape."""
    shape, expected = _shape(shape), _shape(expected)
    same = len(shape) == len(expected) and all(a is None or b is None or a == b for a, b in zip(shape, expected))
    if not same:
        raise ValueError(f"{name} must have shape {expected}, got {shape}")


def masked_spec_embed(config) -> None:
    """A given time mask needs the learned mask embedding, which exists only with masking probabilities."""
    if config.mask_time_prob <= 0 and config.mask_feature_prob <= 0:
        raise ValueError(
            "mask_time_indices given, but the config has mask_time_prob = mask_feature_prob = 0 "
            "(so the model has no masked_spec_embed)"
        )


def negatives_need_mask(mask_time_indices) -> None:
    if mask_time_indices is None:
        raise ValueError("sampled_negative_indices needs mask_time_indices: the loss is taken on masked frames")


def no_conv_adapter(config, class_name: str) -> None:
    if config.add_adapter:
        raise ValueError(f"{class_name} does not support the conv adapter (config.add_adapter=True)")
