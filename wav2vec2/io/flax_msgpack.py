"""``flax_model.msgpack``: ``flax.serialization.to_bytes`` of the params tree, without importing Flax.

Arrays are msgpack extension objects (code 1) holding ``(shape, dtype name, C-order bytes)``;
NumPy scalars use code 3; arrays over 1 GiB are split into ``{"__msgpack_chunked_array__": True,
"shape": {"0": n0, ...}, "chunks": {"0": flat part, ...}}`` (tuples as dicts of their indices).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ..spec import names

_EXT_NDARRAY = 1
_EXT_NPSCALAR = 3
_CHUNK_BYTES = 2**30
_CHUNKED = "__msgpack_chunked_array__"
# The dtypes flax.serialization writes for parameters, by the names it writes (``dtype.name``).
_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "bfloat16", "complex64", "complex128")
_MAX_NDIM = 64


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        from .torch_pickle import _bfloat16

        return _bfloat16()
    return np.dtype(name)


class _Invalid:
    """An array record that does not hold what it says; reported with its path in the tree."""

    def __init__(self, reason: str):
        self.reason = reason


def _shape(value):
    if not (isinstance(value, (list, tuple)) and len(value) <= _MAX_NDIM and all(type(n) is int and 0 <= n < 2**62 for n in value)):
        return None
    return tuple(value)


def _unpack_ext(code, data):
    """An array (code 1) or NumPy scalar (code 3) record: msgpack of (shape, dtype name, C-order bytes)."""
    import msgpack

    if code not in (_EXT_NDARRAY, _EXT_NPSCALAR):
        return _Invalid(f"msgpack extension type {code} is not an array")
    try:
        record = msgpack.unpackb(data, raw=True)
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException):
        return _Invalid("its record is not (shape, dtype, bytes)")
    if not (isinstance(record, (list, tuple)) and len(record) == 3 and isinstance(record[1], bytes) and isinstance(record[2], bytes)):
        return _Invalid("its record is not (shape, dtype, bytes)")
    shape, dtype_name, buffer = _shape(record[0]), record[1].decode("latin1"), record[2]
    if shape is None or code == _EXT_NPSCALAR and shape != ():
        return _Invalid(f"shape {record[0]!r:.80} is not a list of sizes")
    if dtype_name not in _DTYPES:
        return _Invalid(f"dtype {dtype_name!r:.40} is not a number type flax writes")
    dtype = _dtype(dtype_name)
    if len(buffer) != int(np.prod(shape, dtype=object)) * dtype.itemsize:
        return _Invalid(f"{len(buffer)} bytes do not hold a {dtype_name} array of shape {shape}")
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()
    return array if code == _EXT_NDARRAY else array[()]


def _pack_array(array):
    import msgpack

    array = np.asarray(array, order="C")
    payload = msgpack.packb((array.shape, array.dtype.name, array.tobytes()), use_bin_type=True)
    return msgpack.ExtType(_EXT_NDARRAY, payload)


def _as_tuple(node):
    """flax writes tuples as {"0": ..., "1": ...}; None when ``node`` is not one."""
    if not isinstance(node, dict) or set(node) != {str(i) for i in range(len(node))}:
        return None
    return tuple(node[str(i)] for i in range(len(node)))


def _unchunk(node: dict, where: str):
    """A chunked array record (flax writes arrays over 1 GiB so) joined into one array."""
    shape = _as_tuple(node.get("shape"))
    shape = None if shape is None else _shape(shape)
    parts = _as_tuple(node.get("chunks"))
    if set(node) != {_CHUNKED, "shape", "chunks"} or shape is None or not parts:
        raise ValueError(f"array {where}: a chunked array record needs a shape and chunks '0'..'n'")
    if not all(type(p) is np.ndarray and p.dtype == parts[0].dtype for p in parts):
        raise ValueError(f"array {where}: chunks that are not arrays of one dtype")
    if sum(p.size for p in parts) != int(np.prod(shape, dtype=object)):
        raise ValueError(f"array {where}: chunks of {sum(p.size for p in parts)} elements for shape {shape}")
    return np.concatenate([p.ravel() for p in parts]).reshape(shape)


def _checked_tree(tree, path) -> dict:
    """Nested dicts with plain string keys and arrays at the leaves, as a params tree is; chunked arrays
    joined. Errors name the file and the leaf."""
    from .torch_pickle import MAX_DEPTH

    def check(node, where, depth):
        if type(node) is _Invalid:
            raise ValueError(f"{path}: array {where}: {node.reason}")
        if isinstance(node, np.generic):
            return np.asarray(node)
        if type(node) is np.ndarray:
            return node
        if not isinstance(node, dict):
            raise ValueError(f"{path}: {where} is a {type(node).__name__}, not an array or a tree of arrays")
        if _CHUNKED in node:
            try:
                return _unchunk({k: check(v, f"{where}/{k}", depth + 1) if k == "chunks" else v for k, v in node.items()}, where)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        if depth >= MAX_DEPTH:
            raise ValueError(f"{path}: the tree is nested deeper than {MAX_DEPTH} levels")
        out = {}
        for key, child in node.items():
            # "/" and "." join the names of nested keys: a key holding one would alias another leaf
            if not isinstance(key, str) or not key or "/" in key or "." in key:
                raise ValueError(f"{path}: key {key!r:.80} in {where} is not a plain name")
            out[key] = check(child, f"{where}/{key}" if where else key, depth + 1)
        return out

    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a params tree (a map), found {type(tree).__name__}")
    return check(tree, "", 0)


def _chunk(node):
    if isinstance(node, dict):
        return {k: _chunk(v) for k, v in node.items()}
    array = np.asarray(node)
    if array.nbytes <= _CHUNK_BYTES:
        return array
    flat = array.ravel()
    per_chunk = _CHUNK_BYTES // array.itemsize
    chunks = {str(i): flat[start:start + per_chunk] for i, start in enumerate(range(0, flat.size, per_chunk))}
    return {_CHUNKED: True, "shape": {str(i): n for i, n in enumerate(array.shape)}, "chunks": chunks}


def read_flax_tree(path) -> dict:
    """The params tree of a ``flax.serialization.to_bytes`` file: nested dicts of names, arrays at
    the leaves. Anything else is a ValueError naming the file (and the leaf)."""
    import msgpack

    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = msgpack.unpackb(data, ext_hook=_unpack_ext, raw=False)
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException) as e:
        raise ValueError(f"{path}: corrupt or truncated msgpack file ({type(e).__name__}: {e})") from None
    return _checked_tree(tree, path)


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
