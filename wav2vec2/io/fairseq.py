"""fairseq wav2vec 2.0 checkpoints (``.pt``): config and weights, without fairseq, omegaconf or torch.

A fairseq checkpoint is a torch zip holding a dict with ``model`` (the state dict) and ``cfg`` (an
omegaconf DictConfig; older files: ``args``, an argparse.Namespace). Pretrained models keep their
settings in ``cfg.model``; fine-tuned (``wav2vec_ctc``) ones nest the pretrained settings in
``cfg.model.w2v_args`` and their weights under ``w2v_encoder.w2v_model.``.
"""
from __future__ import annotations

import argparse
import ast
from typing import Dict, Tuple

import numpy as np

from ..config import Wav2Vec2Config
from ..spec import names
from . import torch_pickle
from .matching import match_state_dict


# ----------------------------------------------------------------------------- config containers
def plain(obj):
    """omegaconf stand-ins, Namespaces and enums -> plain dicts, lists and values.

    An object the pickle shares converts once; a reference back to an enclosing object (omegaconf
    nodes keep their ``_parent``) becomes None; nesting deeper than ``torch_pickle.MAX_DEPTH`` is a
    ValueError, never a RecursionError.
    """
    done, enclosing = {}, set()

    def convert(node, depth):
        if not isinstance(node, (argparse.Namespace, dict, list, tuple, torch_pickle._Inert)):
            return node
        if id(node) in done:
            return done[id(node)]
        if id(node) in enclosing:
            return None
        if depth > torch_pickle.MAX_DEPTH:
            raise ValueError(f"the config is nested deeper than {torch_pickle.MAX_DEPTH} levels")
        enclosing.add(id(node))
        done[id(node)] = result = unwrap(node, depth + 1)
        enclosing.discard(id(node))
        return result

    def unwrap(node, depth):
        if isinstance(node, argparse.Namespace):
            node = vars(node)
        if isinstance(node, dict):
            return {k: convert(v, depth) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(convert(v, depth) for v in node)
        state = node.state if isinstance(node.state, dict) else {}
        if "_content" in state:  # DictConfig / ListConfig: the values sit in _content
            return convert(state["_content"], depth)
        if "_val" in state:  # a leaf node (AnyNode, StringNode, ...)
            return convert(state["_val"], depth)
        if len(node.args) == 1 and state == {}:  # an enum rebuilt from its value
            return convert(node.args[0], depth)
        return {k: convert(v, depth) for k, v in state.items()}

    return convert(obj, 0)


_CONV_SPEC_LIMIT = 2000  # characters; real specs are under 100
_CONV_LAYERS_LIMIT = 1000


def parse_conv_layers(spec: str):
    """fairseq's ``conv_feature_layers`` string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4", as
    (dim, kernel, stride) tuples. Only list/tuple literals of ints, ``+`` and ``*`` are evaluated, and
    within bounds (the spec's length and nesting, the number of layers)."""

    def evaluate(node, depth=0):
        if depth > 32:
            raise ValueError(f"conv_feature_layers: nested too deeply: {spec[:80]!r}")
        if isinstance(node, ast.Expression):
            return evaluate(node.body, depth + 1)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            values = [evaluate(e, depth + 1) for e in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left, depth + 1), evaluate(node.right, depth + 1)
            if isinstance(node.op, ast.Mult) and isinstance(left, (list, tuple)) and type(right) is int:
                if len(left) * right > _CONV_LAYERS_LIMIT:
                    raise ValueError(f"conv_feature_layers: more than {_CONV_LAYERS_LIMIT} layers in {spec[:80]!r}")
            try:
                return left + right if isinstance(node.op, ast.Add) else left * right
            except TypeError:
                raise ValueError(f"conv_feature_layers: cannot evaluate {spec[:80]!r}") from None
        raise ValueError(f"conv_feature_layers: unsupported expression {ast.dump(node)[:80]}")

    if not isinstance(spec, str):
        raise ValueError(f"conv_feature_layers: expected a string, got a {type(spec).__name__}")
    if len(spec) > _CONV_SPEC_LIMIT:
        raise ValueError(f"conv_feature_layers: {len(spec)} characters (at most {_CONV_SPEC_LIMIT})")
    try:
        layers = evaluate(ast.parse(spec, mode="eval"))
    except (SyntaxError, RecursionError, MemoryError) as e:
        raise ValueError(f"conv_feature_layers: cannot parse {spec[:80]!r} ({type(e).__name__})") from None
    if not (isinstance(layers, list) and all(
            isinstance(t, tuple) and len(t) == 3 and all(type(v) is int for v in t) for t in layers)):
        raise ValueError(f"conv_feature_layers: expected a list of (dim, kernel, stride), got {spec[:80]!r}")
    return layers


def _model_settings(checkpoint: dict) -> Tuple[dict, dict]:
    """(pretraining settings, fine-tuning overrides) from ``cfg`` or legacy ``args``."""
    if checkpoint.get("cfg") is not None:
        cfg = _mapping(plain(checkpoint["cfg"]), "cfg")
        model = cfg.get("model") or {}
    elif checkpoint.get("args") is not None:
        model = plain(checkpoint["args"])
    else:
        raise ValueError("no 'cfg' or 'args' entry")
    model = _mapping(model, "the model settings")
    w2v_args = model.get("w2v_args")
    if w2v_args:  # fine-tuned: the encoder's own settings come from its pretraining run
        w2v_args = _mapping(plain(w2v_args), "w2v_args")
        pretrained = _mapping(w2v_args.get("model", w2v_args), "w2v_args.model")
        return pretrained, model
    if model.get("w2v_path") or model.get("_name", model.get("arch")) == "wav2vec_ctc":
        raise ValueError("fine-tuned checkpoint without the pretraining settings (w2v_args); "
                         "the encoder's shape cannot be known")
    return model, {}


def _mapping(value, what: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{what} is a {type(value).__name__}, not a mapping of names")
    return value


def _first(*values):
    return next(v for v in values if v is not None)


def config_from_fairseq(settings: dict, finetune: dict, vocab_size=None) -> Wav2Vec2Config:
    """Wav2Vec2Config from fairseq model settings (and the fine-tuning run's overrides)."""

    def get(name, default):
        """A fine-tuning override, else the pretraining value, else ``default``."""
        return _first(finetune.get(name), settings.get(name), default)

    conv = parse_conv_layers(settings.get("conv_feature_layers", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"))
    layer_norm_first = bool(settings.get("layer_norm_first", False))
    extractor_mode = settings.get("extractor_mode", "layer_norm" if layer_norm_first else "default")
    final_dim = settings.get("final_dim") or settings.get("encoder_embed_dim", 768)
    values = dict(
        hidden_size=settings.get("encoder_embed_dim", 768),
        num_hidden_layers=settings.get("encoder_layers", 12),
        num_attention_heads=settings.get("encoder_attention_heads", 12),
        intermediate_size=settings.get("encoder_ffn_embed_dim", 3072),
        hidden_act=settings.get("activation_fn", "gelu"),
        conv_dim=[d for d, _, _ in conv],
        conv_kernel=[k for _, k, _ in conv],
        conv_stride=[s for _, _, s in conv],
        conv_bias=bool(settings.get("conv_bias", False)),
        feat_extract_norm="layer" if extractor_mode == "layer_norm" else "group",
        do_stable_layer_norm=layer_norm_first,
        num_conv_pos_embeddings=settings.get("conv_pos", 128),
        num_conv_pos_embedding_groups=settings.get("conv_pos_groups", 16),
        num_codevectors_per_group=settings.get("latent_vars", 320),
        num_codevector_groups=settings.get("latent_groups", 2),
        codevector_dim=settings.get("latent_dim") or final_dim,
        proj_codevector_dim=final_dim,
        num_negatives=settings.get("num_negatives", 100),
        contrastive_logits_temperature=settings.get("logit_temp", 0.1),
        hidden_dropout=get("dropout", 0.1),
        attention_dropout=get("attention_dropout", 0.1),
        activation_dropout=get("activation_dropout", 0.0),
        feat_proj_dropout=get("dropout_input", 0.0),
        feat_quantizer_dropout=settings.get("dropout_features", 0.0),
        final_dropout=_first(finetune.get("final_dropout"), 0.1),
        layerdrop=_first(finetune.get("layerdrop"), settings.get("encoder_layerdrop"), 0.0),
        mask_time_prob=get("mask_prob", 0.65),
        mask_time_length=get("mask_length", 10),
        mask_feature_prob=get("mask_channel_prob", 0.0),
        mask_feature_length=get("mask_channel_length", 10),
    )
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    return Wav2Vec2Config(**values)


def read_fairseq(path) -> Tuple[Wav2Vec2Config, Dict[str, np.ndarray]]:
    """(config, canonical state) of a fairseq wav2vec2 checkpoint.

    The state carries the ``wav2vec2.`` body prefix: a pretrained checkpoint fits
    ``canonical_shapes(config, "pretraining")``, a fine-tuned one ``canonical_shapes(config, "ctc")``.
    """
    return from_checkpoint(torch_pickle.load(path, allow_config_objects=True), path)


def is_fairseq_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and ("cfg" in obj or "args" in obj)


def from_checkpoint(checkpoint, path) -> Tuple[Wav2Vec2Config, Dict[str, np.ndarray]]:
    """``read_fairseq`` on an already unpickled checkpoint; ``path`` only names it in errors."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ValueError(f"{path}: not a fairseq checkpoint (expected a dict with a 'model' state dict)")
    weights = torch_pickle.as_state_dict(checkpoint["model"], f"{path}: 'model'")
    try:
        state = names.fairseq_to_canonical(weights)
        settings, finetune = _model_settings(checkpoint)
        vocab_size = state["lm_head.weight"].shape[0] if "lm_head.weight" in state else None
        config = config_from_fairseq(settings, finetune, vocab_size)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    if not (config.mask_time_prob > 0 or config.mask_feature_prob > 0):
        # With masking off the reference builds no mask embedding; fairseq keeps one regardless.
        state.pop(names.BODY_PREFIX + "masked_spec_embed", None)
    # The weights must fit the config read from the settings; a mismatch names the key.
    head = "ctc" if "lm_head.weight" in state else "pretraining"
    try:
        match_state_dict(state, names.canonical_shapes(config, head))
    except ValueError as e:
        raise ValueError(f"{path}: the weights do not fit the checkpoint's own settings: {e}") from None
    return config, state


# ------------------------------------------------------------------ preprocessing and vocabulary
def read_normalize(checkpoint, path) -> bool:
    """The checkpoint's ``normalize`` setting: whether fairseq fed the model zero-mean, unit-variance
    waveforms (``task.normalize``; fine-tuned runs repeat it in ``model.normalize`` and keep the
    pretraining run's in ``model.w2v_args.task``). Absent everywhere means False, fairseq's default."""
    if checkpoint.get("cfg") is not None:
        cfg = plain(checkpoint["cfg"])
        model = cfg.get("model") if isinstance(cfg, dict) else None
        model = model if isinstance(model, dict) else {}
        w2v_args = model.get("w2v_args") if isinstance(model.get("w2v_args"), dict) else {}
        candidates = [
            ("task.normalize", (cfg.get("task") or {}) if isinstance(cfg, dict) else {}),
            ("model.normalize", model),
            ("model.w2v_args.task.normalize", w2v_args.get("task") or {}),
        ]
    else:
        args = plain(checkpoint.get("args"))
        args = args if isinstance(args, dict) else {}
        w2v_args = args.get("w2v_args") if isinstance(args.get("w2v_args"), dict) else {}
        candidates = [("args.normalize", args), ("args.w2v_args.normalize", w2v_args)]
    for name, settings in candidates:
        value = settings.get("normalize") if isinstance(settings, dict) else None
        if value is None:
            continue
        if not isinstance(value, bool):
            raise ValueError(f"{path}: {name} must be true or false, got {value!r}")
        return value
    return False


# fairseq's Dictionary puts these first, in this order, before the entries of the file.
DICTIONARY_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_OVERWRITE_FLAG = "#fairseq:overwrite"


def read_dictionary(path) -> list:
    """The symbols of a fairseq dictionary file (``dict.ltr.txt``) in id order, as fairseq loads it.

    Each line is ``<token> <count>`` (the token may hold spaces; the count is the last field),
    optionally followed by ``#fairseq:overwrite``, which gives an already known token a new id.
    The four special symbols come first. Any other line is an error naming the file and line.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from None
    symbols = list(DICTIONARY_SPECIALS)
    for number, line in enumerate(lines, start=1):
        word, _, count = line.rstrip().rpartition(" ")
        overwrite = count == _OVERWRITE_FLAG
        if overwrite:
            word, _, count = word.rpartition(" ")
        try:
            int(count)
        except ValueError:
            word = ""
        if not word:
            raise ValueError(f"{path}, line {number}: expected '<token> <count> [{_OVERWRITE_FLAG}]', got {line!r}")
        if word in symbols and not overwrite:
            raise ValueError(
                f"{path}, line {number}: {word!r} is already in the dictionary (fairseq needs "
                f"'{_OVERWRITE_FLAG}' at the end of the line to give it a new id)"
            )
        symbols.append(word)
    return symbols


def ctc_vocabulary(symbols) -> Dict[str, int]:
    """``vocab.json`` for a fine-tuned head trained on a fairseq dictionary's ``symbols``.

    The ids are fairseq's, except that ``<s>`` (0) and ``<pad>`` (1) trade places: fairseq's CTC blank
    is id 0, and here the blank is the pad token, so id 0 is named ``<pad>``. A symbol listed twice
    (``#fairseq:overwrite``) keeps its last id, as in fairseq.
    """
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab["<pad>"], vocab["<s>"] = 0, 1
    return vocab
