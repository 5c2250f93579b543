"""``pytorch_model.bin`` and fairseq ``.pt`` without torch: a restricted unpickler and a zip writer.

A torch checkpoint is a zip holding ``<archive>/data.pkl`` (the pickled object; tensors are persistent
ids pointing at storages) and one raw little-endian ``<archive>/data/<key>`` entry per storage. The
unpickler resolves only an allow-list of globals to inert stand-ins, so loading never runs code from
the file; anything else is a ValueError naming the global.
"""
from __future__ import annotations

import argparse
import collections
import functools
import io
import os
import pickle
import struct
import zipfile
from typing import Dict

import numpy as np


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:
        raise ValueError("this checkpoint holds bfloat16 tensors; reading them needs `pip install ml_dtypes`") from None
    return np.dtype(ml_dtypes.bfloat16)


# torch storage class -> NumPy dtype (bfloat16 resolved lazily)
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
_DTYPE_STORAGES = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items() if v is not None and k != "UntypedStorage"}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only knows its dtype."""

    def __init__(self, name):
        self.name = name

    @property
    def dtype(self):
        dtype = _STORAGE_DTYPES[self.name]
        return _bfloat16() if dtype is None else np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, *_, copy=True):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a strided view of the storage, copied unless
    the storage is still to be filled (legacy files store the data after the pickle)."""
    itemsize = storage.dtype.itemsize
    if size and min(size) == 0:
        return np.empty(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or last >= storage.size:
        raise ValueError(f"tensor of size {tuple(size)} runs past its storage of {storage.size} elements")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view) if copy else view


def _rebuild_parameter(data, *_):
    return data


class _Inert:
    """Stand-in for a config class fairseq pickles (omegaconf containers, enums, meters).

    It never runs anything: it keeps the arguments it is built with and the state it is given.
    """

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {type(self).__module__}.{type(self).__qualname__}>"


_INERT_CLASSES: Dict[tuple, type] = {}


def _inert_class(module, name):
    key = (module, name)
    if key not in _INERT_CLASSES:
        _INERT_CLASSES[key] = type(name, (_Inert,), {"__module__": module})
    return _INERT_CLASSES[key]


# The only globals a state dict needs.
_TENSOR_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage"),
}

def _plain_codec(encoding: str) -> str:
    if encoding.lower().replace("-", "") not in ("latin1", "utf8", "ascii"):
        raise ValueError(f"refusing to decode pickled bytes with codec {encoding!r}")
    return encoding


# What a fairseq checkpoint adds around the state dict: argparse args, NumPy scalars in its training
# state. Classes from these module roots become inert stand-ins.
_FAIRSEQ_GLOBALS = {
    ("argparse", "Namespace"): argparse.Namespace,
    ("collections", "defaultdict"): collections.defaultdict,
    ("_codecs", "encode"): lambda text, encoding="latin1": str(text).encode(_plain_codec(encoding)),  # protocol-2 bytes
    ("numpy.core.multiarray", "scalar"): lambda dtype, data=b"": np.frombuffer(data, dtype=dtype)[0],
    ("numpy._core.multiarray", "scalar"): lambda dtype, data=b"": np.frombuffer(data, dtype=dtype)[0],
    ("numpy", "dtype"): lambda name, *_: np.dtype(name),
    # plain types, which omegaconf metadata records as the type of each value
    **{("builtins", t.__name__): t for t in (dict, list, tuple, set, frozenset, str, int, float, bool, bytes, object, slice)},
}
_INERT_MODULE_ROOTS = ("omegaconf", "fairseq", "typing")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages, allow_config_objects: bool, source: str, copy_tensors: bool = True):
        super().__init__(file)
        self._storages = storages
        self._allow_config = allow_config_objects
        self._source = source
        self._copy = copy_tensors

    def find_class(self, module, name):
        module = {"__builtin__": "builtins"}.get(module, module)  # protocol-2 pickles use Python 2 names
        if (module, name) in _TENSOR_GLOBALS:
            found = _TENSOR_GLOBALS[module, name]
            return functools.partial(found, copy=self._copy) if found is _rebuild_tensor else found
        if self._allow_config:
            if (module, name) in _FAIRSEQ_GLOBALS:
                return _FAIRSEQ_GLOBALS[module, name]
            if module.split(".")[0] in _INERT_MODULE_ROOTS:
                return _inert_class(module, name)
        raise ValueError(
            f"{self._source}: refusing to load global {module}.{name} (not on the allow-list of a "
            f"weights-only checkpoint)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"{self._source}: unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"{self._source}: storage type {storage_type!r} is not a torch storage class")
        return self._storages(key, storage_type.dtype, *pid[4:])


