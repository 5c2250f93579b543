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
    """A list-of-names attribute (``layer_names``, ``weight_names``), joined from Keras' chunks
    ``name0``, ``name1``, ... when it was split."""
    if name in node.attrs:
        parts = [name]
    else:
        parts = []
        while f"{name}{len(parts)}" in node.attrs:
            parts.append(f"{name}{len(parts)}")
    values = []
    for part in parts:
        value = np.asarray(node.attrs[part])
        if value.ndim != 1 or value.size and value.dtype.kind not in "SUO":  # Keras writes [] for no weights
            raise ValueError(f"attribute {part!r} of {node.name!r} is not a list of names")
        values.extend(value.tolist())
    if not all(isinstance(v, (bytes, str)) for v in values):
        raise ValueError(f"attribute {name!r} of {node.name!r} holds something other than names")
    names = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
    if len(set(names)) != len(names):
        raise ValueError(f"attribute {name!r} of {node.name!r} lists a name twice")
    return names


def _resolve(root, name: str):
    """The object at relative path ``name`` under ``root``, through hard links only: a soft or
    external link could lead outside the file."""
    import h5py

    node = root
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"{name!r} under {root.name!r} is not a plain relative path")
        if not isinstance(node, h5py.Group) or part not in node:
            raise ValueError(f"no object {name!r} under {root.name!r}")
        if not isinstance(node.get(part, getlink=True), h5py.HardLink):
            raise ValueError(f"{name!r} under {root.name!r} is a soft or external link")
        node = node[part]
    return node


# Filters (compression) may expand data; this bounds the memory a small file can claim.
_EXPANSION_LIMIT = 64


def _read_dataset(node, name: str, budget: list) -> np.ndarray:
    """A numeric dataset stored in this file, read into a native-byte-order array."""
    import h5py

    if not isinstance(node, h5py.Dataset):
        raise ValueError(f"weight {name!r} is a group, not a dataset")
    if node.is_virtual or node.external:
        raise ValueError(f"weight {name!r} keeps its data in other files")
    if node.shape is None or node.dtype.kind not in "biufc":
        raise ValueError(f"weight {name!r} has dtype {node.dtype} and shape {node.shape}; expected numbers")
    budget[0] -= int(np.prod(node.shape, dtype=object)) * node.dtype.itemsize
    if budget[0] < 0:
        raise ValueError(f"weight {name!r}: the datasets hold more than {_EXPANSION_LIMIT} times the file's size")
    array = np.asarray(node[()])
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


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
    """{TF variable name without scope: array} from an h5 file or shard.

    Only what the file itself holds is read: names through hard links, numeric datasets stored in
    it (no external or virtual data), at most ``_EXPANSION_LIMIT`` times the file's size in all.
    """
    import h5py

    path = os.fspath(path)
    try:
        budget = [_EXPANSION_LIMIT * os.path.getsize(path) + (1 << 20)]
        with h5py.File(path, "r") as f:
            layer_names = _read_attribute(f, "layer_names")
            if not layer_names:
                raise ValueError("no 'layer_names' attribute; not a Keras weights file")
            weights = {}
            for layer_name in layer_names:
                node = _resolve(f, layer_name)
                if isinstance(node, h5py.Dataset):  # shard layout: the name is the variable name
                    found = [(layer_name, node)]
                else:
                    found = []
                    for weight_name in _read_attribute(node, "weight_names"):
                        scope, _, name = weight_name.partition("/")
                        if not name:
                            raise ValueError(f"weight name {weight_name!r} has no scope component")
                        found.append((name, _resolve(node, weight_name)))
                for name, dataset in found:
                    if name in weights:
                        raise ValueError(f"weight {name!r} is listed twice")
                    weights[name] = _read_dataset(dataset, name, budget)
            return weights
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    except (OSError, KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"{path}: corrupt or truncated HDF5 weights file ({type(e).__name__}: {e})") from None


def read_h5(path) -> Dict[str, np.ndarray]:
    """A ``tf_model.h5`` (or shard) as a canonical state dict."""
    weights = read_tf_weights(path)
    try:
        return names.from_tf_weights(weights)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _storable(array) -> np.ndarray:
    """HDF5 has no bfloat16 type (h5py would store opaque 2-byte records no reader can type): such
    weights are written as float32, which holds every bfloat16 value exactly, as Keras keeps them."""
    array = np.asarray(array)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def write_h5(state, path) -> None:
    """Write a canonical state dict as an unsharded ``tf_model.h5``."""
    import h5py

    groups: Dict[str, list] = {}
    for name, array in names.to_tf_weights(state).items():
        groups.setdefault(name.split("/", 1)[0].removesuffix(":0"), []).append((name, _storable(array)))
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
            f.create_dataset(name, data=_storable(array))
        _write_attribute(f, "layer_names", list(tf_weights))
