"""Built-in conformance cases: small configs covering both architectures, the adapters and every head.

Inputs are drawn once per case with a seeded ``numpy.random.Generator`` and the spec layer, so every
backend sees the same waveforms, padding, labels, SpecAugment mask and negatives.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wav2vec2 import Wav2Vec2Config
from wav2vec2.spec.lengths import feat_extract_output_lengths, frame_attention_mask
from wav2vec2.spec.masking import compute_span_mask
from wav2vec2.spec.negatives import sample_negative_indices


def small_config(arch: str = "base", **overrides) -> Wav2Vec2Config:
    """A few-thousand-parameter model, for the built-in cases and the test suite.

    arch="base": group-norm conv, post-norm encoder, no conv bias (wav2vec2-base style).
    arch="stable": layer-norm conv, pre-norm encoder, conv bias (large-lv60 / XLS-R style).
    """
    values = dict(
        vocab_size=12, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
        conv_dim=(8, 8, 8), conv_stride=(4, 2, 2), conv_kernel=(8, 3, 3),
        num_conv_pos_embeddings=6, num_conv_pos_embedding_groups=2,
        num_codevectors_per_group=5, num_codevector_groups=2, codevector_dim=8, proj_codevector_dim=6,
        num_negatives=4, classifier_proj_size=7,
        tdnn_dim=(8, 8, 10), tdnn_kernel=(3, 3, 1), tdnn_dilation=(1, 2, 1), xvector_output_dim=6,
        id2label={0: "a", 1: "b", 2: "c"}, mask_time_prob=0.2, mask_time_length=2, layerdrop=0.0,
    )
    if arch == "stable":
        values.update(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    elif arch != "base":
        raise ValueError(f"unknown arch {arch!r}")
    values.update(overrides)
    return Wav2Vec2Config(**values)


@dataclass
class Case:
    name: str
    config: Wav2Vec2Config
    head: str
    lengths: tuple = (800, 560)  # samples per utterance; the shorter one is zero-padded
    note: str = ""
    weights: dict = field(default=None, repr=False)  # canonical weights; None: drawn by the runner

    def make_inputs(self, seed: int = 0) -> dict:
        """Waveforms, sample mask, labels and spec-layer masks; NumPy only, drawn from ``seed``."""
        rng = np.random.default_rng(seed)
        config = self.config
        batch, samples = len(self.lengths), max(self.lengths)
        attention_mask = np.zeros((batch, samples), dtype=np.int32)
        input_values = np.zeros((batch, samples), dtype=np.float32)
        for b, n in enumerate(self.lengths):
            attention_mask[b, :n] = 1
            input_values[b, :n] = rng.standard_normal(n).astype(np.float32)
        num_frames = int(feat_extract_output_lengths(config, samples, add_adapter=False))
        body_frames = frame_attention_mask(config, attention_mask, num_frames, add_adapter=False)
        inputs = dict(input_values=input_values, attention_mask=attention_mask)
        if self.head in ("pretraining", "model"):  # the heads whose forward takes a mask
            inputs["mask_time_indices"] = compute_span_mask(
                (batch, num_frames), config.mask_time_prob, config.mask_time_length,
                rng=rng, min_masks=2, attention_mask=body_frames,
            )
        if self.head == "pretraining":
            inputs["sampled_negative_indices"] = sample_negative_indices(
                (batch, num_frames), config.num_negatives, rng=rng, mask_time_indices=inputs["mask_time_indices"],
            )
        if self.head == "ctc":
            out_frames = feat_extract_output_lengths(config, np.array(self.lengths))
            # Different label lengths, each feasible (at most half the utterance's frames).
            label_lengths = [max(1, int(n) // 2 - b) for b, n in enumerate(out_frames)]
            labels = np.full((batch, max(label_lengths)), -100, dtype=np.int64)
            for b, n in enumerate(label_lengths):
                labels[b, :n] = rng.integers(1, config.vocab_size, size=n)
            inputs["labels"] = labels
        elif self.head in ("sequence_classification", "xvector"):
            inputs["labels"] = rng.integers(0, config.num_labels, size=batch)
        elif self.head == "audio_frame_classification":
            # One-hot targets per frame, as the reference takes them (its loss uses their argmax).
            classes = rng.integers(0, config.num_labels, size=(batch, num_frames))
            inputs["labels"] = np.eye(config.num_labels, dtype=np.float32)[classes]
        return inputs


def builtin_cases() -> list:
    return [
        Case("base/model", small_config("base"), "model", note="group-norm conv, post-norm encoder"),
        Case("stable/model", small_config("stable"), "model", note="layer-norm conv, pre-norm encoder"),
        Case("base/ctc", small_config("base", ctc_loss_reduction="mean"), "ctc"),
        Case("stable/ctc", small_config("stable", ctc_loss_reduction="sum"), "ctc"),
        Case("stable/ctc+conv-adapter", small_config("stable", add_adapter=True, output_hidden_size=12,
                                                     num_adapter_layers=2), "ctc", lengths=(1600, 1200)),
        Case("stable/ctc+mms-adapters", small_config("stable", adapter_attn_dim=4), "ctc"),
        Case("base/seq-cls+weighted-sum", small_config("base", use_weighted_layer_sum=True), "sequence_classification"),
        Case("stable/frame-cls", small_config("stable"), "audio_frame_classification"),
        Case("base/xvector", small_config("base"), "xvector"),
        Case("base/pretraining", small_config("base"), "pretraining"),
        Case("stable/pretraining", small_config("stable"), "pretraining"),
    ]
