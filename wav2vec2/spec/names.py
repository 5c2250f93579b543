"""Weight names: the canonical key set per config and head, and the tables to and from other formats.

The canonical layout is the reference PyTorch state dict: Linear weights ``(out, in)``, Conv1d weights
``(out, in/groups, kernel)``, heads prefix the body with ``wav2vec2.``, and the positional conv weight
norm is spelled ``weight_g`` ``(1, 1, K)`` / ``weight_v``. Every other format is converted through it:

- TF ``tf_model.h5``: ``wav2vec2/encoder/layers.0/attention/k_proj/kernel:0`` (see ``to_tf_weights``),
  which are also the names of the TF backend's Keras variables (``tf_key``);
- Flax ``flax_model.msgpack``: a nested dict ``{"wav2vec2": {"encoder": {"layers": {"0": ...}}}}``, and
  the Flax backend's linen tree, which differs only in naming list items ``layers_0`` (``flax_key``);
- fairseq ``.pt``: a table of regular expressions (``fairseq_to_canonical``).

NumPy only.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

# Each head's class name, the same in the reference and in every backend.
HEAD_CLASSES = {
    "model": "Wav2Vec2Model",
    "ctc": "Wav2Vec2ForCTC",
    "sequence_classification": "Wav2Vec2ForSequenceClassification",
    "audio_frame_classification": "Wav2Vec2ForAudioFrameClassification",
    "xvector": "Wav2Vec2ForXVector",
    "pretraining": "Wav2Vec2ForPreTraining",
}
HEADS = tuple(HEAD_CLASSES)

BODY_PREFIX = "wav2vec2."

# PyTorch 2 parametrizations spell the positional conv weight norm differently; both load.
WEIGHT_NORM_ALIASES = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}

# Top-level modules of each head (outside ``wav2vec2.``), in the reference's state-dict order.
HEAD_MODULES = {
    "model": (),
    "ctc": ("lm_head",),
    "sequence_classification": ("layer_weights", "projector", "classifier"),
    "audio_frame_classification": ("layer_weights", "classifier"),
    "xvector": ("layer_weights", "projector", "tdnn", "feature_extractor", "classifier", "objective"),
    "pretraining": ("quantizer", "project_hid", "project_q"),
}

# Body parameters that only exist for some configs and that no forward pass in inference needs:
# a checkpoint may have them when the config does not ask for them, or the reverse.
OPTIONAL_BODY_KEYS = frozenset({"masked_spec_embed"})

Shapes = Dict[str, Tuple[int, ...]]


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")


# ---------------------------------------------------------------------------------------- key sets
def _linear(shapes: Shapes, name: str, n_out: int, n_in: int, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (n_out, n_in)
    if bias:
        shapes[f"{name}.bias"] = (n_out,)


def _norm(shapes: Shapes, name: str, dim: int) -> None:
    shapes[f"{name}.weight"] = (dim,)
    shapes[f"{name}.bias"] = (dim,)


def body_shapes(config) -> Shapes:
    """Keys and shapes of a bare ``Wav2Vec2Model`` (no ``wav2vec2.`` prefix), in state-dict order."""
    c = config
    shapes: Shapes = {}
    if c.mask_time_prob > 0 or c.mask_feature_prob > 0:
        shapes["masked_spec_embed"] = (c.hidden_size,)

    # Feature encoder: group-norm checkpoints normalise only the first conv layer.
    in_dim = 1
    for i, (dim, kernel) in enumerate(zip(c.conv_dim, c.conv_kernel)):
        name = f"feature_extractor.conv_layers.{i}"
        shapes[f"{name}.conv.weight"] = (dim, in_dim, kernel)
        if c.conv_bias:
            shapes[f"{name}.conv.bias"] = (dim,)
        if c.feat_extract_norm == "layer" or i == 0:
            _norm(shapes, f"{name}.layer_norm", dim)
        in_dim = dim

    _norm(shapes, "feature_projection.layer_norm", c.conv_dim[-1])
    _linear(shapes, "feature_projection.projection", c.hidden_size, c.conv_dim[-1])

    pos_conv = "encoder.pos_conv_embed.conv"
    shapes[f"{pos_conv}.bias"] = (c.hidden_size,)
    shapes[f"{pos_conv}.weight_g"] = (1, 1, c.num_conv_pos_embeddings)
    shapes[f"{pos_conv}.weight_v"] = (
        c.hidden_size, c.hidden_size // c.num_conv_pos_embedding_groups, c.num_conv_pos_embeddings,
    )
    _norm(shapes, "encoder.layer_norm", c.hidden_size)

    for i in range(c.num_hidden_layers):
        layer = f"encoder.layers.{i}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            _linear(shapes, f"{layer}.attention.{proj}", c.hidden_size, c.hidden_size)
        _norm(shapes, f"{layer}.layer_norm", c.hidden_size)
        _linear(shapes, f"{layer}.feed_forward.intermediate_dense", c.intermediate_size, c.hidden_size)
        _linear(shapes, f"{layer}.feed_forward.output_dense", c.hidden_size, c.intermediate_size)
        _norm(shapes, f"{layer}.final_layer_norm", c.hidden_size)
        # MMS attention adapters exist only in the pre-norm ("stable") layer.
        if c.adapter_attn_dim and c.do_stable_layer_norm:
            _norm(shapes, f"{layer}.adapter_layer.norm", c.hidden_size)
            _linear(shapes, f"{layer}.adapter_layer.linear_1", c.adapter_attn_dim, c.hidden_size)
            _linear(shapes, f"{layer}.adapter_layer.linear_2", c.hidden_size, c.adapter_attn_dim)

    if c.add_adapter:
        out = c.output_hidden_size
        if out != c.hidden_size:
            _linear(shapes, "adapter.proj", out, c.hidden_size)
            _norm(shapes, "adapter.proj_layer_norm", out)
        for i in range(c.num_adapter_layers):
            # Each adapter conv doubles the channels for its GLU.
            shapes[f"adapter.layers.{i}.conv.weight"] = (2 * out, out, c.adapter_kernel_size)
            shapes[f"adapter.layers.{i}.conv.bias"] = (2 * out,)
    return shapes


def head_shapes(config, head: str) -> Shapes:
    """Keys and shapes of ``head``'s own parameters (those outside ``wav2vec2.``)."""
    _check_head(head)
    c = config
    shapes: Shapes = {}
    if head in ("sequence_classification", "audio_frame_classification", "xvector") and c.use_weighted_layer_sum:
        shapes["layer_weights"] = (c.num_hidden_layers + 1,)  # one per hidden state, embeddings included
    if head == "ctc":
        _linear(shapes, "lm_head", c.vocab_size, c.output_hidden_size if c.add_adapter else c.hidden_size)
    elif head == "sequence_classification":
        _linear(shapes, "projector", c.classifier_proj_size, c.hidden_size)
        _linear(shapes, "classifier", c.num_labels, c.classifier_proj_size)
    elif head == "audio_frame_classification":
        _linear(shapes, "classifier", c.num_labels, c.hidden_size)
    elif head == "xvector":
        _linear(shapes, "projector", c.tdnn_dim[0], c.hidden_size)
        in_dim = c.tdnn_dim[0]
        for i, (dim, kernel) in enumerate(zip(c.tdnn_dim, c.tdnn_kernel)):
            # A TDNN layer is a Linear over `kernel` stacked (dilated) frames.
            _linear(shapes, f"tdnn.{i}.kernel", dim, in_dim * kernel)
            in_dim = dim
        _linear(shapes, "feature_extractor", c.xvector_output_dim, 2 * c.tdnn_dim[-1])  # mean and std pooled
        _linear(shapes, "classifier", c.xvector_output_dim, c.xvector_output_dim)
        shapes["objective.weight"] = (c.xvector_output_dim, c.num_labels)  # AM-softmax matrix, (in, out)
    elif head == "pretraining":
        groups = c.num_codevector_groups
        shapes["quantizer.codevectors"] = (
            1, groups * c.num_codevectors_per_group, c.codevector_dim // groups,
        )
        _linear(shapes, "quantizer.weight_proj", groups * c.num_codevectors_per_group, c.conv_dim[-1])
        _linear(shapes, "project_hid", c.proj_codevector_dim, c.hidden_size)
        _linear(shapes, "project_q", c.proj_codevector_dim, c.codevector_dim)
    return shapes


