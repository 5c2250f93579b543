"""Wav2Vec2Config: every hyper-parameter of the model, as one plain dataclass.

The JSON form is the reference's ``config.json``: a directory written by either library loads in the
other. Keys this class does not know (``architectures``, ``torch_dtype``, ...) are kept in ``extra``
and written back unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
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
        if self.output_hidden_size is None:
            self.output_hidden_size = self.hidden_size
        if self.id2label is None:
            self.id2label = {0: "LABEL_0", 1: "LABEL_1"}
        if not isinstance(self.extra, dict):
            raise ValueError(f"Wav2Vec2Config.extra: must be a mapping, got {type(self.extra).__name__}")
        self.extra = dict(self.extra)  # a replace()d copy must not share it
        self._check_types()
        self.validate()

    def _check_types(self) -> None:
        """Check each field's type and range; store JSON-plain values (ints, tuples of ints, an int-keyed id2label)."""
        for name in _INT_FIELDS:
            minimum = 0 if name in _NON_NEGATIVE else 1
            setattr(self, name, _integer(name, getattr(self, name), minimum, optional=name in _OPTIONAL))
        for name in _INT_SEQUENCE_FIELDS:
            setattr(self, name, _integer_sequence(name, getattr(self, name)))
        for name in _FLOAT_FIELDS:
            value = _number(name, getattr(self, name))
            if name in _PROBABILITIES and not 0.0 <= value <= 1.0:
                _fail(name, f"must lie in [0, 1], got {value}")
            if name in _POSITIVE_FLOATS and not value > 0.0:
                _fail(name, f"must be positive, got {value}")
            if value < 0.0:
                _fail(name, f"must be at least 0, got {value}")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                _fail(name, f"must be true or false, got {getattr(self, name)!r}")
        for name, choices in _CHOICE_FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                _fail(name, f"must be one of {choices}, got {value!r}")
        self.id2label = _labels(self.id2label)

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
        """Raise ValueError naming the first field that does not fit the others."""
        n = len(self.conv_dim)
        if len(self.conv_stride) != n or len(self.conv_kernel) != n:
            _fail(
                "conv_dim",
                f"conv_dim, conv_stride and conv_kernel must have the same length, got "
                f"{len(self.conv_dim)}, {len(self.conv_stride)} and {len(self.conv_kernel)}",
            )
        if not (len(self.tdnn_dim) == len(self.tdnn_kernel) == len(self.tdnn_dilation)):
            _fail(
                "tdnn_dim",
                f"tdnn_dim, tdnn_kernel and tdnn_dilation must have the same length, got "
                f"{len(self.tdnn_dim)}, {len(self.tdnn_kernel)} and {len(self.tdnn_dilation)}",
            )
        if self.hidden_size % self.num_attention_heads:
            _fail(
                "hidden_size",
                f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}",
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            _fail(
                "num_conv_pos_embedding_groups",
                f"hidden_size={self.hidden_size} is not divisible by {self.num_conv_pos_embedding_groups} groups",
            )
        if self.codevector_dim % self.num_codevector_groups:
            _fail(
                "codevector_dim",
                f"{self.codevector_dim} is not divisible by num_codevector_groups={self.num_codevector_groups}",
            )
        # The pad id is the CTC blank: the loss needs it to be one of the vocabulary's ids.
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            _fail(
                "pad_token_id",
                f"{self.pad_token_id} is the CTC blank and must lie in [0, vocab_size={self.vocab_size})",
            )
        if self.add_adapter and self.num_adapter_layers < 1:
            _fail("num_adapter_layers", "add_adapter=True needs at least one adapter layer")

    # ------------------------------------------------------------------ dict / JSON round trip
    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, data: dict, **overrides) -> "Wav2Vec2Config":
        if not isinstance(data, dict):
            raise ValueError(f"a config is a mapping of field names to values, got {type(data).__name__}")
        data = {**data, **overrides}
        num_labels = data.get("num_labels")
        if num_labels is not None and data.get("id2label") is None:
            # num_labels alone asks for that many default labels, as in the reference
            count = _integer("num_labels", num_labels, minimum=1)
            data["id2label"] = {i: f"LABEL_{i}" for i in range(count)}
        elif num_labels is not None and num_labels != len(data["id2label"]):
            _fail("num_labels", f"{num_labels} does not match the {len(data['id2label'])} labels of id2label")
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

