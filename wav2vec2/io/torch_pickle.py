"""``pytorch_model.bin`` and fairseq ``.pt`` without torch: a restricted pickle reader and a zip writer.

A torch checkpoint is a zip holding ``<archive>/data.pkl`` (the pickled object; tensors are persistent
ids pointing at storages) and one raw ``<archive>/data/<key>`` record per storage; files from torch < 1.6
are instead a stream of pickles followed by the storages' bytes. Both come from strangers, so reading
one is a security boundary:

- the pickle runs in a small interpreter of its own (``_Unpickler``), not Python's: it knows the
  opcodes ``torch.load(weights_only=True)`` knows, resolves only an allow-list of globals to fresh
  inert tokens, and only ever changes objects this load made (no BUILD/SETITEM/APPEND on stand-ins);
- every tensor is checked against its storage as torch checks it (sizes, strides, storage offset,
  element size, in Python integers), and the storage against its record, before a view is made;
- the zip is read the way torch's reader reads it (archive folder from the first record, names
  compared case-insensitively, a version record) and refused where the two could disagree
  (duplicate or compressed records);
- recursion, nesting and the work a pickle may ask for are bounded by the size of the file.

Anything else is a ValueError naming the file (and the tensor, where there is one).
"""
from __future__ import annotations

import _compat_pickle
import argparse
import collections
import io
import os
import pickle
import re
import struct
import zipfile
import zlib
from typing import Dict

import numpy as np
from numpy.lib.stride_tricks import as_strided


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:
        raise ValueError("this checkpoint holds bfloat16 tensors; reading them needs `pip install ml_dtypes`") from None
    return np.dtype(ml_dtypes.bfloat16)


# torch storage class -> NumPy dtype name ("bfloat16" comes from ml_dtypes)
_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_DTYPE_STORAGES = {name: storage for storage, name in _STORAGE_DTYPES.items()}
_FLOATING = {"float64", "float32", "float16", "bfloat16", "complex128", "complex64"}  # may require grad


def _numpy_dtype(name: str) -> np.dtype:
    return _bfloat16() if name == "bfloat16" else np.dtype(name)


# Bounds on what a pickle may ask for. Real checkpoints nest a few levels (fairseq configs ~25).
MAX_DEPTH = 100
_MAX_NDIM = 64  # NumPy's limit
_INT64_MAX = 2**63 - 1


def _describe(value) -> str:
    """A short description of a value from the file, safe for huge ints and long strings."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    if isinstance(value, (tuple, list)) and len(value) <= 8:
        inner = ", ".join(_describe(v) for v in value)
        return f"({inner}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{inner}]"
    text = repr(value) if isinstance(value, (str, bytes, int, float, bool, type(None), _Global)) else f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------- the pickle machine
class _Global:
    """A global named in a pickle, by module and name: never imported, never called, never changed.

    Reading, each GLOBAL opcode makes a fresh one; writing, ``_TorchPickler`` writes one as GLOBAL.
    """

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "name", name)

    def __setattr__(self, *_):
        raise AttributeError("a pickled global is immutable")

    @property
    def key(self):
        return self.module, self.name

    def __call__(self, *args):  # the pickler only accepts callables as reduce functions
        raise TypeError(f"{self.module}.{self.name} is a name to pickle, not a function")

    def __repr__(self):
        return f"{self.module}.{self.name}"


class _Inert:
    """Stand-in for a config object fairseq pickles (omegaconf containers and nodes, enums, meters).

    Made fresh for each object of the file; keeps the arguments it was built with and the state the
    pickle gives it (once). Nothing of the class it names is imported or run.
    """

    __slots__ = ("module", "name", "args", "state")

    def __init__(self, cls: _Global, args: tuple):
        self.module, self.name, self.args, self.state = cls.module, cls.name, args, None

    def __repr__(self):
        return f"<inert {self.module}.{self.name}>"


class _NumpyDtype:
    """``numpy.dtype(name)`` as pickled (REDUCE then BUILD with the byte order); a fresh one per load."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _Storage:
    """One storage of this load: its key and a 1-D array of its elements (a view of the bytes read)."""

    __slots__ = ("key", "array")

    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


