"""Checkpoint formats, read and written as dicts of NumPy arrays in the canonical layout.

- ``read_state_dict(path_or_repo_id, **hub_kwargs)``: whichever weight file a directory, file or hub
  repo holds (safetensors, pytorch_model.bin, tf_model.h5, flax_model.msgpack, shards, fairseq .pt);
- ``write_state_dict(state, directory, format=..., max_shard_size=None)``: one format's file(s), atomically;
- ``match_state_dict(state, expected_shapes) -> LoadReport``: fit a checkpoint to a model's keys;
- ``read_fairseq(path) -> (Wav2Vec2Config, state)``;
- ``read_adapter(path_or_repo_id, target_lang)`` / ``write_adapter(state, directory, target_lang)``: MMS
  per-language adapter files;
- ``resolve_file``: a local directory or a hub repo id to a file on disk.
- ``wav2vec2.io.staging``: a directory written whole or not at all (``convert`` and ``export``).

No deep-learning framework is imported: torch checkpoints are read with a restricted unpickler.
"""
from .checkpoint import FORMATS, WEIGHT_FILES, read_adapter, read_state_dict, write_adapter, write_state_dict
from .fairseq import read_fairseq
from .hub import resolve_file
from .matching import LoadReport, match_state_dict

__all__ = [
    "FORMATS",
    "WEIGHT_FILES",
    "LoadReport",
    "match_state_dict",
    "read_adapter",
    "read_fairseq",
    "read_state_dict",
    "resolve_file",
    "write_adapter",
    "write_state_dict",
]