def load(path, allow_config_objects: bool = False):
    """Unpickle a torch checkpoint at ``path`` (zip, or the pre-1.6 legacy stream) with NumPy tensors.

    ``allow_config_objects`` admits what fairseq pickles around its weights (see ``_FAIRSEQ_GLOBALS``).
    Raises ValueError naming the file when it is not a torch checkpoint, is truncated, or wants other
    globals.
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path, allow_config_objects)
        with open(path, "rb") as f:
            return _load_legacy(f, path, allow_config_objects)
    except ValueError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError, TypeError, IndexError, struct.error) as e:
        raise ValueError(f"{path}: corrupt or truncated torch checkpoint ({type(e).__name__}: {e})") from None


def _load_zip(path, allow_config_objects):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise ValueError(f"{path}: no data.pkl inside; not a torch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        cache = {}

        def storage(key, dtype, *_):
            if key not in cache:
                raw = archive.read(f"{prefix}data/{key}")
                array = np.frombuffer(raw, dtype=dtype.newbyteorder("<" if byteorder == "little" else ">"))
                cache[key] = array.astype(dtype, copy=False)
            return cache[key]

        data = archive.read(pickles[0])
        return _RestrictedUnpickler(io.BytesIO(data), storage, allow_config_objects, path).load()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _load_legacy(f, path, allow_config_objects):
    """torch < 1.6 files: magic, version and sys-info pickles, the object pickle, the list of storage
    keys, then each storage as an int64 element count followed by its raw little-endian data."""

    def plain_pickle():
        return _RestrictedUnpickler(f, None, False, path).load()

    try:
        magic = plain_pickle()
    except (pickle.UnpicklingError, EOFError, ValueError):
        magic = None
    if magic != _LEGACY_MAGIC:
        raise ValueError(f"{path}: not a torch checkpoint (neither a zip archive nor a legacy torch file)")
    plain_pickle()  # protocol version
    sys_info = plain_pickle()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian legacy torch files are not supported")

    roots = {}

    def storage(key, dtype, numel=0, view=None):
        if key not in roots:
            roots[key] = np.empty(int(numel), dtype=dtype)  # filled after the pickle is read
        if view is not None:
            _, offset, size = view
            return roots[key][offset:offset + size]
        return roots[key]

    obj = _RestrictedUnpickler(f, storage, allow_config_objects, path, copy_tensors=False).load()
    for key in plain_pickle():
        buffer = roots[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        data = f.read(count * buffer.itemsize)
        if count != buffer.size or len(data) != buffer.nbytes:
            raise ValueError(f"{path}: truncated data for storage {key}")
        buffer[...] = np.frombuffer(data, dtype=buffer.dtype)
    return obj


def read_bin(path) -> Dict[str, np.ndarray]:
    """A ``pytorch_model.bin`` (or shard) as {name: array}; anything but a flat dict of tensors is an error."""
    return as_state_dict(load(path), path)


def as_state_dict(obj, path) -> Dict[str, np.ndarray]:
    """Check that an unpickled checkpoint is a flat {name: tensor} dict; ``path`` names it in errors."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found a pickled {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {bad}")
    return dict(obj)


# ------------------------------------------------------------------------------------------ writing
class _Global:
    """A reference to a global by name, pickled as GLOBAL without importing its module."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # the pickler only accepts callables as reduce functions
        raise TypeError(f"{self.module}.{self.name} is a name to pickle, not a function")


class _Tensor:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _TorchPickler(pickle._Pickler):  # the Python pickler, so _Global can be written by name
    dispatch = dict(pickle._Pickler.dispatch)

    def save_global_ref(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[_Global] = save_global_ref

    def persistent_id(self, obj):
        if isinstance(obj, _StoragePid):
            return obj.pid
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Tensor):
            array = obj.array
            storage = _StoragePid(("storage", _storage_global(array.dtype), obj.key, "cpu", array.size))
            stride = tuple(s // array.itemsize for s in array.strides) if array.size else (1,) * array.ndim
            hooks = _Reduce(_Global("collections", "OrderedDict"), ())
            return (
                _Global("torch._utils", "_rebuild_tensor_v2"),
                (storage, 0, tuple(array.shape), stride, False, hooks),
            )
        if isinstance(obj, _Reduce):
            return obj.func, obj.args, None, None, obj.dictitems
        return NotImplemented


class _StoragePid:
    def __init__(self, pid):
        self.pid = pid


class _Reduce:
    def __init__(self, func, args, dictitems=None):
        self.func, self.args, self.dictitems = func, args, dictitems


def _storage_global(dtype) -> _Global:
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return _Global("torch", "BFloat16Storage")
    if dtype not in _DTYPE_STORAGES:
        raise ValueError(f"cannot write dtype {dtype} to a torch checkpoint")
    return _Global("torch", _DTYPE_STORAGES[dtype])


def _aligned(info: zipfile.ZipInfo, offset: int, alignment: int = 64) -> zipfile.ZipInfo:
    """Pad the local header's extra field so the entry's data starts on an ``alignment`` boundary."""
    header = 30 + len(info.filename.encode("utf-8")) + 4  # local header, name, extra-field header
    pad = (-(offset + header)) % alignment
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB": the padding record torch writes
    return info


def write_bin(state, file, archive_name: str = "archive") -> None:
    """Write ``state`` ({name: array}) as a torch zip checkpoint that ``torch.load(weights_only=True)`` reads.

    ``file`` is a path or a binary file object opened for writing.
    """
    arrays = {}
    payload = collections.OrderedDict()
    for i, (name, value) in enumerate(state.items()):
        array = np.asarray(value, order="C")
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        arrays[str(i)] = array
        payload[name] = _Tensor(str(i), array)

    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(
        _Reduce(_Global("collections", "OrderedDict"), (), dictitems=iter(payload.items()))
    )

    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        def add(name, data):
            info = zipfile.ZipInfo(f"{archive_name}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            offset = archive.fp.tell() if hasattr(archive.fp, "tell") else 0
            archive.writestr(_aligned(info, offset), data)

        add("data.pkl", buffer.getvalue())
        add("byteorder", b"little")
        for key, array in arrays.items():
            add(f"data/{key}", array.tobytes())
        add("version", b"3\n")
