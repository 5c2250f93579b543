"""``flax_model.msgpack``: ``flax.serialization.to_bytes`` of the params tree, without importing Flax.

Arrays are msgpack extension objects (code 1) holding ``(shape, dtype name, C-order bytes)``;
NumPy scalars use code 3; arrays over 1 GiB are split into ``{"__msgpack_chunked_array__": True,
"shape": ..., "chunks": {"0": ..., ...}}``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ..spec import names

_EXT_NDARRAY = 1
_EXT_NPSCALAR = 3
_CHUNK_BYTES = 2**30


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        from .torch_pickle import _bfloat16

        return _bfloat16()
    return np.dtype(name)


def _unpack_ext(code, data):
    import msgpack

    if code not in (_EXT_NDARRAY, _EXT_NPSCALAR):
        raise ValueError(f"unsupported msgpack extension type {code}")
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    dtype_name = dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name
    array = np.frombuffer(buffer, dtype=_dtype(dtype_name)).reshape(shape).copy()
    return array if code == _EXT_NDARRAY else array[()]


def _pack_array(array):
    import msgpack

    array = np.asarray(array, order="C")
    payload = msgpack.packb((array.shape, array.dtype.name, array.tobytes()), use_bin_type=True)
    return msgpack.ExtType(_EXT_NDARRAY, payload)


def _unchunk(node):
    if not isinstance(node, dict):
        return node
    if node.get("__msgpack_chunked_array__"):
        chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
        return np.concatenate([c.ravel() for c in chunks]).reshape(node["shape"])
    return {k: _unchunk(v) for k, v in node.items()}


def _chunk(node):
    if isinstance(node, dict):
        return {k: _chunk(v) for k, v in node.items()}
    array = np.asarray(node)
    if array.nbytes <= _CHUNK_BYTES:
        return array
    flat = array.ravel()
    per_chunk = _CHUNK_BYTES // array.itemsize
    chunks = {str(i): flat[start:start + per_chunk] for i, start in enumerate(range(0, flat.size, per_chunk))}
    return {"__msgpack_chunked_array__": True, "shape": list(array.shape), "chunks": chunks}


def read_flax_tree(path) -> dict:
    import msgpack

    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = msgpack.unpackb(data, ext_hook=_unpack_ext, raw=False)
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException) as e:
        raise ValueError(f"{path}: corrupt or truncated msgpack file ({type(e).__name__}: {e})") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a params tree (a map), found {type(tree).__name__}")
    return _unchunk(tree)


def read_msgpack(path) -> Dict[str, np.ndarray]:
    """A ``flax_model.msgpack`` as a canonical state dict."""
    tree = read_flax_tree(path)
    try:
        return names.from_flax_tree(tree)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def write_msgpack(state, path) -> None:
    import msgpack

    tree = _chunk(names.to_flax_tree(state))
    data = msgpack.packb(tree, default=_pack_array, strict_types=True)
    with open(path, "wb") as f:
        f.write(data)


# ------------------------------------------------------------------------------------------ shards
# Sharded Flax checkpoints split the tree by "/"-joined leaf paths; each shard is a partial tree.
def to_flat_weights(state) -> Dict[str, np.ndarray]:
    """Canonical state -> {"wav2vec2/encoder/layers/0/.../kernel": array}."""
    flat = {}

    def walk(node, path):
        for name, child in node.items():
            if isinstance(child, dict):
                walk(child, (*path, name))
            else:
                flat["/".join((*path, name))] = child

    walk(names.to_flax_tree(state), ())
    return flat


def from_flat_weights(flat) -> Dict[str, np.ndarray]:
    """{"/"-joined path: array} -> canonical state."""
    return names.from_flax_tree(_unflatten(flat))


def _unflatten(flat) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def read_flat_weights(path) -> Dict[str, np.ndarray]:
    """A msgpack file (or shard) as {"/"-joined path: array}."""
    flat = {}

    def walk(node, prefix):
        for name, child in node.items():
            if isinstance(child, dict):
                walk(child, f"{prefix}{name}/")
            else:
                flat[f"{prefix}{name}"] = child

    walk(read_flax_tree(path), "")
    return flat


def write_flat_shard(flat, path) -> None:
    import msgpack

    data = msgpack.packb(_chunk(_unflatten(flat)), default=_pack_array, strict_types=True)
    with open(path, "wb") as f:
        f.write(data)
