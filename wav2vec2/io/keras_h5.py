"""``tf_model.h5``: the Keras 2 ``save_weights`` HDF5 layout the reference TF classes read.

Unsharded file: root attribute ``layer_names`` lists one group per top-level Keras layer
(``wav2vec2``, ``lm_head``, ...); each group's ``weight_names`` attribute lists its variables as
``<scope>/wav2vec2/encoder/layers.0/attention/k_proj/kernel:0``, stored as datasets under that path.
The first scope component varies by Keras version and is dropped on load.
Shard (``tf_model-0000k-of-0000N.h5``): ``layer_names`` lists the variable names themselves, without
scope, each a dataset at that path.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from ..spec import names

# Keras writes the model's class scope first; any name works since loaders drop it.
_SCOPE = "tf_wav2_vec2"
# HDF5 object headers hold at most 64 KiB; Keras splits longer attributes into name0, name1, ...
_ATTRIBUTE_LIMIT = 64512


def _read_attribute(node, name):
    if name in node.attrs:
        values = list(node.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in node.attrs:
            values.extend(node.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _write_attribute(node, name, values):
    data = np.array([v.encode("utf-8") for v in values])
    chunks = 1
    while any(part.nbytes > _ATTRIBUTE_LIMIT for part in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        node.attrs[name] = data
    else:
        for i, part in enumerate(np.array_split(data, chunks)):
            node.attrs[f"{name}{i}"] = part


def read_tf_weights(path) -> Dict[str, np.ndarray]:
    """{TF variable name without scope: array} from an h5 file or shard."""
    import h5py

    try:
        with h5py.File(os.fspath(path), "r") as f:
            layer_names = _read_attribute(f, "layer_names")
            if not layer_names:
                raise ValueError(f"{path}: no 'layer_names' attribute; not a Keras weights file")
            weights = {}
            for layer_name in layer_names:
                node = f[layer_name]
                if isinstance(node, h5py.Dataset):  # shard layout: the name is the variable name
                    weights[layer_name] = node[()]
                    continue
                for weight_name in _read_attribute(node, "weight_names"):
                    scope, _, name = weight_name.partition("/")
                    if not name:
                        raise ValueError(f"{path}: weight name {weight_name!r} has no scope component")
                    weights[name] = node[weight_name][()]
            return weights
    except (OSError, KeyError) as e:
        raise ValueError(f"{path}: corrupt or truncated HDF5 weights file ({e})") from None


def read_h5(path) -> Dict[str, np.ndarray]:
    """A ``tf_model.h5`` (or shard) as a canonical state dict."""
    weights = read_tf_weights(path)
    try:
        return names.from_tf_weights(weights)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def write_h5(state, path) -> None:
    """Write a canonical state dict as an unsharded ``tf_model.h5``."""
    import h5py

    groups: Dict[str, list] = {}
    for name, array in names.to_tf_weights(state).items():
        groups.setdefault(name.split("/", 1)[0].removesuffix(":0"), []).append((name, array))
    with h5py.File(os.fspath(path), "w") as f:
        _write_attribute(f, "layer_names", list(groups))
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for layer_name, weights in groups.items():
            group = f.create_group(layer_name)
            scoped = [f"{_SCOPE}/{name}" for name, _ in weights]
            _write_attribute(group, "weight_names", scoped)
            for name, (_, array) in zip(scoped, weights):
                group.create_dataset(name, data=array)


def write_h5_shard(tf_weights, path) -> None:
    """Write {TF variable name: array} in the shard layout (``layer_names`` = the variable names)."""
    import h5py

    with h5py.File(os.fspath(path), "w") as f:
        for name, array in tf_weights.items():
            f.create_dataset(name, data=array)
        _write_attribute(f, "layer_names", list(tf_weights))