class _Invalid:
    """A tensor the file describes but torch would refuse; reported with its name once it has one."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class _Refused(ValueError):
    """Raised inside the reader; ``load`` prefixes the file name."""


# Globals a weights-only checkpoint may name (after Python 2 names are mapped, as torch maps them).
_WEIGHTS_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
    ("_codecs", "encode"),  # bytes at protocol 2
    ("torch.storage", "UntypedStorage"),
    *(("torch", name) for name in _STORAGE_DTYPES),
    *(("torch.cuda", name) for name in _STORAGE_DTYPES),
}
# What a fairseq checkpoint adds around the state dict: argparse args, NumPy scalars in its training
# state, the plain types omegaconf records as each value's type. Classes under the module roots
# become inert stand-ins.
_BUILTIN_TYPES = ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool", "bytes",
                  "complex", "object", "slice", "NoneType")
_CONFIG_GLOBALS = {
    ("argparse", "Namespace"),
    ("collections", "defaultdict"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    *(("builtins", name) for name in _BUILTIN_TYPES),
}
_INERT_MODULE_ROOTS = ("omegaconf", "fairseq", "typing")
_PLAIN_KEYS = (str, int, float, bool, type(None), bytes)  # hashing is cheap and runs no code
_BUILTIN_FACTORIES = {"dict": dict, "list": list, "set": set, "int": int, "float": float, "str": str}


def _is_int(value) -> bool:
    return type(value) is int  # bool is not an int here, as for torch's argument parser


def _codec(encoding) -> str:
    if not isinstance(encoding, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "utf8", "ascii"):
        raise _Refused(f"refusing to encode pickled text with codec {_describe(encoding)}")
    return encoding


class _Unpickler:
    """Runs one pickle: the opcodes torch's weights-only unpickler accepts (plus LONG4, POP and
    POP_MARK for config objects), each checked against the objects this load made.

    ``persistent_load(pid)`` returns the ``_Storage`` a persistent id names. ``config_objects``
    admits what fairseq pickles around its weights. ``budget`` bounds the elements the pickle may have
    copied into new containers (each opcode costs one; constructors cost their length).
    """

    def __init__(self, file, persistent_load=None, config_objects: bool = False, budget: int = 1 << 20):
        self._read = file.read
        self._readline = file.readline
        self._persistent_load = persistent_load
        self._config = config_objects
        self._budget = budget
        self._memo: dict = {}
        self._stack: list = []
        self._marks: list = []
        self._invalid: list = []  # tensors torch would refuse, reported once the result is checked
        ops = {
            b"(": self._mark, b".": None, b"\x80": self._proto, b"c": self._global, b"Q": self._binpersid,
            b"R": self._reduce, b"\x81": self._newobj, b"b": self._build, b"a": self._append,
            b"e": self._appends, b"s": self._setitem, b"u": self._setitems, b"t": self._tuple,
            b"\x85": lambda: self._tuple_n(1), b"\x86": lambda: self._tuple_n(2), b"\x87": lambda: self._tuple_n(3),
            b")": lambda: self._push(()), b"N": lambda: self._push(None), b"\x88": lambda: self._push(True),
            b"\x89": lambda: self._push(False), b"]": lambda: self._push([]), b"}": lambda: self._push({}),
            b"\x8f": lambda: self._push(set()),
            b"J": lambda: self._push(struct.unpack("<i", self._bytes(4))[0]),
            b"K": lambda: self._push(self._bytes(1)[0]),
            b"M": lambda: self._push(struct.unpack("<H", self._bytes(2))[0]),
            b"\x8a": lambda: self._push(pickle.decode_long(self._bytes(self._bytes(1)[0]))),
            b"G": lambda: self._push(struct.unpack(">d", self._bytes(8))[0]),
            b"X": self._binunicode, b"U": self._short_binstring,
            b"h": lambda: self._push(self._get(self._bytes(1)[0])),
            b"j": lambda: self._push(self._get(struct.unpack("<I", self._bytes(4))[0])),
            b"q": lambda: self._put(self._bytes(1)[0]),
            b"r": lambda: self._put(struct.unpack("<I", self._bytes(4))[0]),
        }
        if config_objects:
            ops.update({
                b"\x8b": lambda: self._push(pickle.decode_long(self._bytes(self._length(struct.unpack("<i", self._bytes(4))[0])))),
                b"0": self._pop,
                b"1": self._pop_mark,
            })
        self._ops = {op[0]: handler for op, handler in ops.items()}

    # --- reading
    def load(self):
        ops = self._ops
        while True:
            op = self._read(1)
            if not op:
                raise _Refused("the pickle ends before its STOP opcode (truncated file)")
            if op[0] not in ops:
                raise _Refused(f"unsupported pickle opcode {op!r} (not one torch.load(weights_only=True) reads)")
            handler = ops[op[0]]
            if handler is None:  # STOP
                if not self._stack:
                    raise _Refused("the pickle's STOP finds nothing on the stack")
                result = self._stack.pop()
                _check_result(result)  # names an invalid tensor the result holds by its path
                if self._invalid:
                    raise _Refused(f"tensor outside the result: {self._invalid[0].reason}")
                return result
            self._spend(1)
            handler()

    def _bytes(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise _Refused("the pickle ends inside an opcode (truncated file)")
        return data

    def _length(self, n: int) -> int:
        if n < 0:
            raise _Refused(f"negative length {n} in the pickle")
        self._spend(n)
        return n

    def _spend(self, n: int):
        self._budget -= n
        if self._budget < 0:
            raise _Refused("the pickle asks for more work than its size allows")

    def _push(self, value):
        self._stack.append(value)

    def _pop(self):
        if not self._stack:
            raise _Refused("pickle stack underflow")
        return self._stack.pop()

    def _top(self):
        if not self._stack:
            raise _Refused("pickle stack underflow")
        return self._stack[-1]

    def _mark(self):
        self._marks.append(self._stack)
        self._stack = []

    def _pop_mark(self) -> list:
        if not self._marks:
            raise _Refused("pickle opcode needs a MARK that is not there")
        items, self._stack = self._stack, self._marks.pop()
        return items

    def _proto(self):
        self._bytes(1)  # any protocol: torch accepts any and only the opcodes matter

    def _get(self, index):
        if index not in self._memo:
            raise _Refused(f"the pickle refers to memo entry {index}, which it never stored")
        return self._memo[index]

    def _put(self, index):
        self._memo[index] = self._top()

    def _binunicode(self):
        (n,) = struct.unpack("<I", self._bytes(4))
        self._push(str(self._bytes(self._length(n)), "utf-8", "surrogatepass"))

    def _short_binstring(self):
        self._push(self._bytes(self._bytes(1)[0]).decode("utf-8"))  # torch.load decodes with utf-8

    def _tuple(self):
        self._push(tuple(self._pop_mark()))

    def _tuple_n(self, n):
        if len(self._stack) < n:
            raise _Refused("pickle stack underflow")
        items = tuple(self._stack[-n:])
        del self._stack[-n:]
        self._push(items)

    def _line(self) -> str:
        line = self._readline()
        if not line.endswith(b"\n"):
            raise _Refused("the pickle ends inside a GLOBAL opcode (truncated file)")
        return line[:-1].decode("utf-8")

    # --- the opcodes that build or change objects
    def _global(self):
        module, name = self._line(), self._line()
        # Protocol-2 pickles name Python 2 modules (torch.save writes int as __builtin__.long).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[module, name]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        allowed = (module, name) in _WEIGHTS_GLOBALS or self._config and (
            (module, name) in _CONFIG_GLOBALS or module.split(".")[0] in _INERT_MODULE_ROOTS)
        if not allowed:
            raise _Refused(f"refusing to load global {module}.{name} (not on the allow-list of a weights-only checkpoint)")
        self._push(_Global(module, name))

    def _binpersid(self):
        pid = self._pop()
        if not (type(pid) is tuple and pid and pid[0] in ("storage", b"storage")):
            raise _Refused(f"unexpected persistent id {_describe(pid)} (torch checkpoints only reference storages)")
        if self._persistent_load is None:
            raise _Refused("a storage reference where none can be")
        self._push(self._persistent_load(pid))

    def _reduce(self):
        args = self._pop()
        func = self._top()
        if type(args) is not tuple:
            raise _Refused(f"REDUCE arguments are a {type(args).__name__}, not a tuple")
        self._stack[-1] = self._call(func, args)

    def _newobj(self):
        args = self._pop()
        cls = self._pop()
        if type(args) is not tuple:
            raise _Refused(f"NEWOBJ arguments are a {type(args).__name__}, not a tuple")
        if isinstance(cls, _Global) and args == ():
            if cls.key == ("collections", "OrderedDict"):
                return self._push(collections.OrderedDict())
            if self._config and cls.key == ("argparse", "Namespace"):
                return self._push(argparse.Namespace())
        if self._config and isinstance(cls, _Global) and cls.module.split(".")[0] in _INERT_MODULE_ROOTS:
            return self._push(_Inert(cls, args))
        raise _Refused(f"refusing to create an object of {_describe(cls)}")

    def _build(self):
        state = self._pop()
        inst = self._top()
        if type(inst) is collections.OrderedDict and type(state) is dict:
            return  # torch's state dicts carry `_metadata` as attributes; the weights do not need it
        if self._config:
            if type(inst) is _Inert and inst.state is None:
                inst.state = state
                return
            if type(inst) is argparse.Namespace and type(state) is dict and all(type(k) is str for k in state):
                vars(inst).update(state)
                return
            if type(inst) is _NumpyDtype and type(state) is tuple and len(state) > 1 and state[1] in ("<", ">", "|", "="):
                inst.dtype = inst.dtype.newbyteorder(state[1])
                return
        raise _Refused(f"refusing BUILD on {_describe(inst)} (only objects this file made may be given state)")

    def _append(self):
        item = self._pop()
        target = self._top()
        if type(target) is not list:
            raise _Refused(f"APPEND to a {type(target).__name__}, not a list")
        target.append(item)

    def _appends(self):
        items = self._pop_mark()
        target = self._top()
        if type(target) is not list:
            raise _Refused(f"APPENDS to a {type(target).__name__}, not a list")
        target.extend(items)

    def _dict_target(self):
        target = self._top()
        kinds = (dict, collections.OrderedDict, collections.defaultdict) if self._config else (dict, collections.OrderedDict)
        if type(target) not in kinds:
            raise _Refused(f"SETITEM on a {type(target).__name__}, not a dict")
        return target

    def _set(self, target, key, value):
        if not isinstance(key, _PLAIN_KEYS):
            raise _Refused(f"dict key {_describe(key)} is not a string or number")
        target[key] = value

    def _setitem(self):
        value = self._pop()
        key = self._pop()
        self._set(self._dict_target(), key, value)

    def _setitems(self):
        items = self._pop_mark()
        target = self._dict_target()
        if len(items) % 2:
            raise _Refused("SETITEMS with a key but no value")
        for i in range(0, len(items), 2):
            self._set(target, items[i], items[i + 1])

    def _tensor(self, tensor):
        if type(tensor) is _Invalid:
            self._invalid.append(tensor)  # torch fails on it even where the result never holds it
        return tensor

    # --- calls: each allowed global is a function of this reader
    def _call(self, func, args):
        if not isinstance(func, _Global):
            raise _Refused(f"refusing to call {_describe(func)}")
        key = func.key
        if key in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return self._tensor(_rebuild_tensor(key[1], args))
        if key == ("torch._utils", "_rebuild_parameter"):
            return self._tensor(_rebuild_parameter(args))
        if key == ("collections", "OrderedDict") and args == ():
            return collections.OrderedDict()
        if key == ("torch", "Size") and len(args) == 1 and type(args[0]) in (tuple, list) and len(args[0]) <= _MAX_NDIM:
            if not all(_is_int(n) for n in args[0]):
                raise _Refused(f"torch.Size of {_describe(args[0])}")
            return tuple(args[0])
        if key == ("_codecs", "encode") and 1 <= len(args) <= 2 and type(args[0]) is str:
            self._spend(len(args[0]))
            return args[0].encode(_codec(args[1]) if len(args) == 2 else "utf-8")
        if self._config:
            return self._call_config(func, args)
        raise _Refused(f"refusing to call {func} with {_describe(args)}")

    def _call_config(self, func: _Global, args):
        module, name = func.key
        if module.split(".")[0] in _INERT_MODULE_ROOTS:
            return _Inert(func, args)  # omegaconf/fairseq classes, enums rebuilt from their value
        if (module, name) == ("argparse", "Namespace") and args == ():
            return argparse.Namespace()
        if (module, name) == ("collections", "defaultdict") and len(args) <= 1:
            factory = args[0] if args else None
            if factory is not None and not (isinstance(factory, _Global) and factory.module == "builtins"
                                            and factory.name in _BUILTIN_FACTORIES):
                raise _Refused(f"refusing a defaultdict of {_describe(factory)}")
            return collections.defaultdict(None if factory is None else _BUILTIN_FACTORIES[factory.name])
        if (module, name) == ("numpy", "dtype") and args and type(args[0]) is str:
            try:
                dtype = np.dtype(args[0])
            except TypeError:
                raise _Refused(f"unknown NumPy dtype {_describe(args[0])}") from None
            if dtype.kind not in "biufc":
                raise _Refused(f"refusing NumPy dtype {dtype} (only numbers)")
            return _NumpyDtype(dtype)
        if name == "scalar" and len(args) == 2 and type(args[0]) is _NumpyDtype and type(args[1]) is bytes:
            if len(args[1]) != args[0].dtype.itemsize:
                raise _Refused(f"NumPy scalar of {len(args[1])} bytes for dtype {args[0].dtype}")
            return np.frombuffer(args[1], dtype=args[0].dtype)[0]
        if module == "builtins":
            if name in ("set", "frozenset") and len(args) <= 1:
                items = args[0] if args else ()
                if type(items) not in (list, tuple) or not all(isinstance(v, _PLAIN_KEYS) for v in items):
                    raise _Refused(f"a {name} of {_describe(items)}")
                self._spend(len(items))
                return (set if name == "set" else frozenset)(items)
            if name == "bytes" and args == ():
                return b""
        raise _Refused(f"refusing to call {func} with {_describe(args)}")



# ------------------------------------------------------------------------------------------ tensors
def _no_hooks(hooks) -> bool:
    return type(hooks) in (dict, collections.OrderedDict) and not hooks


def _rebuild_tensor(function: str, args: tuple):
    """torch._utils._rebuild_tensor(_v2): a tensor as a view of its storage, or an ``_Invalid``
    saying why torch would refuse it."""
    if len(args) != 4 and not (function == "_rebuild_tensor_v2" and len(args) in (6, 7)):
        raise _Refused(f"{function} called with {len(args)} arguments")
    storage, offset, size, stride, *rest = args
    if type(storage) is not _Storage:
        raise _Refused(f"tensor data is {_describe(storage)}, not a storage")
    array = storage.array
    problem = _check_view(array.size, offset, size, stride)
    if rest:
        requires_grad, hooks, *metadata = rest
        if type(requires_grad) is not bool or not _no_hooks(hooks):
            raise _Refused("tensor with a non-bool requires_grad or with backward hooks")
        if metadata and not (metadata[0] is None or _no_hooks(metadata[0])):
            raise _Refused(f"tensor metadata {_describe(metadata[0])} (conjugate or negative views are not read)")
        if requires_grad and array.dtype.name not in _FLOATING:
            problem = problem or f"a {array.dtype} tensor cannot require grad"
    if problem:
        return _Invalid(f"{problem} (storage {storage.key!r} holds {array.size} {array.dtype} elements)")
    return _view(array, offset, tuple(size), tuple(stride))


def _rebuild_parameter(args: tuple):
    """torch._utils._rebuild_parameter(data, requires_grad, hooks): the tensor itself."""
    if len(args) != 3:
        raise _Refused(f"_rebuild_parameter called with {len(args)} arguments")
    data, requires_grad, hooks = args
    if type(data) is _Invalid:
        return data
    if type(data) is not np.ndarray:
        raise _Refused(f"parameter data is {_describe(data)}, not a tensor")
    if type(requires_grad) is not bool or not _no_hooks(hooks):
        raise _Refused("parameter with a non-bool requires_grad or with backward hooks")
    if requires_grad and data.dtype.name not in _FLOATING:
        return _Invalid(f"a {data.dtype} parameter cannot require grad")
    return data


def _check_view(numel: int, offset, size, stride):
    """Why torch's ``Tensor.set_`` would refuse ``size``/``stride`` at ``offset`` into a storage of
    ``numel`` elements, or None. In Python integers, so nothing overflows."""
    if type(size) not in (tuple, list) or type(stride) not in (tuple, list):
        return f"size {_describe(size)} and stride {_describe(stride)} are not sequences"
    if len(size) > _MAX_NDIM:
        return f"{len(size)} dimensions (NumPy holds at most {_MAX_NDIM})"
    if not all(_is_int(v) for v in (offset, *size, *stride)):
        return f"offset {_describe(offset)}, size {_describe(size)} or stride {_describe(stride)} is not an integer"
    if not all(-_INT64_MAX - 1 <= v <= _INT64_MAX for v in (offset, *size, *stride)):
        return f"offset {_describe(offset)}, size {_describe(size)} or stride {_describe(stride)} overflows int64"
    if len(size) != len(stride):
        return f"size {_describe(size)} and stride {_describe(stride)} differ in length"
    if any(n < 0 for n in size):
        return f"negative size {_describe(size)}"
    if offset < 0:
        return f"negative storage offset {_describe(offset)}"
    count = 1
    for n in size:
        count *= n
    if count > _INT64_MAX:
        return f"size {_describe(size)} has more than 2**63 elements"
    if count == 0:
        return None  # an empty tensor reads nothing: torch takes any offset and strides
    if any(s < 0 for n, s in zip(size, stride) if n > 1):
        return f"negative stride {_describe(stride)} (torch refuses these)"
    last = offset + sum(s * (n - 1) for n, s in zip(size, stride) if n > 1)
    if last >= numel:
        return (f"size {_describe(size)}, stride {_describe(stride)} and offset {_describe(offset)} "
                f"reach element {_describe(last)}, past the end of the storage")
    return None


def _view(array: np.ndarray, offset: int, size: tuple, stride: tuple):
    """The checked tensor as a view of its storage, which it shares as in torch. A view whose
    elements overlap (stride 0, as ``expand`` makes) is read-only, as in torch, and is never
    materialised: a small file cannot claim a huge array's memory."""
    if 0 in size:
        return np.empty(size, dtype=array.dtype)
    count = 1
    for n in size:
        count *= n
    if count * array.dtype.itemsize > _INT64_MAX:
        return _Invalid(f"size {_describe(size)} is too large for a NumPy array")
    steps = tuple(s if n > 1 else 0 for n, s in zip(size, stride))
    return as_strided(array[offset:], shape=size, strides=tuple(s * array.dtype.itemsize for s in steps),
                      writeable=array.flags.writeable and not _overlaps(size, steps))


