"""Sequence lengths through the conv feature encoder and the adapter, and frame-level masks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _conv_out(length, kernel: int, stride: int):
    return (length - kernel) // stride + 1


def feat_extract_output_lengths(config, input_lengths, add_adapter=None):
    """Frames the conv stack (and, when used, the adapter) produce from ``input_lengths`` samples.

    Works on ints, NumPy integer arrays and framework tensors alike (torch, TensorFlow and JAX
    arrays stay tensors of their framework, on their device and inside a trace: only ``-``, ``//``
    and ``+`` are applied to them). Lengths too short for the stack come out <= 0.
    """
    add_adapter = config.add_adapter if add_adapter is None else add_adapter
    numpy_in = isinstance(input_lengths, (int, np.integer, np.ndarray, list, tuple))
    lengths = np.asarray(input_lengths, dtype=np.int64) if numpy_in else input_lengths
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        lengths = _conv_out(lengths, kernel, stride)
    if add_adapter:
        for _ in range(config.num_adapter_layers):
            # The adapter convs pad by 1 on each side with kernel adapter_kernel_size; the reference
            # counts their output as a kernel-1 conv with the adapter stride, and so does this.
            lengths = _conv_out(lengths, 1, config.adapter_stride)
    if not numpy_in:
        return lengths
    return int(lengths) if lengths.ndim == 0 else lengths


def xvector_min_frames(config) -> int:
    """Fewest encoder frames the x-vector head takes: its TDNN layers' dilated context, plus the two
    frames left that the (unbiased) standard deviation of its statistics pooling needs."""
    return 2 + sum(dilation * (kernel - 1) for kernel, dilation in zip(config.tdnn_kernel, config.tdnn_dilation))


def tdnn_output_lengths(config, frame_lengths):
    """Frames the x-vector TDNN layers leave of ``frame_lengths``, counted as the reference counts
    them: kernel - 1 fewer per layer, whatever its dilation (so a count may exceed the frames there
    are; the pooling masks treat it as slice bounds). Any array type, like feat_extract_output_lengths."""
    for kernel in config.tdnn_kernel:
        frame_lengths = frame_lengths - kernel + 1
    return frame_lengths


def min_input_length(config, add_adapter=None, frames: int = 1) -> int:
    """Smallest number of samples that yields at least ``frames`` frames: those of the conv stack and,
    when used (``add_adapter`` as in ``feat_extract_output_lengths``), of the adapter after it. For one
    frame the adapter changes nothing: it maps L >= 1 frames to (L - 1) // stride + 1 >= 1 frames.
    """
    add_adapter = config.add_adapter if add_adapter is None else add_adapter
    length = frames
    if add_adapter:
        for _ in range(config.num_adapter_layers):
            length = (length - 1) * config.adapter_stride + 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        length = (length - 1) * stride + kernel
    return length


def frame_attention_mask(config, attention_mask, num_frames: int, add_adapter=None) -> np.ndarray:
    """Frame-level mask (batch, num_frames) from a sample-level mask (batch, samples).

    Frame t of utterance b is valid when t < feat_extract_output_lengths(valid samples of b).
    """
    attention_mask = np.asarray(attention_mask)
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must have shape (batch, samples), got {attention_mask.shape}")
    lengths = feat_extract_output_lengths(config, attention_mask.sum(-1).astype(np.int64), add_adapter)
    return np.arange(num_frames)[None, :] < np.asarray(lengths)[:, None]


@dataclass(frozen=True)
class ConvSpans:
    """The conv stack run span by span of output frames (every backend's ``FeatureEncoder`` fast path):
    span ``i`` computes output frames ``i * span ...`` from the ``span_samples`` input samples from
    ``start(i)``; the last span's frames from ``frames`` on are cut (its samples past the input padded)."""

    frames: int  # output frames of the whole input
    span: int  # output frames per span
    count: int  # spans
    receptive: int  # input samples one output frame sees
    hop: int  # input samples between output frames

    @property
    def span_samples(self) -> int:
        return (self.span - 1) * self.hop + self.receptive

    @property
    def padded_samples(self) -> int:
        """Input samples the spans read, the last one's padding included."""
        return self.start(self.count - 1) + self.span_samples

    def start(self, index: int) -> int:
        return index * self.span * self.hop


def conv_spans(config, samples: int, span_frames: int) -> ConvSpans:
    """The spans of at most ``span_frames`` output frames for an input of ``samples`` (an int) samples,
    which must yield at least one frame (``checks.waveform_shape``)."""
    frames = feat_extract_output_lengths(config, samples, add_adapter=False)
    span = min(span_frames, frames)
    return ConvSpans(frames, span, -(-frames // span), min_input_length(config, add_adapter=False),
                     config.inputs_to_logits_ratio)
