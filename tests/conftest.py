"""Shared test helpers: small configs of both architectures, and the reference oracle."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from wav2vec2 import Wav2Vec2Config

from wav2vec2.spec.names import HEADS  # noqa: E402,F401  (re-exported for the tests)


def small_config(arch: str = "base", **overrides) -> Wav2Vec2Config:
    """A config small enough for CPU tests.

    arch="base": group-norm conv, post-norm encoder, no conv bias (wav2vec2-base style).
    arch="stable": layer-norm conv, pre-norm encoder, conv bias (large-lv60 / XLS-R style).
    """
    values = dict(
        vocab_size=12,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=20,
        conv_dim=(8, 8, 8),
        conv_stride=(4, 2, 2),
        conv_kernel=(8, 3, 3),
        num_conv_pos_embeddings=6,
        num_conv_pos_embedding_groups=2,
        num_codevectors_per_group=5,
        num_codevector_groups=2,
        codevector_dim=8,
        proj_codevector_dim=6,
        num_negatives=4,
        classifier_proj_size=7,
        tdnn_dim=(8, 8, 10),
        tdnn_kernel=(3, 3, 1),
        tdnn_dilation=(1, 2, 1),
        xvector_output_dim=6,
        id2label={0: "a", 1: "b", 2: "c"},
        mask_time_prob=0.2,
        mask_time_length=2,
        layerdrop=0.0,
    )
    if arch == "stable":
        values.update(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    elif arch != "base":
        raise ValueError(f"unknown arch {arch!r}")
    values.update(overrides)
    return Wav2Vec2Config(**values)


def reference_config(config: Wav2Vec2Config):
    """The same config as a transformers.Wav2Vec2Config (the oracle); skips when it is absent."""
    transformers = pytest.importorskip("transformers")
    return transformers.Wav2Vec2Config(**config.to_dict())


@pytest.fixture
def rng():
    return np.random.default_rng(0)