def _overlaps(size, stride) -> bool:
    """Whether two indices of a view with these (non-negative) strides reach the same element."""
    extent = 1  # elements spanned by the dimensions with smaller strides
    for n, s in sorted(((n, s) for n, s in zip(size, stride) if n > 1), key=lambda dim: dim[1]):
        if s < extent:
            return True
        extent += s * (n - 1)
    return False


def _storage_dtype(storage_type) -> np.dtype:
    if not (isinstance(storage_type, _Global) and storage_type.key in _WEIGHTS_GLOBALS
            and (storage_type.name in _STORAGE_DTYPES or storage_type.name == "UntypedStorage")):
        raise _Refused(f"storage type {_describe(storage_type)} is not a torch storage class")
    if storage_type.name == "UntypedStorage":
        return np.dtype(np.uint8)
    return _numpy_dtype(_STORAGE_DTYPES[storage_type.name])


def _elements(buffer: bytearray, dtype: np.dtype, swap: bool) -> np.ndarray:
    """A storage's bytes as a 1-D array of its elements, in place: byte-swapped from a big-endian
    file, booleans reduced to 0/1 (torch reads any non-zero byte as True)."""
    unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
    if swap and unit > 1:
        np.frombuffer(buffer, dtype=f"u{unit}").byteswap(inplace=True)
    if dtype == np.bool_:
        raw = np.frombuffer(buffer, dtype=np.uint8)
        np.minimum(raw, 1, out=raw)
    return np.frombuffer(buffer, dtype=dtype)