def canonical_shapes(config, head: str = "model") -> Shapes:
    """Exact keys and shapes of the reference PyTorch state dict of ``head`` for ``config``."""
    _check_head(head)
    body = body_shapes(config)
    if head == "model":
        return body
    own = head_shapes(config, head)
    # The reference lists a head's direct parameters (layer_weights) before its submodules.
    direct = {k: v for k, v in own.items() if "." not in k}
    nested = {k: v for k, v in own.items() if "." in k}
    return {**direct, **{BODY_PREFIX + k: v for k, v in body.items()}, **nested}


def head_keys(config, head: str) -> frozenset:
    """The keys of ``canonical_shapes(config, head)`` that belong to the head, not to ``wav2vec2.``."""
    return frozenset(head_shapes(config, head))


def adapter_shapes(config) -> Shapes:
    """Keys and shapes of an MMS adapter file ``adapter.{lang}.safetensors``: every attention adapter
    of a ``ctc`` model plus its ``lm_head`` (a language brings its own vocabulary)."""
    shapes = canonical_shapes(config, "ctc")
    return {k: v for k, v in shapes.items() if ".adapter_layer." in k or k.startswith("lm_head.")}


def head_of_key(key: str) -> Optional[str]:
    """The first head whose own parameters include ``key`` (a name outside ``wav2vec2.``), else None."""
    if key.startswith(BODY_PREFIX):
        return None
    module = key.split(".", 1)[0]
    for head, modules in HEAD_MODULES.items():
        if module in modules:
            return head
    return None


