"""Torch checkpoints written opcode by opcode, for the differential fuzz tests and scripts/fuzz.

Independent of the library's own writer: each pickle opcode is spelled out here (pickletools' names),
so a test can describe any tensor, valid or not (negative strides, offsets past the storage, wrong
record sizes), and any container around it. ``torch.load(weights_only=True)`` is the oracle for
what these files mean.
"""
from __future__ import annotations

import io
import pickle
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Optional

STORAGE_ITEMSIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
}


@dataclass(eq=False)
class Tensor:
    """One ``_rebuild_tensor_v2`` call: a view of storage ``key``."""

    storage: str = "FloatStorage"
    key: str = "0"
    numel: object = 4  # as written in the persistent id (may be wrong on purpose)
    offset: object = 0
    size: object = (4,)
    stride: object = (1,)
    requires_grad: object = False
    parameter: bool = False  # wrapped in _rebuild_parameter
    view: Optional[tuple] = None  # legacy files only: (view key, offset, size)
    location: str = "cpu"


@dataclass(eq=False)
class Global:
    module: str
    name: str


@dataclass(eq=False)
class Call:
    """REDUCE: ``func(*args)``, optionally followed by BUILD with ``state``."""

    func: Global
    args: tuple = ()
    state: object = None


@dataclass(eq=False)
class Raw:
    """Opcodes written as given."""

    data: bytes


class Pickle:
    """Protocol-2 opcodes for a value; the same Python object twice becomes a memo reference."""

    def __init__(self, legacy: bool = False):
        self.out = io.BytesIO()
        self.legacy = legacy
        self.memo = {}
        self.out.write(b"\x80\x02")  # PROTO 2

    def dumps(self, value) -> bytes:
        self.emit(value)
        self.out.write(b".")  # STOP
        return self.out.getvalue()

    def emit(self, value):
        w = self.out.write
        shareable = isinstance(value, (list, dict, tuple, Tensor, Call)) and value != ()
        if shareable and id(value) in self.memo:
            w(b"j" + struct.pack("<I", self.memo[id(value)][0]))  # LONG_BINGET
            return
        if value is None:
            w(b"N")
        elif value is True or value is False:
            w(b"\x88" if value else b"\x89")
        elif isinstance(value, int):
            if 0 <= value < 256:
                w(b"K" + bytes([value]))
            elif -2**31 <= value < 2**31:
                w(b"J" + struct.pack("<i", value))
            else:
                data = pickle.encode_long(value)
                w(b"\x8a" + bytes([len(data)]) + data)  # LONG1 (torch reads no LONG4)
        elif isinstance(value, float):
            w(b"G" + struct.pack(">d", value))
        elif isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
            w(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(value, bytes):
            self.emit(Call(Global("_codecs", "encode"), (value.decode("latin1"), "latin1")))
        elif isinstance(value, Raw):
            w(value.data)
        elif isinstance(value, Global):
            w(b"c" + f"{value.module}\n{value.name}\n".encode("utf-8"))
        elif isinstance(value, tuple):
            if not value:
                w(b")")
            else:
                w(b"(")
                for item in value:
                    self.emit(item)
                w(b"t")
        elif isinstance(value, list):
            w(b"]")
            self.memoize(value)
            if value:
                w(b"(")
                for item in value:
                    self.emit(item)
                w(b"e")  # APPENDS
            return
        elif isinstance(value, dict):
            self.emit(Call(Global("collections", "OrderedDict")))
            self.memoize(value)
            if value:
                w(b"(")
                for key, item in value.items():
                    self.emit(key)
                    self.emit(item)
                w(b"u")  # SETITEMS
            return
        elif isinstance(value, Tensor):
            self.tensor(value)
        elif isinstance(value, Call):
            self.emit(value.func)
            self.emit(tuple(value.args))
            w(b"R")
            if value.state is not None:
                self.emit(value.state)
                w(b"b")  # BUILD
        else:
            raise TypeError(f"cannot emit {type(value).__name__}")
        if shareable:
            self.memoize(value)

    def memoize(self, value):
        self.memo[id(value)] = (len(self.memo), value)  # the value kept alive, so its id stays its own
        self.out.write(b"r" + struct.pack("<I", self.memo[id(value)][0]))  # LONG_BINPUT

    def tensor(self, t: Tensor):
        w = self.out.write
        if t.parameter:  # _rebuild_parameter(tensor, requires_grad, hooks)
            self.emit(Global("torch._utils", "_rebuild_parameter"))
            w(b"(")
        pid = ("storage", Global("torch", t.storage), t.key, t.location, t.numel)
        if self.legacy:
            pid += (t.view,)
        self.emit(Global("torch._utils", "_rebuild_tensor_v2"))
        w(b"(")
        self.emit(pid)
        w(b"Q")  # BINPERSID
        for item in (t.offset, t.size, t.stride, False if t.parameter else t.requires_grad):
            self.emit(item)
        self.emit(Call(Global("collections", "OrderedDict")))
        w(b"tR")
        if t.parameter:
            self.emit(t.requires_grad)
            self.emit(Call(Global("collections", "OrderedDict")))
            w(b"tR")


def dumps(value, legacy: bool = False) -> bytes:
    return Pickle(legacy).dumps(value)


@dataclass
class Zip:
    """The records of a torch zip archive, in order (torch.save's order by default)."""

    pickle: bytes
    storages: dict = field(default_factory=dict)  # key -> bytes
    prefix: str = "archive"
    byteorder: Optional[bytes] = b"little"
    version: Optional[bytes] = b"3\n"
    extra: list = field(default_factory=list)  # (name relative to the prefix, bytes)
    compression: int = zipfile.ZIP_STORED

    def records(self):
        yield "data.pkl", self.pickle
        if self.byteorder is not None:
            yield "byteorder", self.byteorder
        for key, data in self.storages.items():
            yield f"data/{key}", data
        if self.version is not None:
            yield "version", self.version
        yield from self.extra

    def dumps(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=self.compression) as archive:
            for name, data in self.records():
                info = zipfile.ZipInfo(f"{self.prefix}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = self.compression
                archive.writestr(info, data)
        return buffer.getvalue()


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def legacy(pickled: bytes, storages: dict, keys=None, counts=None, little_endian=True) -> bytes:
    """A torch < 1.6 file: magic, protocol and sys-info pickles, the object pickle, the storage keys,
    then each storage as an int64 element count and its bytes. ``storages``: key -> (bytes, itemsize)."""
    keys = list(storages) if keys is None else keys
    out = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": little_endian,
                                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        out.write(pickle.dumps(header, protocol=2))
    out.write(pickled)
    out.write(pickle.dumps(keys, protocol=2))
    for key in keys:
        data, itemsize = storages.get(key, (b"", 1))
        count = len(data) // itemsize if counts is None or key not in counts else counts[key]
        out.write(struct.pack("<q", count) + data)
    return out.getvalue()


def rezip(data: bytes, replace: dict) -> bytes:
    """The same zip with some records' bytes replaced (and their CRCs recomputed)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # a duplicate name stays duplicated
        for info in source.infolist():
            archive.writestr(info, replace.get(info.filename, source.read(info)))
    return buffer.getvalue()