def _check_result(root):
    """Walk what the pickle built, without recursion: refuse nesting deeper than MAX_DEPTH and tensors
    torch would refuse (named by their path). Shared objects are walked once; references back to an
    enclosing object (omegaconf nodes point at their parent) are not followed."""
    if type(root) is _Invalid:
        raise _Refused(f"tensor: {root.reason}")
    height = {}  # id -> container levels at and below it, once walked
    on_path = set()
    stack = [[root, None, _children(root), 1]]  # node, its label, its children, its height so far
    on_path.add(id(root))
    while stack:
        entry = stack[-1]
        for label, child in entry[2]:
            if type(child) is _Invalid:
                names = [str(e[1]) for e in stack[1:]] + [str(label)]
                raise _Refused(f"tensor {'/'.join(names)}: {child.reason}")
            if not isinstance(child, _CONTAINERS):
                continue
            if id(child) in on_path:
                continue
            if id(child) in height:
                below = height[id(child)]
            else:
                if len(stack) >= MAX_DEPTH:
                    raise _Refused(f"objects nested deeper than {MAX_DEPTH} levels")
                on_path.add(id(child))
                stack.append([child, label, _children(child), 1])
                break
            if len(stack) + below > MAX_DEPTH:
                raise _Refused(f"objects nested deeper than {MAX_DEPTH} levels")
            entry[3] = max(entry[3], below + 1)
        else:
            stack.pop()
            on_path.discard(id(entry[0]))
            height[id(entry[0])] = entry[3]
            if stack:
                stack[-1][3] = max(stack[-1][3], entry[3] + 1)