def normalize_key(key: str) -> str:
    """Map the PyTorch-2 weight-norm spelling to the canonical ``weight_g`` / ``weight_v``."""
    for alias, name in WEIGHT_NORM_ALIASES.items():
        if key.endswith(alias):
            return key[: -len(alias)] + name
    return key


# ---------------------------------------------------------------------------------- TF and Flax
# TF names (the reference's tf_model.h5 and the Keras variables of wav2vec2.backends.tensorflow) and Flax
# paths (the reference's flax_model.msgpack and the linen parameters of wav2vec2.backends.flax) keep the
# canonical module names; a weight differs only in its leaf name and maybe its layout. The one layout
# change is a reversal of the axes: Linear (out, in) <-> Dense (in, out), Conv1d (out, in, K) <-> Conv
# (K, in, out), and the positional conv's weight_g (1, 1, K) <-> (K, 1, 1) in TF. It is its own inverse.
@dataclass(frozen=True)
class LayoutRule:
    pattern: str  # regular expression searched in the canonical name
    tf_leaf: Optional[str]  # TF variable name; None keeps the canonical leaf
    flax_leaf: Optional[str]  # Flax leaf name; None keeps the canonical leaf
    tf_reversed: bool = False  # TF stores the canonical array with its axes reversed
    flax_reversed: bool = False  # Flax stores the canonical array with its axes reversed


# First match wins. One line per kind of parameter; heads the reference TF/Flax never had follow the
# same rules, so the table holds no per-key entries.
LAYOUT_RULES = (
    # positional conv weight-norm gain: (1, 1, K) in PyTorch and Flax, (K, 1, 1) in TF
    LayoutRule(r"pos_conv_embed\.conv\.weight_g$", None, None, tf_reversed=True),
    # positional conv weight-norm direction: PyTorch layout (C, C/groups, K) everywhere
    LayoutRule(r"pos_conv_embed\.conv\.weight_v$", None, None),
    # Conv1d (out, in, K) -> Keras/Flax Conv kernel (K, in, out)
    LayoutRule(r"\.conv\.weight$", "kernel", "kernel", tf_reversed=True, flax_reversed=True),
    # LayerNorm / GroupNorm affine parameters
    LayoutRule(r"norm\.weight$", "gamma", "scale"),
    LayoutRule(r"norm\.bias$", "beta", "bias"),
    # free parameters, not a layer's weight: same name and layout everywhere
    LayoutRule(r"(^|\.)(masked_spec_embed|layer_weights|codevectors)$", None, None),
    # the AM-softmax matrix is already stored (in, out)
    LayoutRule(r"^objective\.weight$", None, None),
    # Linear (out, in) -> Dense kernel (in, out)
    LayoutRule(r"\.weight$", "kernel", "kernel", tf_reversed=True, flax_reversed=True),
    LayoutRule(r"\.bias$", "bias", "bias"),
)

# Leaf names other formats use, back to the canonical leaf (anything else keeps its name).
_CANONICAL_LEAF = {"kernel": "weight", "gamma": "weight", "beta": "bias", "scale": "weight"}
# Flax linen names the modules of a list ``layers_3``; the canonical key and the msgpack tree ``layers.3``.
_LINEN_LIST_ITEM = re.compile(r"^(conv_layers|layers|tdnn)_(\d+)$")


