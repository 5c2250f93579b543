"""Loading, saving and MMS adapters, written once for every backend (no framework imported here).

A backend model class supplies only what touches tensors:

- ``cls(config, **build_kwargs)`` builds a model with freshly initialised weights;
- ``cls.head``: its head name in ``wav2vec2.spec.names`` ("model", "ctc", ...);
- ``model.config``, ``model.name_or_path`` and ``model.hub_kwargs`` (where ``from_pretrained`` found it);
- ``model.canonical_state_dict()`` -> {canonical name: NumPy array} and
  ``model.load_canonical_state_dict(state)`` for a complete dict of exactly those keys and shapes;
- CTC only: ``model._resize_lm_head(config)``, a new lm_head for ``config.vocab_size`` and
  ``model.config = config`` (a new config object: a config shared with other models is never changed).

Everything else (which file to read, how a checkpoint's keys meet the model's, what an adapter file
must hold, what a save leaves in its directory, what is logged) is decided here, so the three
backends behave the same.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from .config import Wav2Vec2Config
from .spec.names import canonical_shapes

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"


def from_pretrained(cls, path_or_repo_id, target_lang: Optional[str] = None, config: Optional[Wav2Vec2Config] = None,
                    hub_kwargs: Optional[dict] = None, **build_kwargs):
    """Build ``cls`` from config.json (or ``config``) and the weights of any format wav2vec2.io reads.

    Head weights the checkpoint lacks keep their fresh initialisation (a warning names them);
    weights of other heads are dropped (logged). ``target_lang`` then loads that MMS adapter.
    """
    from .io import match_state_dict, read_state_dict

    hub_kwargs = dict(hub_kwargs or {})
    path_or_repo_id = os.fspath(path_or_repo_id)
    if config is None:
        config = Wav2Vec2Config.from_pretrained(path_or_repo_id, **hub_kwargs)
    elif not isinstance(config, Wav2Vec2Config):
        raise ValueError(f"config must be a wav2vec2.Wav2Vec2Config, got {type(config).__name__}")
    # An old config.json's `gradient_checkpointing: true` turns checkpointing on (the key is consumed,
    # as the reference does).
    checkpointing = config.extra.get("gradient_checkpointing") is True
    if "gradient_checkpointing" in config.extra:
        config = config.replace(extra={k: v for k, v in config.extra.items() if k != "gradient_checkpointing"})
    model = cls(config, **build_kwargs)
    if checkpointing:
        model.gradient_checkpointing_enable()
    report = match_state_dict(read_state_dict(path_or_repo_id, **hub_kwargs), canonical_shapes(config, cls.head))
    if report.missing:
        logger.warning("%s: weights not in %s, newly initialised: %s", cls.__name__, path_or_repo_id,
                       sorted(report.missing))
    if report.discarded:
        logger.info("%s: unused weights of other heads in %s: %s", cls.__name__, path_or_repo_id,
                    sorted(report.discarded))
    state = model.canonical_state_dict()
    state.update(report.state)
    model.load_canonical_state_dict(state)
    model.name_or_path = path_or_repo_id
    model.hub_kwargs = hub_kwargs
    if target_lang is not None:
        load_adapter(model, target_lang)
    return model


def save_pretrained(model, directory, format: str, max_shard_size=None) -> list:
    """Write config.json (with ``architectures``) and the weights in ``format`` into ``directory``.

    The directory then holds exactly one set of weight files, the ones just saved: weight files of
    other formats, and stale shards, are removed (a warning names other formats' files). Files are
    staged in the directory and moved in whole (see ``wav2vec2.io.write_state_dict``). Returns the
    weight files written.
    """
    from .io import write_state_dict

    config = model.config
    config = config.replace(extra={**config.extra, "architectures": [type(model).__name__]})
    return write_state_dict(
        model.canonical_state_dict(), directory, format=format, max_shard_size=max_shard_size,
        files={CONFIG_NAME: config.to_json_string()}, replace_other_formats=True,
    )


def adapter_names(config: Wav2Vec2Config):
    """Canonical names an adapter file holds: every attention-adapter weight and the CTC lm_head."""
    if config.adapter_attn_dim is None:
        raise ValueError("this model has no attention adapters: config.adapter_attn_dim is None")
    return [name for name in canonical_shapes(config, "ctc") if ".adapter_layer." in name or name.startswith("lm_head.")]


def load_adapter(model, target_lang: str, path_or_repo_id=None, **hub_kwargs) -> None:
    """Load ``adapter.<target_lang>.{safetensors,bin,h5,msgpack}`` into a CTC model.

    The file must hold every adapter weight and the lm_head (a partial file is refused, so no layer
    keeps another language's adapter); a vocabulary of another size resizes lm_head and gives the
    model a new config. Nothing changes unless every key and shape fits. A missing file is a
    FileNotFoundError.
    """
    from .io import read_adapter

    if getattr(model, "head", None) != "ctc":
        raise ValueError(f"load_adapter: {type(model).__name__} has no lm_head; adapters belong to Wav2Vec2ForCTC")
    expected = set(adapter_names(model.config))
    where = path_or_repo_id if path_or_repo_id is not None else model.name_or_path
    if where is None:
        raise ValueError("load_adapter: the model was not loaded with from_pretrained; pass path_or_repo_id")
    if path_or_repo_id is None and not hub_kwargs:
        hub_kwargs = dict(getattr(model, "hub_kwargs", None) or {})
    state = read_adapter(where, target_lang, **hub_kwargs)
    if set(state) != expected:
        raise ValueError(
            f"{where}: the {target_lang!r} adapter's keys do not match this model: missing "
            f"{sorted(expected - set(state))[:5]}, unknown {sorted(set(state) - expected)[:5]}"
        )
    vocab_size = int(state["lm_head.weight"].shape[0])
    new_config = model.config.replace(vocab_size=vocab_size)
    shapes = canonical_shapes(new_config, "ctc")
    for name, value in state.items():
        if tuple(value.shape) != tuple(shapes[name]):
            raise ValueError(f"{where}: adapter {name} has shape {tuple(value.shape)}, expected {tuple(shapes[name])}")
    if vocab_size != model.config.vocab_size:
        model._resize_lm_head(new_config)
    full = model.canonical_state_dict()
    full.update(state)
    model.load_canonical_state_dict(full)
    model.target_lang = target_lang