_CONTAINERS = (dict, list, tuple, set, frozenset, _Inert, argparse.Namespace)


def _children(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, key
            yield key, value
    elif isinstance(node, (list, tuple)):
        yield from enumerate(node)
    elif isinstance(node, (set, frozenset)):
        for value in node:
            yield "{}", value
    elif isinstance(node, _Inert):
        yield "args", node.args
        yield "state", node.state
    elif isinstance(node, argparse.Namespace):
        yield from vars(node).items()


# ------------------------------------------------------------------------------------------ reading
def load(path, allow_config_objects: bool = False):
    """Unpickle a torch checkpoint at ``path`` (zip, or the pre-1.6 legacy stream) with NumPy tensors.

    ``allow_config_objects`` admits what fairseq pickles around its weights (see ``_CONFIG_GLOBALS``).
    Tensors are views of their storages, shared as torch shares them. Raises ValueError naming the
    file when it is not a torch checkpoint, is truncated or corrupt, wants other globals, or holds a
    tensor torch would refuse.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(4) == b"PK\x03\x04":  # how torch tells a zip checkpoint
                obj = _load_zip(f, size, allow_config_objects)
            else:
                f.seek(0)
                obj = _load_legacy(f, size, allow_config_objects)
        return obj
    except _Refused as e:
        raise ValueError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, struct.error, OSError,
            UnicodeDecodeError, OverflowError, MemoryError) as e:
        raise ValueError(f"{path}: corrupt or truncated torch checkpoint ({type(e).__name__}: {e})") from None


def read_bin(path) -> Dict[str, np.ndarray]:
    """A ``pytorch_model.bin`` (or shard) as {name: array}; anything but a flat dict of tensors is an error."""
    return as_state_dict(load(path), path)


def as_state_dict(obj, path) -> Dict[str, np.ndarray]:
    """Check that an unpickled checkpoint is a flat {name: tensor} dict; ``path`` names it in errors."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found a pickled {type(obj).__name__}")
    bad = [_describe(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
    if bad:
        raise ValueError(f"{path}: entries that are not named tensors: {', '.join(bad[:10])}")
    return dict(obj)


def _pickle_budget(size: int) -> int:
    return 16 * size + (1 << 16)


class _TorchZip:
    """The records of a torch zip checkpoint, found as torch's reader (miniz) finds them: the archive
    folder is the first record's, every record must be inside it, names compare case-insensitively.
    Anything the two readers could see differently (duplicate names, compression, encryption, data
    before the archive, a central directory whose counts disagree) is refused."""

    _FLAGS_READ = 0x2 | 0x4 | 0x8 | 0x800  # compression options, data descriptor, UTF-8 names

    def __init__(self, f, size: int):
        self._f, self._size = f, size
        f.seek(0)
        archive = zipfile.ZipFile(f)
        infos = archive.infolist()
        self._check_directory(infos, *self._check_end_record(len(infos)))
        if not infos or min(info.header_offset for info in infos) != 0:
            raise _Refused("the zip archive does not start at the file's first byte")
        names = [self._raw_name(info) for info in infos]
        folder, slash, _ = names[0].partition(b"/")
        if not slash:
            raise _Refused(f"zip record {names[0]!r} is not inside an archive folder")
        self._prefix = folder + b"/"
        self._records = {}
        for name, info in zip(names, infos):
            if not name.startswith(self._prefix):
                raise _Refused(f"zip record {name!r} is outside the archive folder {folder!r}")
            if name.lower() in self._records:  # torch looks names up ignoring ASCII case
                raise _Refused(f"zip records named {name!r} more than once; torch and Python read different ones")
            self._records[name.lower()] = info

    @staticmethod
    def _raw_name(info: zipfile.ZipInfo) -> bytes:
        return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")

    def _check_end_record(self, count: int):
        """The end records as miniz reads them; Python's zipfile ignores their counts and locator."""
        tail_size = min(self._size, 22 + 0xFFFF)
        self._f.seek(self._size - tail_size)
        tail = self._f.read(tail_size)
        at = tail.rfind(b"PK\x05\x06", 0, max(len(tail) - 18, 0))  # a whole 22-byte record
        if at < 0:
            raise _Refused("no zip end-of-central-directory record")
        end = self._size - tail_size + at
        disk, cd_disk, on_disk, total, cd_size, cd_offset = struct.unpack("<4H2L", tail[at + 4:at + 20])
        if at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":  # zip64, as torch always writes
            record_disk, record_at, disks = struct.unpack("<LQL", tail[at - 16:at])
            self._f.seek(end - 20 - 56)
            record = self._f.read(56)
            if record_at != end - 20 - 56 or record[:4] != b"PK\x06\x06" or record_disk or disks != 1:
                raise _Refused("the zip64 end record is not where its locator says")
            disk, cd_disk, on_disk, total, cd_size, cd_offset = struct.unpack("<2L4Q", record[16:56])
            end = record_at
        if disk or cd_disk or on_disk != total or total != count:
            raise _Refused(f"the zip directory says {total} records and holds {count}")
        if cd_offset + cd_size != end:
            raise _Refused("the zip central directory is not where its end record says")
        return cd_offset, cd_size

    def _check_directory(self, infos, cd_offset: int, cd_size: int):
        """Each central directory entry as declared, back to back, naming what zipfile read: Python
        reads past a wrong name length where miniz refuses the archive."""
        self._f.seek(cd_offset)
        directory = self._f.read(cd_size)
        at = 0
        for info in infos:
            header = directory[at:at + 46]
            if len(header) != 46 or header[:4] != b"PK\x01\x02":
                raise _Refused("a zip central directory entry is cut short")
            name_length, extra_length, comment_length = struct.unpack("<3H", header[28:34])
            if directory[at + 46:at + 46 + name_length] != self._raw_name(info) or struct.unpack("<H", header[34:36])[0]:
                raise _Refused("a zip central directory entry does not hold the name it declares")
            at += 46 + name_length + extra_length + comment_length
        if at != cd_size:
            raise _Refused("the zip central directory entries do not fill it")

    def has(self, name: str) -> bool:
        return (self._prefix + name.encode()).lower() in self._records

    def read(self, name: str) -> bytearray:
        """The bytes of record ``name`` (relative to the archive folder), read once, straight into a
        writable buffer."""
        info = self._records.get((self._prefix + name.encode()).lower())
        if info is None:
            raise _Refused(f"no record {name!r} in the archive")
        if info.flag_bits & ~self._FLAGS_READ or info.compress_type != zipfile.ZIP_STORED:
            raise _Refused(f"record {name!r} is compressed or encrypted (torch.save writes records stored)")
        if info.external_attr & 0x10 or info.orig_filename.endswith("/"):
            # miniz takes this for a directory and leaves torch's buffer unwritten: it reads garbage
            raise _Refused(f"record {name!r} is marked as a directory")
        if info.compress_size != info.file_size:
            raise _Refused(f"record {name!r} has two sizes ({info.compress_size} and {info.file_size})")
        self._f.seek(info.header_offset)
        header = self._f.read(zipfile.sizeFileHeader)
        if len(header) != zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
            raise _Refused(f"record {name!r} has no local header")
        name_length, extra_length = struct.unpack("<2H", header[26:30])
        if self._f.read(name_length) != self._raw_name(info):
            raise _Refused(f"record {name!r} has another name in its local header")
        start = info.header_offset + zipfile.sizeFileHeader + name_length + extra_length
        if start + info.file_size > self._size:
            raise _Refused(f"record {name!r} runs past the end of the file (truncated)")
        buffer = bytearray(info.file_size)
        self._f.seek(start)
        if self._f.readinto(buffer) != info.file_size:
            raise _Refused(f"record {name!r} is truncated")
        # torch never checks the CRC, and writes 0 when saving with compute_crc32=False.
        if info.CRC and zlib.crc32(buffer) != info.CRC:
            raise _Refused(f"record {name!r} fails its CRC check (corrupt file)")
        return buffer


def _load_zip(f, size: int, config_objects: bool):
    archive = _TorchZip(f, size)
    version_record = ".data/version" if archive.has(".data/version") else "version"
    version = re.match(rb"[ \t\n\v\f\r]*\+?([0-9]+)", archive.read(version_record)) if archive.has(version_record) else None
    if version is None or not 1 <= int(version.group(1)) <= 10:  # the versions torch 2.x reads
        raise _Refused("no readable version record (torch reads file format versions 1 to 10)")
    if archive.has("constants.pkl"):
        raise _Refused("a TorchScript archive, not a checkpoint (torch.load(weights_only=True) refuses it)")
    if archive.has(".storage_alignment"):
        try:
            int(bytes(archive.read(".storage_alignment")))
        except ValueError:
            raise _Refused("unreadable .storage_alignment record") from None
    if archive.has(".format_version"):
        archive.read(".format_version")  # torch reads it (any bytes), so it must be readable
    if archive.has(".data/serialization_id"):
        try:  # torch reports it as text
            archive.read(".data/serialization_id").decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused("unreadable .data/serialization_id record") from None
    byteorder = bytes(archive.read("byteorder")) if archive.has("byteorder") else b"little"
    if byteorder not in (b"little", b"big"):
        raise _Refused(f"unknown byte order {byteorder[:20]!r}")
    pickled = archive.read("data.pkl")
    storages = {}

    def persistent_load(pid):
        if len(pid) != 5:
            raise _Refused(f"storage reference {_describe(pid)} is not (storage, type, key, location, size)")
        _, storage_type, key, location, numel = pid
        dtype = _storage_dtype(storage_type)
        if type(key) is not str or type(location) is not str or not _is_int(numel) or numel < 0:
            raise _Refused(f"storage reference {_describe(pid)} is malformed")
        if key in storages:  # as in torch, a storage read once keeps its first type
            return storages[key]
        record = f"data/{key}"
        if not archive.has(record):
            raise _Refused(f"storage {key!r} has no record {record!r}")
        buffer = archive.read(record)
        if len(buffer) != numel * dtype.itemsize:
            raise _Refused(f"record {record!r} holds {len(buffer)} bytes, not the {numel} x {dtype.itemsize} "
                           f"its storage reference says")
        storage = _Storage(key, _elements(buffer, dtype, swap=byteorder == b"big"))
        if numel:  # torch keeps no empty storage, so a later reference may give it another type
            storages[key] = storage
        return storage

    return _Unpickler(io.BytesIO(pickled), persistent_load, config_objects, _pickle_budget(len(pickled))).load()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _load_legacy(f, size: int, config_objects: bool):
    """torch < 1.6 files: magic, version and sys-info pickles, the object pickle, the list of storage
    keys, then each storage as an int64 element count followed by its raw (little-endian) data."""
    budget = _pickle_budget(size)

    def plain_pickle():
        return _Unpickler(f, budget=budget).load()

    try:
        magic = plain_pickle()
    except (_Refused, EOFError, struct.error, UnicodeDecodeError):
        magic = None
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise _Refused("not a torch checkpoint (neither a zip archive nor a legacy torch file)")
    if plain_pickle() != _LEGACY_PROTOCOL:
        raise _Refused("unknown legacy torch file version")
    sys_info = plain_pickle()
    if isinstance(sys_info, dict) and sys_info.get("little_endian", True) is not True:
        raise _Refused("big-endian legacy torch files are not supported")

    objects = {}  # root and view storages by key, as torch keeps them (one namespace)
    roots = {}  # root key -> its buffer, to be filled after the pickle
    claimed = [0]

    def persistent_load(pid):
        if len(pid) != 6:
            raise _Refused(f"storage reference {_describe(pid)} is not (storage, type, key, location, size, view)")
        _, storage_type, key, location, numel, view = pid
        dtype = _storage_dtype(storage_type)
        if type(key) is not str or type(location) is not str or not _is_int(numel) or numel < 0:
            raise _Refused(f"storage reference {_describe(pid)} is malformed")
        root = objects.get(key)
        if root is None:
            nbytes = numel * dtype.itemsize
            claimed[0] += nbytes
            if claimed[0] > size:  # the data must follow in the file: no claiming memory it lacks
                raise _Refused(f"storage {key!r} of {nbytes} bytes does not fit in the file")
            roots[key] = bytearray(nbytes)
            root = objects[key] = _Storage(key, np.frombuffer(roots[key], dtype=dtype))
        elif key not in roots:
            raise _Refused(f"storage key {key!r} names a view, not a storage")
        elif root.array.size == 0:  # as in torch, an empty storage takes each reference's type
            root = _Storage(key, np.empty(0, dtype=dtype))
        if view is None:
            return root
        if not (type(view) is tuple and len(view) == 3 and type(view[0]) is str and _is_int(view[1]) and _is_int(view[2])):
            raise _Refused(f"storage view {_describe(view)} is not (key, offset, size)")
        view_key, offset, view_size = view
        if view_key in roots:
            raise _Refused(f"storage view {view_key!r} has a storage's key")
        if view_key not in objects:
            if root.array.dtype != dtype or offset < 0 or view_size < 0 or offset + view_size > root.array.size:
                raise _Refused(f"storage view {_describe(view)} does not fit storage {key!r}")
            objects[view_key] = _Storage(view_key, root.array[offset:offset + view_size])
        return objects[view_key]

    obj = _Unpickler(f, persistent_load, config_objects, budget).load()
    keys = plain_pickle()
    if not (type(keys) is list and all(type(k) is str for k in keys) and sorted(keys) == sorted(roots)):
        raise _Refused("the list of storages does not match the storages the pickle references")
    for key in keys:
        buffer, dtype = roots[key], objects[key].array.dtype
        count = f.read(8)
        if len(count) != 8:
            raise _Refused(f"storage {key!r} is truncated")
        count = struct.unpack("<q", count)[0]
        if count * dtype.itemsize != len(buffer):
            raise _Refused(f"storage {key!r} holds {count} elements, not the {len(buffer) // dtype.itemsize} referenced")
        if f.readinto(buffer) != len(buffer):
            raise _Refused(f"storage {key!r} is truncated")
        _elements(buffer, dtype, swap=False)
    return obj


# ------------------------------------------------------------------------------------------ writing
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
    name = np.dtype(dtype).name
    if name not in _DTYPE_STORAGES:
        raise ValueError(f"cannot write dtype {name} to a torch checkpoint")
    return _Global("torch", _DTYPE_STORAGES[name])


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