# Field kinds for the type and range checks (a test checks that every field has exactly one).
_INT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "mask_time_length", "mask_time_min_masks",
    "mask_feature_length", "mask_feature_min_masks", "num_codevectors_per_group", "num_codevector_groups",
    "num_negatives", "codevector_dim", "proj_codevector_dim", "classifier_proj_size", "xvector_output_dim",
    "pad_token_id", "bos_token_id", "eos_token_id", "adapter_kernel_size", "adapter_stride",
    "num_adapter_layers", "output_hidden_size", "adapter_attn_dim",
)
_NON_NEGATIVE = frozenset({
    "mask_time_min_masks", "mask_feature_min_masks", "num_negatives", "num_adapter_layers",
    "pad_token_id", "bos_token_id", "eos_token_id",
})  # every other int field is a size or a count that must be positive
_OPTIONAL = frozenset({"pad_token_id", "bos_token_id", "eos_token_id", "adapter_attn_dim"})
_INT_SEQUENCE_FIELDS = ("conv_dim", "conv_stride", "conv_kernel", "tdnn_dim", "tdnn_kernel", "tdnn_dilation")
_PROBABILITIES = (
    "hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout", "feat_quantizer_dropout",
    "final_dropout", "layerdrop", "mask_time_prob", "mask_feature_prob",
)
_POSITIVE_FLOATS = ("layer_norm_eps", "contrastive_logits_temperature")
_FLOAT_FIELDS = (*_PROBABILITIES, *_POSITIVE_FLOATS, "initializer_range", "diversity_loss_weight")  # all finite, >= 0
_BOOL_FIELDS = ("do_stable_layer_norm", "conv_bias", "apply_spec_augment", "ctc_zero_infinity",
                "use_weighted_layer_sum", "add_adapter")
_CHOICE_FIELDS = {
    "hidden_act": _ACTIVATIONS, "feat_extract_activation": _ACTIVATIONS, "feat_extract_norm": _NORMS,
    "ctc_loss_reduction": _CTC_REDUCTIONS,
}


def _fail(name, why):
    raise ValueError(f"Wav2Vec2Config.{name}: {why}")


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _integer(name, value, minimum: int, optional: bool = False):
    """An int field: a whole number (not a bool, a float or a string) of at least ``minimum``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, f"must be an integer{' or null' if optional else ''}, got {_describe(value)}")
    if value < minimum:
        _fail(name, f"must be {'positive' if minimum == 1 else f'at least {minimum}'}, got {value}")
    return int(value)


def _integer_sequence(name, value) -> Tuple[int, ...]:
    if type(value).__module__ == "numpy":  # an array (a NumPy scalar becomes a number and is refused)
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        _fail(name, f"must be a list of positive integers, got {_describe(value)}")
    if not value:
        _fail(name, "must list at least one layer")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 1:
            _fail(name, f"entry {i} must be a positive integer, got {_describe(item)}")
    return tuple(int(v) for v in value)


def _number(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _fail(name, f"must be a finite number, got {_describe(value)}")
    return value


def _labels(id2label) -> dict:
    """id2label with int keys 0..n-1 (JSON writes them as strings) and string values."""
    if not isinstance(id2label, dict) or not id2label:
        _fail("id2label", f"must be a non-empty mapping of label ids to names, got {_describe(id2label)}")
    labels = {}
    for key, label in id2label.items():
        if isinstance(key, str) and key.strip().isdigit():
            index = int(key)
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            index = int(key)
        else:
            _fail("id2label", f"keys must be label ids (integers), got {key!r}")
        if not isinstance(label, str):
            _fail("id2label", f"label {key!r} must be a string, got {_describe(label)}")
        labels[index] = label
    if sorted(labels) != list(range(len(id2label))):
        _fail("id2label", f"the ids must be 0..{len(id2label) - 1} (one per classifier output), got {sorted(labels)}")
    return labels

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