def _rule(key: str) -> LayoutRule:
    for rule in LAYOUT_RULES:
        if re.search(rule.pattern, key):
            return rule
    raise ValueError(f"no TF/Flax layout rule for weight {key!r}")


def _split(key: str) -> Tuple[str, str]:
    module, _, leaf = key.rpartition(".")
    return module, leaf


def _foreign_key(framework: str, modules, leaf: str) -> Tuple[str, bool]:
    key = ".".join([*modules, _CANONICAL_LEAF.get(leaf, leaf)])
    rule = _rule(key)
    if (getattr(rule, f"{framework}_leaf") or _split(key)[1]) != leaf:
        raise ValueError(f"{framework} weight {'/'.join([*modules, leaf])!r} matches no known weight name")
    return key, getattr(rule, f"{framework}_reversed")


def tf_key(name: str) -> Tuple[str, bool]:
    """Canonical key of a TF weight name (first scope dropped, no ``:0``), and whether TF reverses its axes.
    ValueError when the table knows no such weight."""
    *modules, leaf = name.split("/")
    return _foreign_key("tf", modules, leaf)


def flax_key(path) -> Tuple[str, bool]:
    """Canonical key of a Flax parameter path, and whether Flax reverses its axes. The path may spell a
    list item as the msgpack tree does (``layers``, ``3``) or as linen names its modules (``layers_3``)."""
    *modules, leaf = (str(part) for part in path)
    return _foreign_key("flax", [_LINEN_LIST_ITEM.sub(r"\1.\2", m) for m in modules], leaf)


def relayout(array, reversed_axes: bool) -> np.ndarray:
    """A canonical array in a TF or Flax layout, or back: its axes reversed (C-contiguous), or as it is."""
    return np.ascontiguousarray(np.asarray(array).T) if reversed_axes else np.asarray(array)


def tf_name(key: str) -> str:
    """TF variable name (without the varying first scope) of a canonical key with ``wav2vec2.`` prefix.
    Keras names list items ``layers.0``, so an index stays joined to its list by a dot."""
    module, leaf = _split(key)
    module = re.sub(r"\.(?!\d+(\.|$))", "/", module)
    return "/".join(filter(None, (module, f"{_rule(key).tf_leaf or leaf}:0")))


def to_tf_weights(state) -> Dict[str, np.ndarray]:
    """Canonical state -> {TF variable name: array}. A bare model is nested under ``wav2vec2/`` as in TF."""
    if not any(k.startswith(BODY_PREFIX) for k in state):
        state = {BODY_PREFIX + k: v for k, v in state.items()}
    return {tf_name(key): relayout(value, _rule(key).tf_reversed) for key, value in state.items()}


def from_tf_weights(weights) -> Dict[str, np.ndarray]:
    """{TF variable name (first scope dropped): array} -> canonical state.

    TF nests even a bare model under ``wav2vec2/``; weights with nothing outside it are a bare model and
    come back without the prefix, as the reference PyTorch ``Wav2Vec2Model`` names them.
    """
    state = {}
    for name, value in weights.items():
        if not name.endswith(":0"):
            raise ValueError(f"TF weight name {name!r} does not end with ':0'")
        key, reversed_axes = tf_key(name[:-2])
        state[key] = relayout(value, reversed_axes)
    if state and all(k.startswith(BODY_PREFIX) for k in state):
        state = {k[len(BODY_PREFIX):]: v for k, v in state.items()}
    return state


def to_flax_tree(state) -> dict:
    """Canonical state -> the reference Flax params tree (no top-level ``params``)."""
    tree: dict = {}
    for key, value in state.items():
        module, leaf = _split(key)
        rule = _rule(key)
        node = tree
        for part in filter(None, module.split(".")):
            node = node.setdefault(part, {})
        node[rule.flax_leaf or leaf] = relayout(value, rule.flax_reversed)
    return tree


def from_flax_tree(tree) -> Dict[str, np.ndarray]:
    """A Flax params tree (the reference's or a linen one) -> canonical state. A top-level ``params`` is
    unwrapped."""
    if set(tree) == {"params"}:
        tree = tree["params"]
    state = {}

    def walk(node, path):
        for name, child in node.items():
            if isinstance(child, Mapping):  # a dict or a flax FrozenDict
                walk(child, (*path, name))
            else:
                key, reversed_axes = flax_key((*path, name))
                state[key] = relayout(child, reversed_axes)

    walk(tree, ())
    return state


