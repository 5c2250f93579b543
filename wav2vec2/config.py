"""Wav2Vec2Config: every hyper-parameter of the model, as one plain dataclass.

The JSON form is the reference's ``config.json``: a directory written by either library loads in the
other. Keys this class does not know (``architectures``, ``torch_dtype``, ...) are kept in ``extra``
and written back unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Optional, Tuple

CONFIG_NAME = "config.json"

_NORMS = ("group", "layer")
_CTC_REDUCTIONS = ("sum", "mean", "none")
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_python", "relu", "silu", "swish", "tanh", "gelu_pytorch_tanh", "quick_gelu")


@dataclass
class Wav2Vec2Config:
    # --- transformer encoder ---
    vocab_size: int = 32
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    feat_quantizer_dropout: float = 0.0
    final_dropout: float = 0.1
    layerdrop: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    do_stable_layer_norm: bool = False
    # --- convolutional feature encoder ---
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: Tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: Tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: Tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    # --- SpecAugment ---
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    # --- quantizer and pretraining losses ---
    num_codevectors_per_group: int = 320
    num_codevector_groups: int = 2
    contrastive_logits_temperature: float = 0.1
    num_negatives: int = 100
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    diversity_loss_weight: float = 0.1
    # --- CTC ---
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = False
    # --- classification and x-vector heads ---
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    tdnn_dim: Tuple[int, ...] = (512, 512, 512, 512, 1500)
    tdnn_kernel: Tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: Tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512
    id2label: Optional[dict] = None  # {int: str}; None means the reference default of two labels
    # --- special tokens ---
    pad_token_id: Optional[int] = 0
    bos_token_id: Optional[int] = 1
    eos_token_id: Optional[int] = 2
    # --- adapters ---
    add_adapter: bool = False
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    num_adapter_layers: int = 3
    output_hidden_size: Optional[int] = None  # None means hidden_size
    adapter_attn_dim: Optional[int] = None  # MMS per-language attention adapters
    # --- keys this library does not interpret, kept for the round trip ---
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("conv_dim", "conv_stride", "conv_kernel", "tdnn_dim", "tdnn_kernel", "tdnn_dilation"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.output_hidden_size is None:
            self.output_hidden_size = self.hidden_size
        if self.id2label is None:
            self.id2label = {0: "LABEL_0", 1: "LABEL_1"}
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Waveform samples per output frame of the conv stack."""
        return math.prod(self.conv_stride)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict:
        return {v: k for k, v in self.id2label.items()}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""

        def fail(name, why):
            raise ValueError(f"Wav2Vec2Config.{name}: {why}")

        n = len(self.conv_dim)
        if n == 0:
            fail("conv_dim", "the conv feature encoder needs at least one layer")
        if len(self.conv_stride) != n or len(self.conv_kernel) != n:
            fail(
                "conv_dim",
                f"conv_dim, conv_stride and conv_kernel must have the same length, got "
                f"{len(self.conv_dim)}, {len(self.conv_stride)} and {len(self.conv_kernel)}",
            )
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            if any(v <= 0 for v in getattr(self, name)):
                fail(name, f"every entry must be positive, got {getattr(self, name)}")
        if not (len(self.tdnn_dim) == len(self.tdnn_kernel) == len(self.tdnn_dilation)):
            fail(
                "tdnn_dim",
                f"tdnn_dim, tdnn_kernel and tdnn_dilation must have the same length, got "
                f"{len(self.tdnn_dim)}, {len(self.tdnn_kernel)} and {len(self.tdnn_dilation)}",
            )
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                fail(name, f"must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            fail(
                "hidden_size",
                f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}",
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            fail(
                "num_conv_pos_embedding_groups",
                f"hidden_size={self.hidden_size} is not divisible by {self.num_conv_pos_embedding_groups} groups",
            )
        if self.feat_extract_norm not in _NORMS:
            fail("feat_extract_norm", f"must be one of {_NORMS}, got {self.feat_extract_norm!r}")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in _ACTIVATIONS:
                fail(name, f"must be one of {_ACTIVATIONS}, got {getattr(self, name)!r}")
        if self.ctc_loss_reduction not in _CTC_REDUCTIONS:
            fail("ctc_loss_reduction", f"must be one of {_CTC_REDUCTIONS}, got {self.ctc_loss_reduction!r}")
        for name in (
            "hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",
            "feat_quantizer_dropout", "final_dropout", "layerdrop", "mask_time_prob", "mask_feature_prob",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                fail(name, f"must lie in [0, 1], got {value}")
        for name in ("mask_time_length", "mask_feature_length"):
            if getattr(self, name) < 1:
                fail(name, f"must be at least 1, got {getattr(self, name)}")
        if self.codevector_dim % self.num_codevector_groups:
            fail(
                "codevector_dim",
                f"{self.codevector_dim} is not divisible by num_codevector_groups={self.num_codevector_groups}",
            )
        if self.add_adapter and self.num_adapter_layers < 1:
            fail("num_adapter_layers", "add_adapter=True needs at least one adapter layer")
        if self.adapter_attn_dim is not None and self.adapter_attn_dim <= 0:
            fail("adapter_attn_dim", f"must be positive or None, got {self.adapter_attn_dim}")

    # ------------------------------------------------------------------ dict / JSON round trip
    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, data: dict, **overrides) -> "Wav2Vec2Config":
        data = {**data, **overrides}
        known = set(cls.field_names())
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in _DERIVED_KEYS}
        extra.pop("model_type", None)
        extra.update(kwargs.pop("extra", None) or {})
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.field_names()}
        for name in ("conv_dim", "conv_stride", "conv_kernel", "tdnn_dim", "tdnn_kernel", "tdnn_dilation"):
            out[name] = list(out[name])
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = dict(self.label2id)
        out["num_feat_extract_layers"] = self.num_feat_extract_layers
        out["model_type"] = "wav2vec2"
        out.update(self.extra)
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path) -> "Wav2Vec2Config":
        from .io.hub import read_json_object  # imported here: wav2vec2.io imports this module

        data = read_json_object(path)
        model_type = data.get("model_type", "wav2vec2")
        if model_type != "wav2vec2":
            raise ValueError(f"{path}: model_type is {model_type!r}, expected 'wav2vec2'")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    def to_json_file(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_pretrained(cls, path_or_repo_id, **hub_kwargs) -> "Wav2Vec2Config":
        """Load ``config.json`` from a directory, a file, or a hub repo id (see ``wav2vec2.io.hub``)."""
        from .io.hub import resolve_file

        if os.path.isfile(path_or_repo_id):
            return cls.from_json_file(path_or_repo_id)
        return cls.from_json_file(resolve_file(path_or_repo_id, CONFIG_NAME, **hub_kwargs))

    def save_pretrained(self, save_directory) -> str:
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        self.to_json_file(path)
        return path

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides) -> "Wav2Vec2Config":
        """A config with the shapes of a published checkpoint family: see ``PRESETS``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def replace(self, **changes) -> "Wav2Vec2Config":
        return dataclasses.replace(self, **changes)


# Keys the reference writes that are derived here, so they are recomputed rather than stored.
_DERIVED_KEYS = frozenset({"num_feat_extract_layers", "label2id", "num_labels"})

_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
_STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)

# Shapes of the published checkpoint families (the weights themselves live on the hub).
PRESETS = {
    # facebook/wav2vec2-base(-960h): group-norm conv, post-norm encoder
    "base": dict(),
    # facebook/wav2vec2-large(-960h): large encoder, still the base-style architecture
    "large": dict(_LARGE),
    # facebook/wav2vec2-large-lv60 / large-960h-lv60-self: layer-norm conv, pre-norm ("stable") encoder
    "large-lv60": dict(_LARGE, **_STABLE),
    # facebook/wav2vec2-xls-r-300m: large-lv60 architecture, multilingual pretraining settings
    "xls-r-300m": dict(
        _LARGE, **_STABLE, feat_proj_dropout=0.1, layerdrop=0.1, mask_time_prob=0.075,
        num_codevectors_per_group=320, codevector_dim=768, proj_codevector_dim=768,
    ),
    # facebook/mms-1b-all: xls-r 1b shapes with per-language attention adapters
    "mms-1b": dict(
        hidden_size=1280, num_hidden_layers=48, num_attention_heads=16, intermediate_size=5120,
        **_STABLE, adapter_attn_dim=16, codevector_dim=1024, proj_codevector_dim=1024,
    ),
}