def check_keys(keys, expected, owner: str) -> None:
    """ValueError naming them unless ``keys`` are exactly the keys of ``expected``."""
    for problem, wrong in (("unknown weight names", set(keys) - set(expected)), ("missing weights", set(expected) - set(keys))):
        if wrong:
            wrong = sorted(wrong)
            raise ValueError(f"{owner}: {problem} {', '.join(wrong[:5])}" + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""))


def checked_state(state, shapes: Shapes, owner: str) -> Dict[str, np.ndarray]:
    """``state`` as NumPy arrays, the PyTorch-2 weight-norm spelling normalised; ValueError naming the keys
    unless it has exactly the keys of ``shapes`` (canonical key -> shape), each of its shape."""
    state = {normalize_key(key): np.asarray(value) for key, value in state.items()}
    check_keys(state, shapes, owner)
    for key, shape in shapes.items():
        if state[key].shape != tuple(shape):
            raise ValueError(f"{owner}: weight {key!r}: expected shape {tuple(shape)}, got {state[key].shape}")
    return state


# ------------------------------------------------------------------------------------------ fairseq
# fairseq names -> canonical names (with the ``wav2vec2.`` body prefix). Fine-tuned checkpoints nest the
# body under ``w2v_encoder.w2v_model.``. Keys are matched in full; the first matching rule wins.
_FT = r"(?:w2v_encoder\.w2v_model\.)?"  # optional fine-tuned prefix
_B = BODY_PREFIX  # canonical body prefix
FAIRSEQ_RULES = (
    # conv layer i is Sequential(conv, dropout, norm, gelu): the conv itself
    (_FT + r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", _B + r"feature_extractor.conv_layers.\1.conv.\2"),
    # layer-norm mode wraps its LayerNorm in Sequential(transpose, norm, transpose)
    (_FT + r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", _B + r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    # group-norm mode: the GroupNorm of layer 0
    (_FT + r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", _B + r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    # the LayerNorm on conv features before the projection
    (_FT + r"layer_norm\.(weight|bias)", _B + r"feature_projection.layer_norm.\1"),
    (_FT + r"post_extract_proj\.(weight|bias)", _B + r"feature_projection.projection.\1"),
    # learned vector that replaces masked frames
    (_FT + r"mask_emb", _B + "masked_spec_embed"),
    # positional conv is Sequential(conv, pad, gelu), weight-normed over the kernel axis
    (_FT + r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", _B + r"encoder.pos_conv_embed.conv.\1"),
    (_FT + r"encoder\.layer_norm\.(weight|bias)", _B + r"encoder.layer_norm.\1"),
    (_FT + r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", _B + r"encoder.layers.\1.attention.\2_proj.\3"),
    (_FT + r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", _B + r"encoder.layers.\1.layer_norm.\2"),
    (_FT + r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", _B + r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (_FT + r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", _B + r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (_FT + r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", _B + r"encoder.layers.\1.final_layer_norm.\2"),
    # pretraining: codebook (1, groups * vars, dim / groups) and the logits that pick its entries
    (r"quantizer\.vars", "quantizer.codevectors"),
    (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
    (r"project_q\.(weight|bias)", r"project_q.\1"),
    # projection of the context vectors into the contrastive space
    (r"final_proj\.(weight|bias)", r"project_hid.\1"),
    # fine-tuned CTC: the vocabulary projection
    (r"w2v_encoder\.proj\.(weight|bias)", r"lm_head.\1"),
)
_FAIRSEQ_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in FAIRSEQ_RULES)


def fairseq_name(key: str) -> Optional[str]:
    """Canonical name of a fairseq wav2vec2 key, or None when no rule matches."""
    for pattern, repl in _FAIRSEQ_COMPILED:
        if pattern.fullmatch(key):
            return pattern.sub(repl, key)
    return None


def fairseq_to_canonical(state) -> Dict[str, np.ndarray]:
    """fairseq state dict -> canonical state (with ``wav2vec2.`` prefix). Unknown keys are an error."""
    out, unknown = {}, []
    for key, value in state.items():
        name = fairseq_name(key)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    if unknown:
        raise ValueError(f"fairseq checkpoint has {len(unknown)} key(s) no rule maps: {sorted(unknown)}")
    return out
